//! `volume heal NAME [full]`: the self-heal daemons crawl their indices
//! (or, with `full`, sweep the whole volume) now. The server the CLI
//! talked to counts the request and tells every peer (bounded, best
//! effort: a server that cannot be told still crawls at its next
//! heal-timeout, and the answer names it); each server's daemon asks its
//! own mgmtd for the counts every tick and crawls when one changed.

use mortar_storage::Storage;

use super::Inner;
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::volume::{Volume, VolumeStatus};

/// Rows of self-heal statistics one mgmtd keeps (volume, brick).
pub const HEAL_STATS_ROWS_MAX: usize = 10_000;

/// Why `volume heal` has nothing to do for `v`, if so.
pub fn nothing_to_heal(v: &Volume) -> Option<&'static str> {
    if v.status != VolumeStatus::Started {
        Some("is not started")
    } else if !v.wants_shd() {
        Some("is not replicated or dispersed (or its self-heal daemon is disabled)")
    } else {
        None
    }
}

/// The text `volume heal NAME [full]` answers with.
pub fn heal_launched_text(volume: &str, full: bool, not_told: &[String]) -> String {
    let kind = if full { "full" } else { "index" };
    let mut s = format!(
        "Launching heal operation to perform {kind} self heal on volume {volume} has been successful\nUse heal info commands to check status."
    );
    if !not_told.is_empty() {
        s.push_str(&format!(
            "\nNot told (they heal at their next heal-timeout): {}",
            not_told.join("; ")
        ));
    }
    s
}

impl<S: Storage> Inner<S> {
    /// Count a heal request (a full sweep with `full`) for `volume` here.
    pub(super) fn note_heal_request(&self, volume: &str, full: bool) {
        let mut m = self.heal_requests.lock().expect("heal requests");
        let c = m.entry(volume.to_string()).or_default();
        if full {
            c.full += 1;
        } else {
            c.index += 1;
        }
    }

    pub(super) fn heal_requests(&self) -> Vec<HealCount> {
        let m = self.heal_requests.lock().expect("heal requests");
        m.iter()
            .map(|(k, v)| HealCount {
                volume: k.clone(),
                counts: *v,
            })
            .collect()
    }

    /// A self-heal daemon's report: its rows replace the ones it sent
    /// before. Rows beyond [`HEAL_STATS_ROWS_MAX`] are dropped (a report
    /// is a few rows per volume; the bound is against a broken sender).
    pub(super) fn heal_report(&self, rows: Vec<HealStatsView>) -> CliReply {
        let mut m = self.heal_stats.lock().expect("heal stats");
        let mut dropped = 0;
        for r in rows {
            let key = (r.volume.clone(), r.brick.clone());
            if m.len() >= HEAL_STATS_ROWS_MAX && !m.contains_key(&key) {
                dropped += 1;
                continue;
            }
            m.insert(key, r);
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "self-heal statistics: too many bricks reported; rows dropped"
            );
        }
        CliReply::Done("noted".into())
    }

    /// This server's rows for `volume`.
    pub(super) fn local_heal_stats(&self, volume: &str) -> Vec<HealStatsView> {
        let m = self.heal_stats.lock().expect("heal stats");
        m.iter()
            .filter(|((v, _), _)| v == volume)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// `volume heal NAME statistics`: this server's rows and every
    /// reachable peer's (a peer that cannot be asked is left out; its
    /// bricks show as not reported).
    pub(super) async fn heal_statistics(&self, name: &str) -> Result<CliReply> {
        let v = self.volume_or_err(name)?;
        let mut rows = self.local_heal_stats(name);
        for (_, c) in self.clients() {
            if let Ok(mut theirs) = self
                .call_peer::<_, Vec<HealStatsView>>(&c, peer_procs::HEAL_STATS, &name.to_string())
                .await
            {
                rows.append(&mut theirs);
            }
        }
        // Only the volume's bricks, in the volume's order.
        let order: Vec<String> = v
            .bricks
            .iter()
            .map(|b| format!("{}:{}", b.host, b.path))
            .collect();
        rows.retain(|r| order.contains(&r.brick));
        rows.sort_by_key(|r| order.iter().position(|b| *b == r.brick));
        rows.dedup_by(|a, b| a.brick == b.brick);
        Ok(CliReply::HealStatistics(rows))
    }

    /// `volume heal NAME [full]`.
    pub(super) async fn heal_now(&self, name: &str, full: bool) -> Result<CliReply> {
        let v = self.volume_or_err(name)?;
        if let Some(why) = nothing_to_heal(&v) {
            return Err(MgmtError::NothingToHeal {
                volume: name.to_string(),
                why,
            });
        }
        self.note_heal_request(name, full);
        let mut not_told = Vec::new();
        let arg = (name.to_string(), full);
        for (uuid, c) in self.clients() {
            let told = self
                .call_peer::<_, PeerResult<()>>(&c, peer_procs::HEAL_NOW, &arg)
                .await;
            match told {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => not_told.push(format!("{}: {e}", self.peer_name(&uuid))),
            }
        }
        Ok(CliReply::Done(heal_launched_text(name, full, &not_told)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{parse_brick, Layout, Transport};
    use std::collections::BTreeMap;

    fn vol(layout: Layout, status: VolumeStatus) -> Volume {
        Volume {
            name: "v".into(),
            id: "id".into(),
            layout,
            transport: Transport::Tcp,
            bricks: vec![parse_brick("s1:/b").unwrap()],
            status,
            options: BTreeMap::new(),
            version: 1,
            removing: Vec::new(),
        }
    }

    #[test]
    fn what_can_be_healed() {
        let r3 = Layout::Replicate {
            replica: 3,
            arbiter: false,
        };
        let ec = Layout::Disperse {
            data: 4,
            redundancy: 2,
        };
        for (v, want) in [
            (vol(r3, VolumeStatus::Started), None),
            (vol(ec, VolumeStatus::Started), None),
            (vol(r3, VolumeStatus::Stopped), Some("is not started")),
            (vol(r3, VolumeStatus::Created), Some("is not started")),
            (
                vol(Layout::Distribute, VolumeStatus::Started),
                Some("is not replicated or dispersed (or its self-heal daemon is disabled)"),
            ),
        ] {
            assert_eq!(nothing_to_heal(&v), want, "{:?} {:?}", v.layout, v.status);
        }
        let mut off = vol(r3, VolumeStatus::Started);
        off.options
            .insert(crate::options::SELF_HEAL_DAEMON.into(), "off".into());
        assert!(nothing_to_heal(&off).is_some(), "disabled daemon");
    }

    #[test]
    fn the_answer_names_servers_not_told() {
        let t = heal_launched_text("vol1", false, &[]);
        assert!(t.starts_with(
            "Launching heal operation to perform index self heal on volume vol1 has been successful"
        ));
        assert!(!t.contains("Not told"));
        let t = heal_launched_text("vol1", true, &[]);
        assert!(t.starts_with(
            "Launching heal operation to perform full self heal on volume vol1 has been successful"
        ));
        let t = heal_launched_text("vol1", false, &["s2: timed out".into()]);
        assert!(t.ends_with("Not told (they heal at their next heal-timeout): s2: timed out"));
    }
}
