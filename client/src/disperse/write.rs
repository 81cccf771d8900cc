//! File changes (write, truncate, setattr, xattrs) as transactions under
//! the whole-file lock: pre-op, the change on the current group, post-op
//! planned by [`post_op_plan`].

use bytes::Bytes;
use mortar_proto::brick::{self as bp, CounterDelta, LockKind, FILE_BYTES_MAX};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use super::{current, ec_delta, geometry, Current, Disperse, FragInfo, EC_XATTR};
use crate::afr::{dirty_delta, Kind};
use crate::fop::{shape_error, Fop, FopOut, FopResult};
use crate::txn;

/// Where a change landed: `full` took all of it, `partial` may hold part
/// of it (they get a version of their own), the rest were untouched.
#[derive(Debug)]
pub(super) struct Applied {
    full: Vec<usize>,
    partial: Vec<usize>,
    err: Option<FopError>,
}

impl Applied {
    /// A change that stopped before its end: the bricks still taking it
    /// (`alive`) hold only part of it once any piece was sent (`started`);
    /// those `dropped` on the way do too.
    fn stopped(
        alive: Vec<usize>,
        mut dropped: Vec<usize>,
        err: FopError,
        started: bool,
    ) -> Applied {
        if started {
            dropped.extend(alive);
        }
        Applied {
            full: Vec::new(),
            partial: dropped,
            err: Some(err),
        }
    }
}

/// What the post-op of a file change does, given where it landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOpPlan {
    /// Nothing changed anywhere: take the pre-op's marks back.
    Undo,
    /// `own_version`: bricks that may hold part of the change, each given
    /// a version of its own so they are never grouped with anything until
    /// heal rebuilds them; `record`: bricks that took all of it, given the
    /// new version and size; `clear_dirty`: their dirty mark goes only
    /// when every brick of the set took the change.
    Record {
        own_version: Vec<usize>,
        record: Vec<usize>,
        clear_dirty: bool,
    },
}

/// Plan the post-op of a change to a set of `n` bricks that landed whole
/// on `full` and in part on `partial` (disjoint). The change is
/// acknowledged only when `k` bricks of `record` recorded it.
pub fn post_op_plan(n: usize, full: &[usize], partial: &[usize]) -> PostOpPlan {
    debug_assert!(
        full.iter().all(|i| !partial.contains(i)),
        "{full:?} / {partial:?}"
    );
    debug_assert!(full.len() + partial.len() <= n);
    if full.is_empty() && partial.is_empty() {
        return PostOpPlan::Undo;
    }
    PostOpPlan::Record {
        own_version: partial.to_vec(),
        record: full.to_vec(),
        clear_dirty: full.len() == n,
    }
}

/// A file change run as a transaction.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Write(u64, Bytes),
    Truncate(u64),
    /// setattr, setxattr, removexattr: sent as is to the current group.
    Meta(Fop),
}

/// The pre-op's outcome: the bricks that took the dirty mark, and what
/// each said of its fragment.
struct Marked {
    bricks: Vec<usize>,
    infos: Vec<Option<FragInfo>>,
}

impl Disperse {
    pub(super) async fn file_txn(
        &self,
        gfid: Gfid,
        kind: Kind,
        change: Change,
    ) -> FopResult<FopOut> {
        let lock = self.inode_lock(gfid);
        let locked = self
            .lock_file(&lock, LockKind::Write, true, "changing a file")
            .await?;
        let r = self.file_txn_locked(gfid, kind, change, &locked).await;
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        r
    }

    pub async fn xattrop_on(
        &self,
        idx: &[usize],
        gfid: Gfid,
        deltas: Vec<(String, CounterDelta)>,
        durable: bool,
    ) -> Vec<(usize, FopResult<FopOut>)> {
        let q = Fop::Xattrop(bp::Xattrop {
            gfid,
            deltas,
            durable,
        });
        txn::fan_op(&self.rt, &self.name, &self.children, idx, &q).await
    }

