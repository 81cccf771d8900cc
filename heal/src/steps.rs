//! The steps heal shares between replicate and disperse sets: the whole
//! file locked on every brick around a heal, a file's data brought from
//! one brick to others (by block checksums, `heal/src/blocks.rs`), the sinks
//! emptied before they are rewritten and sealed after, and metadata made
//! a source's.

use std::future::Future;
use std::sync::atomic::AtomicBool;

use mortar_client::copy::{copy_keeping_holes, copy_range_keeping_holes};
use mortar_client::fop::{Child, Fop, FopOut, FopResult, Subvolume};
use mortar_client::txn;
use mortar_net::Runtime;
use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::{blocks, HealOutcome};

/// The lock domain only healers take, on the whole file, for the whole
/// heal: while one daemon holds it on a file, every other healer skips
/// that file (one healer per file across all daemons). Writers never
/// take it, so a claim never waits on a write.
pub fn heal_domain(set: &str) -> String {
    format!("{set}:self-heal")
}

/// The claim request on `gfid` for one brick: a whole-file lock in the
/// self-heal domain of the set `set`, under `owner`.
pub(crate) fn claim_lock(
    set: &str,
    gfid: Gfid,
    owner: u64,
) -> impl Fn(LockKind, Option<u64>) -> Fop + Sync {
    let domain = heal_domain(set);
    move |kind, wait| {
        Fop::Inodelk(bp::Inodelk {
            gfid,
            domain: domain.clone(),
            kind,
            start: 0,
            len: 0,
            owner,
            wait_ms: wait,
        })
    }
}

/// Claim `gfid` for this healer on every brick of the set, without
/// waiting: the bricks that granted it, or (having given those back)
/// [`HealOutcome::Busy`] when another healer holds it, or
/// [`HealOutcome::Skipped`] when a brick failed otherwise.
///
/// The first brick decides: two healers asking all bricks at once could
/// each win some and both give up, again and again. Asked first on brick
/// 0, the loser is refused there and never holds any other brick; then
/// the rest are asked at once (two round trips in all).
pub(crate) async fn claim(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    gfid: Gfid,
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
) -> Result<Vec<usize>, HealOutcome> {
    let refused = |i: usize, e: FopError| {
        let brick = children[i].name();
        if e.errno == Errno::EAGAIN {
            HealOutcome::Busy(format!("{gfid}: another healer holds it on {brick}"))
        } else {
            HealOutcome::Skipped(format!("{gfid}: cannot claim it for heal on {brick}: {e}"))
        }
    };
    let Some(first) = children.first() else {
        return Ok(Vec::new());
    };
    if let Err(e) = first.fop(lock(LockKind::Write, None)).await {
        return Err(refused(0, e));
    }
    let rest: Vec<usize> = (1..children.len()).collect();
    let results = txn::fan_op(rt, set, children, &rest, &lock(LockKind::Write, None)).await;
    let mut granted = vec![0];
    granted.extend(txn::succeeded(&results));
    if granted.len() == children.len() {
        return Ok(granted);
    }
    txn::unlock_all(rt, set, children, &granted, lock).await;
    let (i, e) = results
        .into_iter()
        .find_map(|(i, r)| r.err().map(|e| (i, e)))
        .expect("a brick refused");
    Err(refused(i, e))
}

/// Heal waits until every brick of the set `set` is up: a copy it cannot
/// see may be the only good one, and its counters must be cleared with
/// the others'. `Err`: the outcome saying which brick is down.
pub(crate) fn every_brick_up(children: &[Child], set: &str) -> Result<(), HealOutcome> {
    match children.iter().find(|c| !c.is_up()) {
        Some(down) => Err(HealOutcome::Skipped(format!(
            "{} is down; heal waits until every brick of {set} is up",
            down.name(),
        ))),
        None => Ok(()),
    }
}

/// Run `heal` with `gfid` locked (`lock`, whole file, for writing) on
/// every brick of the set `set` (its `children`), then unlock.
pub(crate) async fn with_every_brick_locked(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    gfid: Gfid,
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
    heal: impl Future<Output = HealOutcome>,
) -> HealOutcome {
    locked_on_every_brick(rt, set, children, lock, heal)
        .await
        .unwrap_or_else(|e| HealOutcome::Skipped(format!("{gfid}: {e}")))
}

/// Run `work` holding `lock` (for writing) on every brick of the set
/// `set`, then unlock; `Err`: why the lock was not taken (nothing ran).
pub(crate) async fn locked_on_every_brick<T>(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
    work: impl Future<Output = T>,
) -> Result<T, String> {
    let locked = txn::lock_every(rt, set, children, LockKind::Write, lock).await?;
    let out = work.await;
    txn::unlock_all(rt, set, children, &locked, lock).await;
    Ok(out)
}

