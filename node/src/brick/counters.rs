//! Counter xattrs and the pending-heal index: xattrop's atomic adds,
//! and the index entry kept in step with the changelog counters.

use super::xattr::{xattr_access, XattrAccess};
use super::*;

/// What a counter xattr holds: big-endian integers of one width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Counters {
    W32(Vec<i32>),
    W64(Vec<i64>),
}

impl Counters {
    fn parse(raw: &[u8], wide: bool) -> SResult<Counters> {
        let w = if wide { 8 } else { 4 };
        if raw.len() % w != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(if wide {
            Counters::W64(
                raw.chunks(8)
                    .map(|c| i64::from_be_bytes(c.try_into().expect("chunk of 8")))
                    .collect(),
            )
        } else {
            Counters::W32(
                raw.chunks(4)
                    .map(|c| i32::from_be_bytes(c.try_into().expect("chunk of 4")))
                    .collect(),
            )
        })
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            Counters::W32(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
            Counters::W64(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
        }
    }

    fn all_zero(&self) -> bool {
        match self {
            Counters::W32(v) => v.iter().all(|x| *x == 0),
            Counters::W64(v) => v.iter().all(|x| *x == 0),
        }
    }

    /// Add `d` element-wise; overflow is ERANGE (counters never wrap).
    fn add(self, d: &CounterDelta) -> SResult<Counters> {
        fn add_vec<T: Copy + Default + std::ops::Add + num_checked::Checked>(
            mut cur: Vec<T>,
            delta: &[T],
        ) -> SResult<Vec<T>> {
            if cur.len() < delta.len() {
                cur.resize(delta.len(), T::default());
            }
            for (c, d) in cur.iter_mut().zip(delta) {
                *c = c.checked(*d).ok_or(Errno::ERANGE)?;
            }
            Ok(cur)
        }
        match (self, d) {
            (Counters::W32(c), CounterDelta::Add32(d)) => Ok(Counters::W32(add_vec(c, d)?)),
            (Counters::W64(c), CounterDelta::Add64(d)) => Ok(Counters::W64(add_vec(c, d)?)),
            _ => Err(Errno::EINVAL),
        }
    }

    pub(super) fn into_delta_form(self) -> CounterDelta {
        match self {
            Counters::W32(v) => CounterDelta::Add32(v),
            Counters::W64(v) => CounterDelta::Add64(v),
        }
    }
}

mod num_checked {
    pub trait Checked: Sized {
        fn checked(self, other: Self) -> Option<Self>;
    }
    impl Checked for i32 {
        fn checked(self, other: Self) -> Option<Self> {
            self.checked_add(other)
        }
    }
    impl Checked for i64 {
        fn checked(self, other: Self) -> Option<Self> {
            self.checked_add(other)
        }
    }
}

impl<S: Storage> Brick<S> {
    pub(super) fn changelog_all_zero(&self, p: &BrickPath) -> FopResult<bool> {
        for name in self.storage.listxattr(p).ctx(|| format!("listxattr {p}"))? {
            if !xa::is_changelog(&name) {
                continue;
            }
            let raw = match self.storage.getxattr(p, &name) {
                Ok(v) => v,
                Err(Errno::ENODATA) => continue,
                Err(e) => return Err(fop(e, format!("read {name} on {p}"))),
            };
            // Width is unknown here; zero is zero at either width.
            if raw.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Atomically add to counter xattrs and return their new values,
    /// keeping the pending-heal index in step with changelog counters.
    pub fn xattrop(&self, r: &bp::Xattrop) -> FopResult<Vec<(String, CounterDelta)>> {
        check_xattrop(r)?;
        let _ns = self.ns.read().expect("ns lock");
        let _counter_lock = self.counters[counter_stripe(&r.gfid)]
            .lock()
            .expect("counter lock");
        let (p, updated, index) = self.plan_xattrop(r)?;
        let let_go = self.store_counters(&p, r, &updated, index)?;
        drop(_counter_lock);
        if let Some(old) = let_go {
            self.let_go(old);
        }
        Ok(updated
            .into_iter()
            .map(|(n, c)| (n, c.into_delta_form()))
            .collect())
    }

    /// One op's new counters and index state (in the index before, pending
    /// after), read under its stripe lock (held by the caller); nothing is
    /// written.
    #[allow(clippy::type_complexity)]
    pub(super) fn plan_xattrop(
        &self,
        op: &bp::Xattrop,
    ) -> FopResult<(BrickPath, Vec<(String, Counters)>, (bool, bool))> {
        let (p, _) = self.resolve(&op.gfid)?;
        let updated = self.added_counters(&p, op)?;
        let indexed = match self.storage.lstat(&index_path(&op.gfid)) {
            Ok(_) => true,
            Err(Errno::ENOENT) => false,
            Err(e) => return Err(fop(e, "stat index entry")),
        };
        let pending_after = if updated.iter().any(|(n, _)| xa::is_changelog(n)) {
            self.changelog_pending_after(&p, &updated)?
        } else {
            indexed
        };
        Ok((p, updated, (indexed, pending_after)))
    }

    /// Each counter of `r` read from `p` with its delta added; nothing is
    /// written yet.
    pub(super) fn added_counters(
        &self,
        p: &BrickPath,
        r: &bp::Xattrop,
    ) -> FopResult<Vec<(String, Counters)>> {
        let mut updated = Vec::with_capacity(r.deltas.len());
        for (name, d) in &r.deltas {
            let wide = matches!(d, CounterDelta::Add64(_));
            let cur = match self.storage.getxattr(p, name) {
                Ok(raw) => Counters::parse(&raw, wide)
                    .ctx(|| format!("{name} on {} holds a value of another width", r.gfid))?,
                Err(Errno::ENODATA) => {
                    if wide {
                        Counters::W64(Vec::new())
                    } else {
                        Counters::W32(Vec::new())
                    }
                }
                Err(e) => return Err(fop(e, format!("read {name} on {}", r.gfid))),
            };
            let new = cur
                .add(d)
                .ctx(|| format!("{name} on {} would overflow", r.gfid))?;
            updated.push((name.clone(), new));
        }
        Ok(updated)
    }

    /// Whether the file stays pending heal once `updated` (which touches a
    /// changelog counter) is written: one of its changelog counters is
    /// non-zero, or another changelog key on the file is.
    pub(super) fn changelog_pending_after(
        &self,
        p: &BrickPath,
        updated: &[(String, Counters)],
    ) -> FopResult<bool> {
        let op_nonzero = updated
            .iter()
            .any(|(n, c)| xa::is_changelog(n) && !c.all_zero());
        if op_nonzero {
            return Ok(true);
        }
        // Only other changelog keys can keep the file pending now.
        for name in self.storage.listxattr(p).ctx(|| "listxattr".into())? {
            if xa::is_changelog(&name) && !updated.iter().any(|(n, _)| *n == name) {
                let raw = self.storage.getxattr(p, &name).unwrap_or_default();
                if raw.iter().any(|b| *b != 0) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Write the counters, ordering the index entry around them so that
    /// non-zero changelog counters always have one after a crash.
    /// `index` is (indexed before, pending after). An entry whose counters
    /// this leaves clean is kept ([`KeptIndex`]); the gfid the kept set let
    /// go for it, whose entry the caller removes once it has let go of
    /// this stripe ([`Brick::let_go`]).
    fn store_counters(
        &self,
        p: &BrickPath,
        r: &bp::Xattrop,
        updated: &[(String, Counters)],
        index: (bool, bool),
    ) -> FopResult<Option<Gfid>> {
        let (indexed, pending_after) = index;
        let idx = index_path(&r.gfid);
        if pending_after {
            self.kept.lock().expect("kept lock").forget(&r.gfid);
        }
        // Index entry before the counters when entering the index...
        if pending_after && !indexed {
            self.index_add(&idx)
                .map_err(|e| fop(e, format!("add {} to the heal index", r.gfid)))?;
            if r.durable {
                self.storage
                    .fsync(&bp_of(INDEX), false)
                    .ctx(|| "fsync heal index".into())?;
            }
        }
        // The data before the mark that says it is there.
        if syncs_data_first(&r.deltas) {
            self.storage
                .fsync(p, true)
                .ctx(|| format!("fdatasync {} before lowering its dirty mark", r.gfid))?;
        }
        for ((name, c), (_, d)) in updated.iter().zip(&r.deltas) {
            if !changes(d) {
                continue;
            }
            self.storage
                .setxattr(p, name, &c.encode(), XattrFlags::Any)
                .ctx(|| format!("write {name} on {}", r.gfid))?;
        }
        // Durable: the counters on disk before the reply.
        if r.durable {
            self.storage
                .fsync(p, false)
                .ctx(|| format!("fsync {}", r.gfid))?;
        }
        // ...and kept when leaving it: the next write finds it in place.
        if !pending_after && indexed {
            return Ok(self.kept.lock().expect("kept lock").keep(r.gfid));
        }
        Ok(None)
    }

    /// The file `g` is gone: its index entry, kept or pending, goes too
    /// (best effort: startup prunes an entry whose file is gone).
    pub(super) fn drop_index_entry(&self, g: &Gfid) {
        let _ = self.storage.unlink(&index_path(g));
        self.kept.lock().expect("kept lock").forget(g);
    }

    /// Remove the index entry of `g`, which the kept set let go, if its
    /// changelog is still clean; an entry that is pending again, or was
    /// kept again meanwhile, stays. Takes `g`'s stripe, so the caller must
    /// hold no stripe (it holds the namespace lock shared). A failure only
    /// leaves a clean entry behind, which a listing passes over once kept
    /// again and startup prunes.
    pub(super) fn let_go(&self, g: Gfid) {
        let _stripe = self.counters[counter_stripe(&g)]
            .lock()
            .expect("counter lock");
        if self.kept.lock().expect("kept lock").contains(&g) {
            return;
        }
        let clean = self
            .resolve(&g)
            .and_then(|(p, _)| self.changelog_all_zero(&p));
        // Pending again, or gone (its unlink removed the entry): it stays.
        if let Ok(true) = clean {
            match self.storage.unlink(&index_path(&g)) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    tracing::warn!(gfid = %g, error = %e, "cannot remove a clean heal index entry; startup prunes it")
                }
            }
        }
    }

    /// Add index entry `idx`: a hard link to the index base, or, where the
    /// base is missing or has all the links the filesystem allows (65,000
    /// on ext4), an empty file of its own. Already there is fine.
    pub(super) fn index_add(&self, idx: &BrickPath) -> SResult<()> {
        match self.storage.link(&bp_of(INDEX_BASE), idx) {
            Ok(()) | Err(Errno::EEXIST) => return Ok(()),
            Err(Errno::EMLINK | Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        match self.storage.create(idx, 0o600) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn index_all(&self) -> FopResult<Vec<Gfid>> {
        let mut v: Vec<Gfid> = self
            .storage
            .readdir(&bp_of(INDEX))
            .ctx(|| "list the heal index".into())?
            .into_iter()
            .filter_map(|e| Gfid::from_hex(&e.name))
            .collect();
        v.sort();
        Ok(v)
    }

    /// A page of the pending-heal index: cost is proportional to the
    /// number of entries in the index, not to the files on the brick.
    pub fn index_list(&self, r: &bp::IndexList) -> FopResult<bp::IndexListReply> {
        let max = r.max_entries.clamp(1, READDIR_ENTRIES_MAX) as usize;
        let all = self.index_pending()?;
        let start = match r.after {
            Some(a) => all.partition_point(|g| *g <= a),
            None => 0,
        };
        let end = (start + max).min(all.len());
        Ok(bp::IndexListReply {
            gfids: all[start..end].to_vec(),
            eof: end >= all.len(),
        })
    }

    pub fn index_count(&self) -> FopResult<u64> {
        Ok(self.index_pending()?.len() as u64)
    }

    /// The gfids of the index that are pending heal, in order: every entry
    /// but the kept ones whose changelog is still clean, each checked under
    /// its stripe.
    pub(super) fn index_pending(&self) -> FopResult<Vec<Gfid>> {
        let mut all = self.index_all()?;
        let kept: Vec<Gfid> = {
            let k = self.kept.lock().expect("kept lock");
            if k.is_empty() {
                return Ok(all);
            }
            all.iter().copied().filter(|g| k.contains(g)).collect()
        };
        let _ns = self.ns.read().expect("ns lock");
        let mut clean = BTreeSet::new();
        for g in kept {
            let _stripe = self.counters[counter_stripe(&g)]
                .lock()
                .expect("counter lock");
            if !self.kept.lock().expect("kept lock").contains(&g) {
                continue; // pending again since
            }
            let zero = self
                .resolve(&g)
                .and_then(|(p, _)| self.changelog_all_zero(&p));
            if let Ok(true) = zero {
                clean.insert(g);
            }
        }
        all.retain(|g| !clean.contains(g));
        Ok(all)
    }
}

/// Refuse an xattrop before touching the brick: 1 to `XATTROP_KEYS_MAX`
/// distinct keys, each a Mortar counter with a sensible array length.
/// Whether adding `d` changes a counter. A zero delta only reads it (a
/// replicate pre-op reads every blame key this way), so it is not written:
/// an absent key stays absent, which every reader takes as zero.
pub(super) fn changes(d: &CounterDelta) -> bool {
    match d {
        CounterDelta::Add32(v) => v.iter().any(|x| *x != 0),
        CounterDelta::Add64(v) => v.iter().any(|x| *x != 0),
    }
}

pub(super) fn check_xattrop(r: &bp::Xattrop) -> FopResult<()> {
    if r.deltas.is_empty() || r.deltas.len() > XATTROP_KEYS_MAX {
        return Err(fop(
            Errno::EINVAL,
            format!("xattrop takes 1 to {XATTROP_KEYS_MAX} counters"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (name, d) in &r.deltas {
        if xattr_access(name)? == XattrAccess::ReadOnly || !name.starts_with(xa::MORTAR_PREFIX) {
            return Err(fop(
                Errno::EPERM,
                format!(
                    "{name} is not a counter (counters live under {})",
                    xa::MORTAR_PREFIX
                ),
            ));
        }
        let n = match d {
            CounterDelta::Add32(v) => v.len(),
            CounterDelta::Add64(v) => v.len(),
        };
        if n == 0 || n * 8 > XATTR_VALUE_BYTES_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!("{name}: bad counter array length {n}"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(fop(
                Errno::EINVAL,
                format!("{name} appears twice in one xattrop"),
            ));
        }
    }
    Ok(())
}

/// The lock stripe serialising counter updates of `g`.
pub(super) fn counter_stripe(g: &Gfid) -> usize {
    let h =
        g.0.iter()
            .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(*b as usize));
    h % COUNTER_STRIPES
}

/// Whether an xattrop lowers a file's data dirty mark (a post-op): then
/// the brick makes the file's data durable before it changes a counter.
/// A journal commit (any fsync on the filesystem) can otherwise make the
/// lowered mark durable ahead of the data it covers, and power loss then
/// takes the data and leaves a clean copy that differs from the others
/// with nothing to say so.
///
/// Regression (cluster scenario, `regressions::DATA_LOST_UNDER_A_CLEARED_MARK`):
/// s1 lost a file's unsynced 4 KiB in a power loss while its post-op's
/// cleared mark had been committed by another file's fsync; heal saw
/// three clean copies and left s1's empty one. Fixed by this rule.
pub(super) fn syncs_data_first(deltas: &[(String, CounterDelta)]) -> bool {
    deltas.iter().any(|(name, d)| {
        name == xa::DIRTY
            && match d {
                CounterDelta::Add32(v) => v.first().is_some_and(|x| *x < 0),
                CounterDelta::Add64(v) => v.first().is_some_and(|x| *x < 0),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nonzero_delta_is_written() {
        for (d, want) in [
            (CounterDelta::Add32(vec![0, 0, 0]), false),
            (CounterDelta::Add32(vec![0, 0, 1]), true),
            (CounterDelta::Add32(vec![-1]), true),
            (CounterDelta::Add64(vec![0, 0]), false),
            (CounterDelta::Add64(vec![0, 7]), true),
        ] {
            assert_eq!(changes(&d), want, "{d:?}");
        }
    }

    #[test]
    fn only_a_lowered_data_dirty_mark_syncs_data_first() {
        let d = |name: &str, v: Vec<i32>| (name.to_string(), CounterDelta::Add32(v));
        let blame = "trusted.mortar.changelog.vol-client-1";
        for (what, deltas, want) in [
            (
                "post-op of a write",
                vec![d(xa::DIRTY, vec![-1, 0, 0])],
                true,
            ),
            (
                "post-op that also blames",
                vec![d(xa::DIRTY, vec![-1, 0, 0]), d(blame, vec![1, 0, 0])],
                true,
            ),
            ("pre-op raises", vec![d(xa::DIRTY, vec![1, 0, 0])], false),
            (
                "metadata post-op",
                vec![d(xa::DIRTY, vec![0, -1, 0])],
                false,
            ),
            ("entry post-op", vec![d(xa::DIRTY, vec![0, 0, -1])], false),
            ("heal clears a blame", vec![d(blame, vec![-1, 0, 0])], false),
            (
                "a read of the counters",
                vec![d(xa::DIRTY, vec![0, 0, 0])],
                false,
            ),
            ("nothing", vec![], false),
        ] {
            assert_eq!(syncs_data_first(&deltas), want, "{what}");
        }
        let wide = vec![(xa::DIRTY.to_string(), CounterDelta::Add64(vec![-2]))];
        assert!(syncs_data_first(&wide), "64-bit counters too");
    }
}
