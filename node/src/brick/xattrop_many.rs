//! [`bp::XattropMany`]: many xattrops made durable by one filesystem sync
//! (a group commit) instead of one fsync per file, with the pending-heal
//! index kept in the same order a single xattrop keeps it: an entry is on
//! disk before counters that need it, and removed only after the counters
//! that no longer need it are (and only while they still do not).

use super::counters::{changes, check_xattrop, counter_stripe, Counters};
use super::*;

/// One op of the batch once its new counters are known.
struct Planned {
    at: usize,
    p: BrickPath,
    updated: Vec<(String, Counters)>,
    /// In the index before, and pending after.
    index: (bool, bool),
}

impl<S: Storage> Brick<S> {
    pub fn xattrop_many(&self, r: &bp::XattropMany) -> FopResult<bp::XattropResults> {
        if r.ops.len() > bp::XATTROP_MANY_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!(
                    "{} xattrops at once; at most {} are made durable together",
                    r.ops.len(),
                    bp::XATTROP_MANY_MAX
                ),
            ));
        }
        let gfids: BTreeSet<Gfid> = r.ops.iter().map(|o| o.gfid).collect();
        if gfids.len() != r.ops.len() {
            return Err(fop(
                Errno::EINVAL,
                "each xattrop of one batch must be on a different gfid",
            ));
        }
        let mut out: bp::XattropResults = vec![Ok(Vec::new()); r.ops.len()];
        let planned = self.write_batch(r, &gfids, &mut out)?;
        // The sync holds no lock: a namespace change or another file's
        // xattrop does not wait for the whole filesystem to be written.
        self.storage
            .sync_all()
            .ctx(|| "sync the counters written".into())?;
        self.leave_index(r, planned, &mut out);
        Ok(out)
    }

    /// Under the namespace lock and every counter stripe the batch
    /// touches (taken in one order: no deadlock with another batch), each
    /// op's index entry that must come first (then one sync), then its
    /// counters. The ops written, for [`Self::leave_index`].
    fn write_batch(
        &self,
        r: &bp::XattropMany,
        gfids: &BTreeSet<Gfid>,
        out: &mut bp::XattropResults,
    ) -> FopResult<Vec<Planned>> {
        let _ns = self.ns.read().expect("ns lock");
        let stripes: BTreeSet<usize> = gfids.iter().map(counter_stripe).collect();
        let _held: Vec<_> = stripes
            .iter()
            .map(|&s| self.counters[s].lock().expect("counter lock"))
            .collect();
        let mut planned = Vec::with_capacity(r.ops.len());
        for (at, op) in r.ops.iter().enumerate() {
            match check_xattrop(op).and_then(|()| self.plan_xattrop(op)) {
                Ok((p, updated, index)) => planned.push(Planned {
                    at,
                    p,
                    updated,
                    index,
                }),
                Err(e) => out[at] = Err(e),
            }
        }
        // Index entries first for the files entering the index...
        let mut entered = false;
        planned.retain(|q| {
            let (indexed, pending_after) = q.index;
            if pending_after {
                self.kept
                    .lock()
                    .expect("kept lock")
                    .forget(&r.ops[q.at].gfid);
            }
            if !pending_after || indexed {
                return true;
            }
            let gfid = r.ops[q.at].gfid;
            match self.index_add(&index_path(&gfid)) {
                Ok(()) => {
                    entered = true;
                    true
                }
                Err(e) => {
                    out[q.at] = Err(fop(e, format!("add {gfid} to the heal index")));
                    false
                }
            }
        });
        if entered {
            self.storage
                .sync_all()
                .ctx(|| "sync the heal index".into())?;
        }
        // ...then the counters (the caller syncs them all at once).
        planned.retain(|q| {
            let gfid = r.ops[q.at].gfid;
            for ((name, c), (_, d)) in q.updated.iter().zip(&r.ops[q.at].deltas) {
                if !changes(d) {
                    continue;
                }
                if let Err(e) = self
                    .storage
                    .setxattr(&q.p, name, &c.encode(), XattrFlags::Any)
                {
                    out[q.at] = Err(fop(e, format!("write {name} on {gfid}")));
                    return false;
                }
            }
            true
        });
        Ok(planned)
    }

    /// After the sync: the index entries of files the batch left with no
    /// pending counter are kept ([`KeptIndex`]), each under its stripe lock
    /// and only if its changelog counters are still all zero (another
    /// xattrop may have raised them since the batch let go of the lock);
    /// the entries the kept set lets go for them are removed after
    /// ([`Brick::let_go`]); each op's result.
    fn leave_index(
        &self,
        r: &bp::XattropMany,
        planned: Vec<Planned>,
        out: &mut bp::XattropResults,
    ) {
        let _ns = self.ns.read().expect("ns lock");
        let mut let_go = Vec::new();
        for q in planned {
            let gfid = r.ops[q.at].gfid;
            let (indexed, pending_after) = q.index;
            if indexed && !pending_after {
                let _stripe = self.counters[counter_stripe(&gfid)]
                    .lock()
                    .expect("counter lock");
                let zero = self
                    .resolve(&gfid)
                    .and_then(|(p, _)| self.changelog_all_zero(&p));
                // Pending again, or gone: the entry stays for the crawl.
                if let Ok(true) = zero {
                    let_go.extend(self.kept.lock().expect("kept lock").keep(gfid));
                }
            }
            out[q.at] = Ok(q
                .updated
                .into_iter()
                .map(|(n, c)| (n, c.into_delta_form()))
                .collect());
        }
        for g in let_go {
            self.let_go(g);
        }
    }
}
