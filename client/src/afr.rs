//! Replicate's decisions, as plain functions of what the bricks report.
//!
//! Each brick `i` of a replica set keeps, per file:
//! * `trusted.mortar.changelog.<volume>-client-<j>`: three counters (data,
//!   metadata, entry) saying brick `i` knows of operations brick `j` missed
//!   ("i blames j");
//! * `trusted.mortar.dirty`: three counters raised before an operation and
//!   lowered after it, so an operation cut short by a crash is visible.
//!
//! A write runs as: pre-op (dirty += 1 on every brick taking part), the
//! operation, post-op (dirty -= 1 where it succeeded, and on those bricks
//! blame every brick where it failed or which was down). Nothing here does
//! I/O; the replicate layer gathers counters and applies the plans.

use mortar_proto::brick::{xattr as xa, CounterDelta};
use serde::{Deserialize, Serialize};

/// Which counter of the three an operation concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Data = 0,
    Metadata = 1,
    Entry = 2,
}

/// The change to the three counters (data, metadata, entry) of a
/// changelog or dirty xattr: the one builder every layer uses.
pub fn counters_delta(by: [i32; 3]) -> CounterDelta {
    CounterDelta::Add32(by.to_vec())
}

/// Raise (or lower, `by` < 0) the counter of `kind` alone.
pub fn kind_delta(kind: Kind, by: i32) -> CounterDelta {
    let mut d = [0; 3];
    d[kind as usize] = by;
    counters_delta(d)
}

/// The dirty mark of `kind` raised (pre-op) or lowered (post-op, undo,
/// heal) by `by`.
pub fn dirty_delta(kind: Kind, by: i32) -> (String, CounterDelta) {
    (xa::DIRTY.to_string(), kind_delta(kind, by))
}

/// Quorum policy of a replica set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    /// No quorum: any up brick may take writes (allows split-brain).
    None,
    /// More than half of the set, or exactly half including the first brick.
    Auto,
    /// At least this many bricks.
    Fixed(usize),
}

impl Quorum {
    /// Parse the volume options `cluster.quorum-type` / `quorum-count`.
    pub fn from_options(kind: &str, count: usize) -> Quorum {
        match kind {
            "none" => Quorum::None,
            "fixed" => Quorum::Fixed(count.max(1)),
            _ => Quorum::Auto,
        }
    }

    /// Is a write allowed with the bricks marked `up`?
    pub fn met(&self, up: &[bool]) -> bool {
        let n = up.len();
        let k = up.iter().filter(|u| **u).count();
        match *self {
            Quorum::None => k > 0,
            Quorum::Fixed(need) => k >= need.min(n) && k > 0,
            Quorum::Auto => 2 * k > n || (2 * k == n && up.first().copied().unwrap_or(false)),
        }
    }

    /// Explain a refusal.
    pub fn describe(&self, up: &[bool]) -> String {
        let k = up.iter().filter(|u| **u).count();
        match self {
            Quorum::None => format!("no brick of the replica set is reachable (0 of {})", up.len()),
            Quorum::Fixed(n) => format!(
                "quorum not met: {k} of {} bricks reachable, cluster.quorum-count is {n}",
                up.len()
            ),
            Quorum::Auto => format!(
                "quorum not met: {k} of {} bricks reachable; writes need more than half (or exactly half including the first brick)",
                up.len()
            ),
        }
    }
}

/// What one brick reports about one file: its blame counters for every
/// brick of the set (index = brick), and its dirty counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrickView {
    pub blames: Vec<[i64; 3]>,
    pub dirty: [i64; 3],
}

/// The outcome of examining a file's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// These bricks are good copies (readable, heal sources); the others
    /// need heal from them.
    Sources { good: Vec<usize>, stale: Vec<usize> },
    /// Copies blame each other with no brick free of blame: reading
    /// either would silently pick one side. Reads and writes get EIO.
    SplitBrain { accused: Vec<usize> },
    /// No brick of the set could be asked.
    NoneReachable,
}

