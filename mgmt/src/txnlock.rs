//! Cluster-wide transaction locks, one per volume (and one for the pool),
//! held by an owner (peer, transaction id, command) under a lease.
//!
//! Every mgmtd keeps this table for the locks taken on it. A second
//! transaction on a locked volume fails at once, naming who holds the lock;
//! nothing waits. If the owner dies, its lock lapses when the lease runs
//! out, so a crashed originator cannot wedge a volume.

use std::collections::BTreeMap;
use std::time::Duration;

use mortar_net::time::Instant;
use serde::{Deserialize, Serialize};

use crate::error::MgmtError;

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    pub peer: String,
    /// The peer's hostname, for messages.
    pub peer_name: String,
    pub txn_id: u64,
    pub command: String,
    /// Unix seconds when taken.
    pub since: u64,
}

#[derive(Debug, Clone)]
struct Held {
    owner: LockOwner,
    expires: Instant,
}

/// The default lease, in seconds: longer than any phase's deadline, short
/// enough that an operator retrying after an originator crash waits little.
pub const LEASE_SECS: u64 = 30;
/// [`LEASE_SECS`] as a duration.
pub const LEASE_DURATION: Duration = Duration::from_secs(LEASE_SECS);

#[derive(Debug, Default)]
pub struct TxnLocks {
    held: BTreeMap<String, Held>,
}

/// Human form of a Unix time for messages (UTC, to the second).
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

impl TxnLocks {
    /// Take `key` for `owner` until `now + lease`. Re-taking by the same
    /// transaction renews the lease.
    pub fn acquire(
        &mut self,
        key: &str,
        owner: LockOwner,
        now: Instant,
        lease: Duration,
    ) -> Result<(), MgmtError> {
        // A lock always has an owner to name in refusals and to release it
        // (debug only: the request comes from the network).
        debug_assert!(
            !owner.peer.is_empty() && !owner.command.is_empty(),
            "a lock needs an owner: {owner:?}"
        );
        if let Some(h) = self.held.get(key) {
            let same = h.owner.peer == owner.peer && h.owner.txn_id == owner.txn_id;
            if !same && h.expires > now {
                let what = if key == crate::state::GLOBAL_LOCK {
                    "the pool".to_string()
                } else {
                    key.to_string()
                };
                return Err(MgmtError::Busy {
                    what,
                    holder: h.owner.peer_name.clone(),
                    command: h.owner.command.clone(),
                    since: utc(h.owner.since),
                });
            }
            if !same {
                mortar_net::mark!(TXN_LOCK_LEASE_EXPIRED);
                tracing::warn!(key, holder = %h.owner.peer_name, command = %h.owner.command, "lock lease expired; taking it over");
            }
        }
        self.held.insert(
            key.to_string(),
            Held {
                owner,
                expires: now + lease,
            },
        );
        Ok(())
    }

    /// Release `key` if `peer`'s transaction `txn_id` holds it.
    pub fn release(&mut self, key: &str, peer: &str, txn_id: u64) -> bool {
        match self.held.get(key) {
            Some(h) if h.owner.peer == peer && h.owner.txn_id == txn_id => {
                self.held.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Is `key` held by this transaction (lease not expired)?
    pub fn holds(&self, key: &str, peer: &str, txn_id: u64, now: Instant) -> bool {
        self.held
            .get(key)
            .is_some_and(|h| h.owner.peer == peer && h.owner.txn_id == txn_id && h.expires > now)
    }

    /// Locks still in force, for status output.
    pub fn current(&self, now: Instant) -> Vec<(String, LockOwner)> {
        self.held
            .iter()
            .filter(|(_, h)| h.expires > now)
            .map(|(k, h)| (k.clone(), h.owner.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(peer: &str, txn: u64, cmd: &str) -> LockOwner {
        LockOwner {
            peer: peer.into(),
            peer_name: format!("{peer}.example"),
            txn_id: txn,
            command: cmd.into(),
            since: 1_763_700_000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn second_transaction_fails_at_once_naming_the_holder() {
        let mut t = TxnLocks::default();
        let now = mortar_net::Clock::new().now();
        t.acquire(
            "vol1",
            owner("u1", 1, "volume start vol1"),
            now,
            LEASE_DURATION,
        )
        .unwrap();
        let e = t
            .acquire(
                "vol1",
                owner("u2", 9, "volume stop vol1"),
                now,
                LEASE_DURATION,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Another transaction is in progress for vol1 (held by u1.example for volume start vol1 since 2025-11-21 04:40:00 UTC); retry when it finishes"
        );
        // Other volumes are independent; the same transaction renews.
        t.acquire(
            "vol2",
            owner("u2", 9, "volume stop vol2"),
            now,
            LEASE_DURATION,
        )
        .unwrap();
        t.acquire(
            "vol1",
            owner("u1", 1, "volume start vol1"),
            now,
            LEASE_DURATION,
        )
        .unwrap();
        assert!(!t.release("vol1", "u2", 9), "only the owner releases");
        assert!(t.release("vol1", "u1", 1));
        t.acquire(
            "vol1",
            owner("u2", 10, "volume stop vol1"),
            now,
            LEASE_DURATION,
        )
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_owners_lock_lapses_with_its_lease() {
        let mut t = TxnLocks::default();
        let clock = mortar_net::Clock::new();
        t.acquire(
            "vol1",
            owner("u1", 1, "volume create vol1"),
            clock.now(),
            LEASE_DURATION,
        )
        .unwrap();
        clock.sleep(LEASE_DURATION - Duration::from_secs(1)).await;
        assert!(t
            .acquire(
                "vol1",
                owner("u2", 2, "volume delete vol1"),
                clock.now(),
                LEASE_DURATION
            )
            .is_err());
        assert!(t.holds("vol1", "u1", 1, clock.now()));
        clock.sleep(Duration::from_secs(2)).await;
        assert!(!t.holds("vol1", "u1", 1, clock.now()));
        assert!(t.current(clock.now()).is_empty());
        t.acquire(
            "vol1",
            owner("u2", 2, "volume delete vol1"),
            clock.now(),
            LEASE_DURATION,
        )
        .unwrap();
        assert!(
            !t.release("vol1", "u1", 1),
            "the old owner no longer holds it"
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_763_700_000), "2025-11-21 04:40:00 UTC");
    }
}
