//! The full sweep (`volume heal NAME full`): every directory and file of
//! each set is visited, not only what the pending-heal indices list, and
//! healed where its copies differ. It is for what the indices cannot
//! know: a brick restored from an old backup or replaced by an empty
//! disk, marks lost with a crashed disk, a copy changed behind the
//! volume's back.
//!
//! Per directory, top-down from the root: for replicate sets, a name some
//! copies have and others lack with no changelog evidence either way is
//! *added* where it is missing ([`fill_plan`]; nothing is removed without
//! evidence: never delete on a guess), then the directory is healed as
//! the index crawl would (entry, metadata), then every file in it is
//! healed, `threads` per local brick at a time. Disperse sets fill names
//! the same way when at least k bricks list them: a name whose gfid a
//! lying disk dropped is skipped by that brick's listings while its
//! version agrees, so only the sweep finds it. A file whose copies
//! differ in size (data) or mode and owner (metadata) while no counter
//! says so is marked dirty on every copy first, so its heal picks one
//! copy by the documented deterministic rule (`heal::source`) and makes
//! the others that. Disperse sets heal every object by its fragment
//! versions, which every change steps, so nothing needs marking there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mortar_client::afr::{dirty_delta, Kind};
use mortar_client::fop::{Child, Fop, FopOut};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::protocol::BrickAddress;
use mortar_net::Runtime;
use mortar_proto::brick as bp;
use mortar_proto::{Attr, FileKind, Gfid};

use crate::crawl::{heal_each, CrawlLimits, HealSummary};
use crate::entry::{Action, Listing, Unhealed};
use crate::entry_steps::list_dir;

/// Directories one sweep of one set visits at most (the walk keeps the
/// gfids it has seen, 16 bytes each).
pub const SWEEP_DIRS_MAX: usize = 1_000_000;

/// The additions a full sweep makes to one directory: each action with
/// the bricks that hold the name (its sources), and the names it cannot
/// settle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillPlan {
    pub actions: Vec<(Action, Vec<usize>)>,
    pub unhealed: Vec<Unhealed>,
}

/// What a full sweep adds to a directory whose copies list different
/// names while no changelog says which is right. `held_elsewhere[b]`: the
/// gfids brick `b` holds outside this directory.
///
/// * A name every copy that has it maps to the same gfid and kind is made
///   on the copies that lack it, from the lowest brick that has it: as a
///   link when that copy holds the file elsewhere, else as a new object.
///   A directory the copy holds elsewhere is left alone (moving it is a
///   rename across directories, which needs the changelog's evidence).
/// * A name that maps to different gfids or kinds on different copies is
///   split-brain: reported, nothing changed.
/// * A name fewer than `holders_min` copies list is left as it is: on a
///   disperse set (`holders_min` = k) so few fragments cannot be decoded,
///   and the name is a create that never completed, which no acknowledged
///   history needs.
/// * Nothing is ever removed.
pub fn fill_plan(
    listings: &[Listing],
    held_elsewhere: &[BTreeSet<Gfid>],
    holders_min: usize,
) -> FillPlan {
    let mut plan = FillPlan::default();
    let names: BTreeSet<&String> = listings.iter().flat_map(|l| l.keys()).collect();
    for name in names {
        let holders: Vec<usize> = (0..listings.len())
            .filter(|&b| listings[b].contains_key(name))
            .collect();
        if holders.len() < holders_min {
            continue;
        }
        let first = listings[holders[0]][name];
        if let Some(&other) = holders.iter().find(|&&b| listings[b][name] != first) {
            let why = format!(
                "brick {} has {} ({:?}), brick {other} has {} ({:?})",
                holders[0],
                first.gfid,
                first.kind,
                listings[other][name].gfid,
                listings[other][name].kind
            );
            plan.unhealed.push(Unhealed::SplitBrain {
                name: name.clone(),
                why,
            });
            continue;
        }
        for sink in (0..listings.len()).filter(|b| !holders.contains(b)) {
            let elsewhere = held_elsewhere
                .get(sink)
                .is_some_and(|h| h.contains(&first.gfid));
            let action = match (elsewhere, first.kind) {
                (true, FileKind::Directory) => {
                    plan.unhealed.push(Unhealed::LeftAlone {
                        name: name.clone(),
                        why: format!("brick {sink} holds directory {} elsewhere", first.gfid),
                    });
                    continue;
                }
                (true, _) => Action::Link {
                    sink,
                    name: name.clone(),
                    gfid: first.gfid,
                },
                (false, _) => Action::Create {
                    sink,
                    name: name.clone(),
                    entry: first,
                    source: holders[0],
                },
            };
            plan.actions.push((action, holders.clone()));
        }
    }
    plan
}

