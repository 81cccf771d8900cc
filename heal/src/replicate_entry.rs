//! Replicate's entry heal: with the whole directory locked on every
//! brick (the lock domain entry operations use), read its entry counters
//! and every brick's listing, apply [`entry::plan`] to the stale copies
//! through ordinary operations on those bricks alone, then clear exactly
//! the entry counters that were read (good copies first).

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::fop::{Fop, FopResult};
use mortar_client::replicate::Replicate;
use mortar_net::BoxFuture;
use mortar_proto::brick as bp;
use mortar_proto::{Errno, FileKind, Gfid};

use crate::entry::{self, Action, Entry, EntryState, Plan};
use crate::entry_steps::{
    apply, dir_entry_lock, held_elsewhere, list_every_brick, make_object, unhealed_outcome,
    MakeOnSink,
};
use crate::replicate::{clear_counters, whole_file_lock};
use crate::split_brain::FavoriteChild;
use crate::steps::{copy_data, copy_metadata_to, with_every_brick_locked, JustMade};
use crate::HealOutcome;

/// Heal the names of directory `dir` (every brick of the set is up).
pub(crate) async fn heal_entries(set: &Replicate, dir: Gfid) -> HealOutcome {
    let lock = dir_entry_lock(set.set_name(), dir, set.new_lock_owner());
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
    let listings = match list_every_brick(children, dir).await {
        Ok(l) => l,
        Err(e) => return HealOutcome::Skipped(e),
    };
    // The evidence for removals: a good copy blames the stale copy for
    // entries.
    let blamed: Vec<bool> = (0..children.len())
        .map(|s| good.iter().any(|&g| blames(&views, g, s)))
        .collect();
    let held_elsewhere = held_elsewhere(children, &listings, &good, &stale).await;
    let plan = entry::plan(&EntryState {
        listings: &listings,
        good: &good,
        stale: &stale,
        blamed: &blamed,
        held_elsewhere: &held_elsewhere,
    });
    let maker = ReplicateMaker { set, good: &good };
    if let Err(e) = apply(children, dir, &plan, &maker).await {
        return HealOutcome::Skipped(format!("entry heal of {dir}: {e}"));
    }
    if let Some(outcome) = unhealed_outcome(set.set_name(), dir, &plan) {
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
    let lock = dir_entry_lock(set.set_name(), dir, set.new_lock_owner());
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, dir, &lock, fill_locked(set, dir)).await
}

async fn fill_locked(set: &Replicate, dir: Gfid) -> HealOutcome {
    let children = set.children();
    let listings = match list_every_brick(children, dir).await {
        Ok(l) => l,
        Err(e) => return HealOutcome::Skipped(e),
    };
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
        let maker = ReplicateMaker {
            set,
            good: &holders,
        };
        if let Err(e) = apply(children, dir, &one, &maker).await {
            return HealOutcome::Skipped(format!("full sweep of {dir}: {e}"));
        }
    }
    let left = Plan {
        actions: Vec::new(),
        unhealed: fill.unhealed,
    };
    if let Some(outcome) = unhealed_outcome(set.set_name(), dir, &left) {
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

/// How replicate makes a new object on a sink: see [`create`].
struct ReplicateMaker<'a> {
    set: &'a Replicate,
    good: &'a [usize],
}

impl MakeOnSink for ReplicateMaker<'_> {
    fn make<'a>(
        &'a self,
        dir: Gfid,
        name: &'a str,
        entry: Entry,
        source: usize,
        sink: usize,
    ) -> BoxFuture<'a, FopResult<()>> {
        Box::pin(create(
            self.set,
            dir,
            name,
            entry,
            (source, sink),
            self.good,
        ))
    }
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
    match entry.kind {
        FileKind::Regular => return create_file(set, dir, name, entry, (source, sink)).await,
        FileKind::Directory => mark_new_directory(set, entry.gfid, sink, good).await?,
        FileKind::Symlink | FileKind::Fifo => {}
    }
    make_object(children, dir, name, entry, (source, sink)).await?;
    copy_metadata_to(children, entry.gfid, source, &[sink], true, None).await
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
async fn create_file(
    set: &Replicate,
    dir: Gfid,
    name: &str,
    entry: Entry,
    (source, sink): (usize, usize),
) -> FopResult<()> {
    let gfid = entry.gfid;
    let lock = whole_file_lock(set, gfid);
    let children = set.children();
    let make = async {
        let made = async {
            let a = make_object(children, dir, name, entry, (source, sink)).await?;
            let made = JustMade {
                source,
                sink,
                size: a.size,
            };
            if Some(sink) != set.arbiter() {
                let n = children.len();
                let others: Vec<usize> = (0..n).filter(|&i| i != sink).collect();
                let mut views = set.views(gfid, &others).await;
                // Made just now, under the lock still held: the new copy
                // has no counters, and no writer can have given it any.
                views[sink] = Some(BrickView {
                    blames: vec![[0; 3]; n],
                    dirty: [0; 3],
                });
                if data_heal_follows(&views, source, sink) {
                    // Heal the file's data now, under the lock already
                    // held, rather than leave it to a later claim, lock
                    // and look of its own (a backlog of new files is
                    // mostly this). A split-brain or a skip is left for
                    // the file's own heal, which reports it.
                    let none = FavoriteChild::None;
                    let _ =
                        crate::replicate::heal_viewed(set, gfid, none, &views, Some(made)).await;
                } else {
                    copy_data(children, gfid, source, &[sink], Some(made)).await?;
                }
            }
            // The lock taken before `a` was read is still held.
            copy_metadata_to(children, gfid, source, &[sink], true, Some(a)).await
        };
        match made.await {
            Ok(()) => HealOutcome::Clean,
            Err(e) => HealOutcome::Skipped(e.to_string()),
        }
    };
    let (rt, set_name) = (set.runtime(), set.set_name());
    match with_every_brick_locked(rt, set_name, children, gfid, &lock, make).await {
        HealOutcome::Clean => Ok(()),
        other => Err(mortar_proto::FopError::new(
            Errno::EIO,
            format!("making {gfid} on {}: {other:?}", children[sink].name()),
        )),
    }
}

/// Does the good copy `source` blame `sink` for the file's data (in
/// `views`, every copy's counters)? Then the file's data heal copies it
/// (and clears that blame).
fn data_heal_follows(views: &[Option<BrickView>], source: usize, sink: usize) -> bool {
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
