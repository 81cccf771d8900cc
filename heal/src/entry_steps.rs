//! The steps entry heal shares between replicate and disperse sets, done
//! on one brick at a time: a directory listed (bounded), the gfids a
//! stale copy holds outside it, an object made on a sink like a good
//! copy's, a plan's actions applied, a removed subtree taken down, and
//! the outcome for names a plan left unhealed. What differs between the
//! set kinds (which copies are good, how a new object is marked so its
//! own heal follows) stays with each set's procedure.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use mortar_client::fop::{shape_error, Child, Fop, FopOut, FopResult};
use mortar_net::BoxFuture;
use mortar_proto::brick as bp;
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::entry::{Action, Entry, Listing, Plan, Unhealed};
use crate::HealOutcome;

/// Names one brick's listing of a directory may hold for entry heal to
/// take it on: the listing is held in memory for every brick at once.
pub const DIR_ENTRIES_MAX: usize = 100_000;

/// Names asked for per readdir page.
const READDIR_PAGE_ENTRIES: u32 = 512;

/// Directory levels a removal goes down before giving up (a stale copy's
/// subtree that the good copies removed).
const REMOVE_DEPTH_MAX: usize = 64;

/// Every name of directory `dir` on one brick, at most
/// [`DIR_ENTRIES_MAX`].
pub(crate) async fn list_dir(c: &Child, dir: Gfid) -> Result<Listing, String> {
    let mut out = Listing::new();
    let mut after = None;
    loop {
        let q = bp::Readdir {
            dir,
            after: after.clone(),
            max_entries: READDIR_PAGE_ENTRIES,
        };
        let page = match c.fop(Fop::Readdir(q)).await.map_err(|e| e.to_string())? {
            FopOut::Dir(d) => d,
            other => return Err(format!("readdir answered {other:?}")),
        };
        after = page.entries.last().map(|e| e.name.clone());
        for e in page.entries {
            let entry = Entry {
                gfid: e.attr.gfid,
                kind: e.attr.kind,
            };
            out.insert(e.name, entry);
        }
        if out.len() > DIR_ENTRIES_MAX {
            return Err(format!(
                "more than {DIR_ENTRIES_MAX} names; entry heal does not take directories this large"
            ));
        }
        if page.eof || after.is_none() {
            return Ok(out);
        }
    }
}

/// Every brick's listing of `dir` (index = brick); `Err` says which brick
/// could not list it and why.
pub(crate) async fn list_every_brick(
    children: &[Child],
    dir: Gfid,
) -> Result<Vec<Listing>, String> {
    let mut listings = Vec::with_capacity(children.len());
    for c in children {
        match list_dir(c, dir).await {
            Ok(l) => listings.push(l),
            Err(e) => return Err(format!("listing {dir} on {}: {e}", c.name())),
        }
    }
    Ok(listings)
}

/// Per brick, which of the good copies' gfids missing from its listing it
/// holds elsewhere (moved in from another directory, or another name).
pub(crate) async fn held_elsewhere(
    children: &[Child],
    listings: &[Listing],
    good: &[usize],
    stale: &[usize],
) -> Vec<BTreeSet<Gfid>> {
    let mut held = vec![BTreeSet::new(); children.len()];
    let wanted: BTreeSet<Gfid> = good
        .iter()
        .flat_map(|&g| listings[g].values().map(|e| e.gfid))
        .collect();
    for &s in stale {
        let here: BTreeSet<Gfid> = listings[s].values().map(|e| e.gfid).collect();
        let missing: Vec<Gfid> = wanted.difference(&here).copied().collect();
        held[s] = held_of(&children[s], &missing).await;
    }
    held
}

/// Which of `gfids` brick `c` holds: asked at once
/// ([`crate::steps::kinds_of`]), or (an older brick without the
/// procedure, or an error) one stat each.
async fn held_of(c: &Child, gfids: &[Gfid]) -> BTreeSet<Gfid> {
    if let Some(kinds) = crate::steps::kinds_of(c.as_ref(), gfids).await {
        return gfids
            .iter()
            .zip(kinds)
            .filter_map(|(g, k)| k.map(|_| *g))
            .collect();
    }
    let mut held = BTreeSet::new();
    for &g in gfids {
        if c.fop(Fop::Stat(bp::Stat { gfid: g })).await.is_ok() {
            held.insert(g);
        }
    }
    held
}

