//! Index entries kept after their file's changelog went clean.
//!
//! A replicated write raises `dirty` (the file enters the pending-heal
//! index: a link, then an fsync of the index directory) and lowers it
//! again (the entry is removed). A file written over and over paid that
//! link, directory fsync and unlink on every write. Now the post-op that
//! leaves the counters clean keeps the entry and notes the gfid here; the
//! next pre-op finds the entry in place and only writes its counter.
//!
//! "Non-zero changelog counter ⇒ index entry" still holds: an entry is
//! only ever kept, never missing. What changes is that an entry no longer
//! means "pending": the index listing and count pass over kept entries
//! whose counters are still clean. The set is bounded; the oldest gfid it
//! lets go has its entry removed (if still clean), as before. After a
//! crash the set is empty and startup prunes every clean entry.

use std::collections::BTreeMap;

use mortar_proto::Gfid;

/// Most index entries a brick keeps for files whose counters are clean.
/// A kept entry costs a name in `.mortar/index` and a check in each index
/// listing; 1024 covers the files a client is writing at once many times
/// over.
pub const INDEX_KEPT_MAX: usize = 1024;

/// The gfids whose clean entries are kept, oldest first.
#[derive(Debug, Default)]
pub struct KeptIndex {
    by_age: BTreeMap<u64, Gfid>,
    age_of: BTreeMap<Gfid, u64>,
    next: u64,
}

impl KeptIndex {
    /// Note `g`'s entry as kept clean. The gfid let go to stay within
    /// [`INDEX_KEPT_MAX`], if any: its entry should be removed.
    pub fn keep(&mut self, g: Gfid) -> Option<Gfid> {
        if self.age_of.contains_key(&g) {
            return None;
        }
        self.age_of.insert(g, self.next);
        self.by_age.insert(self.next, g);
        self.next += 1;
        let out = if self.by_age.len() > INDEX_KEPT_MAX {
            let (_, old) = self
                .by_age
                .pop_first()
                .expect("over the bound, so not empty");
            self.age_of.remove(&old);
            Some(old)
        } else {
            None
        };
        debug_assert_eq!(self.by_age.len(), self.age_of.len());
        debug_assert!(self.by_age.len() <= INDEX_KEPT_MAX);
        out
    }

    /// `g` is pending again (or gone): its entry is no longer kept clean.
    pub fn forget(&mut self, g: &Gfid) {
        if let Some(age) = self.age_of.remove(g) {
            self.by_age.remove(&age);
        }
    }

    pub fn contains(&self, g: &Gfid) -> bool {
        self.age_of.contains_key(g)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_age.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(i: u128) -> Gfid {
        Gfid::from_u128(0x1000 + i)
    }

    #[test]
    fn the_oldest_kept_entry_is_let_go_at_the_bound() {
        let mut k = KeptIndex::default();
        for i in 0..INDEX_KEPT_MAX as u128 {
            assert_eq!(k.keep(g(i)), None, "within the bound");
        }
        assert_eq!(k.keep(g(0)), None, "kept already: nothing changes");
        assert_eq!(k.len(), INDEX_KEPT_MAX);
        assert_eq!(
            k.keep(g(9999)),
            Some(g(0)),
            "over the bound: the oldest goes"
        );
        assert!(!k.contains(&g(0)));
        assert!(k.contains(&g(9999)));
        assert_eq!(k.len(), INDEX_KEPT_MAX);
    }

    #[test]
    fn a_forgotten_gfid_is_not_let_go_later() {
        let mut k = KeptIndex::default();
        k.keep(g(1));
        k.keep(g(2));
        k.forget(&g(1));
        k.forget(&g(7)); // never kept: nothing to do
        assert!(!k.contains(&g(1)));
        assert_eq!(k.len(), 1);
        // Kept again after it was pending: it is the newest now.
        k.keep(g(1));
        for i in 3..(INDEX_KEPT_MAX as u128 + 1) {
            assert_eq!(k.keep(g(i)), None);
        }
        assert_eq!(k.keep(g(5000)), Some(g(2)), "g(2) is the oldest");
        assert_eq!(k.keep(g(5001)), Some(g(1)), "then g(1), kept after g(2)");
    }
}
