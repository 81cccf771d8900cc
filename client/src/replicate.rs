//! The replicate layer: one replica set of bricks kept identical.
//!
//! Write-type operations run as transactions (see [`crate::afr`]):
//!
//! ```text
//! lock (inode range or parent entry, on every up brick, in brick order)
//!   -> quorum, split-brain and arbiter checks (refuse before touching data)
//!   -> pre-op: dirty += 1, durable
//!   -> the operation on every locked brick
//!   -> post-op: dirty -= 1 where it succeeded; blame the others, durable
//!   -> unlock
//! ```
//!
//! Reads go to a brick no other brick blames; a file whose copies blame
//! each other is in split-brain and reads and writes get EIO. Entry
//! operations keep their changelog on the parent directory, so heal can
//! repair names as well as data.

use std::sync::atomic::{AtomicU64, Ordering};

use mortar_net::{BoxFuture, Runtime};
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind};
use mortar_proto::{Errno, FopError, Gfid};

use crate::afr::{self, BrickView, Kind, Quorum, Verdict};
use crate::fop::{Child, Fop, FopOut, FopRes, HealOutcome, HealSet, Subvolume};
use crate::txn;

/// Bytes per read/write when heal copies a file.
const HEAL_CHUNK: u64 = 1 << 20;

pub struct Replicate {
    name: String,
    rt: Runtime,
    children: Vec<Child>,
    /// The changelog key naming each child.
    keys: Vec<String>,
    quorum: Quorum,
    arbiter: Option<usize>,
    next_owner: AtomicU64,
}

/// What a transaction locks.
#[derive(Debug, Clone)]
enum LockOn {
    Inode { gfid: Gfid, start: u64, len: u64 },
    Entry { parent: Gfid, name: Option<String> },
}

fn delta(kind: Kind, v: i32) -> CounterDelta {
    let mut d = vec![0; 3];
    d[kind as usize] = v;
    CounterDelta::Add32(d)
}

impl Replicate {
    pub fn new(
        rt: &Runtime,
        name: &str,
        children: Vec<Child>,
        quorum: Quorum,
        arbiter: bool,
    ) -> Replicate {
        let keys = children
            .iter()
            .map(|c| format!("{}{}", xa::CHANGELOG_PREFIX, c.name()))
            .collect();
        let arbiter = (arbiter && children.len() == 3).then_some(2);
        Replicate {
            name: name.to_string(),
            rt: rt.child(name.to_string()),
            children,
            keys,
            quorum,
            arbiter,
            next_owner: AtomicU64::new(1),
        }
    }

    pub fn children(&self) -> &[Child] {
        &self.children
    }

    fn up_mask(&self) -> Vec<bool> {
        self.children.iter().map(|c| c.is_up()).collect()
    }

