//! The phases of a transaction and the rule for what happens after each
//! one, as plain functions of the servers' answers (no I/O here: the
//! originator in `txn.rs` asks, this module decides).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use mortar_net::BoxFuture;

/// The seven boundaries an originator passes, in order. The phase hook is
/// called at each one just before the phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Lock,
    PreValidate,
    BrickOp,
    CommitLocal,
    CommitPeers,
    PostValidate,
    Unlock,
}

impl Phase {
    /// Every phase, in the order a transaction passes them.
    pub const ALL: [Phase; 7] = [
        Phase::Lock,
        Phase::PreValidate,
        Phase::BrickOp,
        Phase::CommitLocal,
        Phase::CommitPeers,
        Phase::PostValidate,
        Phase::Unlock,
    ];

    /// The name shown in logs and errors ("failed in pre-validate").
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Lock => "lock",
            Phase::PreValidate => "pre-validate",
            Phase::BrickOp => "brick-op",
            Phase::CommitLocal => "commit-local",
            Phase::CommitPeers => "commit-peers",
            Phase::PostValidate => "post-validate",
            Phase::Unlock => "unlock",
        }
    }

    /// Has the change been made once this phase is reached? From the local
    /// commit on, failures no longer undo anything: servers that missed
    /// the change converge by sync.
    pub fn is_after_commit(self) -> bool {
        self >= Phase::CommitPeers
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault point: called by a transaction's originator at each phase
/// boundary with the phase about to run. The simulator uses it to crash or
/// partition servers exactly there; production leaves it unset.
pub type PhaseHook = Arc<dyn Fn(Phase) -> BoxFuture<'static, ()> + Send + Sync>;

/// How one server answered one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// It answered and refused (the message names the server).
    Refused(String),
    /// The call did not get an answer (`peer` is its name).
    Unreachable {
        peer: String,
        error: String,
    },
}

/// What the originator does after a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Everyone did their part: on to the next phase.
    Continue,
    /// Nothing was changed anywhere: give back every lock taken and fail
    /// with these errors.
    AbortAndUnlock(Vec<String>),
    /// This server could not commit: fail with these errors. The locks are
    /// not given back; they lapse with their lease (as they always have).
    AbortHoldingLocks(Vec<String>),
    /// The change is made, but these servers missed or questioned it; the
    /// transaction goes on and reports them as warnings.
    ContinueWithWarnings(Vec<String>),
}

/// Decide what follows `phase`, given every server's answer to it (this
/// server's first, then the peers' in the order they were asked).
pub fn next_step(phase: Phase, outcomes: &[Outcome]) -> Next {
    let problems: Vec<String> = outcomes.iter().filter_map(|o| problem(phase, o)).collect();
    if problems.is_empty() {
        return Next::Continue;
    }
    match phase {
        Phase::Lock | Phase::PreValidate | Phase::BrickOp => Next::AbortAndUnlock(problems),
        Phase::CommitLocal => Next::AbortHoldingLocks(problems),
        Phase::CommitPeers | Phase::PostValidate | Phase::Unlock => {
            Next::ContinueWithWarnings(problems)
        }
    }
}

/// The message an outcome contributes to a phase's result, if any.
fn problem(phase: Phase, o: &Outcome) -> Option<String> {
    match o {
        Outcome::Done => None,
        Outcome::Refused(e) => Some(e.clone()),
        // A peer that does not answer the commit has not refused it: it
        // takes the change from the others when it is back.
        Outcome::Unreachable { peer, error } if phase == Phase::CommitPeers => Some(format!(
            "{peer} did not confirm the commit ({error}); it will catch up when reachable"
        )),
        // The change is made and confirmed; a check nobody could answer
        // adds nothing, and unlock failures lapse with the lease.
        Outcome::Unreachable { .. } if matches!(phase, Phase::PostValidate | Phase::Unlock) => None,
        Outcome::Unreachable { peer, error } => Some(format!("{peer}: {error}")),
    }
}

/// Can a transaction go ahead with `reachable` servers (this one counted)
/// of a pool of `total`? It needs a strict majority.
pub fn has_majority(reachable: usize, total: usize) -> bool {
    debug_assert!(reachable >= 1 && reachable <= total, "{reachable}/{total}");
    reachable * 2 > total
}