/// Do a file's copies differ where no counter says so? `(data, metadata)`:
/// data when the sizes of the copies that hold data differ (`arbiter`
/// holds none), metadata when mode or owner differ. Copies that are not
/// regular files are compared for metadata only.
pub fn differs(attrs: &[Attr], arbiter: Option<usize>) -> (bool, bool) {
    let data_sizes: BTreeSet<u64> = attrs
        .iter()
        .enumerate()
        .filter(|(i, a)| Some(*i) != arbiter && a.kind == FileKind::Regular)
        .map(|(_, a)| a.size)
        .collect();
    let meta: BTreeSet<(u32, u32, u32)> = attrs
        .iter()
        .filter(|a| a.kind != FileKind::Symlink)
        .map(|a| (a.mode, a.uid, a.gid))
        .collect();
    (data_sizes.len() > 1, meta.len() > 1)
}

/// Sweep every set with a brick `is_local` picks (every set at once).
pub async fn sweep_graph(
    rt: &Runtime,
    g: &Arc<VolumeGraph>,
    is_local: &(dyn Fn(&BrickAddress) -> bool + Send + Sync),
    limits: CrawlLimits,
) -> HealSummary {
    let mut handles = Vec::new();
    for (i, (_, members)) in g.heal_sets.iter().enumerate() {
        let local: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&m| is_local(g.clients[m].address()))
            .collect();
        if local.is_empty() {
            continue;
        }
        let (rt2, g2) = (rt.clone(), g.clone());
        let limits = CrawlLimits {
            threads: limits.threads.max(1) * local.len(),
            ..limits
        };
        handles.push(rt.spawn(async move {
            let before = crate::crawl::set_bytes_written(&g2, i);
            let mut sum = sweep_set(&rt2, &g2, i, limits).await;
            let listed = vec![0; local.len()];
            sum.bricks = crate::crawl::brick_rows(&g2, i, &local, &listed, before).await;
            sum
        }));
    }
    let mut sum = HealSummary::default();
    for h in handles {
        match h.await {
            Ok(Some(s)) => sum.add(s),
            _ => sum.note("a set's full sweep was cancelled".to_string()),
        }
    }
    sum
}

/// Walk set `set` of `g` from the root, healing as it goes.
async fn sweep_set(
    rt: &Runtime,
    g: &Arc<VolumeGraph>,
    set: usize,
    limits: CrawlLimits,
) -> HealSummary {
    let layer = &g.heal_sets[set].0;
    let mut sum = HealSummary::default();
    let mut seen = BTreeSet::new();
    let mut dirs = vec![Gfid::ROOT];
    while let Some(dir) = dirs.pop() {
        if !seen.insert(dir) {
            continue;
        }
        if seen.len() > SWEEP_DIRS_MAX {
            sum.note(format!(
                "the full sweep stopped after {SWEEP_DIRS_MAX} directories; run it again for the rest"
            ));
            sum.skipped += 1;
            break;
        }
        // Names first: a directory the sweep made on a brick is marked as
        // missing its names there, and its entry heal would find the copies
        // that hold names disagreeing about any one the index never knew.
        match layer {
            SetLayer::Replicate(r) => {
                sum.record(crate::replicate_entry::fill_names(r, dir).await);
            }
            SetLayer::Disperse(d) => {
                sum.record(crate::disperse_entry::fill_names(d, dir).await);
            }
        }
        sum.record(crate::heal_file_with(layer, dir, limits.favorite_child).await);
        let (subdirs, files) = match union_listing(children_of(layer), dir).await {
            Ok(l) => l,
            Err(e) => {
                sum.skipped += 1;
                sum.note(format!("full sweep: listing directory {dir}: {e}"));
                continue;
            }
        };
        dirs.extend(subdirs.into_iter().rev());
        let favorite = limits.favorite_child;
        let pass = heal_each(rt, g, set, files, limits.threads, true, favorite).await;
        sum.add(pass);
    }
    sum
}