    async fn file_txn_locked(
        &self,
        gfid: Gfid,
        kind: Kind,
        change: Change,
        locked: &[usize],
    ) -> FopResult<FopOut> {
        let marked = self.pre_op(gfid, kind, locked).await?;
        let (cur, old_size) = self.judge(gfid, kind, &marked).await?;
        // Stale locked fragments keep their dirty mark: they missed
        // updates, and heal will find them by it.
        let good = cur.bricks;
        let (applied, new_size, reply) = self
            .apply(gfid, &change, &good, old_size, &marked.bricks, kind)
            .await?;
        self.post_op(gfid, kind, applied, &good, old_size, new_size)
            .await?;
        let fix = |mut a: Attr| {
            if a.kind == FileKind::Regular {
                a.size = new_size;
                a.blocks *= self.k as u64;
            }
            a
        };
        Ok(match (change, reply) {
            (Change::Write(_, data), _) => FopOut::Written(bp::WriteReply {
                written: data.len() as u64,
                size: new_size,
            }),
            (_, Some(FopOut::Attr(a))) => FopOut::Attr(fix(a)),
            (_, Some(other)) => other,
            (_, None) => FopOut::Done,
        })
    }

    /// Take back the pre-op's dirty mark on `idx`.
    async fn undo_pre_op(&self, gfid: Gfid, kind: Kind, idx: &[usize]) {
        let _ = self
            .xattrop_on(idx, gfid, vec![dirty_delta(kind, -1)], false)
            .await;
    }

    /// Pre-op: mark every locked fragment dirty (durably, before any data
    /// moves) and read its version and size. Refused (marks taken back)
    /// when fewer than [`Disperse::write_minimum`] took it.
    async fn pre_op(&self, gfid: Gfid, kind: Kind, locked: &[usize]) -> FopResult<Marked> {
        let pre = self
            .xattrop_on(
                locked,
                gfid,
                vec![dirty_delta(kind, 1), ec_delta(0, 0, 0)],
                true,
            )
            .await;
        let mut infos = vec![None; self.n()];
        let mut bricks = Vec::new();
        let mut pre_err = None;
        for (i, r) in pre {
            match r {
                Ok(FopOut::Counters(c)) => {
                    bricks.push(i);
                    infos[i] = Some(
                        c.iter()
                            .find(|(name, _)| name == EC_XATTR)
                            .map(|(_, d)| FragInfo::from_delta(d))
                            .unwrap_or_default(),
                    );
                }
                Ok(other) => pre_err = Some(shape_error("xattrop", &other)),
                Err(e) => pre_err = Some(e),
            }
        }
        if bricks.len() < self.n() && bricks.len() >= self.write_minimum() {
            mortar_net::mark!(DISPERSE_DEGRADED_WRITE);
        }
        if bricks.len() < self.write_minimum() {
            self.undo_pre_op(gfid, kind, &bricks).await;
            if let (true, Some(e)) = (bricks.is_empty(), pre_err) {
                return Err(e);
            }
            return Err(self.too_few_to_write(bricks.len(), "changing a file"));
        }
        Ok(Marked { bricks, infos })
    }

    /// The current generation the change applies to, and the file's size;
    /// refused (marks taken back) when it is not held by enough bricks.
    async fn judge(&self, gfid: Gfid, kind: Kind, marked: &Marked) -> FopResult<(Current, u64)> {
        let cur = match current(&marked.infos, self.k, kind) {
            Ok(c) => c,
            Err(d) => {
                self.undo_pre_op(gfid, kind, &marked.bricks).await;
                let e = self.disagree(gfid, &d);
                if marked.bricks.len() < self.n() {
                    // The current generation may be on the bricks not
                    // asked: a refusal, nothing was touched.
                    return Err(FopError::new(
                        Errno::EROFS,
                        format!(
                            "{}; refusing to change it until every brick answers",
                            e.detail
                        ),
                    ));
                }
                return Err(e);
            }
        };
        // The size, from the current data generation (a metadata change
        // is judged by metadata versions, but reports the real size).
        let old_size = match kind {
            Kind::Data => cur.info.size,
            _ => current(&marked.infos, self.k, Kind::Data).map_or(cur.info.size, |d| d.info.size),
        }
        .max(0) as u64;
        if cur.bricks.len() < self.write_minimum() {
            // Readable, but a change now would have no margin.
            self.undo_pre_op(gfid, kind, &marked.bricks).await;
            return Err(self.too_few_to_write(cur.bricks.len(), "changing a file"));
        }
        Ok((cur, old_size))
    }