    async fn fan_any<T: Send + 'static>(
        &self,
        idx: &[usize],
        make: impl Fn(Child) -> BoxFuture<'static, T>,
    ) -> Vec<(usize, Option<T>)> {
        txn::fan_any(&self.rt, &self.children, idx, make).await
    }

    async fn fan(
        &self,
        idx: &[usize],
        make: impl Fn(Child) -> BoxFuture<'static, FopRes>,
    ) -> Vec<(usize, FopRes)> {
        txn::fan(&self.rt, &self.name, &self.children, idx, make).await
    }

    /// The counters each child in `idx` holds for `gfid` (`None` for a
    /// child that did not answer).
    async fn views(&self, gfid: Gfid, idx: &[usize]) -> Vec<Option<BrickView>> {
        let mut names = self.keys.clone();
        names.push(xa::DIRTY.to_string());
        let results = self
            .fan_any(idx, move |c| {
                let names = names.clone();
                Box::pin(async move {
                    let mut vals = Vec::with_capacity(names.len());
                    for n in names {
                        match c.fop(Fop::Getxattr(bp::Getxattr { gfid, name: n })).await {
                            Ok(FopOut::Value(v)) => vals.push(counters(&v)),
                            Err(e) if e.errno == Errno::ENODATA => vals.push([0; 3]),
                            _ => return None,
                        }
                    }
                    Some(vals)
                })
            })
            .await;
        let n = self.children.len();
        let mut views: Vec<Option<BrickView>> = vec![None; n];
        for (i, r) in results {
            if let Some(Some(vals)) = r {
                views[i] = Some(BrickView {
                    blames: vals[..n].to_vec(),
                    dirty: vals[n],
                });
            }
        }
        views
    }

    async fn verdict(&self, gfid: Gfid, kind: Kind, idx: &[usize]) -> Verdict {
        let views = self.views(gfid, idx).await;
        afr::examine(&views, kind, self.arbiter)
    }

    /// A data or metadata transaction must not trust a partial view left
    /// partly unrecorded: a locked copy still marked dirty (an earlier
    /// transaction never finished its post-op there; none can be in flight,
    /// as this one holds the file's whole lock) may be missing the blame
    /// that would show another copy stale. With every brick locked all
    /// recorded blame is in view; otherwise refuse until heal or the
    /// missing bricks return. (Entry operations lock one name, so other
    /// names' transactions may be in flight on the parent: not checked.)
    fn in_doubt(
        &self,
        gfid: Gfid,
        kind: Kind,
        locked: &[usize],
        views: &[Option<BrickView>],
    ) -> Option<FopError> {
        if kind == Kind::Entry || locked.len() == self.children.len() {
            return None;
        }
        let k = kind as usize;
        let dirty: Vec<&str> = views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.as_ref().is_some_and(|v| v.dirty[k] > 0))
            .map(|(i, _)| self.children[i].name())
            .collect();
        if dirty.is_empty() {
            return None;
        }
        let down: Vec<&str> = (0..self.children.len())
            .filter(|i| !locked.contains(i))
            .map(|i| self.children[i].name())
            .collect();
        Some(FopError::new(
            Errno::EIO,
            format!(
                "{}: an earlier operation on {gfid} did not finish on {} and {} cannot be asked; refusing to write until heal or until every brick is back",
                self.name,
                dirty.join(", "),
                down.join(", ")
            ),
        ))
    }

    fn split_brain(&self, gfid: Gfid, accused: &[usize]) -> FopError {
        let names: Vec<&str> = accused.iter().map(|i| self.children[*i].name()).collect();
        FopError::new(
            Errno::EIO,
            format!(
                "{}: {gfid} is in split-brain: the copies on {} blame each other; resolve it with heal before using the file",
                self.name,
                names.join(" and ")
            ),
        )
    }

    /// Send a read-type operation to a good copy (trying the next good copy
    /// if one fails to answer).
    async fn read_from_source(&self, gfid: Gfid, kind: Kind, op: Fop) -> FopRes {
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        if up.is_empty() {
            return Err(FopError::new(
                Errno::ENOTCONN,
                format!("{}: no brick of the replica set is reachable", self.name),
            ));
        }
        let good = match self.verdict(gfid, kind, &up).await {
            Verdict::Sources { good, .. } => good,
            Verdict::SplitBrain { accused } => return Err(self.split_brain(gfid, &accused)),
            Verdict::NoneReachable => up.clone(),
        };
        let mut last = None;
        for i in good.into_iter().filter(|i| up.contains(i)) {
            match self.children[i].fop(op.clone()).await {
                Err(e) if e.errno == Errno::ENOTCONN => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or_else(|| {
            FopError::new(
                Errno::EIO,
                format!(
                    "{}: no good copy of {gfid} is reachable (the reachable copies are stale)",
                    self.name
                ),
            )
        }))
    }

    /// A write-type transaction. `ctx` are the gfids whose changelog the
    /// operation changes (the file, or the parent directories).
    async fn transaction(&self, lock: LockOn, kind: Kind, ctx: Vec<Gfid>, op: Fop) -> FopRes {
        let n = self.children.len();
        let up = self.up_mask();
        if !self.quorum.met(&up) {
            return Err(FopError::new(
                Errno::EROFS,
                format!("{}: {}", self.name, self.quorum.describe(&up)),
            ));
        }
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let lock_fop = |kind: LockKind, wait: Option<u64>| match &lock {
            LockOn::Inode { gfid, start, len } => Fop::Inodelk(bp::Inodelk {
                gfid: *gfid,
                domain: self.name.clone(),
                kind,
                start: *start,
                len: *len,
                owner,
                wait_ms: wait,
            }),
            LockOn::Entry { parent, name } => Fop::Entrylk(bp::Entrylk {
                parent: *parent,
                name: name.clone(),
                domain: self.name.clone(),
                kind,
                owner,
                wait_ms: wait,
            }),
        };
        let up_idx: Vec<usize> = (0..n).filter(|i| up[*i]).collect();
        let locked = txn::lock_all(
            &self.rt,
            &self.name,
            &self.children,
            &up_idx,
            LockKind::Write,
            &lock_fop,
        )
        .await?;
        let result = self.locked_transaction(kind, &ctx, &locked, op).await;
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock_fop).await;
        result
    }

    /// A transaction on one file under its whole-file lock.
    async fn file_transaction(&self, gfid: Gfid, kind: Kind, op: Fop) -> FopRes {
        let lock = LockOn::Inode {
            gfid,
            start: 0,
            len: 0,
        };
        self.transaction(lock, kind, vec![gfid], op).await
    }

    // ---- self-heal (used by the self-heal daemon) ----

    /// Heal one file's data and metadata: with every brick of the set up
    /// and the whole file locked on all of them, copy from a good copy to
    /// the stale ones and clear the counters that were read. Directories
    /// (entry heal) are reported, not healed.
    pub async fn heal_file(&self, gfid: Gfid) -> HealOutcome {
        let n = self.children.len();
        if let Some(down) = (0..n).find(|i| !self.children[*i].is_up()) {
            return HealOutcome::Skipped(format!(
                "{} is down; heal waits until every brick of {} is up",
                self.children[down].name(),
                self.name
            ));
        }
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let lock = |kind: LockKind, wait: Option<u64>| {
            Fop::Inodelk(bp::Inodelk {
                gfid,
                domain: self.name.clone(),
                kind,
                start: 0,
                len: 0,
                owner,
                wait_ms: wait,
            })
        };
        let locked =
            match txn::lock_every(&self.rt, &self.name, &self.children, LockKind::Write, &lock)
                .await
            {
                Ok(l) => l,
                Err(e) => return HealOutcome::Skipped(format!("{gfid}: {e}")),
            };
        let outcome = self.heal_locked(gfid).await;
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        outcome
    }

    async fn heal_locked(&self, gfid: Gfid) -> HealOutcome {
        let n = self.children.len();
        let all: Vec<usize> = (0..n).collect();
        let views = self.views(gfid, &all).await;
        if views.iter().any(Option::is_none) {
            return HealOutcome::Skipped(format!("not every brick answered for {gfid}"));
        }
        let first = self.children[0].fop(Fop::Stat(bp::Stat { gfid })).await;
        if let Ok(FopOut::Attr(a)) = &first {
            if a.kind == mortar_proto::FileKind::Directory {
                return HealOutcome::Skipped(format!(
                    "{gfid} is a directory: entry heal is not built yet"
                ));
            }
        }
        let mut healed: Vec<usize> = Vec::new();
        for kind in [Kind::Data, Kind::Metadata] {
            let k = kind as usize;
            let marked = views
                .iter()
                .flatten()
                .any(|v| v.dirty[k] != 0 || v.blames.iter().any(|b| b[k] != 0));
            if !marked {
                continue;
            }
            let (good, stale) = match afr::examine(&views, kind, self.arbiter) {
                Verdict::Sources { good, stale } => (good, stale),
                Verdict::SplitBrain { accused } => {
                    return HealOutcome::SplitBrain(self.split_brain(gfid, &accused).to_string())
                }
                Verdict::NoneReachable => {
                    return HealOutcome::Skipped(format!("no brick answered for {gfid}"))
                }
            };
            let Some(&src) = good.first() else {
                return HealOutcome::Skipped(format!("no good copy of {gfid}"));
            };
            let sinks: Vec<usize> = stale
                .iter()
                .copied()
                .filter(|i| !(kind == Kind::Data && Some(*i) == self.arbiter))
                .collect();
            let copied = match kind {
                Kind::Data => self.copy_data(gfid, src, &sinks).await,
                _ => copy_metadata(&self.children, gfid, src, &sinks).await,
            };
            if let Err(e) = copied {
                return HealOutcome::Skipped(format!(
                    "healing {gfid} from {}: {e}",
                    self.children[src].name()
                ));
            }
            // Clear exactly what was read: every brick's blame and dirty
            // counters for this kind go back to zero. Good copies first: if
            // a later clear fails (a brick dies), what is left is stale
            // copies blaming each other (writes refused until the next
            // heal), never a good copy still blaming copies that are now
            // in sync, which a write without it would turn into a false
            // split-brain (found by client_writes seed 25).
            let order: Vec<usize> = good
                .iter()
                .copied()
                .chain((0..n).filter(|i| !good.contains(i)))
                .collect();
            for i in order {
                let v = views[i].as_ref().expect("all answered");
                let mut deltas: Vec<(String, CounterDelta)> = Vec::new();
                for (j, b) in v.blames.iter().enumerate() {
                    if b[k] != 0 {
                        deltas.push((self.keys[j].clone(), delta(kind, -(b[k] as i32))));
                    }
                }
                if v.dirty[k] != 0 {
                    deltas.push((xa::DIRTY.to_string(), delta(kind, -(v.dirty[k] as i32))));
                }
                if deltas.is_empty() {
                    continue;
                }
                let r = self.children[i]
                    .fop(Fop::Xattrop(bp::Xattrop {
                        gfid,
                        deltas,
                        durable: true,
                    }))
                    .await;
                if let Err(e) = r {
                    return HealOutcome::Skipped(format!(
                        "clearing the counters of {gfid} on {}: {e}",
                        self.children[i].name()
                    ));
                }
            }
            for s in sinks {
                if !healed.contains(&s) {
                    healed.push(s);
                }
            }
        }
        if healed.is_empty() {
            HealOutcome::Clean
        } else {
            HealOutcome::Healed(
                healed
                    .iter()
                    .map(|i| self.children[*i].name().to_string())
                    .collect(),
            )
        }
    }

    async fn copy_data(&self, gfid: Gfid, src: usize, sinks: &[usize]) -> Result<(), FopError> {
        if sinks.is_empty() {
            return Ok(());
        }
        let a = self.children[src]
            .fop(Fop::Stat(bp::Stat { gfid }))
            .await?
            .attr()?;
        empty_sinks(&self.children, gfid, sinks).await?;
        let mut off = 0;
        while off < a.size {
            let len = HEAL_CHUNK.min(a.size - off);
            let data = self.children[src]
                .fop(Fop::Read(bp::Read {
                    gfid,
                    offset: off,
                    len,
                }))
                .await?
                .data()?;
            if data.is_empty() {
                break;
            }
            let got = data.len() as u64;
            if data.iter().any(|b| *b != 0) {
                for &s in sinks {
                    self.children[s]
                        .fop(Fop::Write(bp::Write { gfid, offset: off }, data.clone()))
                        .await?;
                }
            }
            off += got;
        }
        seal_sinks(&self.children, gfid, sinks, a.size).await
    }

    async fn locked_transaction(
        &self,
        kind: Kind,
        ctx: &[Gfid],
        locked: &[usize],
        op: Fop,
    ) -> FopRes {
        let n = self.children.len();
        let mask: Vec<bool> = (0..n).map(|i| locked.contains(&i)).collect();
        if !self.quorum.met(&mask) {
            return Err(FopError::new(
                Errno::EROFS,
                format!("{}: {}", self.name, self.quorum.describe(&mask)),
            ));
        }
        // The good copies of each changed object, as the locked bricks see
        // them before the operation.
        let mut sources: Vec<Vec<usize>> = Vec::new();
        for g in ctx {
            let views = self.views(*g, locked).await;
            // Decide only from a quorum's view: a brick that did not answer
            // may hold the blame that shows another copy stale.
            let answered: Vec<bool> = views.iter().map(Option::is_some).collect();
            if !self.quorum.met(&answered) {
                return Err(FopError::new(
                    Errno::EROFS,
                    format!("{}: {}", self.name, self.quorum.describe(&answered)),
                ));
            }
            let asked: Vec<usize> = (0..n).filter(|i| answered[*i]).collect();
            if let Some(e) = self.in_doubt(*g, kind, &asked, &views) {
                return Err(e);
            }
            match afr::examine(&views, kind, self.arbiter) {
                Verdict::SplitBrain { accused } => return Err(self.split_brain(*g, &accused)),
                v @ Verdict::Sources { .. } => {
                    if let Verdict::Sources { good, .. } = &v {
                        sources.push(good.clone());
                    }
                    if let Some(a) = self.arbiter {
                        if !afr::arbiter_allows(&mask, &v, a) {
                            return Err(FopError::new(
                                Errno::EROFS,
                                format!("{}: no good data copy of {g} is reachable; writing now would leave only the arbiter as witness", self.name),
                            ));
                        }
                    }
                }
                Verdict::NoneReachable => {}
            }
        }
        // Pre-op: mark every locked copy dirty, durably, before the data
        // (on all bricks at once; each brick marks its objects in order).
        let pre: Vec<(usize, FopRes)> = {
            let ctx = ctx.to_vec();
            self.fan(locked, move |c| {
                let ctx = ctx.clone();
                Box::pin(async move {
                    for g in ctx {
                        c.fop(Fop::Xattrop(bp::Xattrop {
                            gfid: g,
                            deltas: vec![(xa::DIRTY.to_string(), delta(kind, 1))],
                            durable: true,
                        }))
                        .await?;
                    }
                    Ok(FopOut::Done)
                })
            })
            .await
        };
        let participants: Vec<usize> = pre
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        let took: Vec<bool> = (0..n).map(|i| participants.contains(&i)).collect();
        if !self.quorum.met(&took) {
            // Nothing was changed yet: take the marks back and refuse.
            for &i in &participants {
                for g in ctx {
                    let q = Fop::Xattrop(bp::Xattrop {
                        gfid: *g,
                        deltas: vec![(xa::DIRTY.to_string(), delta(kind, -1))],
                        durable: false,
                    });
                    let _ = self.children[i].fop(q).await;
                }
            }
            return Err(FopError::new(
                Errno::EROFS,
                format!("{}: {}", self.name, self.quorum.describe(&took)),
            ));
        }
        let results = self
            .fan(&participants, move |c| {
                let op = op.clone();
                Box::pin(async move { c.fop(op).await })
            })
            .await;
        let ok: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| *i)
            .collect();
        // In-flight split-brain: the operation worked only on copies that
        // were already stale. Blaming the good copies from there would make
        // every copy accused; record nothing (the participants stay marked
        // dirty, in doubt until heal) and fail.
        if let Some(good) = sources
            .iter()
            .find(|good| !ok.is_empty() && !good.iter().any(|i| ok.contains(i)))
        {
            let names = |idx: &[usize]| {
                idx.iter()
                    .map(|i| self.children[*i].name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(FopError::new(
                Errno::EIO,
                format!(
                    "{}: the operation failed on every good copy ({}) and worked only on stale ones ({}); it is not recorded, and heal will repair the stale copies",
                    self.name,
                    names(good),
                    names(&ok)
                ),
            ));
        }
        // Post-op: clear dirty where it worked and blame where it did not
        // (every brick that worked records the same blame; all at once).
        let mut recorded = vec![false; n];
        let plans = afr::post_op(n, &participants, &ok);
        if let Some(first) = plans.first() {
            let blame = first.blame.clone();
            debug_assert!(plans.iter().all(|p| p.blame == blame));
            let mut deltas = vec![(xa::DIRTY.to_string(), delta(kind, -1))];
            for j in &blame {
                deltas.push((self.keys[*j].clone(), delta(kind, 1)));
            }
            let durable = !blame.is_empty();
            let bricks: Vec<usize> = plans.iter().map(|p| p.brick).collect();
            let ctx = ctx.to_vec();
            let post = self
                .fan(&bricks, move |c| {
                    let (ctx, deltas) = (ctx.clone(), deltas.clone());
                    Box::pin(async move {
                        for g in ctx {
                            c.fop(Fop::Xattrop(bp::Xattrop {
                                gfid: g,
                                deltas: deltas.clone(),
                                durable,
                            }))
                            .await?;
                        }
                        Ok(FopOut::Done)
                    })
                })
                .await;
            for (i, r) in post {
                match r {
                    Ok(_) => recorded[i] = true,
                    Err(e) => {
                        tracing::warn!(set = %self.name, brick = i, error = %e, "post-op failed; the copy stays marked dirty")
                    }
                }
            }
        }
        let ok_mask: Vec<bool> = (0..n).map(|i| ok.contains(&i)).collect();
        let first_err = results.iter().find_map(|(_, r)| r.as_ref().err().cloned());
        if ok.is_empty() {
            return Err(first_err.unwrap_or_else(|| {
                FopError::new(
                    Errno::EIO,
                    format!("{}: no brick took the operation", self.name),
                )
            }));
        }
        if !self.quorum.met(&ok_mask) {
            let e = first_err.map(|e| e.to_string()).unwrap_or_default();
            return Err(FopError::new(
                Errno::EIO,
                format!("{}: the operation succeeded on too few bricks to meet quorum ({e}); it is pending heal", self.name),
            ));
        }
        // Acknowledge only what a quorum has recorded: a later transaction
        // sees any quorum of bricks, and so the blame this one left.
        if !self.quorum.met(&recorded) {
            return Err(FopError::new(
                Errno::EIO,
                format!(
                    "{}: the operation worked but its outcome was recorded on too few bricks; it is pending heal",
                    self.name
                ),
            ));
        }
        // Prefer the reply of a brick that is not the arbiter.
        let pick = results
            .into_iter()
            .filter(|(i, r)| r.is_ok() && Some(*i) != self.arbiter)
            .map(|(_, r)| r)
            .next();
        match pick {
            Some(r) => r,
            None => Ok(FopOut::Done),
        }
    }

    /// Operations sent to every up brick without a transaction (fsync,
    /// lock requests from layers above); success when quorum answered.
    async fn to_all(&self, op: Fop) -> FopRes {
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &up, &op).await;
        let n = self.children.len();
        let ok = txn::succeeded(&results);
        let ok_mask: Vec<bool> = (0..n).map(|i| ok.contains(&i)).collect();
        let first_ok = results
            .iter()
            .find(|(_, r)| r.is_ok())
            .map(|(_, r)| r.clone());
        let first_err = results.into_iter().find_map(|(_, r)| r.err());
        match first_ok {
            Some(r) if self.quorum.met(&ok_mask) || self.quorum == Quorum::None => r,
            _ => {
                txn::release_partial(&self.rt, &self.name, &self.children, &ok, &op).await;
                Err(first_err.unwrap_or_else(|| {
                    FopError::new(
                        Errno::ENOTCONN,
                        format!("{}: no brick is reachable", self.name),
                    )
                }))
            }
        }
    }

    /// Lookup on every up brick: names must agree on the gfid; the
    /// attributes come from a good data copy.
    async fn lookup(&self, q: bp::Lookup) -> FopRes {
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        if up.is_empty() {
            return Err(FopError::new(
                Errno::ENOTCONN,
                format!("{}: no brick of the replica set is reachable", self.name),
            ));
        }
        let q2 = q.clone();
        let results = self
            .fan(&up, move |c| {
                let q = q2.clone();
                Box::pin(async move { c.fop(Fop::Lookup(q)).await })
            })
            .await;
        let mut found: Vec<mortar_proto::Attr> = Vec::new();
        let mut err = None;
        for (_, r) in results {
            match r {
                Ok(FopOut::Attr(a)) => found.push(a),
                Ok(other) => return Err(crate::fop::shape_error("lookup", &other)),
                Err(e) => err = Some(e),
            }
        }
        let Some(first) = found.first().cloned() else {
            return Err(err.unwrap_or_else(|| FopError::new(Errno::ENOENT, q.name.clone())));
        };
        if found.iter().any(|a| a.gfid != first.gfid) {
            return Err(FopError::new(
                Errno::EIO,
                format!("{}: {:?} has different gfids on different bricks (gfid split-brain); resolve it with heal", self.name, q.name),
            ));
        }
        let kind = if first.kind == mortar_proto::FileKind::Regular {
            Kind::Data
        } else {
            Kind::Metadata
        };
        self.read_from_source(first.gfid, kind, Fop::Stat(bp::Stat { gfid: first.gfid }))
            .await
    }
}