/// One line per distinct problem: when every server reports the same
/// thing, say it once.
pub fn summarize(errors: &[String]) -> String {
    let strip = |e: &String| -> String {
        match e.split_once(": ") {
            Some((host, rest)) if !host.contains(' ') => rest.to_string(),
            _ => e.clone(),
        }
    };
    let distinct: BTreeSet<String> = errors.iter().map(strip).collect();
    if distinct.len() == 1 {
        let only = distinct.into_iter().next().expect("one element");
        if errors.len() > 1 {
            return format!("{only} (on all {} servers)", errors.len());
        }
        return only;
    }
    errors.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(e: &str) -> Outcome {
        Outcome::Refused(e.into())
    }

    fn down(peer: &str) -> Outcome {
        Outcome::Unreachable {
            peer: peer.into(),
            error: "timed out".into(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn phase_names_are_the_ones_logs_and_errors_show() {
        let names: Vec<String> = Phase::ALL.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "lock",
                "pre-validate",
                "brick-op",
                "commit-local",
                "commit-peers",
                "post-validate",
                "unlock"
            ]
        );
        let mut sorted = Phase::ALL;
        sorted.sort();
        assert_eq!(sorted, Phase::ALL, "ALL is in transaction order");
        assert!(!Phase::CommitLocal.is_after_commit());
        assert!(Phase::CommitPeers.is_after_commit());
    }

    #[test]
    fn next_step_table() {
        use Next::*;
        let cases: Vec<(Phase, Vec<Outcome>, Next)> = vec![
            // Everyone agreed: go on, whatever the phase.
            (Phase::Lock, vec![Outcome::Done], Continue),
            (
                Phase::PreValidate,
                vec![Outcome::Done, Outcome::Done, Outcome::Done],
                Continue,
            ),
            (Phase::CommitPeers, vec![], Continue),
            // Before commit any refusal or silence aborts and unlocks.
            (
                Phase::Lock,
                vec![refused("held by s2")],
                AbortAndUnlock(strings(&["held by s2"])),
            ),
            (
                Phase::PreValidate,
                vec![Outcome::Done, refused("s2: no space"), down("s3")],
                AbortAndUnlock(strings(&["s2: no space", "s3: timed out"])),
            ),
            (
                Phase::BrickOp,
                vec![refused("s1: mkdir failed"), Outcome::Done],
                AbortAndUnlock(strings(&["s1: mkdir failed"])),
            ),
            // This server failing its own commit leaves the locks to lapse.
            (
                Phase::CommitLocal,
                vec![refused("s1: commit failed: disk")],
                AbortHoldingLocks(strings(&["s1: commit failed: disk"])),
            ),
            // After commit, problems are warnings and the transaction goes on.
            (
                Phase::CommitPeers,
                vec![Outcome::Done, down("s3"), refused("s2: commit failed: x")],
                ContinueWithWarnings(strings(&[
                    "s3 did not confirm the commit (timed out); it will catch up when reachable",
                    "s2: commit failed: x",
                ])),
            ),
            (
                Phase::PostValidate,
                vec![refused("s1: bricks not running: s1:/b"), down("s2")],
                ContinueWithWarnings(strings(&["s1: bricks not running: s1:/b"])),
            ),
            (Phase::PostValidate, vec![down("s2"), down("s3")], Continue),
            (Phase::Unlock, vec![down("s2")], Continue),
        ];
        for (phase, outcomes, want) in cases {
            assert_eq!(next_step(phase, &outcomes), want, "{phase} {outcomes:?}");
        }
    }

    #[test]
    fn majority_table() {
        for (reachable, total, ok) in [
            (1, 1, true),
            (1, 2, false),
            (2, 2, true),
            (1, 3, false),
            (2, 3, true),
            (2, 4, false),
            (3, 4, true),
            (3, 5, true),
        ] {
            assert_eq!(has_majority(reachable, total), ok, "{reachable}/{total}");
        }
    }

    #[test]
    fn summaries_say_a_shared_problem_once() {
        for (errors, want) in [
            (vec!["s1: no space"], "no space"),
            (
                vec!["s1: no space", "s2: no space", "s3: no space"],
                "no space (on all 3 servers)",
            ),
            (vec!["s1: no space", "s2: busy"], "s1: no space; s2: busy"),
            // A message whose first words are not a host name is kept whole.
            (
                vec!["volume v is already started"],
                "volume v is already started",
            ),
        ] {
            assert_eq!(summarize(&strings(&errors)), want, "{errors:?}");
        }
    }
}
