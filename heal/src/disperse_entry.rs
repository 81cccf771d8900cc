//! Disperse's entry heal: the names of one directory made the same on
//! every brick of the set.
//!
//! Every brick holds the whole directory (names are not erasure-coded).
//! An entry operation steps the parent's version (the data version of
//! its `trusted.mortar.ec`) by one random step on every brick that took
//! it, and adds an entry dirty mark there when not every brick of the set
//! did (`mortar-client`'s `disperse/entry.rs`). So the bricks that took
//! every operation agree on the version, and a brick that missed one (or
//! took one the others did not) does not.
//!
//! **The rule** ([`directory_copies`], pure, table-tested):
//! * the *good* copies are the directory's current generation: the group
//!   of at least `k` bricks agreeing on its version, the rule reads use
//!   ([`mortar_client::disperse::current`]); with no such group nothing is
//!   healed (the versions are reported);
//! * the *sinks* are the other bricks;
//! * a sink is *blamed* (names only it holds may be removed from it) when
//!   some brick carries an entry dirty mark: an entry operation here did
//!   not reach every brick, and the versions say the sink is not among
//!   those that hold the current names. A version difference with no mark
//!   anywhere is not explained, so extra names are then left alone.
//!
//! What to create, link, rename, remove or report is the plan replicate
//! uses too ([`crate::entry::plan`]). The procedure, with the directory's
//! entry lock held on every brick (the lock entry operations take):
//! versions and dirty marks read, every listing read (at most
//! 100,000 names a brick, `DIR_ENTRIES_MAX`), the plan
//! applied on the sinks alone. A new object is first marked on the good
//! copies, durably, so it is in their pending-heal index until its own
//! heal has run: a directory with an entry mark (the crawl heals its names
//! next), anything else with a data mark, and it is healed at once in the
//! same pass (its fragment rebuilt from the current generation by
//! [`crate::disperse`]'s inode heal, which takes that mark back). Then the
//! sinks' directory versions are raised to the current one and the entry
//! dirty counts read are taken back, good copies first, all durably.

use std::collections::BTreeSet;

use mortar_client::afr::{dirty_delta, Kind};
use mortar_client::disperse::{current, ec_delta, Disagreement, Disperse, FragInfo};
use mortar_client::fop::{Fop, FopResult};
use mortar_net::BoxFuture;
use mortar_proto::brick as bp;
use mortar_proto::{FileKind, FopError, Gfid};

use crate::disperse::{heal_inode, read_counters, version_gap};
use crate::entry::{self, Action, Entry, EntryState, Plan};
use crate::entry_steps::{
    apply, dir_entry_lock, held_elsewhere, list_every_brick, make_object, unhealed_outcome,
    MakeOnSink,
};
use crate::steps::{
    clear_order, copy_metadata_to, healed_outcome, merge_outcomes, with_every_brick_locked,
};
use crate::HealOutcome;

/// Which copies of a disperse directory heal trusts for its names, and
/// what it may do to the others (see the module's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryCopies {
    /// The current generation, ascending.
    pub good: Vec<usize>,
    /// The bricks that answered and are not of it, ascending.
    pub sinks: Vec<usize>,
    /// Per brick: names only it holds may be removed from it.
    pub blamed: Vec<bool>,
    /// The version (and size, zero for a directory) the good copies share.
    pub current: FragInfo,
}

/// The rule: from each brick's version of the directory (`None`: did not
/// answer; such a brick is neither good nor a sink) and its entry dirty
/// count, the good copies, the sinks and which sinks are blamed.
/// `Ok(None)`: nothing to heal (one version everywhere, no marks).
/// `Err`: no version is held by `k` bricks.
pub fn directory_copies(
    infos: &[Option<FragInfo>],
    entry_dirty: &[i32],
    k: usize,
) -> Result<Option<DirectoryCopies>, Disagreement> {
    debug_assert_eq!(infos.len(), entry_dirty.len());
    let cur = current(infos, k, Kind::Data)?;
    let sinks: Vec<usize> = (0..infos.len())
        .filter(|i| infos[*i].is_some() && !cur.bricks.contains(i))
        .collect();
    let marked = entry_dirty.iter().any(|d| *d != 0);
    if sinks.is_empty() && !marked {
        return Ok(None);
    }
    // The evidence that an operation missed some bricks: a mark left by
    // an entry operation that not every brick took.
    let evidence = entry_dirty.iter().any(|d| *d > 0);
    let blamed = (0..infos.len())
        .map(|i| evidence && sinks.contains(&i))
        .collect();
    Ok(Some(DirectoryCopies {
        good: cur.bricks,
        sinks,
        blamed,
        current: cur.info,
    }))
}

