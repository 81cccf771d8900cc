//! The index crawl: heal every file listed in the pending-heal indices of
//! chosen bricks, through the set layer that owns each brick.

use mortar_client::api::Client;
use mortar_client::protocol::BrickAddress;

use crate::{heal_file, HealOutcome};

/// What one heal crawl did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealSummary {
    pub healed: u64,
    pub clean: u64,
    pub split_brain: u64,
    pub skipped: u64,
    /// Why files were skipped or left in split-brain (the first
    /// [`SUMMARY_ERRORS_MAX`]).
    pub errors: Vec<String>,
}

/// Reasons a summary keeps: enough to see what is wrong, bounded however
/// many files fail.
pub const SUMMARY_ERRORS_MAX: usize = 20;

impl HealSummary {
    /// Count one file's outcome.
    pub fn record(&mut self, outcome: HealOutcome) {
        match outcome {
            HealOutcome::Clean => self.clean += 1,
            HealOutcome::Healed(_) => self.healed += 1,
            HealOutcome::SplitBrain(why) => {
                self.split_brain += 1;
                self.note(why);
            }
            HealOutcome::Skipped(why) => {
                self.skipped += 1;
                self.note(why);
            }
        }
    }

    /// Keep a reason, up to the bound.
    pub fn note(&mut self, why: String) {
        if self.errors.len() < SUMMARY_ERRORS_MAX {
            self.errors.push(why);
        }
    }
}

/// One index crawl: heal every file in the pending-heal index of the
/// bricks `is_local` picks (the self-heal daemon passes its server's
/// bricks), at most `files_max` per brick.
pub async fn heal_pending(
    client: &Client,
    is_local: &(dyn Fn(&BrickAddress) -> bool + Send + Sync),
    files_max: usize,
) -> HealSummary {
    let g = client.graph();
    let mut sum = HealSummary::default();
    for (set, members) in &g.heal_sets {
        for &m in members {
            let pc = &g.clients[m];
            if !is_local(pc.address()) {
                continue;
            }
            match pc.pending_heal(files_max).await {
                Ok(pending) => {
                    for gfid in pending {
                        sum.record(heal_file(set, gfid).await);
                    }
                }
                Err(e) => sum.note(format!("{}: listing the index: {e}", pc.name())),
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_and_reasons_bounded() {
        let mut s = HealSummary::default();
        s.record(HealOutcome::Clean);
        s.record(HealOutcome::Healed(vec!["b1".into()]));
        for i in 0..SUMMARY_ERRORS_MAX + 5 {
            s.record(HealOutcome::Skipped(format!("skip {i}")));
        }
        s.record(HealOutcome::SplitBrain("both blame".into()));
        assert_eq!((s.clean, s.healed, s.split_brain), (1, 1, 1));
        assert_eq!(s.skipped, SUMMARY_ERRORS_MAX as u64 + 5);
        assert_eq!(s.errors.len(), SUMMARY_ERRORS_MAX);
        assert_eq!(s.errors[0], "skip 0");
    }
}