    /// Send the change to the current group `good`: where it landed, the
    /// new size, and a brick's reply. Past the size limit: EFBIG (marks on
    /// `marked` taken back).
    async fn apply(
        &self,
        gfid: Gfid,
        change: &Change,
        good: &[usize],
        old_size: u64,
        marked: &[usize],
        kind: Kind,
    ) -> FopResult<(Applied, u64, Option<FopOut>)> {
        match change {
            Change::Write(off, data) => {
                let end = off
                    .checked_add(data.len() as u64)
                    .filter(|e| *e <= FILE_BYTES_MAX);
                let Some(end) = end else {
                    self.undo_pre_op(gfid, kind, marked).await;
                    return Err(FopError::new(
                        Errno::EFBIG,
                        format!("{}: a write at {off} of {} bytes would pass the file size limit of {FILE_BYTES_MAX} bytes", self.name, data.len()),
                    ));
                };
                let applied = self.write_fragments(gfid, good, old_size, *off, data).await;
                let size = if data.is_empty() {
                    old_size
                } else {
                    old_size.max(end)
                };
                Ok((applied, size, None))
            }
            Change::Truncate(t) => {
                if *t > FILE_BYTES_MAX {
                    self.undo_pre_op(gfid, kind, marked).await;
                    return Err(FopError::new(
                        Errno::EFBIG,
                        format!(
                            "{}: {t} bytes is past the file size limit of {FILE_BYTES_MAX} bytes",
                            self.name
                        ),
                    ));
                }
                let (applied, attr) = self.truncate_fragments(gfid, good, old_size, *t).await;
                Ok((applied, *t, attr))
            }
            Change::Meta(op) => {
                let results = txn::fan_op(&self.rt, &self.name, &self.children, good, op).await;
                let reply = results
                    .iter()
                    .find(|(_, r)| r.is_ok())
                    .and_then(|(_, r)| r.clone().ok());
                // A metadata change is whole or not at all on a brick.
                let applied = Applied {
                    full: txn::succeeded(&results),
                    partial: Vec::new(),
                    err: results.into_iter().find_map(|(_, r)| r.err()),
                };
                Ok((applied, old_size, reply))
            }
        }
    }

    /// Record where the change landed ([`post_op_plan`]); EIO (pending)
    /// unless `k` bricks recorded the new version.
    async fn post_op(
        &self,
        gfid: Gfid,
        kind: Kind,
        applied: Applied,
        good: &[usize],
        old_size: u64,
        new_size: u64,
    ) -> FopResult<()> {
        let Applied {
            full,
            partial,
            err: mut first_err,
        } = applied;
        debug_assert!(full.iter().chain(&partial).all(|i| good.contains(i)));
        let (own_version, record, clear_dirty) = match post_op_plan(self.n(), &full, &partial) {
            PostOpPlan::Undo => {
                // Nothing was changed anywhere (refused alike, or failed
                // before the first fragment was sent).
                self.undo_pre_op(gfid, kind, good).await;
                return Err(
                    first_err.unwrap_or_else(|| self.too_few(Errno::EIO, 0, "changing a file"))
                );
            }
            PostOpPlan::Record {
                own_version,
                record,
                clear_dirty,
            } => (own_version, record, clear_dirty),
        };
        for &i in &own_version {
            let _ = self
                .xattrop_on(&[i], gfid, vec![ec_delta(self.step(), 0, 0)], true)
                .await;
        }
        let step = self.step();
        let (dv, mv) = match kind {
            Kind::Data => (step, 0),
            _ => (0, step),
        };
        let mut recorded = Vec::new();
        if !record.is_empty() {
            let mut deltas = vec![ec_delta(dv, mv, new_size as i64 - old_size as i64)];
            if clear_dirty {
                deltas.push(dirty_delta(kind, -1));
            }
            let post = self.xattrop_on(&record, gfid, deltas, true).await;
            recorded = txn::succeeded(&post);
            if first_err.is_none() {
                first_err = post.into_iter().find_map(|(_, r)| r.err());
            }
        }
        if recorded.len() < self.k {
            let what = format!("the change to {gfid} was recorded");
            return Err(self.pending(&what, &recorded, first_err));
        }
        Ok(())
    }

