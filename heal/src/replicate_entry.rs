//! Replicate's entry heal: with the whole directory locked on every
//! brick (the lock domain entry operations use), read its entry counters
//! and every brick's listing, apply [`entry::plan`] to the stale copies
//! through ordinary operations on those bricks alone, then clear exactly
//! the entry counters that were read (good copies first).

use std::collections::BTreeSet;

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::fop::{Child, Fop, FopOut, FopResult};
use mortar_client::replicate::Replicate;
use mortar_net::BoxFuture;
use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::{Errno, FileKind, Gfid};

use crate::entry::{self, Action, Entry, EntryState, Listing, Plan, Unhealed};
use crate::replicate::{clear_counters, whole_file_lock};
use crate::steps::{copy_data, copy_metadata, with_every_brick_locked};
use crate::HealOutcome;

/// Names one brick's listing of a directory may hold for entry heal to
/// take it on: the listing is held in memory for every brick at once.
pub const DIR_ENTRIES_MAX: usize = 100_000;

/// Names asked for per readdir page.
const READDIR_PAGE_ENTRIES: u32 = 512;

/// Directory levels a removal goes down before giving up (a stale copy's
/// subtree that the good copies removed).
const REMOVE_DEPTH_MAX: usize = 64;

/// Heal the names of directory `dir` (every brick of the set is up).
pub(crate) async fn heal_entries(set: &Replicate, dir: Gfid) -> HealOutcome {
    let owner = set.new_lock_owner();
    let lock = |kind: LockKind, wait: Option<u64>| {
        Fop::Entrylk(bp::Entrylk {
            parent: dir,
            name: None,
            domain: set.set_name().to_string(),
            kind,
            owner,
            wait_ms: wait,
        })
    };
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, dir, &lock, heal_locked(set, dir)).await
}

async fn heal_locked(set: &Replicate, dir: Gfid) -> HealOutcome {
    let children = set.children();
    let all: Vec<usize> = (0..children.len()).collect();
    let views = set.views(dir, &all).await;
    if views.iter().any(Option::is_none) {
        return HealOutcome::Skipped(format!("not every brick answered for directory {dir}"));
    }
    let k = Kind::Entry as usize;
    let marked = views
        .iter()
        .flatten()
        .any(|v| v.dirty[k] != 0 || v.blames.iter().any(|b| b[k] != 0));
    if !marked {
        return HealOutcome::Clean;
    }
    let (good, stale) = match afr::examine(&views, Kind::Entry, set.arbiter()) {
        Verdict::Sources { good, stale } => (good, stale),
        Verdict::SplitBrain { accused } => {
            return HealOutcome::SplitBrain(set.split_brain(dir, &accused).to_string())
        }
        Verdict::NoneReachable => {
            return HealOutcome::Skipped(format!("no brick answered for {dir}"))
        }
    };
    let mut listings = Vec::with_capacity(children.len());
    for c in children {
        match list_dir(c, dir).await {
            Ok(l) => listings.push(l),
            Err(e) => return HealOutcome::Skipped(format!("listing {dir} on {}: {e}", c.name())),
        }
    }
    let blamed_by_good: Vec<bool> = (0..children.len())
        .map(|s| good.iter().any(|&g| blames(&views, g, s)))
        .collect();
    let held_elsewhere = held_elsewhere(children, &listings, &good, &stale).await;
    let plan = entry::plan(&EntryState {
        listings: &listings,
        good: &good,
        stale: &stale,
        blamed_by_good: &blamed_by_good,
        held_elsewhere: &held_elsewhere,
    });
    if let Err(e) = apply(set, dir, &plan, &good).await {
        return HealOutcome::Skipped(format!("entry heal of {dir}: {e}"));
    }
    if let Some(outcome) = unhealed_outcome(set, dir, &plan) {
        return outcome;
    }
    if let Err(outcome) = clear_counters(set, dir, Kind::Entry, &views, &good).await {
        return outcome;
    }
    crate::steps::healed_outcome(children, &stale)
}

/// The full sweep's addition to a directory (every brick of the set up):
/// under the directory's entry lock on every brick, names some copies
/// have and others lack are made where they are missing
/// ([`crate::full::fill_plan`]), nothing removed.
pub(crate) async fn fill_names(set: &Replicate, dir: Gfid) -> HealOutcome {
    let owner = set.new_lock_owner();
    let lock = |kind: LockKind, wait: Option<u64>| {
        Fop::Entrylk(bp::Entrylk {
            parent: dir,
            name: None,
            domain: set.set_name().to_string(),
            kind,
            owner,
            wait_ms: wait,
        })
    };
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, dir, &lock, fill_locked(set, dir)).await
}

