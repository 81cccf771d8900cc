//! Replicate's entry heal: with the whole directory locked on every
//! brick (the lock domain entry operations use), read its entry counters
//! and every brick's listing, apply [`entry::plan`] to the stale copies
//! through ordinary operations on those bricks alone, then clear exactly
//! the entry counters that were read (good copies first).

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::fop::{Child, Fop, FopResult};
use mortar_client::replicate::Replicate;
use mortar_net::BoxFuture;
use mortar_proto::brick as bp;
use mortar_proto::{Errno, FileKind, Gfid};

use crate::commit::Committer;
use crate::entry::{self, Action, Entry, EntryState, Listing, Plan};
use crate::entry_steps::{
    apply, dir_entry_lock, held_elsewhere, list_every_brick, make_object, make_whole, sync_dir_on,
    sync_new_names, unhealed_outcome, MakeOnSink,
};
use crate::replicate::{clear_counters, clearing_ops, marked, whole_file_lock};
use crate::split_brain::FavoriteChild;
use crate::steps::{
    copy_data, copy_metadata_to, locked_on_every_brick, with_every_brick_locked, JustMade,
};
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
    if !marked(&views, Kind::Entry) {
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
    // Copies that did not finish an entry operation (dirty, no blame
    // anywhere) are healed from those that did; the clean ones blame them
    // first, so they stay marked if this heal is cut short.
    let (good, stale, views) = match crate::source::clean_sources(&views, Kind::Entry, &good) {
        Some((clean, dirty)) if stale.is_empty() => {
            let recorded =
                crate::replicate::record_settlement(set, dir, Kind::Entry, &views, &clean, &dirty)
                    .await;
            match recorded {
                Ok(after) => (clean, dirty, after),
                Err(outcome) => return outcome,
            }
        }
        _ => (good, stale, views),
    };
    let mut listings = match list_every_brick(children, dir).await {
        Ok(l) => l,
        Err(e) => return HealOutcome::Skipped(e),
    };
    // The evidence for removals: a good copy blames the stale copy for
    // entries.
    let blamed: Vec<bool> = (0..children.len())
        .map(|s| good.iter().any(|&g| blames(&views, g, s)))
        .collect();
    let held_elsewhere = held_elsewhere(children, &listings, &good, &stale).await;
    if let Some(arbiter) = set.arbiter() {
        let dataless = entry::dataless_on_arbiter(&listings, arbiter, &good, &held_elsewhere);
        for (name, e) in dataless {
            tracing::warn!(set = set.set_name(), %dir, %name, gfid = %e.gfid,
                "a file only the arbiter holds has its data on no data brick; removing the arbiter's name");
            let one = Plan {
                actions: vec![Action::Remove {
                    sink: arbiter,
                    name: name.clone(),
                    entry: e,
                }],
                unhealed: Vec::new(),
            };
            let maker = ReplicateMaker {
                set,
                good: &good,
                commits: &committers(children),
            };
            if let Err(err) = apply(children, dir, &one, &maker).await {
                return HealOutcome::Skipped(format!(
                    "entry heal of {dir}: removing {name:?}, which only the arbiter holds: {err}"
                ));
            }
            listings[arbiter].remove(&name);
        }
    }
    if crate::source::merges_names(&views, &good, &stale) {
        return merge_names(set, dir, &listings, &views, &good).await;
    }
    let plan = entry::plan(&EntryState {
        listings: &listings,
        good: &good,
        stale: &stale,
        blamed: &blamed,
        held_elsewhere: &held_elsewhere,
    });
    let commits = committers(children);
    let maker = ReplicateMaker {
        set,
        good: &good,
        commits: &commits,
    };
    if let Err(e) = apply(children, dir, &plan, &maker).await {
        return HealOutcome::Skipped(format!("entry heal of {dir}: {e}"));
    }
    if let Err(e) = sync_new_names(children, dir, &plan).await {
        return HealOutcome::Skipped(format!("making the new names of {dir} durable: {e}"));
    }
    if let Some(outcome) = unhealed_outcome(set.set_name(), dir, &plan) {
        return outcome;
    }
    if let Err(outcome) = clear_counters(set, dir, Kind::Entry, &views, &good).await {
        return outcome;
    }
    crate::steps::healed_outcome(children, &stale)
}

