//! Entry operations (create, unlink, mkdir, rename, ...): run on every
//! locked brick, the parents' directory version stepped where they
//! worked.

use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::{Errno, Gfid};

use super::{ec_delta, Disperse};
use crate::afr::{dirty_delta, Kind};
use crate::fop::{Fop, FopOut, FopResult};
use crate::txn;

impl Disperse {
    // ---- entry operations ----

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
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &locked, &op).await;
        let ok = txn::succeeded(&results);
        if !ok.is_empty() {
            let mut deltas = vec![ec_delta(self.step(), 0, 0)];
            let all = ok.len() == self.n();
            if !all {
                deltas.push(dirty_delta(Kind::Entry, 1));
            }
            let post = deltas.clone();
            let _ = txn::fan(&self.rt, &self.name, &self.children, &ok, move |c| {
                let (parents, deltas) = (parents.clone(), post.clone());
                Box::pin(async move {
                    for g in parents {
                        // Durable even when every brick took it: a version
                        // step lost in a power loss (the change itself was
                        // made durable by the brick) leaves a directory
                        // copy older than its names, with no mark to say
                        // so (the cluster scenario found it).
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
        }
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