/// The outcome when the plan left names unhealed: split-brain first; the
/// counters stay, so the directory stays pending heal and is reported.
pub(crate) fn unhealed_outcome(set: &str, dir: Gfid, plan: &Plan) -> Option<HealOutcome> {
    let describe = |u: &Unhealed| match u {
        Unhealed::SplitBrain { name, why } | Unhealed::LeftAlone { name, why } => {
            format!("{name:?}: {why}")
        }
    };
    let split: Vec<String> = plan
        .unhealed
        .iter()
        .filter(|u| matches!(u, Unhealed::SplitBrain { .. }))
        .map(describe)
        .collect();
    if !split.is_empty() {
        return Some(HealOutcome::SplitBrain(format!(
            "{set}: names in directory {dir} are in split-brain (left alone; resolve them with heal): {}",
            split.join("; ")
        )));
    }
    let left: Vec<String> = plan.unhealed.iter().map(describe).collect();
    (!left.is_empty()).then(|| {
        HealOutcome::Skipped(format!(
            "{set}: directory {dir} stays pending heal: {}",
            left.join("; ")
        ))
    })
}

/// The whole-directory entry lock on `dir` in the set's lock domain (the
/// one entry operations take), under `owner`, as a request for one brick.
pub(crate) fn dir_entry_lock(
    set: &str,
    dir: Gfid,
    owner: u64,
) -> impl Fn(mortar_proto::brick::LockKind, Option<u64>) -> Fop + Sync + '_ {
    move |kind, wait| {
        Fop::Entrylk(bp::Entrylk {
            parent: dir,
            name: None,
            domain: set.to_string(),
            kind,
            owner,
            wait_ms: wait,
        })
    }
}

/// How a set makes a new object on a sink (the plan's
/// [`Action::Create`]): the object itself ([`make_object`]) and whatever
/// that set's heal needs around it (marks, data, metadata).
pub(crate) trait MakeOnSink: Sync {
    /// Make `name` in `dir` on brick `sink` as the object `entry` that
    /// brick `source` holds.
    fn make<'a>(
        &'a self,
        dir: Gfid,
        name: &'a str,
        entry: Entry,
        source: usize,
        sink: usize,
    ) -> BoxFuture<'a, FopResult<()>>;
}

/// Names of one directory entry heal makes at once: each new object is a
/// dozen or so round trips of waiting (locks, make, data, metadata), so
/// one at a time leaves a directory of 500 new files healing for
/// seconds; the bound keeps what one heal holds at once small.
pub const ENTRY_ACTIONS_AT_ONCE_MAX: usize = 32;

/// Most actions one run of independent creates and links holds (see
/// [`batch_len`]); it is worked through [`ENTRY_ACTIONS_AT_ONCE_MAX`] at a
/// time, a new one starting as soon as one ends.
pub const RUN_ACTIONS_MAX: usize = 4096;

/// Apply the plan's actions in order, each on its sink alone; new objects
/// are made by `maker`. A run of consecutive creates and links (distinct
/// names, none depending on another) is worked through with
/// [`ENTRY_ACTIONS_AT_ONCE_MAX`] in flight, the next starting as soon as
/// one ends (batches that waited for their slowest member left the
/// machine idle between them); a rename or removal waits for what comes
/// before it and runs alone, so the plan's order (free slots first, then
/// removals, then the names a removal freed) holds.
pub(crate) async fn apply(
    children: &[Child],
    dir: Gfid,
    plan: &Plan,
    maker: &dyn MakeOnSink,
) -> Result<(), String> {
    let mut i = 0;
    while i < plan.actions.len() {
        let run = batch_len(&plan.actions[i..]);
        let batch = &plan.actions[i..i + run];
        let work = batch.iter().map(|a| -> BoxFuture<'_, Option<String>> {
            Box::pin(async move {
                apply_one(children, dir, a, maker)
                    .await
                    .err()
                    .map(|e| format!("{a:?}: {e}"))
            })
        });
        let failed = in_window(work, ENTRY_ACTIONS_AT_ONCE_MAX).await;
        if let Some(first) = failed.into_iter().flatten().next() {
            return Err(first);
        }
        i += run;
    }
    Ok(())
}

/// Run `work` with at most `at_once` in flight, a new one starting as soon
/// as one ends; every result, in the order they ended.
pub(crate) async fn in_window<'a, T: Send + 'a>(
    work: impl Iterator<Item = BoxFuture<'a, T>>,
    at_once: usize,
) -> Vec<T> {
    let mut work = work;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut out = Vec::new();
    loop {
        while running.len() < at_once.max(1) {
            match work.next() {
                Some(f) => running.push(f),
                None => break,
            }
        }
        match running.next().await {
            Some(r) => out.push(r),
            None => return out,
        }
    }
}

/// How many of `actions` (from the first) form one run of independent
/// work: creates and links, at most [`RUN_ACTIONS_MAX`], up to a link of an object
/// the same batch creates (the plan links a second name of a new object
/// after making it); anything else runs alone.
pub(crate) fn batch_len(actions: &[Action]) -> usize {
    let mut made = BTreeSet::new();
    let mut n = 0;
    for a in actions.iter().take(RUN_ACTIONS_MAX) {
        match a {
            Action::Create { entry, .. } => {
                made.insert(entry.gfid);
            }
            Action::Link { gfid, .. } if !made.contains(gfid) => {}
            _ => break,
        }
        n += 1;
    }
    n.max(1)
}