/// Every copy left an entry operation unfinished
/// ([`crate::source::merges_names`]): merge the names, then clear the
/// marks that were read.
async fn merge_names(
    set: &Replicate,
    dir: Gfid,
    listings: &[Listing],
    views: &[Option<BrickView>],
    good: &[usize],
) -> HealOutcome {
    let sinks = match fill_listed(set, dir, listings).await {
        Ok(sinks) => sinks,
        Err(outcome) => return outcome,
    };
    if let Err(outcome) = clear_counters(set, dir, Kind::Entry, views, good).await {
        return outcome;
    }
    crate::steps::healed_outcome(set.children(), &sinks)
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
    match fill_listed(set, dir, &listings).await {
        Ok(sinks) => crate::steps::healed_outcome(children, &sinks),
        Err(outcome) => outcome,
    }
}

/// Under the directory's entry lock on every brick, with `listings` read
/// there: make each name where it is missing ([`crate::full::fill_plan`]),
/// nothing removed, and make the new names durable. The bricks that gained
/// names, or the outcome that stops here (a step failed, or names are
/// left unhealed, a split-brain among them).
async fn fill_listed(
    set: &Replicate,
    dir: Gfid,
    listings: &[Listing],
) -> Result<Vec<usize>, HealOutcome> {
    let children = set.children();
    let all: Vec<usize> = (0..children.len()).collect();
    let held = held_elsewhere(children, listings, &all, &all).await;
    let fill = crate::full::fill_plan(listings, &held, 1);
    let commits = committers(children);
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
            commits: &commits,
        };
        if let Err(e) = apply(children, dir, &one, &maker).await {
            return Err(HealOutcome::Skipped(format!(
                "filling the names of {dir}: {e}"
            )));
        }
    }
    if let Err(e) = sync_dir_on(children, dir, &sinks).await {
        return Err(HealOutcome::Skipped(format!(
            "making the new names of {dir} durable: {e}"
        )));
    }
    let left = Plan {
        actions: Vec::new(),
        unhealed: fill.unhealed,
    };
    if let Some(outcome) = unhealed_outcome(set.set_name(), dir, &left) {
        return Err(outcome);
    }
    Ok(sinks)
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
    /// Per brick, the group commit of the durable steps of the new files.
    commits: &'a [Committer],
}