/// Heal's first step on the files it rewrites (replicate copies,
/// disperse fragments): empty them, so chunks of zeros can stay holes.
pub(crate) async fn empty_sinks(
    children: &[Child],
    gfid: Gfid,
    sinks: &[usize],
) -> Result<(), FopError> {
    for &s in sinks {
        children[s]
            .fop(Fop::Truncate(bp::Truncate { gfid, size: 0 }))
            .await?;
    }
    Ok(())
}

/// Heal's last step on the files it rewrote: cut them to `len` bytes
/// (a trailing hole) and make them durable.
pub(crate) async fn seal_sinks(
    children: &[Child],
    gfid: Gfid,
    sinks: &[usize],
    len: u64,
) -> Result<(), FopError> {
    for &s in sinks {
        children[s]
            .fop(Fop::Truncate(bp::Truncate { gfid, size: len }))
            .await?;
        children[s]
            .fop(Fop::Fsync(bp::Fsync {
                gfid,
                datasync: false,
            }))
            .await?;
    }
    Ok(())
}

/// Make the metadata of `sinks` (mode, owner, times, user xattrs) that of
/// `src` (heal of replicate and disperse sets).
pub(crate) async fn copy_metadata(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
) -> Result<(), FopError> {
    let a = children[src]
        .fop(Fop::Stat(bp::Stat { gfid }))
        .await?
        .attr()?;
    let names = match children[src]
        .fop(Fop::Listxattr(bp::Listxattr { gfid }))
        .await?
    {
        FopOut::Names(n) => n,
        _ => Vec::new(),
    };
    let mut user = Vec::new();
    for x in names.into_iter().filter(|x| x.starts_with("user.")) {
        if let FopOut::Value(v) = children[src]
            .fop(Fop::Getxattr(bp::Getxattr {
                gfid,
                name: x.clone(),
            }))
            .await?
        {
            user.push((x, v));
        }
    }
    for &s in sinks {
        children[s]
            .fop(Fop::Setattr(bp::Setattr {
                gfid,
                mode: Some(a.mode),
                uid: Some(a.uid),
                gid: Some(a.gid),
                atime: Some(a.atime),
                mtime: Some(a.mtime),
            }))
            .await?;
        // The sink's user xattrs become the source's.
        if let FopOut::Names(theirs) = children[s]
            .fop(Fop::Listxattr(bp::Listxattr { gfid }))
            .await?
        {
            for x in theirs.into_iter().filter(|x| x.starts_with("user.")) {
                if !user.iter().any(|(n, _)| *n == x) {
                    let _ = children[s]
                        .fop(Fop::Removexattr(bp::Removexattr { gfid, name: x }))
                        .await;
                }
            }
        }
        for (x, v) in &user {
            children[s]
                .fop(Fop::Setxattr(bp::Setxattr {
                    gfid,
                    name: x.clone(),
                    value: v.clone(),
                    flags: bp::XattrFlags::Any,
                }))
                .await?;
        }
    }
    Ok(())
}