async fn fill_locked(set: &Replicate, dir: Gfid) -> HealOutcome {
    let children = set.children();
    let mut listings = Vec::with_capacity(children.len());
    for c in children {
        match list_dir(c, dir).await {
            Ok(l) => listings.push(l),
            Err(e) => return HealOutcome::Skipped(format!("listing {dir} on {}: {e}", c.name())),
        }
    }
    if listings.iter().all(|l| *l == listings[0]) {
        return HealOutcome::Clean;
    }
    let all: Vec<usize> = (0..children.len()).collect();
    let held = held_elsewhere(children, &listings, &all, &all).await;
    let fill = crate::full::fill_plan(&listings, &held);
    let mut sinks = Vec::new();
    for (action, holders) in fill.actions {
        if let Action::Create { sink, .. } | Action::Link { sink, .. } = &action {
            if !sinks.contains(sink) {
                sinks.push(*sink);
            }
        }
        let one = Plan {
            actions: vec![action],
            unhealed: Vec::new(),
        };
        if let Err(e) = apply(set, dir, &one, &holders).await {
            return HealOutcome::Skipped(format!("full sweep of {dir}: {e}"));
        }
    }
    let left = Plan {
        actions: Vec::new(),
        unhealed: fill.unhealed,
    };
    if let Some(outcome) = unhealed_outcome(set, dir, &left) {
        return outcome;
    }
    crate::steps::healed_outcome(children, &sinks)
}

/// Does brick `g` blame brick `s` for entries (in `views`)?
fn blames(views: &[Option<BrickView>], g: usize, s: usize) -> bool {
    views[g]
        .as_ref()
        .and_then(|v| v.blames.get(s))
        .is_some_and(|b| b[Kind::Entry as usize] > 0)
}

/// The outcome when the plan left names unhealed: split-brain first; the
/// counters stay, so the directory stays pending heal and is reported.
fn unhealed_outcome(set: &Replicate, dir: Gfid, plan: &Plan) -> Option<HealOutcome> {
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
            "{}: names in directory {dir} are in split-brain (left alone; resolve them with heal): {}",
            set.set_name(),
            split.join("; ")
        )));
    }
    let left: Vec<String> = plan.unhealed.iter().map(describe).collect();
    (!left.is_empty()).then(|| {
        HealOutcome::Skipped(format!(
            "{}: directory {dir} stays pending heal: {}",
            set.set_name(),
            left.join("; ")
        ))
    })
}

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

/// Per brick, which of the good copies' gfids missing from its listing it
/// holds elsewhere (moved in from another directory, or another name).
async fn held_elsewhere(
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
        for &g in wanted.difference(&here) {
            if children[s]
                .fop(Fop::Stat(bp::Stat { gfid: g }))
                .await
                .is_ok()
            {
                held[s].insert(g);
            }
        }
    }
    held
}

/// Apply the plan's actions in order, each on its sink alone.
async fn apply(set: &Replicate, dir: Gfid, plan: &Plan, good: &[usize]) -> Result<(), String> {
    let children = set.children();
    for a in &plan.actions {
        let r = match a {
            Action::Create {
                sink,
                name,
                entry,
                source,
            } => create(set, dir, name, *entry, (*source, *sink), good).await,
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
        };
        r.map_err(|e| format!("{a:?}: {e}"))?;
    }
    Ok(())
}

/// Make `name` on the sink as the source's object `entry` (`on` = source,
/// sink). A new directory is first marked on the good copies as missing
/// its names on the sink, so the crawl heals it next. A regular file is
/// made and filled under its whole-file lock on every brick, so no write
/// lands between.
async fn create(
    set: &Replicate,
    dir: Gfid,
    name: &str,
    entry: Entry,
    on: (usize, usize),
    good: &[usize],
) -> FopResult<()> {
    let (mut source, sink) = on;
    if entry.kind == FileKind::Regular && Some(source) == set.arbiter() {
        // Every good copy holds the name; a file's data comes from one
        // that is not the arbiter (never a data source).
        source = data_source(set, good)?;
    }
    let children = set.children();
    let gfid = entry.gfid;
    let a = children[source]
        .fop(Fop::Stat(bp::Stat { gfid }))
        .await?
        .attr()?;
    let new = bp::NewObject {
        gfid,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
    };
    let (parent, name) = (dir, name.to_string());
    match entry.kind {
        FileKind::Directory => {
            mark_new_directory(set, gfid, sink, good).await?;
            let q = bp::Mkdir { parent, name, new };
            children[sink].fop(Fop::Mkdir(q)).await?;
        }
        FileKind::Symlink => {
            let target = match children[source]
                .fop(Fop::Readlink(bp::Readlink { gfid }))
                .await?
            {
                FopOut::Target(t) => t,
                other => return Err(mortar_client::fop::shape_error("readlink", &other)),
            };
            let q = bp::Symlink {
                parent,
                name,
                target,
                new,
            };
            children[sink].fop(Fop::Symlink(q)).await?;
        }
        FileKind::Fifo => {
            let q = bp::Mknod { parent, name, new };
            children[sink].fop(Fop::Mknod(q)).await?;
        }
        FileKind::Regular => {
            let q = bp::Create { parent, name, new };
            return create_file(set, q, source, sink).await;
        }
    }
    copy_metadata(children, gfid, source, &[sink]).await
}