/// Heal the names of directory `dir` (every brick of the set is up): see
/// the module.
pub(crate) async fn heal_entries(set: &Disperse, dir: Gfid) -> HealOutcome {
    let lock = dir_entry_lock(set.set_name(), dir, set.new_lock_owner());
    let heal = async {
        match heal_locked(set, dir).await {
            Ok(o) => o,
            Err(e) => HealOutcome::Skipped(format!(
                "{}: entry heal of directory {dir}: {e}",
                set.set_name()
            )),
        }
    };
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, dir, &lock, heal).await
}

async fn heal_locked(set: &Disperse, dir: Gfid) -> Result<HealOutcome, String> {
    let children = set.children();
    let all: Vec<usize> = (0..set.n()).collect();
    let counters = read_counters(set, dir, &all)
        .await
        .map_err(|e| format!("reading its versions: {e}"))?;
    let entry_dirty: Vec<i32> = counters
        .dirty
        .iter()
        .map(|d| d[Kind::Entry as usize])
        .collect();
    let copies = match directory_copies(&counters.infos, &entry_dirty, set.k()) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(HealOutcome::Clean),
        Err(d) => return Err(set.disagree(dir, &d).to_string()),
    };
    let listings = list_every_brick(children, dir).await?;
    let held = held_elsewhere(children, &listings, &copies.good, &copies.sinks).await;
    let plan = entry::plan(&EntryState {
        listings: &listings,
        good: &copies.good,
        stale: &copies.sinks,
        blamed: &copies.blamed,
        held_elsewhere: &held,
    });
    let maker = DisperseMaker {
        set,
        good: &copies.good,
    };
    apply(children, dir, &plan, &maker).await?;
    let made = heal_made(set, &plan).await;
    if let Some(unhealed) = unhealed_outcome(set.set_name(), dir, &plan) {
        // The marks stay: the directory stays pending heal.
        return Ok(merge_outcomes(unhealed, made));
    }
    raise_versions(set, dir, &copies, &counters.infos).await?;
    clear_entry_dirty(set, dir, &copies.good, &entry_dirty).await?;
    Ok(merge_outcomes(
        healed_outcome(children, &copies.sinks),
        made,
    ))
}

/// The full sweep's addition to a directory (every brick of the set up):
/// under the directory's entry lock on every brick, names at least k
/// bricks list and others lack are made where they are missing
/// ([`crate::full::fill_plan`]), nothing removed; new files are rebuilt
/// at once from their fragments.
pub(crate) async fn fill_names(set: &Disperse, dir: Gfid) -> HealOutcome {
    let lock = dir_entry_lock(set.set_name(), dir, set.new_lock_owner());
    let fill = async {
        match fill_locked(set, dir).await {
            Ok(o) => o,
            Err(e) => HealOutcome::Skipped(format!(
                "{}: full sweep of directory {dir}: {e}",
                set.set_name()
            )),
        }
    };
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, dir, &lock, fill).await
}

async fn fill_locked(set: &Disperse, dir: Gfid) -> Result<HealOutcome, String> {
    let children = set.children();
    let listings = list_every_brick(children, dir).await?;
    if listings.iter().all(|l| *l == listings[0]) {
        return Ok(HealOutcome::Clean);
    }
    let all: Vec<usize> = (0..set.n()).collect();
    let held = held_elsewhere(children, &listings, &all, &all).await;
    let fill = crate::full::fill_plan(&listings, &held, set.k());
    let mut sinks = Vec::new();
    let mut made = HealOutcome::Clean;
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
        let maker = DisperseMaker {
            set,
            good: &holders,
        };
        apply(children, dir, &one, &maker).await?;
        made = merge_outcomes(made, heal_made(set, &one).await);
    }
    let left = Plan {
        actions: Vec::new(),
        unhealed: fill.unhealed,
    };
    if let Some(unhealed) = unhealed_outcome(set.set_name(), dir, &left) {
        return Ok(merge_outcomes(unhealed, made));
    }
    Ok(merge_outcomes(healed_outcome(children, &sinks), made))
}

/// How disperse makes a new object on a sink: see [`create`].
struct DisperseMaker<'a> {
    set: &'a Disperse,
    good: &'a [usize],
}

