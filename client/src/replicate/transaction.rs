//! Write-type operations as transactions: lock, judge ([`rules::admit`]),
//! pre-op, the operation, post-op, acknowledge ([`rules::acknowledge`]),
//! unlock. The decisions are the pure rules of [`super::rules`]; this file
//! only gathers what they judge and applies what they decide.

use mortar_proto::brick::{self as bp, CounterDelta, LockKind};
use mortar_proto::{Errno, FopError, Gfid};

use super::rules::{self, Ack, Admission};
use super::{LockOn, Replicate};
use crate::afr::{self, dirty_delta, kind_delta, BrickView, Kind};
use crate::fop::{Fop, FopOut, FopResult};
use crate::txn;

impl Replicate {
    /// A write-type transaction. `ctx` are the gfids whose changelog the
    /// operation changes (the file, or the parent directories).
    pub(super) async fn transaction(
        &self,
        lock: LockOn,
        kind: Kind,
        ctx: Vec<Gfid>,
        op: Fop,
    ) -> FopResult<FopOut> {
        let n = self.children.len();
        let up = self.up_mask();
        if !self.quorum.met(&up) {
            return Err(self.no_quorum(&up));
        }
        let owner = self.new_lock_owner();
        let lock_fop =
            |kind: LockKind, wait: Option<u64>| self.lock_request(&lock, owner, kind, wait);
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
    pub(super) async fn file_transaction(
        &self,
        gfid: Gfid,
        kind: Kind,
        op: Fop,
    ) -> FopResult<FopOut> {
        let lock = LockOn::Inode {
            gfid,
            start: 0,
            len: 0,
        };
        self.transaction(lock, kind, vec![gfid], op).await
    }

    fn lock_request(&self, lock: &LockOn, owner: u64, kind: LockKind, wait: Option<u64>) -> Fop {
        match lock {
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
        }
    }

    /// EROFS: the bricks marked in `have` are not a quorum.
    fn no_quorum(&self, have: &[bool]) -> FopError {
        FopError::new(
            Errno::EROFS,
            format!("{}: {}", self.name, self.quorum.describe(have)),
        )
    }

    async fn locked_transaction(
        &self,
        kind: Kind,
        ctx: &[Gfid],
        locked: &[usize],
        op: Fop,
    ) -> FopResult<FopOut> {
        let n = self.children.len();
        let mask = rules::mask(n, locked);
        if !self.quorum.met(&mask) {
            return Err(self.no_quorum(&mask));
        }
        // The pre-op brings back every changelog counter with the dirty
        // mark, so the judgement needs no round trip of its own; a refusal
        // takes the marks back.
        let (participants, views) = self.pre_op(kind, ctx, locked).await?;
        let sources = match self.admit_all(kind, ctx, &mask, &views) {
            Ok(sources) => sources,
            Err(e) => {
                self.take_back(kind, ctx, &participants).await;
                return Err(e);
            }
        };
        let results = self
            .fan(&participants, move |c| {
                let op = op.clone();
                Box::pin(async move { c.fop(op).await })
            })
            .await;
        let ok = txn::succeeded(&results);
        if let Some(good) = rules::in_flight_split_brain(&sources, &ok) {
            return Err(self.worked_only_on_stale(good, &ok));
        }
        if kind == Kind::Entry {
            let outcomes: Vec<(usize, Option<Errno>)> = results
                .iter()
                .map(|(i, r)| (*i, r.as_ref().err().map(|e| e.errno)))
                .collect();
            if rules::good_copies_disagree(&sources, &outcomes) {
                return Err(FopError::new(
                    Errno::EIO,
                    format!(
                        "{}: the good copies answered differently ({}); nothing is recorded against either, and heal will settle the name",
                        self.name,
                        self.describe_outcomes(&outcomes)
                    ),
                ));
            }
        }
        let recorded = self.post_op(kind, ctx, &participants, &ok).await;
        self.conclude(results, &ok, &recorded)
    }

    /// Judge every changed object from the views the pre-op brought back
    /// (`views[j]` for `ctx[j]`); the good copies of each, or the refusal.
    fn admit_all(
        &self,
        kind: Kind,
        ctx: &[Gfid],
        mask: &[bool],
        views: &[Vec<Option<BrickView>>],
    ) -> FopResult<Vec<Vec<usize>>> {
        let mut sources = Vec::new();
        for (g, views) in ctx.iter().zip(views) {
            match rules::admit(&self.quorum, kind, self.arbiter, mask, views) {
                Admission::Admit { good } => sources.extend(good),
                Admission::TooFewAnswered { answered } => return Err(self.no_quorum(&answered)),
                Admission::InDoubt { dirty, unasked } => {
                    return Err(self.in_doubt_error(*g, &dirty, &unasked))
                }
                Admission::SplitBrain { accused } => return Err(self.split_brain(*g, &accused)),
                Admission::ArbiterOnlyWitness => {
                    return Err(FopError::new(
                        Errno::EROFS,
                        format!("{}: no good data copy of {g} is reachable; writing now would leave only the arbiter as witness", self.name),
                    ))
                }
            }
        }
        Ok(sources)
    }

    fn in_doubt_error(&self, gfid: Gfid, dirty: &[usize], unasked: &[usize]) -> FopError {
        FopError::new(
            Errno::EIO,
            format!(
                "{}: an earlier operation on {gfid} did not finish on {} and {} cannot be asked; refusing to write until heal or until every brick is back",
                self.name,
                self.names(dirty),
                self.names(unasked)
            ),
        )
    }

    fn describe_outcomes(&self, outcomes: &[(usize, Option<Errno>)]) -> String {
        outcomes
            .iter()
            .map(|(i, o)| match o {
                None => format!("{} took it", self.children[*i].name()),
                Some(e) => format!("{} refused with {}", self.children[*i].name(), e.name()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn worked_only_on_stale(&self, good: &[usize], ok: &[usize]) -> FopError {
        FopError::new(
            Errno::EIO,
            format!(
                "{}: the operation failed on every good copy ({}) and worked only on stale ones ({}); it is not recorded, and heal will repair the stale copies",
                self.name,
                self.names(good),
                self.names(ok)
            ),
        )
    }

    /// Pre-op: mark every locked copy dirty, durably, before the data (on
    /// all bricks at once; each brick marks its objects in order), and read
    /// every changelog counter in the same request (a zero delta on each
    /// blame key: the brick reads it and writes nothing). The bricks that
    /// took it with, per object of `ctx`, each brick's counters as they
    /// were before this mark ([`super::view_before_pre_op`]); or (marks
    /// taken back) EROFS when they are not a quorum.
    async fn pre_op(
        &self,
        kind: Kind,
        ctx: &[Gfid],
        locked: &[usize],
    ) -> FopResult<(Vec<usize>, Vec<Vec<Option<BrickView>>>)> {
        let n = self.children.len();
        let mut deltas = vec![dirty_delta(kind, 1)];
        deltas.extend(
            self.keys
                .iter()
                .map(|k| (k.clone(), afr::counters_delta([0; 3]))),
        );
        let asked = ctx.to_vec();
        let replies = self
            .fan_any(locked, move |c| {
                let (asked, deltas) = (asked.clone(), deltas.clone());
                Box::pin(async move {
                    let mut per_object = Vec::with_capacity(asked.len());
                    for g in asked {
                        let q = Fop::Xattrop(bp::Xattrop {
                            gfid: g,
                            deltas: deltas.clone(),
                            durable: true,
                        });
                        per_object.push(c.fop(q).await.and_then(FopOut::counters)?);
                    }
                    Ok::<_, FopError>(per_object)
                })
            })
            .await;
        let mut participants = Vec::new();
        let mut views: Vec<Vec<Option<BrickView>>> = vec![vec![None; n]; ctx.len()];
        for (i, r) in replies {
            let Some(Ok(per_object)) = r else { continue };
            let read: Vec<Option<BrickView>> = per_object
                .iter()
                .map(|c| super::view_before_pre_op(c, &self.keys, kind))
                .collect();
            if read.iter().any(Option::is_none) {
                // A brick that answered without its counters (never by a
                // brick of this version) took the mark but cannot be judged.
                tracing::warn!(set = %self.name, brick = i, "pre-op reply lacks the changelog counters");
                self.take_back(kind, ctx, &[i]).await;
                continue;
            }
            participants.push(i);
            for (j, v) in read.into_iter().enumerate() {
                views[j][i] = v;
            }
        }
        if !rules::pre_op_admits(&self.quorum, n, &participants) {
            // Nothing was changed yet: take the marks back and refuse.
            self.take_back(kind, ctx, &participants).await;
            return Err(self.no_quorum(&rules::mask(n, &participants)));
        }
        Ok((participants, views))
    }

    /// Take back the pre-op's dirty marks on `bricks` (nothing else was
    /// changed). Not durable and best effort: a mark left behind is dirty
    /// without blame, which heal settles.
    async fn take_back(&self, kind: Kind, ctx: &[Gfid], bricks: &[usize]) {
        for &i in bricks {
            for g in ctx {
                let q = Fop::Xattrop(bp::Xattrop {
                    gfid: *g,
                    deltas: vec![dirty_delta(kind, -1)],
                    durable: false,
                });
                let _ = self.children[i].fop(q).await;
            }
        }
    }

    /// Post-op: clear dirty where the operation worked and blame where it
    /// did not (every brick that worked records the same blame; all at
    /// once). Which bricks recorded it.
    async fn post_op(
        &self,
        kind: Kind,
        ctx: &[Gfid],
        participants: &[usize],
        ok: &[usize],
    ) -> Vec<bool> {
        let n = self.children.len();
        let mut recorded = vec![false; n];
        let plans = afr::post_op(n, participants, ok);
        // Dirty is lowered only where this transaction raised it, so the
        // counters it leaves are never below what they were.
        debug_assert!(plans.iter().all(|p| participants.contains(&p.brick)));
        let Some(first) = plans.first() else {
            return recorded;
        };
        let blame = first.blame.clone();
        debug_assert!(plans.iter().all(|p| p.blame == blame));
        let mut deltas = vec![dirty_delta(kind, -1)];
        for j in &blame {
            deltas.push((self.keys[*j].clone(), kind_delta(kind, 1)));
        }
        let bricks: Vec<usize> = plans.iter().map(|p| p.brick).collect();
        let post = self
            .xattrop_each(&bricks, ctx, deltas, !blame.is_empty())
            .await;
        for (i, r) in post {
            match r {
                Ok(_) => recorded[i] = true,
                Err(e) => {
                    tracing::warn!(set = %self.name, brick = i, error = %e, "post-op failed; the copy stays marked dirty")
                }
            }
        }
        recorded
    }

    /// On each brick of `idx` at once, apply `deltas` to every object of
    /// `ctx` in order.
    async fn xattrop_each(
        &self,
        idx: &[usize],
        ctx: &[Gfid],
        deltas: Vec<(String, CounterDelta)>,
        durable: bool,
    ) -> Vec<(usize, FopResult<FopOut>)> {
        let ctx = ctx.to_vec();
        self.fan(idx, move |c| {
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
        .await
    }

    /// The answer of a transaction whose post-op ran ([`rules::acknowledge`]).
    fn conclude(
        &self,
        results: Vec<(usize, FopResult<FopOut>)>,
        ok: &[usize],
        recorded: &[bool],
    ) -> FopResult<FopOut> {
        let first_err = results.iter().find_map(|(_, r)| r.as_ref().err().cloned());
        match rules::acknowledge(&self.quorum, self.children.len(), ok, recorded) {
            Ack::NoneTook => Err(first_err.unwrap_or_else(|| {
                FopError::new(
                    Errno::EIO,
                    format!("{}: no brick took the operation", self.name),
                )
            })),
            Ack::TooFewTook => {
                mortar_net::mark!(QUORUM_LOST_MID_WRITE);
                let e = first_err.map(|e| e.to_string()).unwrap_or_default();
                Err(FopError::new(
                    Errno::EIO,
                    format!("{}: the operation succeeded on too few bricks to meet quorum ({e}); it is pending heal", self.name),
                ))
            }
            Ack::TooFewRecorded => Err({
                mortar_net::mark!(QUORUM_LOST_MID_WRITE);
                FopError::new(
                Errno::EIO,
                format!(
                    "{}: the operation worked but its outcome was recorded on too few bricks; it is pending heal",
                    self.name
                ),
                )
            }),
            // Prefer the reply of a brick that is not the arbiter.
            Ack::Acknowledge => results
                .into_iter()
                .filter(|(i, r)| r.is_ok() && Some(*i) != self.arbiter)
                .map(|(_, r)| r)
                .next()
                .unwrap_or(Ok(FopOut::Done)),
        }
    }
}
