//! Replicate's heal procedure: bring the stale copies of one file up to
//! date from a good one, then clear exactly the counters that were read.
//! It uses only what the set exposes (`pub` or the `pub(crate)` accessors
//! marked in [`super`]) so it can move to the `heal` crate; the shared
//! steps at the end ([`empty_sinks`], [`seal_sinks`], [`copy_metadata`])
//! serve disperse heal too.

use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind};
use mortar_proto::{FileKind, Gfid};

use super::Replicate;
use crate::afr::{self, kind_delta, BrickView, Kind, Verdict};
use crate::fop::{Child, Fop, FopOut, FopResult, HealOutcome, CHUNK_BYTES_MAX};
use crate::txn;

impl Replicate {
    /// Heal one file's data and metadata: with every brick of the set up
    /// and the whole file locked on all of them, copy from a good copy to
    /// the stale ones and clear the counters that were read. Directories
    /// (entry heal) are reported, not healed.
    pub async fn heal_file(&self, gfid: Gfid) -> HealOutcome {
        let children = self.children();
        if let Some(down) = children.iter().find(|c| !c.is_up()) {
            return HealOutcome::Skipped(format!(
                "{} is down; heal waits until every brick of {} is up",
                down.name(),
                self.set_name()
            ));
        }
        let owner = self.new_lock_owner();
        let lock = |kind: LockKind, wait: Option<u64>| {
            Fop::Inodelk(bp::Inodelk {
                gfid,
                domain: self.set_name().to_string(),
                kind,
                start: 0,
                len: 0,
                owner,
                wait_ms: wait,
            })
        };
        let (rt, set) = (self.runtime(), self.set_name());
        let locked = match txn::lock_every(rt, set, children, LockKind::Write, &lock).await {
            Ok(l) => l,
            Err(e) => return HealOutcome::Skipped(format!("{gfid}: {e}")),
        };
        let outcome = self.heal_locked(gfid).await;
        txn::unlock_all(rt, set, children, &locked, &lock).await;
        outcome
    }

    async fn heal_locked(&self, gfid: Gfid) -> HealOutcome {
        let children = self.children();
        let all: Vec<usize> = (0..children.len()).collect();
        let views = self.views(gfid, &all).await;
        if views.iter().any(Option::is_none) {
            return HealOutcome::Skipped(format!("not every brick answered for {gfid}"));
        }
        let first = children[0].fop(Fop::Stat(bp::Stat { gfid })).await;
        if let Ok(FopOut::Attr(a)) = &first {
            if a.kind == FileKind::Directory {
                return HealOutcome::Skipped(format!(
                    "{gfid} is a directory: entry heal is not built yet"
                ));
            }
        }
        let mut healed: Vec<usize> = Vec::new();
        for kind in [Kind::Data, Kind::Metadata] {
            match self.heal_kind(gfid, kind, &views).await {
                Ok(sinks) => {
                    for s in sinks {
                        if !healed.contains(&s) {
                            healed.push(s);
                        }
                    }
                }
                Err(outcome) => return outcome,
            }
        }
        if healed.is_empty() {
            HealOutcome::Clean
        } else {
            HealOutcome::Healed(
                healed
                    .iter()
                    .map(|i| children[*i].name().to_string())
                    .collect(),
            )
        }
    }

    /// Heal the counters of one kind: the sinks brought up to date, or
    /// the outcome that ends this heal.
    async fn heal_kind(
        &self,
        gfid: Gfid,
        kind: Kind,
        views: &[Option<BrickView>],
    ) -> Result<Vec<usize>, HealOutcome> {
        let children = self.children();
        let k = kind as usize;
        let marked = views
            .iter()
            .flatten()
            .any(|v| v.dirty[k] != 0 || v.blames.iter().any(|b| b[k] != 0));
        if !marked {
            return Ok(Vec::new());
        }
        let (good, stale) = match afr::examine(views, kind, self.arbiter()) {
            Verdict::Sources { good, stale } => (good, stale),
            Verdict::SplitBrain { accused } => {
                return Err(HealOutcome::SplitBrain(
                    self.split_brain(gfid, &accused).to_string(),
                ))
            }
            Verdict::NoneReachable => {
                return Err(HealOutcome::Skipped(format!(
                    "no brick answered for {gfid}"
                )))
            }
        };
        let Some(&src) = good.first() else {
            return Err(HealOutcome::Skipped(format!("no good copy of {gfid}")));
        };
        let sinks: Vec<usize> = stale
            .iter()
            .copied()
            .filter(|i| !(kind == Kind::Data && Some(*i) == self.arbiter()))
            .collect();
        let copied = match kind {
            Kind::Data => copy_data(children, gfid, src, &sinks).await,
            _ => copy_metadata(children, gfid, src, &sinks).await,
        };
        if let Err(e) = copied {
            return Err(HealOutcome::Skipped(format!(
                "healing {gfid} from {}: {e}",
                children[src].name()
            )));
        }
        self.clear_counters(gfid, kind, views, &good).await?;
        Ok(sinks)
    }