impl MakeOnSink for DisperseMaker<'_> {
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

/// Make `name` on the sink as the source's object `entry`, with its
/// metadata, after marking the object on the good copies of the directory
/// (which all hold it), durably: a directory with an entry mark, anything
/// else with a data mark. The object is then in their pending-heal index
/// until its own heal has run, whatever happens to this one.
async fn create(
    set: &Disperse,
    dir: Gfid,
    name: &str,
    entry: Entry,
    on: (usize, usize),
    good: &[usize],
) -> FopResult<()> {
    let kind = match entry.kind {
        FileKind::Directory => Kind::Entry,
        _ => Kind::Data,
    };
    for (i, r) in set
        .xattrop_on(good, entry.gfid, vec![dirty_delta(kind, 1)], true)
        .await
    {
        r.map_err(|e| {
            FopError::new(
                e.errno,
                format!(
                    "marking {} for heal on {}: {e}",
                    entry.gfid,
                    set.children()[i].name()
                ),
            )
        })?;
    }
    let children = set.children();
    make_object(children, dir, name, entry, on).await?;
    copy_metadata_to(children, entry.gfid, on.0, &[on.1], true, None).await
}

/// Heal at once what the plan made that is not a directory (its fragment
/// is empty, with no version): the inode heal rebuilds it from the
/// current generation and takes back the mark [`create`] left.
async fn heal_made(set: &Disperse, plan: &Plan) -> HealOutcome {
    let made: BTreeSet<(Gfid, FileKind)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { entry, .. } if entry.kind != FileKind::Directory => {
                Some((entry.gfid, entry.kind))
            }
            _ => None,
        })
        .collect();
    // Many at once (a directory of small files made while a brick was
    // down is a round-trip-bound heal per file), bounded like the plan's
    // own actions.
    let made: Vec<(Gfid, FileKind)> = made.into_iter().collect();
    let work = made
        .into_iter()
        .map(|(gfid, kind)| -> BoxFuture<'_, HealOutcome> {
            Box::pin(heal_inode(set, gfid, kind))
        });
    crate::entry_steps::in_window(work, crate::entry_steps::ENTRY_ACTIONS_AT_ONCE_MAX)
        .await
        .into_iter()
        .fold(HealOutcome::Clean, merge_outcomes)
}

/// The sinks' directory versions (and size) become the current ones,
/// durably; the metadata version is the inode heal's.
async fn raise_versions(
    set: &Disperse,
    dir: Gfid,
    copies: &DirectoryCopies,
    infos: &[Option<FragInfo>],
) -> Result<(), String> {
    for &s in &copies.sinks {
        let have = infos[s].unwrap_or_default();
        let (dd, _, ds) = version_gap(have, Some(&copies.current), None);
        if dd == 0 && ds == 0 {
            continue;
        }
        set.children()[s]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid: dir,
                deltas: vec![ec_delta(dd, 0, ds)],
                durable: true,
            }))
            .await
            .map_err(|e| {
                format!(
                    "raising the version on {} to the current one: {e}",
                    set.children()[s].name()
                )
            })?;
    }
    Ok(())
}