/// The kind of each of `gfids` on brick `c` (`None` where it holds no
/// such object), [`bp::GFID_KINDS_MAX`] per request; `None` when the brick
/// cannot say (an older brick without the procedure, an error): the
/// caller falls back to what it did before the procedure existed.
pub(crate) async fn kinds_of(
    c: &(impl Subvolume + ?Sized),
    gfids: &[Gfid],
) -> Option<Vec<Option<FileKind>>> {
    let mut out = Vec::with_capacity(gfids.len());
    for page in gfids.chunks(bp::GFID_KINDS_MAX) {
        let asked = Fop::GfidKinds(bp::GfidKinds {
            gfids: page.to_vec(),
        });
        match c.fop(asked).await {
            Ok(FopOut::Kinds(kinds)) if kinds.len() == page.len() => out.extend(kinds),
            _ => return None,
        }
    }
    Some(out)
}

/// The outcome of a heal that brought the bricks `healed` up to date
/// (none: the file was clean).
pub(crate) fn healed_outcome(children: &[Child], healed: &[usize]) -> HealOutcome {
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

/// What entry heal knows of a regular file's copy it has just made on
/// `sink` from `source`: the copy is empty, and `size` is the source's,
/// read under the whole-file lock still held (so no write has changed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JustMade {
    pub source: usize,
    pub sink: usize,
    pub size: u64,
}

/// Bring the data of `sinks` to that of `src`: only the blocks whose
/// checksums differ are written, blocks of zeros become holes
/// ([`crate::blocks`]); then cut them to its length and make them
/// durable. When a brick gives no checksums (an older brick that does not
/// know the procedure, or a stale copy that cannot be read), the old way:
/// empty the sinks and copy everything, chunks of zeros left as holes.
///
/// When `made` says the one sink is a copy just made from `src`, the
/// data is copied without asking either copy's size and without comparing
/// blocks (an empty copy has none to keep), and it is cut to length only
/// when it ends in a hole.
pub(crate) async fn copy_data(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
    made: Option<JustMade>,
) -> FopResult<()> {
    if sinks.is_empty() {
        return Ok(());
    }
    if let Some(m) = made.filter(|m| m.source == src && sinks == [m.sink]) {
        let dst = [&children[m.sink]];
        let written = copy_range_keeping_holes(&children[src], &dst, gfid, 0..m.size)
            .await
            .map_err(|f| f.err)?;
        // Every chunk was written: the copy already ends where the source does.
        let cut = (written != m.size).then_some(m.size);
        return seal_sinks_to(children, gfid, sinks, cut).await;
    }
    let a = children[src]
        .fop(Fop::Stat(bp::Stat { gfid }))
        .await?
        .attr()?;
    match blocks::heal_blocks(children, gfid, src, sinks, a.size).await {
        Ok(r) => tracing::debug!(
            %gfid,
            size = a.size,
            blocks = r.blocks_compared,
            written = r.bytes_written,
            zeroed = r.bytes_zeroed,
            "data healed by block checksums"
        ),
        Err(blocks::Stop::Failed(e)) => return Err(e),
        Err(blocks::Stop::NoChecksums { brick, err }) => {
            if blocks::unsupported(&err) {
                blocks::log_once(
                    &CHECKSUMS_REFUSED,
                    || tracing::warn!(%brick, error = %err, "brick gives no block checksums (an older brick?); heal copies whole files"),
                );
            } else {
                tracing::warn!(%gfid, %brick, error = %err, "no block checksums; copying the whole file");
            }
            copy_all_data(children, gfid, src, sinks, a.size).await?;
        }
    }
    seal_sinks(children, gfid, sinks, a.size).await
}

static CHECKSUMS_REFUSED: AtomicBool = AtomicBool::new(false);

/// The full copy: empty `sinks`, then copy `size` bytes of `src` a chunk
/// at a time (chunks of zeros stay holes).
async fn copy_all_data(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
    size: u64,
) -> FopResult<()> {
    empty_sinks(children, gfid, sinks).await?;
    let dsts: Vec<&Child> = sinks.iter().map(|&s| &children[s]).collect();
    copy_keeping_holes(&children[src], &dsts, gfid, size)
        .await
        .map_err(|f| f.err)
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
    seal_sinks_to(children, gfid, sinks, Some(len)).await
}