/// In the no-blame, dirty case, when some good copies are clean for
/// `kind` and others dirty: the clean ones (every copy's post-op lowers
/// its dirty mark, so a clean copy finished every transaction it took
/// part in, and with no blame anywhere every acknowledged change reached
/// every copy) are the sources, the dirty ones their sinks. `None` when
/// every good copy is dirty, or none is: then [`pick_source`]'s rule.
///
/// Regression (cluster scenario,
/// `regressions::UNLINK_LOST_IN_POWER_LOSS`, in `mortar-scenarios`): with
/// `storage.fsync-namespace off`, s1 lost an unlink in a power loss and
/// kept the directory's entry dirty mark; the clean copies did not have
/// the name, every copy counted as good, and entry heal reported a
/// split-brain under quorum. Fixed by this rule (heal and reads both use
/// it).
pub fn clean_sources(
    views: &[Option<BrickView>],
    kind: Kind,
    good: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    let k = kind as usize;
    let seen = || views.iter().flatten();
    let dirty = seen().any(|v| v.dirty[k] != 0);
    let blamed = seen().any(|v| v.blames.iter().any(|b| b[k] != 0));
    if !dirty || blamed {
        return None;
    }
    let (clean, dirty): (Vec<usize>, Vec<usize>) = good
        .iter()
        .copied()
        .filter(|&i| views.get(i).is_some_and(Option::is_some))
        .partition(|&i| views[i].as_ref().is_some_and(|v| v.dirty[k] == 0));
    (!clean.is_empty() && !dirty.is_empty()).then_some((clean, dirty))
}

/// The bricks a read of `kind` may be served by, in order: the good
/// copies; when no brick answered for the counters, any brick that is up
/// — but never the arbiter for data, which is no data source (before
/// this rule, a read whose counters no brick answered for could go to
/// it).
pub fn read_candidates(
    verdict: &Verdict,
    up: &[usize],
    kind: Kind,
    arbiter: Option<usize>,
) -> Vec<usize> {
    match verdict {
        Verdict::Sources { good, .. } => good.clone(),
        Verdict::SplitBrain { .. } => Vec::new(),
        Verdict::NoneReachable => up
            .iter()
            .copied()
            .filter(|i| kind != Kind::Data || Some(*i) != arbiter)
            .collect(),
    }
}

/// Decide which copies of a file are good, from the views of the bricks
/// that answered (`None` = brick down or did not answer). `arbiter` is the
/// index of an arbiter brick, which holds no data and can never be a data
/// source but whose blame counts.
pub fn examine(views: &[Option<BrickView>], kind: Kind, arbiter: Option<usize>) -> Verdict {
    let n = views.len();
    let answered: Vec<usize> = (0..n).filter(|i| views[*i].is_some()).collect();
    if answered.is_empty() {
        return Verdict::NoneReachable;
    }
    let k = kind as usize;
    // Brick j is accused if some other answering brick blames it.
    let mut accused = vec![false; n];
    for &i in &answered {
        let v = views[i].as_ref().expect("answered");
        for (j, b) in v.blames.iter().enumerate() {
            if j != i && j < n && b[k] > 0 {
                accused[j] = true;
            }
        }
    }
    let eligible = |i: &usize| Some(*i) != arbiter || kind != Kind::Data;
    let good: Vec<usize> = answered
        .iter()
        .copied()
        .filter(|i| !accused[*i])
        .filter(eligible)
        .collect();
    if good.is_empty() {
        // With an arbiter, data copies that blame each other are not the
        // end: the arbiter saw which one missed operations. If it blames
        // exactly one side, the other side is good.
        if let (Some(a), Kind::Data) = (arbiter, kind) {
            if let Some(av) = views.get(a).and_then(|v| v.as_ref()) {
                let unblamed: Vec<usize> = answered
                    .iter()
                    .copied()
                    .filter(|i| *i != a && av.blames.get(*i).is_none_or(|b| b[k] == 0))
                    .collect();
                let blamed_by_arbiter = answered
                    .iter()
                    .any(|i| *i != a && av.blames.get(*i).is_some_and(|b| b[k] > 0));
                if unblamed.len() == 1 && blamed_by_arbiter {
                    let stale = (0..n)
                        .filter(|i| *i != a && !unblamed.contains(i))
                        .collect();
                    return Verdict::Sources {
                        good: unblamed,
                        stale,
                    };
                }
            }
        }
        let accused: Vec<usize> = answered.iter().copied().filter(|i| accused[*i]).collect();
        return Verdict::SplitBrain { accused };
    }
    let stale: Vec<usize> = (0..n)
        .filter(|i| !good.contains(i) && eligible(i))
        .collect();
    Verdict::Sources { good, stale }
}

/// Counter changes a post-op makes on one brick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOp {
    pub brick: usize,
    /// Lower the dirty counter by one.
    pub clear_dirty: bool,
    /// Raise blame on these bricks by one.
    pub blame: Vec<usize>,
}

/// After an operation: `took_part` = bricks that got the pre-op, `ok` =
/// those where the operation succeeded. Bricks that succeeded clear their
/// dirty mark and blame every brick of the set that did not succeed (down
/// ones included). Bricks that failed keep their dirty mark: their state
/// is in doubt until healed.
pub fn post_op(n: usize, took_part: &[usize], ok: &[usize]) -> Vec<PostOp> {
    let failed: Vec<usize> = (0..n).filter(|j| !ok.contains(j)).collect();
    took_part
        .iter()
        .filter(|i| ok.contains(i))
        .map(|&i| PostOp {
            brick: i,
            clear_dirty: true,
            blame: failed.clone(),
        })
        .collect()
}