/// Take back exactly the entry dirty counts read, good copies first
/// ([`clear_order`]), durably.
async fn clear_entry_dirty(
    set: &Disperse,
    dir: Gfid,
    good: &[usize],
    entry_dirty: &[i32],
) -> Result<(), String> {
    for i in clear_order(set.n(), good) {
        if entry_dirty[i] == 0 {
            continue;
        }
        set.children()[i]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid: dir,
                deltas: vec![dirty_delta(Kind::Entry, -entry_dirty[i])],
                durable: true,
            }))
            .await
            .map_err(|e| {
                format!(
                    "clearing the entry marks on {}: {e}",
                    set.children()[i].name()
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(data: i64) -> Option<FragInfo> {
        Some(FragInfo {
            data,
            meta: 0,
            size: 0,
        })
    }

    fn copies(good: &[usize], sinks: &[usize], blamed: &[usize], data: i64) -> DirectoryCopies {
        DirectoryCopies {
            good: good.to_vec(),
            sinks: sinks.to_vec(),
            blamed: (0..6).map(|i| blamed.contains(&i)).collect(),
            current: v(data).unwrap(),
        }
    }

    /// A case: what it is, each brick's directory version and entry
    /// dirty count, and the copies the rule must give.
    type Case = (
        &'static str,
        [Option<FragInfo>; 6],
        [i32; 6],
        Option<DirectoryCopies>,
    );

    /// 4 + 2: which copies of a directory are good, which are sinks, and
    /// which sinks lose the names only they hold.
    #[test]
    fn directory_copies_follow_the_version_generation_and_the_marks() {
        let all = [0, 1, 2, 3, 4, 5];
        let cases: Vec<Case> = vec![
            ("one version, no marks: clean", [v(9); 6], [0; 6], None),
            (
                "one version, marks left (a heal cut off after the versions were raised): marks to clear, no sink",
                [v(9); 6],
                [0, 0, 1, 0, 0, 1],
                Some(copies(&all, &[], &[], 9)),
            ),
            (
                "brick 1 missed operations, the others marked: it is a blamed sink",
                [v(9), v(4), v(9), v(9), v(9), v(9)],
                [3, 0, 3, 3, 3, 3],
                Some(copies(&[0, 2, 3, 4, 5], &[1], &[1], 9)),
            ),
            (
                "brick 1's version differs and no brick is marked: a sink, but nothing removed from it",
                [v(9), v(4), v(9), v(9), v(9), v(9)],
                [0; 6],
                Some(copies(&[0, 2, 3, 4, 5], &[1], &[], 9)),
            ),
            (
                "two sinks down one after the other: exactly k good copies",
                [v(9), v(6), v(9), v(9), v(5), v(9)],
                [2, 1, 2, 2, 1, 2],
                Some(copies(&[0, 2, 3, 5], &[1, 4], &[1, 4], 9)),
            ),
            (
                "brick 5 took an operation the others did not (fewer than k took it): blamed by its own mark",
                [v(9), v(9), v(9), v(9), v(9), v(12)],
                [0, 0, 0, 0, 0, 1],
                Some(copies(&[0, 1, 2, 3, 4], &[5], &[5], 9)),
            ),
            (
                "a directory heal just made on brick 3 (no version yet), marked on the good copies",
                [v(9), v(9), v(9), v(0), v(9), v(9)],
                [1, 1, 1, 0, 1, 1],
                Some(copies(&[0, 1, 2, 4, 5], &[3], &[3], 9)),
            ),
            (
                "an empty directory made by heal: one version (none), only the mark to clear",
                [v(0); 6],
                [1, 1, 1, 0, 1, 1],
                Some(copies(&all, &[], &[], 0)),
            ),
            (
                "brick 1 missed only a chmod (metadata version): no entry sink, the inode heal's",
                [
                    v(9),
                    Some(FragInfo {
                        data: 9,
                        meta: 3,
                        size: 0,
                    }),
                    v(9),
                    v(9),
                    v(9),
                    v(9),
                ],
                [0; 6],
                None,
            ),
            (
                "a brick that did not answer is neither good nor a sink",
                [v(9), v(9), None, v(9), v(4), v(9)],
                [1, 0, 0, 1, 0, 1],
                Some(copies(&[0, 1, 3, 5], &[4], &[4], 9)),
            ),
            (
                "only a negative count (over-cleared): cleared, but it is no evidence",
                [v(9), v(4), v(9), v(9), v(9), v(9)],
                [0, 0, -1, 0, 0, 0],
                Some(copies(&[0, 2, 3, 4, 5], &[1], &[], 9)),
            ),
        ];
        for (what, infos, dirty, want) in cases {
            assert_eq!(directory_copies(&infos, &dirty, 4), Ok(want), "{what}");
        }
    }

    /// No version held by k bricks: nothing is chosen, the groups are
    /// reported.
    #[test]
    fn directory_copies_need_k_bricks_of_one_version() {
        let split = [v(9), v(9), v(9), v(4), v(4), v(4)];
        let d = directory_copies(&split, &[1; 6], 4).unwrap_err();
        assert_eq!(d.groups.len(), 2, "{d:?}");
        let three = [v(9), v(9), v(9), v(4), v(5), None];
        assert!(directory_copies(&three, &[1; 6], 4).is_err());
        // Size is part of the version: a directory's is always zero, but
        // a copy claiming another is not of the generation.
        let mut sized = [v(9); 6];
        sized[2] = Some(FragInfo {
            data: 9,
            meta: 0,
            size: 7,
        });
        let c = directory_copies(&sized, &[0; 6], 4).unwrap().unwrap();
        assert_eq!(c.sinks, vec![2]);
    }
}