    /// Clear exactly what was read: every brick's blame and dirty counters
    /// for this kind go back to zero. Good copies first: if a later clear
    /// fails (a brick dies), what is left is stale copies blaming each
    /// other (writes refused until the next heal), never a good copy still
    /// blaming copies that are now in sync, which a write without it would
    /// turn into a false split-brain (found by client_writes seed 25).
    async fn clear_counters(
        &self,
        gfid: Gfid,
        kind: Kind,
        views: &[Option<BrickView>],
        good: &[usize],
    ) -> Result<(), HealOutcome> {
        let children = self.children();
        for i in clear_order(children.len(), good) {
            let v = views[i].as_ref().expect("all answered");
            let deltas = self.clearing_deltas(kind, v);
            if deltas.is_empty() {
                continue;
            }
            let r = children[i]
                .fop(Fop::Xattrop(bp::Xattrop {
                    gfid,
                    deltas,
                    durable: true,
                }))
                .await;
            if let Err(e) = r {
                return Err(HealOutcome::Skipped(format!(
                    "clearing the counters of {gfid} on {}: {e}",
                    children[i].name()
                )));
            }
        }
        Ok(())
    }

    /// The changes that bring one brick's counters of `kind` (as read in
    /// `v`) back to zero.
    fn clearing_deltas(&self, kind: Kind, v: &BrickView) -> Vec<(String, CounterDelta)> {
        let k = kind as usize;
        let mut deltas: Vec<(String, CounterDelta)> = Vec::new();
        for (j, b) in v.blames.iter().enumerate() {
            if b[k] != 0 {
                deltas.push((
                    self.changelog_key(j).to_string(),
                    kind_delta(kind, -(b[k] as i32)),
                ));
            }
        }
        if v.dirty[k] != 0 {
            deltas.push((
                xa::DIRTY.to_string(),
                kind_delta(kind, -(v.dirty[k] as i32)),
            ));
        }
        deltas
    }
}

/// The order heal clears counters in: the good copies first, then the
/// rest of the `n` bricks (see [`Replicate::clear_counters`]).
pub(crate) fn clear_order(n: usize, good: &[usize]) -> Vec<usize> {
    good.iter()
        .copied()
        .chain((0..n).filter(|i| !good.contains(i)))
        .collect()
}

/// Copy the data of `src` to `sinks`, a chunk at a time (chunks of zeros
/// stay holes), then cut them to its length and make them durable.
async fn copy_data(children: &[Child], gfid: Gfid, src: usize, sinks: &[usize]) -> FopResult<()> {
    if sinks.is_empty() {
        return Ok(());
    }
    let a = children[src]
        .fop(Fop::Stat(bp::Stat { gfid }))
        .await?
        .attr()?;
    empty_sinks(children, gfid, sinks).await?;
    let mut off = 0;
    while off < a.size {
        let len = CHUNK_BYTES_MAX.min(a.size - off);
        let data = children[src]
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
                children[s]
                    .fop(Fop::Write(bp::Write { gfid, offset: off }, data.clone()))
                    .await?;
            }
        }
        off += got;
    }
    seal_sinks(children, gfid, sinks, a.size).await
}

/// Heal's first step on the files it rewrites (replicate copies,
/// disperse fragments): empty them, so chunks of zeros can stay holes.
pub(crate) async fn empty_sinks(children: &[Child], gfid: Gfid, sinks: &[usize]) -> FopResult<()> {
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
) -> FopResult<()> {
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
) -> FopResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (client_writes seed 25): heal cleared a stale copy's
    /// counters before a good copy's, a brick died in between, and the
    /// good copy's leftover blame of now-synced copies became a false
    /// split-brain at the next write; good copies are now cleared first.
    #[test]
    fn regression_heal_clears_good_copies_first() {
        assert_eq!(clear_order(3, &[2]), vec![2, 0, 1]);
        assert_eq!(clear_order(3, &[1, 2]), vec![1, 2, 0]);
        assert_eq!(clear_order(3, &[]), vec![0, 1, 2]);
        assert_eq!(clear_order(2, &[0, 1]), vec![0, 1]);
    }
}