/// One [`Committer`] per brick of the set.
fn committers(children: &[Child]) -> Vec<Committer> {
    children.iter().map(|c| Committer::new(c.clone())).collect()
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
            self.commits,
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
    commits: &[Committer],
) -> FopResult<()> {
    let (mut source, sink) = on;
    if entry.kind == FileKind::Regular && Some(source) == set.arbiter() {
        // Every good copy holds the name; a file's data comes from one
        // that is not the arbiter (never a data source).
        source = data_source(set, good)?;
    }
    let children = set.children();
    match entry.kind {
        FileKind::Regular => {
            return create_file(set, dir, name, entry, (source, sink), commits).await
        }
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
/// metadata. A small file is made whole ([`create_whole`]); otherwise
/// piece by piece under the file's whole-file lock on every brick. The
/// data is left to the file's own data heal only when the source blames
/// the sink for the file's data (it was written while the sink was down:
/// it is in the source's pending-heal index). Otherwise it is copied
/// here: a file moved away from a directory healed before the one it
/// moved to, or one inside a moved directory, has no data blame and would
/// stay empty.
async fn create_file(
    set: &Replicate,
    dir: Gfid,
    name: &str,
    entry: Entry,
    (source, sink): (usize, usize),
    commits: &[Committer],
) -> FopResult<()> {
    // Not to the arbiter, which holds no data.
    let on = (source, sink);
    if Some(sink) != set.arbiter() && create_whole(set, dir, name, &entry, on, commits).await? {
        return Ok(());
    }
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
                let views = views_with_new_copy(set, gfid, sink).await;
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
    made_outcome(
        set,
        gfid,
        sink,
        with_every_brick_locked(rt, set_name, children, gfid, &lock, make).await,
    )
}

/// Make the small file `entry` whole on `sink` ([`make_whole`]: data,
/// metadata and name in one request) under its whole-file lock on every
/// brick but the sink, make the copy durable, then clear the counters the
/// good copies hold against the sink for it when [`whole_copy_settles`]
/// says that is all its heal would do (good copies first, as
/// [`clear_counters`] does). Both durable steps go through `commits`, the
/// bricks' group commits: one filesystem sync per brick for a window of
/// files, not an fsync per file and step. `Ok(false)`: it cannot go whole
/// and nothing was made.
///
/// The sink's lock is not needed: the copy does not exist there until it
/// is complete, so no writer can have changed it part-made, and a writer
/// that changes it after must hold the lock of every brick it reaches,
/// the sources among them (held here) unless it cannot reach them; then
/// it blames them on the sink, the only copy this heal does not touch,
/// and the next heal copies its write back.
async fn create_whole(
    set: &Replicate,
    dir: Gfid,
    name: &str,
    entry: &Entry,
    (source, sink): (usize, usize),
    commits: &[Committer],
) -> FopResult<bool> {
    let gfid = entry.gfid;
    let lock = whole_file_lock(set, gfid);
    let children = set.children();
    let others: Vec<Child> = (0..children.len())
        .filter(|&i| i != sink)
        .map(|i| children[i].clone())
        .collect();
    let work = async {
        let Some(_) = make_whole(children, dir, name, *entry, (source, sink)).await? else {
            return Ok(false);
        };
        let views = views_with_new_copy(set, gfid, sink).await;
        // Whatever follows, the copy is durable before anything can rely
        // on it (a later heal would clear the blame it answers).
        commits[sink].barrier(gfid).await?;
        if whole_copy_settles(&views, set.arbiter(), source, sink) {
            // Only the counters are cleared: the copy is what the source
            // held. A failed clear is left to the file's own heal.
            let _ = clear_whole_copy(set, gfid, &views, sink, commits).await;
        }
        Ok(true)
    };
    let (rt, set_name) = (set.runtime(), set.set_name());
    locked_on_every_brick(rt, set_name, &others, &lock, work)
        .await
        .map_err(|e| {
            mortar_proto::FopError::new(
                Errno::EIO,
                format!("making {gfid} on {}: {e}", children[sink].name()),
            )
        })?
}

/// Clear, brick by brick (good copies first: every brick but the sink,
/// which has no counters), the data and metadata counters `views` read,
/// each brick's in one durable step of its group commit.
async fn clear_whole_copy(
    set: &Replicate,
    gfid: Gfid,
    views: &[Option<BrickView>],
    sink: usize,
    commits: &[Committer],
) -> FopResult<()> {
    let n = set.children().len();
    let good: Vec<usize> = (0..n).filter(|&i| i != sink).collect();
    let kinds = [Kind::Data, Kind::Metadata];
    for (i, op) in clearing_ops(set, gfid, &kinds, views, &good) {
        commits[i].xattrop(op).await?;
    }
    Ok(())
}

/// Every copy's counters of `gfid` but `sink`'s, read now (under a lock
/// held), with `sink`'s as a copy just made has them: none, and no
/// writer can have given it any that this heal would clear.
async fn views_with_new_copy(set: &Replicate, gfid: Gfid, sink: usize) -> Vec<Option<BrickView>> {
    let n = set.children().len();
    let others: Vec<usize> = (0..n).filter(|&i| i != sink).collect();
    let mut views = set.views(gfid, &others).await;
    views[sink] = Some(BrickView {
        blames: vec![[0; 3]; n],
        dirty: [0; 3],
    });
    views
}

fn made_outcome(set: &Replicate, gfid: Gfid, sink: usize, outcome: HealOutcome) -> FopResult<()> {
    match outcome {
        HealOutcome::Clean => Ok(()),
        other => Err(mortar_proto::FopError::new(
            Errno::EIO,
            format!(
                "making {gfid} on {}: {other:?}",
                set.children()[sink].name()
            ),
        )),
    }
}

/// After `sink`'s copy was made whole from `source`: is clearing the
/// counters all its heal has left to do? So it is when, for data and for
/// metadata, either nothing is marked or the changelog's verdict is that
/// `source` is good and `sink` the only stale copy. Anything else (another
/// stale copy, dirty marks without blame, a split-brain) would have the
/// heal write to copies this heal did not lock: it is left to the file's
/// own heal.
pub(crate) fn whole_copy_settles(
    views: &[Option<BrickView>],
    arbiter: Option<usize>,
    source: usize,
    sink: usize,
) -> bool {
    [Kind::Data, Kind::Metadata].into_iter().all(|kind| {
        !marked(views, kind)
            || matches!(
                afr::examine(views, kind, arbiter),
                Verdict::Sources { good, stale } if good.contains(&source) && stale == [sink]
            )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy's counters: `dirty` and per copy the blame, for data then
    /// metadata.
    fn view(dirty: [i64; 2], blames: &[[i64; 2]]) -> Option<BrickView> {
        Some(BrickView {
            blames: blames.iter().map(|b| [b[0], b[1], 0]).collect(),
            dirty: [dirty[0], dirty[1], 0],
        })
    }

    #[test]
    fn a_whole_copy_settles_only_when_the_sink_is_the_one_stale_copy() {
        let none = [0, 0];
        let fresh = view(none, &[none; 3]);
        // Source 0, sink 2 (made whole from 0); the sink's counters are a
        // new copy's: none.
        let blames_sink = view(none, &[none, none, [1, 0]]);
        for (views, arbiter, want, why) in [
            (vec![fresh.clone(); 3], None, true, "nothing marked"),
            (
                vec![blames_sink.clone(), blames_sink.clone(), fresh.clone()],
                None,
                true,
                "both sources blame the sink's data",
            ),
            (
                vec![blames_sink.clone(), fresh.clone(), fresh.clone()],
                None,
                true,
                "one source blames the sink",
            ),
            (
                vec![
                    view(none, &[none, none, [1, 1]]),
                    view(none, &[none, none, [0, 1]]),
                    fresh.clone(),
                ],
                None,
                true,
                "data and metadata blamed on the sink",
            ),
            (
                vec![
                    view(none, &[none, [1, 0], [1, 0]]),
                    fresh.clone(),
                    fresh.clone(),
                ],
                None,
                false,
                "copy 1 is stale too: its heal would write to it",
            ),
            (
                vec![
                    view([1, 0], &[none; 3]),
                    view([1, 0], &[none; 3]),
                    fresh.clone(),
                ],
                None,
                false,
                "dirty without blame: a copy would be picked and the others written",
            ),
            (
                vec![
                    fresh.clone(),
                    view(none, &[[1, 0], none, [1, 0]]),
                    fresh.clone(),
                ],
                None,
                false,
                "copy 1 blames the source itself",
            ),
            (
                vec![blames_sink.clone(), blames_sink.clone(), fresh.clone()],
                Some(1),
                true,
                "an arbiter among the sources",
            ),
        ] {
            assert_eq!(whole_copy_settles(&views, arbiter, 0, 2), want, "{why}");
        }
    }
}
