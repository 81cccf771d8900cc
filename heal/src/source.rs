//! Which copy heals the others when the changelog names none: every copy
//! that took part is dirty (a transaction started) and none blames another
//! (it never reached its post-op, so it was never acknowledged: a client
//! crash or a set-wide failure mid-write). The copies may differ, and any
//! of them is an acceptable outcome for a write nobody was told finished,
//! but they must end the same. The rule is deterministic so that every
//! self-heal daemon, and every rerun of a seed, picks the same copy.
//!
//! The rule (the original system picks the largest file the same way):
//! for data, the largest size, then the latest mtime, then the lowest
//! brick index; for metadata, the latest ctime, then the lowest index.

use mortar_client::afr::{BrickView, Kind};
use mortar_proto::Timespec;

/// What the rule looks at on one candidate copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The brick's index in its set.
    pub brick: usize,
    pub size: u64,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

/// Is this the no-blame, dirty case: some copy is dirty for `kind` and no
/// copy blames any other for it?
pub fn dirty_without_blame(views: &[Option<BrickView>], kind: Kind) -> bool {
    let k = kind as usize;
    let seen: Vec<&BrickView> = views.iter().flatten().collect();
    let dirty = seen.iter().any(|v| v.dirty[k] != 0);
    let blamed = seen.iter().any(|v| v.blames.iter().any(|b| b[k] != 0));
    dirty && !blamed
}

/// In the no-blame, dirty case, when some good copies are clean for
/// `kind` and others dirty: the clean ones (every copy's post-op lowers
/// its dirty mark, so a clean copy finished every transaction it took
/// part in, and with no blame anywhere every acknowledged change reached
/// every copy) are the sources, the dirty ones their sinks. `None` when
/// every good copy is dirty, or none is: then [`pick_source`]'s rule.
///
/// Regression (cluster scenario,
/// `regressions::UNLINK_LOST_IN_POWER_LOSS`): with
/// `storage.fsync-namespace off`, s1 lost an unlink in a power loss and
/// kept the directory's entry dirty mark; the clean copies did not have
/// the name, every copy counted as good, and entry heal reported a
/// split-brain under quorum. Fixed by this rule.
pub fn clean_sources(
    views: &[Option<BrickView>],
    kind: Kind,
    good: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    if !dirty_without_blame(views, kind) {
        return None;
    }
    let k = kind as usize;
    let (clean, dirty): (Vec<usize>, Vec<usize>) = good
        .iter()
        .copied()
        .filter(|&i| views.get(i).is_some_and(Option::is_some))
        .partition(|&i| views[i].as_ref().is_some_and(|v| v.dirty[k] == 0));
    (!clean.is_empty() && !dirty.is_empty()).then_some((clean, dirty))
}

/// The copy that heals the others (see the module's rule). `None` when
/// there is no candidate.
pub fn pick_source(kind: Kind, candidates: &[Candidate]) -> Option<usize> {
    let key = |c: &Candidate| match kind {
        Kind::Data => (c.size, c.mtime, std::cmp::Reverse(c.brick)),
        Kind::Metadata | Kind::Entry => (0, c.ctime, std::cmp::Reverse(c.brick)),
    };
    candidates.iter().max_by_key(|c| key(c)).map(|c| c.brick)
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

    fn ts(secs: i64) -> Timespec {
        Timespec { secs, nsecs: 0 }
    }

    fn c(brick: usize, size: u64, mtime: i64, ctime: i64) -> Candidate {
        Candidate {
            brick,
            size,
            mtime: ts(mtime),
            ctime: ts(ctime),
        }
    }

    fn view(dirty: i64, blames: &[i64]) -> Option<BrickView> {
        Some(BrickView {
            blames: blames.iter().map(|b| [*b, 0, 0]).collect(),
            dirty: [dirty, 0, 0],
        })
    }

    #[test]
    fn the_dirty_without_blame_case() {
        for (views, want, why) in [
            (vec![view(1, &[0, 0, 0]); 3], true, "all dirty, none blamed"),
            (
                vec![view(1, &[0, 0, 0]), view(0, &[0, 0, 0]), None],
                true,
                "one dirty, one clean, one down",
            ),
            (vec![view(0, &[0, 0, 0]); 3], false, "clean"),
            (
                vec![
                    view(1, &[0, 0, 1]),
                    view(1, &[0, 0, 1]),
                    view(1, &[0, 0, 0]),
                ],
                false,
                "blame names the stale copy: the ordinary case",
            ),
            (vec![None, None, None], false, "nothing answered"),
        ] {
            assert_eq!(dirty_without_blame(&views, Kind::Data), want, "{why}");
        }
        // Other kinds' counters do not count.
        let meta_dirty = vec![
            Some(BrickView {
                blames: vec![[0; 3]; 2],
                dirty: [0, 1, 0],
            });
            2
        ];
        assert!(!dirty_without_blame(&meta_dirty, Kind::Data));
        assert!(dirty_without_blame(&meta_dirty, Kind::Metadata));
    }

    #[test]
    fn the_source_rule() {
        for (kind, cands, want, why) in [
            (
                Kind::Data,
                vec![c(0, 10, 5, 5), c(1, 20, 1, 1), c(2, 15, 9, 9)],
                1,
                "largest",
            ),
            (
                Kind::Data,
                vec![c(0, 20, 5, 5), c(1, 20, 7, 1), c(2, 20, 6, 9)],
                1,
                "then latest mtime",
            ),
            (
                Kind::Data,
                vec![c(2, 20, 7, 1), c(0, 20, 7, 5), c(1, 20, 7, 9)],
                0,
                "then lowest brick",
            ),
            (
                Kind::Metadata,
                vec![c(0, 99, 9, 1), c(1, 1, 1, 3), c(2, 5, 5, 2)],
                1,
                "latest ctime",
            ),
            (
                Kind::Metadata,
                vec![c(1, 0, 0, 3), c(0, 0, 0, 3)],
                0,
                "then lowest brick",
            ),
        ] {
            assert_eq!(pick_source(kind, &cands), Some(want), "{why}");
        }
        assert_eq!(pick_source(Kind::Data, &[]), None);
    }
}