/// The three counters of a changelog value (missing ones are zero).
fn counters(raw: &[u8]) -> [i64; 3] {
    let mut c = [0i64; 3];
    for (k, chunk) in raw.chunks(4).take(3).enumerate() {
        if let Ok(b) = <[u8; 4]>::try_from(chunk) {
            c[k] = i64::from(i32::from_be_bytes(b));
        }
    }
    c
}

impl Subvolume for Replicate {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.children.iter().any(|c| c.is_up())
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopRes> {
        Box::pin(async move {
            // Every arm below takes the gfid or entry its kind has.
            let gfid = op.gfid().unwrap_or_default();
            match op {
                Fop::Lookup(q) => self.lookup(q).await,
                Fop::Stat(_) | Fop::Read(_) | Fop::Open(_) => {
                    self.read_from_source(gfid, Kind::Data, op).await
                }
                Fop::Readlink(_) | Fop::Getxattr(_) | Fop::Listxattr(_) => {
                    self.read_from_source(gfid, Kind::Metadata, op).await
                }
                Fop::Readdir(_) => self.read_from_source(gfid, Kind::Entry, op).await,
                Fop::Statfs => self.to_all(Fop::Statfs).await,
                Fop::Fsync(_) | Fop::Inodelk(_) | Fop::Entrylk(_) | Fop::Xattrop(_) => {
                    self.to_all(op).await
                }
                // Whole-file locks, not the written range: writers of one
                // file share its changelog, and a transaction must see no
                // other's pre-op in flight (see `in_doubt`).
                Fop::Write(..) | Fop::Truncate(_) => {
                    self.file_transaction(gfid, Kind::Data, op).await
                }
                Fop::Setattr(_) | Fop::Setxattr(_) | Fop::Removexattr(_) => {
                    self.file_transaction(gfid, Kind::Metadata, op).await
                }
                Fop::Create(_)
                | Fop::Mkdir(_)
                | Fop::Mknod(_)
                | Fop::Symlink(_)
                | Fop::Link(_)
                | Fop::Unlink(_)
                | Fop::Rmdir(_)
                | Fop::Rename(_) => {
                    let (parent, name) = op
                        .entry()
                        .map(|(p, n)| (p, n.to_string()))
                        .unwrap_or_default();
                    // A rename takes the whole source directory's lock;
                    // the changelog of both parents records it.
                    let name = (!matches!(op, Fop::Rename(_))).then_some(name);
                    let dirs = op.changed_dirs();
                    self.transaction(LockOn::Entry { parent, name }, Kind::Entry, dirs, op)
                        .await
                }
            }
        })
    }
}

impl HealSet for Replicate {
    fn heal_file(&self, gfid: Gfid) -> BoxFuture<'_, HealOutcome> {
        Box::pin(Replicate::heal_file(self, gfid))
    }
}
