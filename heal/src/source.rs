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

/// Entry heal's merge case: every copy is good for entries (none stale),
/// some are dirty, nothing blames anything, and no copy is clean to heal
/// the others from. Each copy then left an entry operation unfinished (a
/// crash took a name it had made but not yet made durable, or a refused
/// create left its mark), so no copy's listing is the right one and the
/// names are merged: a name some copies lack is made there, nothing is
/// removed ([`crate::full::fill_plan`]), and names that differ in gfid
/// are a split-brain.
///
/// Regression (cluster scenario, `regressions::DIRTY_EVERYWHERE_NAME_LOST_BY_A_CRASH`):
/// a failed create left every copy of a directory dirty; a crash then
/// took a new name from one copy. Every copy was a good copy, the
/// missing name read as the good copies disagreeing, and the directory
/// stayed pending for ever. Fixed by merging the names.
pub fn merges_names(views: &[Option<BrickView>], good: &[usize], stale: &[usize]) -> bool {
    stale.is_empty()
        && dirty_without_blame(views, Kind::Entry)
        && clean_sources(views, Kind::Entry, good).is_none()
}

/// See [`mortar_client::afr::clean_sources`]: the clean copies heal the
/// dirty ones (reads use the same rule).
pub use mortar_client::afr::clean_sources;

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
    fn names_are_merged_only_when_every_copy_left_an_entry_operation_unfinished() {
        // Entry counters only: dirty and, per copy, the blame.
        let e = |dirty: i64, blames: &[i64]| {
            Some(BrickView {
                blames: blames.iter().map(|b| [0, 0, *b]).collect(),
                dirty: [0, 0, dirty],
            })
        };
        type Row = (
            &'static str,
            Vec<Option<BrickView>>,
            Vec<usize>,
            Vec<usize>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "dirty everywhere, no blame (seed 284)",
                vec![e(2, &[0, 0, 0]), e(1, &[0, 0, 0]), e(1, &[0, 0, 0])],
                vec![0, 1, 2],
                vec![],
                true,
            ),
            (
                "one copy clean: it heals the others",
                vec![e(1, &[0, 0, 0]), e(0, &[0, 0, 0]), e(1, &[0, 0, 0])],
                vec![0, 1, 2],
                vec![],
                false,
            ),
            (
                "a blame says which copy is stale",
                vec![e(1, &[0, 0, 0]), e(0, &[1, 0, 0]), e(0, &[1, 0, 0])],
                vec![1, 2],
                vec![0],
                false,
            ),
            (
                "nothing marked",
                vec![e(0, &[0, 0, 0]), e(0, &[0, 0, 0]), e(0, &[0, 0, 0])],
                vec![0, 1, 2],
                vec![],
                false,
            ),
            (
                "a data dirty mark is not an entry one",
                vec![
                    view(1, &[0, 0, 0]),
                    view(1, &[0, 0, 0]),
                    view(1, &[0, 0, 0]),
                ],
                vec![0, 1, 2],
                vec![],
                false,
            ),
        ];
        for (what, views, good, stale, want) in rows {
            assert_eq!(merges_names(&views, &good, &stale), want, "{what}");
        }
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