    /// Write `data` at `off` into the fragments of `good` (of a file of
    /// `old_size` bytes) in pieces of whole stripes
    /// ([`geometry::pieces`]): partial head and tail stripes are read,
    /// merged and re-encoded. A brick that fails a piece takes no more;
    /// the sequence stops when fewer than `k` are left.
    async fn write_fragments(
        &self,
        gfid: Gfid,
        good: &[usize],
        old_size: u64,
        off: u64,
        data: &Bytes,
    ) -> Applied {
        let mut alive: Vec<usize> = good.to_vec();
        let mut dropped: Vec<usize> = Vec::new();
        let mut err = None;
        for (start, end) in geometry::pieces(off, data.len() as u64, self.stripe()) {
            let started = start > off;
            if alive.len() < self.k {
                let e = FopError::new(
                    Errno::EIO,
                    format!(
                        "{}: writing {gfid} failed on too many bricks (only {} of the {} needed took it); it is pending heal{}",
                        self.name,
                        alive.len(),
                        self.k,
                        err.map(|e: FopError| format!(" ({e})")).unwrap_or_default()
                    ),
                );
                return Applied::stopped(alive, dropped, e, started);
            }
            let bytes = &data[(start - off) as usize..(end - off) as usize];
            let frags = match self
                .encode_piece(gfid, &alive, old_size, start, bytes)
                .await
            {
                Ok(f) => f,
                Err(e) => return Applied::stopped(alive, dropped, e, started),
            };
            let (s0, _) = self.span(start, end);
            let results = self
                .write_each(gfid, &alive, s0 / self.k as u64, &frags)
                .await;
            for (i, r) in results {
                if let Err(e) = r {
                    err = Some(e);
                    alive.retain(|x| *x != i);
                    dropped.push(i);
                }
            }
        }
        Applied {
            full: alive,
            partial: dropped,
            err,
        }
    }

    /// The fragments of the piece `bytes` at `start`: its stripes, with
    /// the old data of a partial head or tail stripe read from `alive`
    /// and merged in.
    async fn encode_piece(
        &self,
        gfid: Gfid,
        alive: &[usize],
        old_size: u64,
        start: u64,
        bytes: &[u8],
    ) -> FopResult<Vec<Bytes>> {
        let s = self.stripe();
        let end = start + bytes.len() as u64;
        let (s0, s1) = self.span(start, end);
        let mut buf = vec![0u8; (s1 - s0) as usize];
        for at in geometry::stripes_to_merge(s, start, end, old_size) {
            let old = self.decode_range(gfid, alive, at, at + s).await?;
            let i = (at - s0) as usize;
            buf[i..i + s as usize].copy_from_slice(&old);
        }
        let at = (start - s0) as usize;
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.encode(&buf)
    }

    /// Encode whole stripes into one fragment per brick.
    pub fn encode(&self, buf: &[u8]) -> FopResult<Vec<Bytes>> {
        match self.codec.encode(buf) {
            Ok(f) => Ok(f.into_iter().map(Bytes::from).collect()),
            Err(e) => Err(FopError::new(
                Errno::EIO,
                format!("{}: encoding: {e}", self.name),
            )),
        }
    }

