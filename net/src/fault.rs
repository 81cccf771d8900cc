//! Fault points and coverage marks, for the simulator.
//!
//! * [`buggify!`](crate::buggify) is a fault point: `true` only in a
//!   simulator build, only in a run that turned fault points on
//!   ([`enable`]), only at a call site the run chose to activate (each
//!   site is activated or not, once per run, with probability 1/4 at its
//!   first evaluation), and then on one evaluation in 20. Product code
//!   takes a rare timing or error path under it: a delayed reply, a
//!   dropped connection, an early lease check, a smaller batch. Outside the
//!   simulator it is the constant `false` and the path compiles away.
//! * [`mark!`](crate::mark) records that a rare path ran (a heal resumed
//!   after a crash, a lock released because its lease ran out). Marks are
//!   named in [`marks::ALL`]; [`hit`] lists those the process has run, so
//!   a sweep can name every mark no seed reached. Outside the simulator a
//!   mark compiles to nothing.
//!
//! The state is per OS thread: a madsim run has one thread to itself, so
//! runs on other threads (a parallel sweep) neither see nor disturb it and
//! a seed replays the same fault points. The marks hit are per process.

/// Every coverage mark product code names. A mark not in this list is a
/// compile error at the `mark!` (the macro names the constant).
pub mod marks {
    /// A new self-heal daemon's first crawl healed entries (its
    /// predecessor was killed, or its host crashed, with work left).
    pub const HEAL_AT_DAEMON_START: &str = "heal resumed by a new daemon";
    /// A brick released a lock because its holder's connection was gone.
    pub const LOCK_RELEASED_BY_DISCONNECT: &str = "lock released when its holder vanished";
    /// mgmtd's transaction lock expired while held by a silent originator.
    pub const TXN_LOCK_LEASE_EXPIRED: &str = "transaction lock released by lease";
    /// A replicated write had quorum at its pre-op and lost it by the end.
    pub const QUORUM_LOST_MID_WRITE: &str = "quorum lost mid-write";
    /// A brick's client found the brick on another port than the one it
    /// last reached it on (it restarted).
    pub const STALE_PORT_AFTER_RESTART: &str = "stale port after restart";
    /// A name lookup ran into its deadline.
    pub const DNS_DEADLINE_HIT: &str = "DNS deadline hit";
    /// A replicated read was refused: too few copies answered for their
    /// counters to tell a stale one.
    pub const READ_QUORUM_REFUSED: &str = "read refused for want of a read quorum";
    /// Heal settled copies left dirty with no blame, writing its verdict
    /// down as blame first.
    pub const HEAL_SETTLED_DIRTY: &str = "heal settled copies dirty without blame";
    /// A disperse write had fewer good fragments than the set's width.
    pub const DISPERSE_DEGRADED_WRITE: &str = "disperse write with fragments missing";

    /// Every mark, for coverage reports.
    pub const ALL: &[&str] = &[
        HEAL_AT_DAEMON_START,
        LOCK_RELEASED_BY_DISCONNECT,
        TXN_LOCK_LEASE_EXPIRED,
        QUORUM_LOST_MID_WRITE,
        STALE_PORT_AFTER_RESTART,
        DNS_DEADLINE_HIT,
        READ_QUORUM_REFUSED,
        HEAL_SETTLED_DIRTY,
        DISPERSE_DEGRADED_WRITE,
    ];
}

#[cfg(madsim)]
mod imp {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use crate::rng::DetRng;

    /// One site in four is activated in a run...
    const SITE_ACTIVE_IN: u64 = 4;
    /// ...and an active site fires on one evaluation in twenty.
    const FIRE_IN: u64 = 20;

    struct State {
        rng: DetRng,
        /// Per call site (file, line): activated for this run or not.
        sites: BTreeMap<(&'static str, u32), bool>,
        fired: u64,
    }

    thread_local! {
        static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    }

    static HIT: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

    pub fn enable(seed: u64) {
        STATE.with(|s| {
            *s.borrow_mut() = Some(State {
                rng: DetRng::from_seed(seed ^ 0xb066_1f7e_b066_1f7e),
                sites: BTreeMap::new(),
                fired: 0,
            })
        });
    }

    pub fn disable() {
        STATE.with(|s| *s.borrow_mut() = None);
    }

    pub fn fired() -> u64 {
        STATE.with(|s| s.borrow().as_ref().map_or(0, |st| st.fired))
    }

    pub fn buggify_at(file: &'static str, line: u32) -> bool {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(st) = s.as_mut() else {
                return false;
            };
            let active = match st.sites.get(&(file, line)) {
                Some(a) => *a,
                None => {
                    let a = st.rng.below(SITE_ACTIVE_IN) == 0;
                    st.sites.insert((file, line), a);
                    a
                }
            };
            let fire = active && st.rng.below(FIRE_IN) == 0;
            if fire {
                st.fired += 1;
                tracing::debug!(file, line, "buggify fired");
            }
            fire
        })
    }

    pub fn mark(name: &'static str) {
        HIT.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
    }

    pub fn hit() -> BTreeSet<&'static str> {
        HIT.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(not(madsim))]
mod imp {
    use std::collections::BTreeSet;

    pub fn enable(_seed: u64) {}
    pub fn disable() {}
    pub fn fired() -> u64 {
        0
    }
    #[inline(always)]
    pub fn buggify_at(_file: &'static str, _line: u32) -> bool {
        false
    }
    #[inline(always)]
    pub fn mark(_name: &'static str) {}
    pub fn hit() -> BTreeSet<&'static str> {
        BTreeSet::new()
    }
}

/// Turn fault points off for this thread.
pub use imp::disable;
/// Turn fault points on for the runs of this thread, seeded (the
/// simulator calls this at the start of a run that asks for them).
pub use imp::enable;
/// How many fault points fired on this thread since [`enable`].
pub use imp::fired;
/// The coverage marks this process has run.
pub use imp::hit;
#[doc(hidden)]
pub use imp::{buggify_at, mark as mark_hit};

/// The marks of [`marks::ALL`] this process has not run.
pub fn never_hit() -> Vec<&'static str> {
    let hit = hit();
    marks::ALL
        .iter()
        .copied()
        .filter(|m| !hit.contains(m))
        .collect()
}

/// A fault point: see the [module documentation](crate::fault). Always
/// `false` outside the simulator.
#[macro_export]
macro_rules! buggify {
    () => {
        $crate::fault::buggify_at(file!(), line!())
    };
}

/// A coverage mark: `mark!(HEAL_RESUMED_AFTER_KILL)` names a constant of
/// [`marks`](crate::fault::marks). Nothing outside the simulator.
#[macro_export]
macro_rules! mark {
    ($name:ident) => {
        $crate::fault::mark_hit($crate::fault::marks::$name)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_is_listed_once() {
        let set: std::collections::BTreeSet<_> = marks::ALL.iter().collect();
        assert_eq!(set.len(), marks::ALL.len());
    }

    #[cfg(not(madsim))]
    #[test]
    fn outside_the_simulator_nothing_fires() {
        enable(1);
        assert!((0..10_000).all(|_| !crate::buggify!()));
        crate::mark!(DNS_DEADLINE_HIT);
        assert!(hit().is_empty());
        assert_eq!(never_hit().len(), marks::ALL.len());
    }
}