/// One action of the plan on its sink.
async fn apply_one(
    children: &[Child],
    dir: Gfid,
    a: &Action,
    maker: &dyn MakeOnSink,
) -> FopResult<()> {
    match a {
        Action::Create {
            sink,
            name,
            entry,
            source,
        } => maker.make(dir, name, *entry, *source, *sink).await,
        Action::Link { sink, name, gfid } => children[*sink]
            .fop(Fop::Link(bp::Link {
                gfid: *gfid,
                new_parent: dir,
                new_name: name.clone(),
            }))
            .await
            .map(drop),
        Action::Rename {
            sink, from, name, ..
        } => children[*sink]
            .fop(Fop::Rename(bp::Rename {
                old_parent: dir,
                old_name: from.clone(),
                new_parent: dir,
                new_name: name.clone(),
            }))
            .await
            .map(drop),
        Action::Remove { sink, name, entry } => {
            remove(&children[*sink], dir, name.clone(), *entry, 0).await
        }
    }
}

/// Make `name` in `dir` on `sink` as the object `entry` held by `source`:
/// the same gfid, kind, mode and owner, and a symlink's target. Times,
/// xattrs and data are the caller's to copy. Returns the source's
/// attributes as read for it.
pub(crate) async fn make_object(
    children: &[Child],
    dir: Gfid,
    name: &str,
    entry: Entry,
    (source, sink): (usize, usize),
) -> FopResult<Attr> {
    let gfid = entry.gfid;
    let a = children[source]
        .fop(Fop::Stat(bp::Stat { gfid }))
        .await?
        .attr()?;
    if a.kind != entry.kind {
        return Err(listed_as_other(children, source, &a, &entry));
    }
    let new = bp::NewObject {
        gfid,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
    };
    let (parent, name) = (dir, name.to_string());
    let op = match entry.kind {
        FileKind::Directory => Fop::Mkdir(bp::Mkdir { parent, name, new }),
        FileKind::Regular => Fop::Create(bp::Create { parent, name, new }),
        FileKind::Fifo => Fop::Mknod(bp::Mknod { parent, name, new }),
        FileKind::Symlink => {
            let target = match children[source]
                .fop(Fop::Readlink(bp::Readlink { gfid }))
                .await?
            {
                FopOut::Target(t) => t,
                other => return Err(shape_error("readlink", &other)),
            };
            Fop::Symlink(bp::Symlink {
                parent,
                name,
                target,
                new,
            })
        }
    };
    children[sink].fop(op).await.map(|_| a)
}