/// [`seal_sinks`]; `cut: None`, the sinks already have the right length.
async fn seal_sinks_to(
    children: &[Child],
    gfid: Gfid,
    sinks: &[usize],
    cut: Option<u64>,
) -> FopResult<()> {
    for &s in sinks {
        if let Some(len) = cut {
            children[s]
                .fop(Fop::Truncate(bp::Truncate { gfid, size: len }))
                .await?;
        }
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
    copy_metadata_to(children, gfid, src, sinks, false, None).await
}

/// [`copy_metadata`]; `new_sinks`: the sinks' copies were just made by
/// entry heal, so they hold no user xattrs to remove (one listing less
/// per new file); `src_attr`: the sinks were made from these attributes
/// of the source (their mode and owner), read under a whole-file lock
/// that is still held (no setattr can have changed them since), so they
/// are not read again and only the times are set.
pub(crate) async fn copy_metadata_to(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
    new_sinks: bool,
    src_attr: Option<Attr>,
) -> FopResult<()> {
    let made = src_attr.is_some();
    let a = match src_attr {
        Some(a) => a,
        None => children[src]
            .fop(Fop::Stat(bp::Stat { gfid }))
            .await?
            .attr()?,
    };
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
                // A symlink's mode is fixed (0777): only its owner and
                // times are copied. A copy made from `a` has its mode and
                // owner already.
                mode: (a.kind != FileKind::Symlink && !made).then_some(a.mode),
                uid: (!made).then_some(a.uid),
                gid: (!made).then_some(a.gid),
                atime: Some(a.atime),
                mtime: Some(a.mtime),
            }))
            .await?;
        // The sink's user xattrs become the source's.
        let theirs = if new_sinks {
            FopOut::Names(Vec::new())
        } else {
            children[s]
                .fop(Fop::Listxattr(bp::Listxattr { gfid }))
                .await?
        };
        if let FopOut::Names(theirs) = theirs {
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

/// The kind of `gfid` on the first brick that knows it (`None`: on no
/// brick that answered).
pub(crate) async fn kind_of(children: &[Child], gfid: Gfid) -> Option<FileKind> {
    for c in children {
        if let Ok(FopOut::Attr(a)) = c.fop(Fop::Stat(bp::Stat { gfid })).await {
            return Some(a.kind);
        }
    }
    None
}

/// One outcome for a directory's entry heal and inode heal: a split-brain
/// outranks a skip, which outranks a heal; the bricks healed are joined.
pub(crate) fn merge_outcomes(a: HealOutcome, b: HealOutcome) -> HealOutcome {
    use HealOutcome::{Busy, Clean, Healed, Skipped, SplitBrain};
    match (a, b) {
        (SplitBrain(x), _) | (_, SplitBrain(x)) => SplitBrain(x),
        (Skipped(x), _) | (_, Skipped(x)) => Skipped(x),
        (Busy(x), _) | (_, Busy(x)) => Busy(x),
        (Healed(mut x), Healed(y)) => {
            for n in y {
                if !x.contains(&n) {
                    x.push(n);
                }
            }
            Healed(x)
        }
        (Healed(x), Clean) | (Clean, Healed(x)) => Healed(x),
        (Clean, Clean) => Clean,
    }
}

/// The order heal clears the marks it read in, replicate's counters and
/// disperse's dirty counts alike: the good copies first, then the rest of
/// the `n` bricks. If a clear fails part way (a brick dies), what is left
/// is marks on stale copies, never a good copy's mark against copies that
/// are now in sync (see `replicate::clear_counters`).
pub(crate) fn clear_order(n: usize, good: &[usize]) -> Vec<usize> {
    good.iter()
        .copied()
        .chain((0..n).filter(|i| !good.contains(i)))
        .collect()
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
        assert_eq!(clear_order(6, &[1, 3, 4, 5]), vec![1, 3, 4, 5, 0, 2]);
    }

    #[test]
    fn merged_outcomes_keep_the_worst_and_join_the_bricks() {
        use HealOutcome::{Clean, Healed, Skipped, SplitBrain};
        let h = |v: &[&str]| Healed(v.iter().map(|s| s.to_string()).collect());
        let table = [
            (Clean, Clean, Clean),
            (h(&["b1"]), Clean, h(&["b1"])),
            (h(&["b1"]), h(&["b1", "b4"]), h(&["b1", "b4"])),
            (Skipped("x".into()), h(&["b1"]), Skipped("x".into())),
            (
                Skipped("x".into()),
                SplitBrain("y".into()),
                SplitBrain("y".into()),
            ),
        ];
        for (a, b, want) in table {
            assert_eq!(merge_outcomes(a.clone(), b.clone()), want, "{a:?} + {b:?}");
        }
    }
}