fn children_of(layer: &SetLayer) -> &[Child] {
    match layer {
        SetLayer::Replicate(r) => r.children(),
        SetLayer::Disperse(d) => d.children(),
    }
}

/// Every name of `dir` on any brick of the set that answered: its
/// directories and its other objects (gfids, each once).
async fn union_listing(children: &[Child], dir: Gfid) -> Result<(Vec<Gfid>, Vec<Gfid>), String> {
    let mut all: BTreeMap<Gfid, FileKind> = BTreeMap::new();
    let mut answered = 0;
    let mut last_err = String::new();
    for c in children.iter().filter(|c| c.is_up()) {
        match list_dir(c, dir).await {
            Ok(l) => {
                answered += 1;
                all.extend(l.values().map(|e| (e.gfid, e.kind)));
            }
            Err(e) => last_err = format!("{}: {e}", c.name()),
        }
    }
    if answered == 0 {
        return Err(format!("no brick listed it ({last_err})"));
    }
    let (d, f): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, k)| *k == FileKind::Directory);
    Ok((
        d.into_iter().map(|(g, _)| g).collect(),
        f.into_iter().map(|(g, _)| g).collect(),
    ))
}

/// Before a full sweep heals a replicate file: if its copies differ where
/// no counter says so ([`differs`]), mark it dirty on every copy, so the
/// heal that follows makes them one. (A write in flight can make sizes
/// differ for an instant; marking then costs one needless heal of copies
/// that end equal, never data.)
pub(crate) async fn mark_if_differs(children: &[Child], arbiter: Option<usize>, gfid: Gfid) {
    let mut attrs = Vec::with_capacity(children.len());
    for c in children {
        match c.fop(Fop::Stat(bp::Stat { gfid })).await {
            Ok(FopOut::Attr(a)) => attrs.push(a),
            // Missing or unreachable somewhere: the ordinary heal decides.
            _ => return,
        }
    }
    let (data, meta) = differs(&attrs, arbiter);
    let mut deltas = Vec::new();
    if data {
        deltas.push(dirty_delta(Kind::Data, 1));
    }
    if meta {
        deltas.push(dirty_delta(Kind::Metadata, 1));
    }
    if deltas.is_empty() {
        return;
    }
    for c in children {
        let q = bp::Xattrop {
            gfid,
            deltas: deltas.clone(),
            durable: true,
        };
        let _ = c.fop(Fop::Xattrop(q)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    fn g(n: u128) -> Gfid {
        Gfid::from_u128(n)
    }

    fn listing(names: &[(&str, u128, FileKind)]) -> Listing {
        names
            .iter()
            .map(|(n, id, kind)| {
                (
                    n.to_string(),
                    Entry {
                        gfid: g(*id),
                        kind: *kind,
                    },
                )
            })
            .collect()
    }

    const F: FileKind = FileKind::Regular;
    const D: FileKind = FileKind::Directory;

    #[test]
    fn a_sweep_adds_missing_names_and_removes_nothing() {
        let l = [
            listing(&[("a", 1, F), ("only0", 2, F)]),
            listing(&[("a", 1, F), ("sub", 3, D)]),
            listing(&[]),
        ];
        let none = vec![BTreeSet::new(); 3];
        let plan = fill_plan(&l, &none, 1);
        let create = |sink, name: &str, id, kind, source| Action::Create {
            sink,
            name: name.into(),
            entry: Entry { gfid: g(id), kind },
            source,
        };
        assert_eq!(
            plan.actions,
            vec![
                (create(2, "a", 1, F, 0), vec![0, 1]),
                (create(1, "only0", 2, F, 0), vec![0]),
                (create(2, "only0", 2, F, 0), vec![0]),
                (create(0, "sub", 3, D, 1), vec![1]),
                (create(2, "sub", 3, D, 1), vec![1]),
            ]
        );
        assert!(plan.unhealed.is_empty());
        assert!(
            !plan
                .actions
                .iter()
                .any(|(a, _)| matches!(a, Action::Remove { .. })),
            "never removes"
        );
    }

    #[test]
    fn a_file_held_elsewhere_is_linked_a_directory_left_alone() {
        let l = [listing(&[("f", 1, F), ("d", 2, D)]), listing(&[])];
        let held = vec![BTreeSet::new(), BTreeSet::from([g(1), g(2)])];
        let plan = fill_plan(&l, &held, 1);
        assert_eq!(
            plan.actions,
            vec![(
                Action::Link {
                    sink: 1,
                    name: "f".into(),
                    gfid: g(1)
                },
                vec![0]
            )]
        );
        assert!(matches!(&plan.unhealed[..], [Unhealed::LeftAlone { name, .. }] if name == "d"));
    }

    #[test]
    fn a_name_too_few_copies_list_is_left_alone() {
        // Disperse 2+1 (k = 2): a name on two bricks is made on the third;
        // one on a single brick cannot be decoded and is left as it is.
        let l = [
            listing(&[("two", 1, F), ("one", 2, F)]),
            listing(&[("two", 1, F)]),
            listing(&[]),
        ];
        let held = vec![BTreeSet::new(), BTreeSet::new(), BTreeSet::from([g(1)])];
        let plan = fill_plan(&l, &held, 2);
        assert_eq!(
            plan.actions,
            vec![(
                Action::Link {
                    sink: 2,
                    name: "two".into(),
                    gfid: g(1)
                },
                vec![0, 1]
            )]
        );
        assert!(plan.unhealed.is_empty());
        assert_eq!(
            fill_plan(&l, &held, 1).actions.len(),
            3,
            "replicate fills both"
        );
    }

    #[test]
    fn a_name_with_two_gfids_is_split_brain_and_untouched() {
        for other in [listing(&[("x", 9, F)]), listing(&[("x", 1, D)])] {
            let l = [listing(&[("x", 1, F)]), other, listing(&[])];
            let plan = fill_plan(&l, &vec![BTreeSet::new(); 3], 1);
            assert!(plan.actions.is_empty(), "{plan:?}");
            assert!(
                matches!(&plan.unhealed[..], [Unhealed::SplitBrain { name, .. }] if name == "x")
            );
        }
    }

    fn attr(kind: FileKind, size: u64, mode: u32, uid: u32) -> Attr {
        let t = mortar_proto::Timespec { secs: 0, nsecs: 0 };
        Attr {
            gfid: g(1),
            kind,
            mode,
            nlink: 1,
            uid,
            gid: 0,
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    #[test]
    fn which_differences_a_sweep_marks() {
        let f = |size, mode, uid| attr(F, size, mode, uid);
        for (attrs, arbiter, want, why) in [
            (
                vec![f(4, 0o644, 0), f(4, 0o644, 0)],
                None,
                (false, false),
                "same",
            ),
            (
                vec![f(4, 0o644, 0), f(5, 0o644, 0)],
                None,
                (true, false),
                "size",
            ),
            (
                vec![f(4, 0o644, 0), f(4, 0o600, 0)],
                None,
                (false, true),
                "mode",
            ),
            (
                vec![f(4, 0o644, 0), f(4, 0o644, 7)],
                None,
                (false, true),
                "owner",
            ),
            (
                vec![f(4, 0o644, 0), f(4, 0o644, 0), f(0, 0o644, 0)],
                Some(2),
                (false, false),
                "the arbiter holds no data",
            ),
            (
                vec![attr(D, 4096, 0o755, 0), attr(D, 8192, 0o755, 0)],
                None,
                (false, false),
                "directory sizes are not data",
            ),
        ] {
            assert_eq!(differs(&attrs, arbiter), want, "{why}");
        }
    }
}
