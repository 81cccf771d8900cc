//! Entry operations (create, unlink, mkdir, rename, ...): run on every
//! locked brick, the parents' directory version stepped where they
//! worked.

use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::{Errno, Gfid};

use super::{ec_delta, Disperse};
use crate::afr::{dirty_delta, Kind};
use crate::fop::{Fop, FopOut, FopResult};
use crate::txn;

/// Counter updates for one brick, as an xattrop carries them.
type Deltas = Vec<(String, bp::CounterDelta)>;

/// An entry operation's post-op on one brick: whether its parents'
/// version steps, and the change to their entry dirty mark (set by the
/// pre-op). `took`: this brick made the change; `all`: every brick of the
/// set did; `any`: at least one did.
///
/// A brick that took it steps the version; the marks come off only when
/// every brick took it. When no brick took it (an error such as EEXIST
/// everywhere) nothing changed and every mark comes off. Otherwise the
/// marks stay for heal.
///
/// Regression (cluster seeds 430, 589): with no pre-op, a version step
/// lost on one brick after every brick took the change left that copy
/// older with no mark anywhere, and heal never looked at it.
pub(crate) fn entry_post_op(took: bool, all: bool, any: bool) -> (bool, i32) {
    match (took, all, any) {
        (true, true, _) => (true, -1),
        (true, false, _) => (true, 0),
        (false, _, false) => (false, -1),
        (false, _, true) => (false, 0),
    }
}

impl Disperse {
    // ---- entry operations ----

    /// Apply `deltas(brick)` to every parent on each of `bricks`, durably
    /// and in order: the bricks where every update worked. A brick with
    /// nothing to apply counts as worked.
    async fn step_parents(
        &self,
        bricks: &[usize],
        parents: &[Gfid],
        deltas: impl Fn(usize) -> Deltas,
    ) -> Vec<usize> {
        // Bricks with the same updates go together: one round in the
        // common case (every brick alike).
        let mut groups: Vec<(Deltas, Vec<usize>)> = Vec::new();
        for &b in bricks {
            let d = deltas(b);
            match groups.iter_mut().find(|(x, _)| *x == d) {
                Some((_, members)) => members.push(b),
                None => groups.push((d, vec![b])),
            }
        }
        let mut worked = Vec::new();
        for (deltas, members) in groups {
            if deltas.is_empty() {
                worked.extend(members);
                continue;
            }
            let parents = parents.to_vec();
            let results = txn::fan(&self.rt, &self.name, &self.children, &members, move |c| {
                let (parents, deltas) = (parents.clone(), deltas.clone());
                Box::pin(async move {
                    for g in parents {
                        c.fop(Fop::Xattrop(bp::Xattrop {
                            gfid: g,
                            deltas: deltas.clone(),
                            durable: true,
                        }))
                        .await?;
                    }
                    Ok(FopOut::Done)
                })
            })
            .await;
            worked.extend(txn::succeeded(&results));
        }
        worked.sort_unstable();
        worked
    }

    /// An entry operation under the name's lock (or the whole directory's
    /// for rename) on every up brick; `parents` get their directory
    /// version stepped where it worked, and a dirty mark for heal when
    /// not every brick took it.
    pub(super) async fn entry_op(
        &self,
        parent: Gfid,
        name: Option<String>,
        parents: Vec<Gfid>,
        op: Fop,
    ) -> FopResult<FopOut> {
        let owner = self.new_lock_owner();
        let lock = |kind: LockKind, wait: Option<u64>| {
            Fop::Entrylk(bp::Entrylk {
                parent,
                name: name.clone(),
                domain: self.name.clone(),
                kind,
                owner,
                wait_ms: wait,
            })
        };
        let locked = self
            .lock_file(&lock, LockKind::Write, true, "changing a directory")
            .await?;
        // Pre-op: every locked brick durably marks the parents dirty for
        // entries before any changes, so a brick that takes the change but
        // misses its version step (a cut, a crash, a lost update) is found
        // by heal: its mark stays, and so do the others' unless every
        // brick took both.
        let pre = vec![dirty_delta(Kind::Entry, 1)];
        let marked = self.step_parents(&locked, &parents, |_| pre.clone()).await;
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &marked, &op).await;
        let ok = txn::succeeded(&results);
        let (all, any) = (ok.len() == self.n(), !ok.is_empty());
        let step = self.step();
        let _ = self
            .step_parents(&marked, &parents, |b| {
                let (version, dirty) = entry_post_op(ok.contains(&b), all, any);
                let mut d = Vec::new();
                if version {
                    d.push(ec_delta(step, 0, 0));
                }
                if dirty != 0 {
                    d.push(dirty_delta(Kind::Entry, dirty));
                }
                d
            })
            .await;
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        if ok.len() >= self.k {
            let r = results
                .into_iter()
                .find(|(_, r)| r.is_ok())
                .map(|(_, r)| r)
                .expect("k succeeded");
            // A new link names a file whose size lives in its fragments.
            if let (Fop::Link(q), Ok(FopOut::Attr(_))) = (&op, &r) {
                return Ok(FopOut::Attr(self.attr(q.gfid).await?));
            }
            return r;
        }
        let first_err = results.into_iter().find_map(|(_, r)| r.err());
        if ok.is_empty() {
            return Err(
                first_err.unwrap_or_else(|| self.too_few(Errno::EIO, 0, "changing a directory"))
            );
        }
        Err(self.pending("the operation took", &ok, first_err))
    }
}

#[cfg(test)]
mod tests {
    use super::entry_post_op;

    #[test]
    fn an_entry_post_op_keeps_the_marks_unless_every_brick_took_it() {
        #[rustfmt::skip]
        let table = [
            // (took, all took, any took) -> (version steps, dirty change)
            ((true,  true,  true),  (true,  -1)),
            ((true,  false, true),  (true,   0)),
            ((false, false, true),  (false,  0)),
            ((false, false, false), (false, -1)),
        ];
        for ((took, all, any), want) in table {
            assert_eq!(entry_post_op(took, all, any), want, "{took} {all} {any}");
        }
    }
}