/// A good copy of the directory that may serve a file's data: not the
/// arbiter.
fn data_source(set: &Replicate, good: &[usize]) -> FopResult<usize> {
    good.iter()
        .copied()
        .find(|g| Some(*g) != set.arbiter())
        .ok_or_else(|| {
            mortar_proto::FopError::new(
                Errno::EIO,
                "the arbiter is the only good copy of the directory, and it never serves a file's data; the file waits until a data brick is a good copy",
            )
        })
}

/// Make a regular file on `sink` and copy in the source's data and
/// metadata, under the file's whole-file lock on every brick. The data is
/// left to the file's own data heal only when the source blames the sink
/// for the file's data (it was written while the sink was down: it is in
/// the source's pending-heal index). Otherwise it is copied here: a file
/// moved away from a directory healed before the one it moved to, or one
/// inside a moved directory, has no data blame and would stay empty.
async fn create_file(set: &Replicate, q: bp::Create, source: usize, sink: usize) -> FopResult<()> {
    let gfid = q.new.gfid;
    let lock = whole_file_lock(set, gfid);
    let children = set.children();
    let (rt, name) = (set.runtime(), set.set_name());
    let make = async {
        let made = async {
            children[sink].fop(Fop::Create(q)).await?;
            if Some(sink) != set.arbiter() && !data_heal_follows(set, gfid, source, sink).await {
                copy_data(children, gfid, source, &[sink]).await?;
            }
            copy_metadata(children, gfid, source, &[sink]).await
        };
        match made.await {
            Ok(()) => HealOutcome::Clean,
            Err(e) => HealOutcome::Skipped(e.to_string()),
        }
    };
    match with_every_brick_locked(rt, name, children, gfid, &lock, make).await {
        HealOutcome::Clean => Ok(()),
        other => Err(mortar_proto::FopError::new(
            Errno::EIO,
            format!("making {gfid} on {}: {other:?}", children[sink].name()),
        )),
    }
}

/// Does the good copy `source` blame `sink` for the data of `gfid`? Then
/// the file's data heal copies it (and clears that blame).
async fn data_heal_follows(set: &Replicate, gfid: Gfid, source: usize, sink: usize) -> bool {
    let views = set.views(gfid, &[source]).await;
    views[source]
        .as_ref()
        .and_then(|v| v.blames.get(sink))
        .is_some_and(|b| b[Kind::Data as usize] > 0)
}

/// Before a directory is made on `sink`, the good copies blame the sink
/// for its entries (durably): its names are then still to be made, and
/// the directory is in the good copies' pending-heal index until they are.
async fn mark_new_directory(
    set: &Replicate,
    gfid: Gfid,
    sink: usize,
    good: &[usize],
) -> FopResult<()> {
    for &g in good {
        set.children()[g]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid,
                deltas: vec![(
                    set.changelog_key(sink).to_string(),
                    kind_delta(Kind::Entry, 1),
                )],
                durable: true,
            }))
            .await?;
    }
    Ok(())
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
            return Err(mortar_proto::FopError::new(
                Errno::ELOOP,
                format!(
                    "directory {} is more than {REMOVE_DEPTH_MAX} levels deep; not removed",
                    entry.gfid
                ),
            ));
        }
        let inner = list_dir(c, entry.gfid)
            .await
            .map_err(|e| mortar_proto::FopError::new(Errno::EIO, e))?;
        for (n, e) in inner {
            remove(c, entry.gfid, n, e, depth + 1).await?;
        }
        let q = bp::Rmdir { parent: dir, name };
        c.fop(Fop::Rmdir(q)).await.map(drop)
    })
}