    /// Write fragment `frags[i]` to brick `i` for each `i` in `idx`.
    pub async fn write_each(
        &self,
        gfid: Gfid,
        idx: &[usize],
        foff: u64,
        frags: &[Bytes],
    ) -> Vec<(usize, FopResult<FopOut>)> {
        let handles: Vec<_> = idx
            .iter()
            .map(|&i| {
                let c = self.children[i].clone();
                let f = frags[i].clone();
                (
                    i,
                    self.rt.spawn(async move {
                        c.fop(Fop::Write(bp::Write { gfid, offset: foff }, f)).await
                    }),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for (i, h) in handles {
            let r = h.await.ok().flatten().unwrap_or_else(|| {
                Err(FopError::new(
                    Errno::EIO,
                    format!("{}: write on child {i} was cancelled", self.name),
                ))
            });
            out.push((i, r));
        }
        out
    }

    /// Truncate the file to `t`: a new partial last stripe is re-encoded
    /// with zeros past `t` (so a later extension reads zeros), and every
    /// fragment file is cut to whole stripes.
    async fn truncate_fragments(
        &self,
        gfid: Gfid,
        good: &[usize],
        old_size: u64,
        t: u64,
    ) -> (Applied, Option<FopOut>) {
        let mut alive = good.to_vec();
        let mut dropped = Vec::new();
        let mut err = None;
        let mut started = false;
        if let Some(s0) = geometry::truncate_stripe(self.stripe(), t, old_size) {
            let frags = match self.zeroed_last_stripe(gfid, good, s0, t).await {
                Ok(f) => f,
                Err(e) => {
                    let nothing = Applied {
                        full: Vec::new(),
                        partial: Vec::new(),
                        err: Some(e),
                    };
                    return (nothing, None);
                }
            };
            started = true;
            for (i, r) in self
                .write_each(gfid, &alive.clone(), s0 / self.k as u64, &frags)
                .await
            {
                if let Err(e) = r {
                    err = Some(e);
                    alive.retain(|x| *x != i);
                    dropped.push(i);
                }
            }
        }
        if started && alive.len() < self.k {
            let e = FopError::new(
                Errno::EIO,
                format!(
                    "{}: truncating {gfid} failed on too many bricks; it is pending heal{}",
                    self.name,
                    err.map(|e: FopError| format!(" ({e})")).unwrap_or_default()
                ),
            );
            return (Applied::stopped(alive, dropped, e, true), None);
        }
        let q = Fop::Truncate(bp::Truncate {
            gfid,
            size: self.fragment_len(t),
        });
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &alive, &q).await;
        let reply = results
            .iter()
            .find(|(_, r)| r.is_ok())
            .and_then(|(_, r)| r.clone().ok());
        for (i, r) in results {
            if let Err(e) = r {
                err = Some(e);
                alive.retain(|x| *x != i);
                // A brick whose last stripe was rewritten but not cut is
                // partly changed; one that refused the cut alone is not.
                if started {
                    dropped.push(i);
                }
            }
        }
        let applied = Applied {
            full: alive,
            partial: dropped,
            err,
        };
        (applied, reply)
    }

    /// The fragments of the stripe at `s0` with zeros from `t` on.
    async fn zeroed_last_stripe(
        &self,
        gfid: Gfid,
        good: &[usize],
        s0: u64,
        t: u64,
    ) -> FopResult<Vec<Bytes>> {
        let mut buf = self
            .decode_range(gfid, good, s0, s0 + self.stripe())
            .await?;
        buf[(t - s0) as usize..].fill(0);
        self.encode(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(own: &[usize], rec: &[usize], clear: bool) -> PostOpPlan {
        PostOpPlan::Record {
            own_version: own.to_vec(),
            record: rec.to_vec(),
            clear_dirty: clear,
        }
    }

    #[test]
    fn post_op_plan_table() {
        // (n, full, partial) -> plan, on a 4 + 2 set.
        let cases: [(usize, Vec<usize>, Vec<usize>, PostOpPlan); 5] = [
            (
                6,
                vec![0, 1, 2, 3, 4, 5],
                vec![],
                record(&[], &[0, 1, 2, 3, 4, 5], true),
            ),
            (
                6,
                vec![0, 1, 2, 3, 4],
                vec![],
                record(&[], &[0, 1, 2, 3, 4], false),
            ),
            (
                6,
                vec![0, 1, 2, 3],
                vec![5],
                record(&[5], &[0, 1, 2, 3], false),
            ),
            (
                6,
                vec![],
                vec![0, 1, 2, 3, 4],
                record(&[0, 1, 2, 3, 4], &[], false),
            ),
            (6, vec![], vec![], PostOpPlan::Undo),
        ];
        for (n, full, partial, want) in cases {
            assert_eq!(
                post_op_plan(n, &full, &partial),
                want,
                "{full:?} / {partial:?}"
            );
        }
    }

    /// Postmortem (7f5eeb4): a write or truncate that failed part-way
    /// was recorded on no brick or on all alike, so bricks holding part of
    /// it could be grouped with whole ones and decoded together; now the
    /// bricks that took all of it get the post-op and those that took part
    /// a version of their own.
    #[test]
    fn regression_a_write_that_fails_part_way_gives_partial_bricks_their_own_version() {
        let e = || FopError::new(Errno::EIO, "test");
        // Stopped after the first piece: every brick holds part of it.
        let a = Applied::stopped(vec![0, 1, 2], vec![3], e(), true);
        assert_eq!(
            post_op_plan(6, &a.full, &a.partial),
            record(&[3, 0, 1, 2], &[], false)
        );
        // Stopped before any piece was sent: only those dropped are
        // partial (none here), so nothing changed.
        let a = Applied::stopped(vec![0, 1, 2], vec![], e(), false);
        assert_eq!(post_op_plan(6, &a.full, &a.partial), PostOpPlan::Undo);
    }
}