/// With an arbiter (`replica 3 arbiter 1`), may a write proceed with the
/// bricks `up`, given the current verdict? A write must land on at least one
/// good data brick, or it could make the only good copy stale and leave
/// the arbiter as the only witness: a split-brain by another name.
pub fn arbiter_allows(up: &[bool], verdict: &Verdict, arbiter: usize) -> bool {
    let Verdict::Sources { good, .. } = verdict else {
        return false;
    };
    good.iter().any(|g| *g != arbiter && up[*g])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(dirty: i64, blames: [i64; 3]) -> Option<BrickView> {
        Some(BrickView {
            blames: blames.iter().map(|&b| [b, 0, 0]).collect(),
            dirty: [dirty, 0, 0],
        })
    }

    #[test]
    fn clean_copies_heal_dirty_ones() {
        let all = [0, 1, 2];
        type Row = (
            &'static str,
            Vec<Option<BrickView>>,
            Option<(Vec<usize>, Vec<usize>)>,
        );
        let rows: Vec<Row> = vec![
            (
                "one dirty, two clean",
                vec![v(1, [0; 3]), v(0, [0; 3]), v(0, [0; 3])],
                Some((vec![1, 2], vec![0])),
            ),
            (
                "two dirty, one clean",
                vec![v(1, [0; 3]), v(2, [0; 3]), v(0, [0; 3])],
                Some((vec![2], vec![0, 1])),
            ),
            (
                "all dirty: the documented rule",
                vec![v(1, [0; 3]); 3],
                None,
            ),
            ("all clean: nothing to settle", vec![v(0, [0; 3]); 3], None),
            (
                "a blame decides, not this",
                vec![v(1, [0, 1, 0]), v(0, [0; 3]), v(0, [0; 3])],
                None,
            ),
            (
                "a copy that did not answer is neither",
                vec![v(1, [0; 3]), None, v(0, [0; 3])],
                Some((vec![2], vec![0])),
            ),
        ];
        for (what, views, want) in rows {
            assert_eq!(clean_sources(&views, Kind::Data, &all), want, "{what}");
        }
        // Only the good copies are considered, and only the kind asked.
        let views = vec![v(1, [0; 3]), v(0, [0; 3]), v(0, [0; 3])];
        assert_eq!(
            clean_sources(&views, Kind::Data, &[0, 2]),
            Some((vec![2], vec![0]))
        );
        assert_eq!(clean_sources(&views, Kind::Metadata, &all), None);
    }

    #[test]
    fn an_arbiter_never_serves_data() {
        let sources = Verdict::Sources {
            good: vec![1],
            stale: vec![0],
        };
        let none = Verdict::NoneReachable;
        let split = Verdict::SplitBrain {
            accused: vec![0, 1],
        };
        for (what, verdict, kind, arbiter, want) in [
            ("the good copies", &sources, Kind::Data, Some(2), vec![1]),
            (
                "unknown: every data brick that is up",
                &none,
                Kind::Data,
                Some(2),
                vec![0, 1],
            ),
            (
                "unknown, no arbiter",
                &none,
                Kind::Data,
                None,
                vec![0, 1, 2],
            ),
            (
                "metadata may come from the arbiter",
                &none,
                Kind::Metadata,
                Some(2),
                vec![0, 1, 2],
            ),
            ("split-brain: none", &split, Kind::Data, Some(2), vec![]),
        ] {
            assert_eq!(
                read_candidates(verdict, &[0, 1, 2], kind, arbiter),
                want,
                "{what}"
            );
        }
    }

    fn view(blames: &[[i64; 3]], dirty: [i64; 3]) -> Option<BrickView> {
        Some(BrickView {
            blames: blames.to_vec(),
            dirty,
        })
    }

    const Z: [i64; 3] = [0, 0, 0];
    const D: [i64; 3] = [1, 0, 0];

    #[test]
    fn quorum_rules() {
        let q = Quorum::Auto;
        assert!(q.met(&[true, true, false]));
        assert!(!q.met(&[true, false, false]));
        assert!(
            q.met(&[true, false]),
            "exactly half including the first brick"
        );
        assert!(
            !q.met(&[false, true]),
            "exactly half without the first brick"
        );
        assert!(Quorum::Fixed(2).met(&[false, true, true]));
        assert!(!Quorum::Fixed(3).met(&[true, true, false]));
        assert!(Quorum::None.met(&[false, false, true]));
        assert!(!Quorum::None.met(&[false, false, false]));
        assert!(Quorum::Auto
            .describe(&[true, false, false])
            .contains("1 of 3"));
        assert_eq!(Quorum::from_options("fixed", 2), Quorum::Fixed(2));
        assert_eq!(Quorum::from_options("auto", 9), Quorum::Auto);
    }

    #[test]
    fn clean_copies_are_all_sources() {
        let v = vec![
            view(&[Z, Z, Z], Z),
            view(&[Z, Z, Z], Z),
            view(&[Z, Z, Z], Z),
        ];
        assert_eq!(
            examine(&v, Kind::Data, None),
            Verdict::Sources {
                good: vec![0, 1, 2],
                stale: vec![]
            }
        );
    }

    #[test]
    fn a_brick_that_missed_writes_is_stale_even_while_down() {
        // 0 and 1 blame 2 (it was down for a write); 2 does not answer.
        let v = vec![view(&[Z, Z, D], Z), view(&[Z, Z, D], Z), None];
        assert_eq!(
            examine(&v, Kind::Data, None),
            Verdict::Sources {
                good: vec![0, 1],
                stale: vec![2]
            }
        );
        // 2 is back and blames nobody: still stale.
        let v = vec![
            view(&[Z, Z, D], Z),
            view(&[Z, Z, D], Z),
            view(&[Z, Z, Z], Z),
        ];
        assert_eq!(
            examine(&v, Kind::Data, None),
            Verdict::Sources {
                good: vec![0, 1],
                stale: vec![2]
            }
        );
        // Blame is per kind: metadata is fine.
        assert_eq!(
            examine(&v, Kind::Metadata, None),
            Verdict::Sources {
                good: vec![0, 1, 2],
                stale: vec![]
            }
        );
    }

    #[test]
    fn mutual_blame_is_split_brain() {
        let v = vec![view(&[Z, D], Z), view(&[D, Z], Z)];
        assert_eq!(
            examine(&v, Kind::Data, None),
            Verdict::SplitBrain {
                accused: vec![0, 1]
            }
        );
        assert_eq!(
            examine(&[None, None], Kind::Data, None),
            Verdict::NoneReachable
        );
    }

    #[test]
    fn the_arbiter_breaks_ties_but_never_serves_data() {
        // Data bricks 0 and 1 blame each other; the arbiter (2) blames 1:
        // the tie is broken, 0 is good.
        let v = vec![
            view(&[Z, D, Z], Z),
            view(&[D, Z, Z], Z),
            view(&[Z, D, Z], Z),
        ];
        assert_eq!(
            examine(&v, Kind::Data, Some(2)),
            Verdict::Sources {
                good: vec![0],
                stale: vec![1]
            }
        );
        // The arbiter blames neither (or both): a real split-brain.
        let v = vec![
            view(&[Z, D, Z], Z),
            view(&[D, Z, Z], Z),
            view(&[Z, Z, Z], Z),
        ];
        assert!(matches!(
            examine(&v, Kind::Data, Some(2)),
            Verdict::SplitBrain { .. }
        ));
        let v = vec![
            view(&[Z, D, Z], Z),
            view(&[D, Z, Z], Z),
            view(&[D, D, Z], Z),
        ];
        assert!(matches!(
            examine(&v, Kind::Data, Some(2)),
            Verdict::SplitBrain { .. }
        ));
        // 1 was down and is blamed by 0 and the arbiter: 0 is the source,
        // the arbiter is never a data source.
        let v = vec![
            view(&[Z, D, Z], Z),
            view(&[Z, Z, Z], Z),
            view(&[Z, D, Z], Z),
        ];
        assert_eq!(
            examine(&v, Kind::Data, Some(2)),
            Verdict::Sources {
                good: vec![0],
                stale: vec![1]
            }
        );
        // For metadata the arbiter is a copy like any other.
        assert_eq!(
            examine(&v, Kind::Metadata, Some(2)),
            Verdict::Sources {
                good: vec![0, 1, 2],
                stale: vec![]
            }
        );
        // A write with 0 down would land only on 1 (stale) and the arbiter.
        let verdict = examine(&v, Kind::Data, Some(2));
        assert!(!arbiter_allows(&[false, true, true], &verdict, 2));
        assert!(arbiter_allows(&[true, false, true], &verdict, 2));
    }

    #[test]
    fn post_op_blames_exactly_the_bricks_that_did_not_succeed() {
        // 3 bricks; 2 was down; 1 failed the write.
        let plan = post_op(3, &[0, 1], &[0]);
        assert_eq!(
            plan,
            vec![PostOp {
                brick: 0,
                clear_dirty: true,
                blame: vec![1, 2]
            }]
        );
        // All succeeded: only dirty is cleared.
        let plan = post_op(3, &[0, 1, 2], &[0, 1, 2]);
        assert!(plan.iter().all(|p| p.clear_dirty && p.blame.is_empty()));
        assert_eq!(plan.len(), 3);
    }
}