/// Make the small regular file `entry` on `sink` whole from `source` in
/// two requests (a [`bp::ReadWhole`] and a [`bp::CreateWhole`]): data,
/// mode, owner, user xattrs and times, all in place before the name
/// appears; neither the copy nor its name is durable yet (the caller's
/// barrier and directory fsync make them so).
/// `Ok(None)`: it cannot go whole (larger than [`bp::WHOLE_BYTES_MAX`],
/// too many xattrs, or a brick that does not know the procedures) and
/// nothing was made; the caller makes it piece by piece. `Ok(Some(a))`:
/// made from the source's attributes `a`.
pub(crate) async fn make_whole(
    children: &[Child],
    dir: Gfid,
    name: &str,
    entry: Entry,
    (source, sink): (usize, usize),
) -> FopResult<Option<Attr>> {
    let gfid = entry.gfid;
    let q = bp::ReadWhole {
        gfid,
        len_max: bp::WHOLE_BYTES_MAX,
    };
    let (whole, data) = match children[source].fop(Fop::ReadWhole(q)).await {
        Ok(FopOut::Whole(w, d)) => (w, d),
        Ok(other) => return Err(shape_error("read whole", &other)),
        Err(e) if goes_piece_by_piece(&e, children[source].name()) => return Ok(None),
        Err(e) => return Err(e),
    };
    let a = whole.attr;
    if a.kind != entry.kind {
        return Err(listed_as_other(children, source, &a, &entry));
    }
    if !whole.data {
        return Ok(None);
    }
    let q = bp::CreateWhole {
        parent: dir,
        name: name.to_string(),
        new: bp::NewObject {
            gfid,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
        },
        user_xattrs: whole.user_xattrs,
        atime: a.atime,
        mtime: a.mtime,
        // The caller fsyncs the directory once its names are made
        // ([`sync_new_names`]), and makes the copy durable (one sync for
        // many copies, [`crate::commit::Committer::barrier`]) before it
        // clears any blame on it.
        sync_dir: false,
        sync_file: false,
    };
    match children[sink].fop(Fop::CreateWhole(q, data)).await {
        Ok(_) => Ok(Some(a)),
        Err(e) if goes_piece_by_piece(&e, children[sink].name()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Make the names `plan` created in `dir` durable: one fsync of the
/// directory on each sink that got one ([`make_whole`] leaves it to this),
/// before the counters that blame those sinks for the directory's entries
/// are cleared.
pub(crate) async fn sync_new_names(children: &[Child], dir: Gfid, plan: &Plan) -> FopResult<()> {
    let mut sinks: Vec<usize> = Vec::new();
    for a in &plan.actions {
        if let Action::Create { sink, .. } = a {
            if !sinks.contains(sink) {
                sinks.push(*sink);
            }
        }
    }
    sync_dir_on(children, dir, &sinks).await
}

/// An fsync of directory `dir` on each of `sinks`.
pub(crate) async fn sync_dir_on(children: &[Child], dir: Gfid, sinks: &[usize]) -> FopResult<()> {
    for &s in sinks {
        let q = bp::Fsync {
            gfid: dir,
            datasync: false,
        };
        children[s].fop(Fop::Fsync(q)).await?;
    }
    Ok(())
}

/// A refusal of [`make_whole`]'s procedures that means "not this way"
/// rather than a failure: an older brick (logged once per process), or a
/// file whose xattrs are too many to carry at once.
fn goes_piece_by_piece(e: &FopError, brick: &str) -> bool {
    if e.errno == Errno::EPROTO {
        crate::blocks::log_once(&WHOLE_REFUSED, || {
            tracing::warn!(%brick, error = %e, "brick cannot read or make a file whole (an older brick?); entry heal copies new files piece by piece");
        });
        return true;
    }
    e.errno == Errno::E2BIG
}

static WHOLE_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn listed_as_other(children: &[Child], source: usize, a: &Attr, entry: &Entry) -> FopError {
    FopError::new(
        Errno::EIO,
        format!(
            "{} is a {:?} on {} but was listed as a {:?}",
            entry.gfid,
            a.kind,
            children[source].name(),
            entry.kind
        ),
    )
}

/// Remove `name` (`entry`) from directory `dir` on one brick; a directory
/// with everything it holds there, at most [`REMOVE_DEPTH_MAX`] levels
/// down.
fn remove<'a>(
    c: &'a Child,
    dir: Gfid,
    name: String,
    entry: Entry,
    depth: usize,
) -> BoxFuture<'a, FopResult<()>> {
    Box::pin(async move {
        if entry.kind != FileKind::Directory {
            let q = bp::Unlink { parent: dir, name };
            return c.fop(Fop::Unlink(q)).await.map(drop);
        }
        if depth >= REMOVE_DEPTH_MAX {
            return Err(FopError::new(
                Errno::ELOOP,
                format!(
                    "directory {} is more than {REMOVE_DEPTH_MAX} levels deep; not removed",
                    entry.gfid
                ),
            ));
        }
        let inner = list_dir(c, entry.gfid)
            .await
            .map_err(|e| FopError::new(Errno::EIO, e))?;
        for (n, e) in inner {
            remove(c, entry.gfid, n, e, depth + 1).await?;
        }
        let q = bp::Rmdir { parent: dir, name };
        c.fop(Fop::Rmdir(q)).await.map(drop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_actions_run_at_once() {
        let g = Gfid::from_u128;
        let create = |n: u128| Action::Create {
            sink: 1,
            name: format!("c{n}"),
            entry: Entry {
                gfid: g(n),
                kind: FileKind::Regular,
            },
            source: 0,
        };
        let link = |n: u128| Action::Link {
            sink: 1,
            name: format!("l{n}"),
            gfid: g(n),
        };
        let remove = Action::Remove {
            sink: 1,
            name: "r".into(),
            entry: Entry {
                gfid: g(99),
                kind: FileKind::Regular,
            },
        };
        for (actions, want, why) in [
            (
                vec![create(1), create(2), link(7)],
                3,
                "independent creates and links",
            ),
            (
                vec![create(1), link(1), create(2)],
                1,
                "a link of what the batch creates waits",
            ),
            (vec![remove.clone(), create(1)], 1, "a removal runs alone"),
            (
                vec![create(1), remove.clone(), create(2)],
                1,
                "and what precedes it first",
            ),
            (
                (1..=RUN_ACTIONS_MAX as u128 + 5).map(create).collect(),
                RUN_ACTIONS_MAX,
                "bounded",
            ),
        ] {
            assert_eq!(batch_len(&actions), want, "{why}");
        }
    }
}
