//! Resolving a replicate split-brain: one copy is made the only good one
//! by rewriting the changelog, then the ordinary heal makes every other
//! copy that one's and brings the counters to zero.
//!
//! The procedure, for one file of one set (every brick up):
//! 1. claim the file in the self-heal domain, as every heal does (one
//!    healer per file), and lock the whole file on every brick in the
//!    set's domain (writers wait);
//! 2. read every brick's counters; the kinds in split-brain by
//!    [`afr::examine`] (data, metadata) are the ones resolved. A file in
//!    none is refused ("not in split-brain");
//! 3. for each such kind, the policy chooses the source from every copy's
//!    size, times and blame ([`split_brain::choose`]); a refusal for any
//!    kind refuses the file with nothing changed;
//! 4. the changelog is rewritten so the source blames every other copy
//!    and no other copy blames anyone ([`split_brain::rewrite_plan`]),
//!    one durable xattrop at a time, in an order where a crash leaves the
//!    same split-brain or the source as the only good copy;
//! 5. still under the lock, the ordinary heal ([`crate::replicate`])
//!    copies from the source to the others and clears the counters.
//!
//! A crash after step 4 leaves the source as the only good copy: the next
//! crawl finishes the heal from it. A crash in step 4 leaves either that
//! or the same split-brain; a retry then decides afresh from what the
//! copies hold. The choices by size, mtime or a named brick come out the
//! same; ctime may not (every changelog write changes a copy's ctime),
//! which is harmless: nothing was copied yet.
//!
//! Entry split-brain (the names of a directory) is not resolved: choosing
//! a directory copy would remove the names only the other copies hold,
//! and the original system refuses it too. It is refused with that said.
//!
//! The self-heal daemon resolves the same way inside its ordinary heal
//! when `cluster.favorite-child-policy` is set ([`settle`]), one kind at a
//! time: a kind its policy cannot settle stays in split-brain, the other
//! is healed. The CLI's `volume heal NAME split-brain ...` goes through
//! [`resolve_file`] and the volume-level helpers below.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::api::Client;
use mortar_client::distribute::LINKTO_XATTR;
use mortar_client::fop::{Child, Fop, FopOut};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::replicate::Replicate;
use mortar_proto::brick as bp;
use mortar_proto::{Attr, Errno, FileKind, Gfid};

use crate::replicate::{heal_locked, whole_file_lock};
use crate::split_brain::{choose, kind_word, rewrite_plan, CopyState, FavoriteChild, Policy};
use crate::steps::locked_on_every_brick;
use crate::{claimed, HealOutcome};

/// Index entries read per brick by `source-brick` without a file (the
/// bound heal info uses).
pub const INDEX_ENTRIES_MAX: usize = crate::info::ENTRIES_PER_BRICK_MAX;

/// What is said of an entry split-brain.
pub const ENTRY_NOT_RESOLVED: &str = "the copies of this directory disagree about its names (entry split-brain), which these commands do not resolve: choosing one copy would remove the names only the others hold";

/// Why a file was not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No kind of the file is in split-brain.
    NotInSplitBrain,
    /// The resolution does not apply, or the policy picks no copy.
    Refused(String),
    /// It could not be done now (a brick down, another healer on the
    /// file, an I/O error); trying again may work.
    Failed(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotInSplitBrain => f.write_str("not in split-brain"),
            ResolveError::Refused(why) | ResolveError::Failed(why) => f.write_str(why),
        }
    }
}

/// What resolving one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub gfid: Gfid,
    /// Each kind that was in split-brain, with the index (in its set) of
    /// the brick chosen as its source.
    pub sources: Vec<(Kind, usize)>,
    /// The bricks the heal then brought up to date.
    pub healed: Vec<String>,
}

/// Resolve the split-brain of `gfid` in `layer` by `policy` (the whole
/// procedure of the module). `names` are the set's bricks as messages
/// name them, in set order.
pub async fn resolve_file(
    layer: &SetLayer,
    gfid: Gfid,
    policy: Policy,
    names: &[String],
) -> Result<Resolved, ResolveError> {
    let SetLayer::Replicate(set) = layer else {
        return Err(ResolveError::Refused(
            "this is a disperse set: split-brain resolution is for replicate sets".into(),
        ));
    };
    let work = async {
        let lock = whole_file_lock(set, gfid);
        let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
        let resolve = resolve_locked(set, gfid, policy, names);
        locked_on_every_brick(rt, name, children, &lock, resolve)
            .await
            .unwrap_or_else(|e| Err(ResolveError::Failed(e)))
    };
    claimed(layer, gfid, work)
        .await
        .unwrap_or_else(|outcome| Err(ResolveError::Failed(reason(outcome))))
}

async fn resolve_locked(
    set: &Replicate,
    gfid: Gfid,
    policy: Policy,
    names: &[String],
) -> Result<Resolved, ResolveError> {
    let children = set.children();
    let views = every_view(set, gfid).await?;
    let (split, entry_split) = split_kinds(&views, set.arbiter());
    if split.is_empty() {
        return Err(if entry_split {
            ResolveError::Refused(ENTRY_NOT_RESOLVED.into())
        } else {
            ResolveError::NotInSplitBrain
        });
    }
    let attrs = stat_every_brick(children, gfid).await?;
    let name = |b: usize| {
        names
            .get(b)
            .cloned()
            .unwrap_or_else(|| format!("brick {b}"))
    };
    let mut sources = Vec::with_capacity(split.len());
    for &kind in &split {
        let copies = copy_states(&attrs, &views, kind, set.arbiter());
        let src = choose(policy, kind, &copies).map_err(|r| {
            ResolveError::Refused(format!(
                "{} split-brain: {}",
                kind_word(kind),
                r.explain(&name)
            ))
        })?;
        sources.push((kind, src));
    }
    for &(kind, src) in &sources {
        make_only_source(set, gfid, kind, &views, src).await?;
        tracing::info!(set = set.set_name(), %gfid, kind = kind_word(kind), %policy, source = %name(src), "split-brain resolved: the source's copy is now the only good one");
    }
    match heal_locked(set, gfid, FavoriteChild::None).await {
        HealOutcome::Healed(healed) => Ok(Resolved {
            gfid,
            sources,
            healed,
        }),
        other => Err(ResolveError::Failed(format!(
            "the source was chosen, but healing from it did not finish ({}); the self-heal daemon finishes it from the same source",
            reason(other)
        ))),
    }
}

/// The daemon's resolution of one kind, inside its heal (whole file
/// locked and claimed, `views` read there): choose by `policy`, rewrite
/// the changelog, read it again. The chosen brick and the new counters.
pub(crate) async fn settle(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    policy: Policy,
) -> Result<(usize, Vec<Option<BrickView>>), ResolveError> {
    let children = set.children();
    let read: Vec<BrickView> = match views.iter().cloned().collect::<Option<Vec<_>>>() {
        Some(v) => v,
        None => return Err(ResolveError::Failed("not every brick answered".into())),
    };
    let attrs = stat_every_brick(children, gfid).await?;
    let copies = copy_states(&attrs, &read, kind, set.arbiter());
    let name = |b: usize| children[b].name().to_string();
    let src = choose(policy, kind, &copies).map_err(|r| ResolveError::Refused(r.explain(&name)))?;
    make_only_source(set, gfid, kind, &read, src).await?;
    let all: Vec<usize> = (0..children.len()).collect();
    Ok((src, set.views(gfid, &all).await))
}

/// Rewrite the counters of `kind` (as read in `views`) so `src` is the
/// only good copy: [`rewrite_plan`], each step a durable xattrop.
async fn make_only_source(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[BrickView],
    src: usize,
) -> Result<(), ResolveError> {
    let children = set.children();
    for step in rewrite_plan(kind, views, src) {
        let deltas = step
            .changes
            .iter()
            .map(|(j, by)| (set.changelog_key(*j).to_string(), kind_delta(kind, *by)))
            .collect();
        let q = bp::Xattrop {
            gfid,
            deltas,
            durable: true,
        };
        if let Err(e) = children[step.brick].fop(Fop::Xattrop(q)).await {
            return Err(ResolveError::Failed(format!(
                "rewriting the changelog of {gfid} on {}: {e}",
                children[step.brick].name()
            )));
        }
    }
    Ok(())
}

/// Every brick's counters of `gfid`, or why not.
async fn every_view(set: &Replicate, gfid: Gfid) -> Result<Vec<BrickView>, ResolveError> {
    let all: Vec<usize> = (0..set.children().len()).collect();
    set.views(gfid, &all)
        .await
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ResolveError::Failed(format!("not every brick answered for {gfid}")))
}

/// The kinds in split-brain among data and metadata, and whether entries
/// are too.
pub fn split_kinds(views: &[BrickView], arbiter: Option<usize>) -> (Vec<Kind>, bool) {
    let seen: Vec<Option<BrickView>> = views.iter().cloned().map(Some).collect();
    let split = |k: &Kind| matches!(afr::examine(&seen, *k, arbiter), Verdict::SplitBrain { .. });
    let kinds = [Kind::Data, Kind::Metadata]
        .into_iter()
        .filter(split)
        .collect();
    (kinds, split(&Kind::Entry))
}

/// Every copy as the policies see it, for `kind`.
fn copy_states(
    attrs: &[Attr],
    views: &[BrickView],
    kind: Kind,
    arbiter: Option<usize>,
) -> Vec<CopyState> {
    attrs
        .iter()
        .zip(views)
        .enumerate()
        .map(|(i, (a, v))| CopyState {
            brick: i,
            size: a.size,
            mtime: a.mtime,
            ctime: a.ctime,
            arbiter: Some(i) == arbiter,
            blames: v.blames.iter().map(|b| b[kind as usize]).collect(),
        })
        .collect()
}

async fn stat_every_brick(children: &[Child], gfid: Gfid) -> Result<Vec<Attr>, ResolveError> {
    let mut attrs = Vec::with_capacity(children.len());
    for c in children {
        match c.fop(Fop::Stat(bp::Stat { gfid })).await {
            Ok(FopOut::Attr(a)) => attrs.push(a),
            Ok(other) => {
                return Err(ResolveError::Failed(format!(
                    "stat of {gfid} on {} answered {other:?}",
                    c.name()
                )))
            }
            Err(e) if e.errno == Errno::ENOENT => {
                return Err(ResolveError::Failed(format!(
                    "{gfid} is missing on {}: the heal of its directory makes it there (that is not a split-brain of its copies)",
                    c.name()
                )))
            }
            Err(e) => {
                return Err(ResolveError::Failed(format!(
                    "stat of {gfid} on {}: {e}",
                    c.name()
                )))
            }
        }
    }
    Ok(attrs)
}

/// The words of an outcome that was not a heal.
fn reason(outcome: HealOutcome) -> String {
    match outcome {
        HealOutcome::Clean => "nothing to heal".into(),
        HealOutcome::Healed(b) => format!("healed {}", b.join(", ")),
        HealOutcome::SplitBrain(why) | HealOutcome::Skipped(why) | HealOutcome::Busy(why) => why,
    }
}

// ---- the volume: which set holds a file, which brick a name means ----

/// A file of the volume: its gfid and the sets (indices into the graph's
/// `heal_sets`) that hold it (one for a file; every set for a directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub gfid: Gfid,
    pub kind: FileKind,
    pub sets: Vec<usize>,
}

/// How the CLI chooses the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    BiggerFile,
    LatestMtime,
    /// A brick as `HOST:/PATH`.
    SourceBrick(String),
}

/// The bricks of set `set` of `g` as messages name them (`HOST:/PATH`).
pub fn brick_names(g: &VolumeGraph, set: usize) -> Vec<String> {
    g.heal_sets[set]
        .1
        .iter()
        .map(|&m| {
            let a = g.clients[m].address();
            format!("{}:{}", a.host, a.brick_path)
        })
        .collect()
}

/// The set holding the brick `HOST:/PATH`, and the brick's index in it.
pub fn find_brick(g: &VolumeGraph, brick: &str) -> Result<(usize, usize), ResolveError> {
    (0..g.heal_sets.len())
        .find_map(|s| {
            let at = brick_names(g, s).iter().position(|n| n == brick)?;
            Some((s, at))
        })
        .ok_or_else(|| {
            ResolveError::Refused(format!(
                "{brick} is not a brick of a replica set of this volume"
            ))
        })
}

/// Find the file at `path` (absolute, within the volume). Its directory
/// is found through the client; the file itself by asking every brick
/// of every set, as a lookup through the set would fail with EIO on a
/// file in data split-brain. Distribute's link files are not copies.
pub async fn locate_path(client: &Client, path: &str) -> Result<Located, ResolveError> {
    let g = client.graph();
    let trimmed = path.trim_end_matches('/');
    let Some((dir, name)) = trimmed.rsplit_once('/') else {
        return Err(ResolveError::Refused(format!(
            "{path:?} is not an absolute path within the volume (or gfid:UUID)"
        )));
    };
    if name.is_empty() {
        return locate_gfid(&g, Gfid::ROOT).await;
    }
    let dir = if dir.is_empty() { "/" } else { dir };
    let parent = client
        .resolve(dir)
        .await
        .map_err(|e| ResolveError::Failed(format!("{dir}: {e}")))?;
    let q = bp::Lookup {
        parent: parent.gfid,
        name: name.to_string(),
    };
    let found = holders(&g, Fop::Lookup(q)).await?;
    located(path, found)
}

/// Find the file with `gfid` on the bricks of the volume.
pub async fn locate_gfid(g: &VolumeGraph, gfid: Gfid) -> Result<Located, ResolveError> {
    let found = holders(g, Fop::Stat(bp::Stat { gfid })).await?;
    located(&format!("gfid:{gfid}"), found)
}

/// Every (set, attributes) a brick answered `probe` with, link files left
/// out.
async fn holders(g: &VolumeGraph, probe: Fop) -> Result<Vec<(usize, Attr)>, ResolveError> {
    let mut found = Vec::new();
    for (s, (layer, _)) in g.heal_sets.iter().enumerate() {
        let children = match layer {
            SetLayer::Replicate(r) => r.children(),
            SetLayer::Disperse(d) => d.children(),
        };
        for c in children {
            let Ok(FopOut::Attr(a)) = c.fop(probe.clone()).await else {
                continue;
            };
            if !is_link_file(c, &a).await {
                found.push((s, a));
            }
        }
    }
    Ok(found)
}

async fn is_link_file(c: &Child, a: &Attr) -> bool {
    let q = bp::Getxattr {
        gfid: a.gfid,
        name: LINKTO_XATTR.into(),
    };
    a.kind == FileKind::Regular
        && a.size == 0
        && matches!(c.fop(Fop::Getxattr(q)).await, Ok(FopOut::Value(_)))
}

fn located(what: &str, found: Vec<(usize, Attr)>) -> Result<Located, ResolveError> {
    let Some((_, first)) = found.first() else {
        return Err(ResolveError::Failed(format!(
            "{what}: no such file on any brick that answered"
        )));
    };
    if found.iter().any(|(_, a)| a.gfid != first.gfid) {
        return Err(ResolveError::Refused(format!(
            "{what} has different gfids on different bricks (a gfid split-brain), which these commands do not resolve"
        )));
    }
    let sets: BTreeSet<usize> = found.iter().map(|(s, _)| *s).collect();
    Ok(Located {
        gfid: first.gfid,
        kind: first.kind,
        sets: sets.into_iter().collect(),
    })
}

/// Resolve the file `at` by `choice`: in each of its sets where it is in
/// split-brain (with `source-brick`, in that brick's set alone, which
/// must hold the file).
pub async fn resolve_located(
    g: &VolumeGraph,
    at: &Located,
    choice: &Choice,
) -> Result<Resolved, ResolveError> {
    let (sets, policy) = match choice {
        Choice::BiggerFile => (at.sets.clone(), Policy::BiggerFile),
        Choice::LatestMtime => (at.sets.clone(), Policy::LatestMtime),
        Choice::SourceBrick(brick) => {
            let (set, i) = find_brick(g, brick)?;
            if !at.sets.contains(&set) {
                return Err(ResolveError::Refused(format!(
                    "{brick} is not in the replica set that holds the file ({})",
                    at.sets
                        .iter()
                        .map(|s| brick_names(g, *s).join(", "))
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            (vec![set], Policy::SourceBrick(i))
        }
    };
    let mut done: Option<Resolved> = None;
    for s in sets {
        let layer = &g.heal_sets[s].0;
        match resolve_file(layer, at.gfid, policy, &brick_names(g, s)).await {
            Ok(r) => match &mut done {
                Some(d) => d.healed.extend(r.healed),
                None => done = Some(r),
            },
            Err(ResolveError::NotInSplitBrain) => {}
            Err(e) => return Err(e),
        }
    }
    done.ok_or(ResolveError::NotInSplitBrain)
}

/// `source-brick HOST:/PATH` without a file: every file in split-brain
/// that the indices of that brick's set list (at most
/// [`INDEX_ENTRIES_MAX`] per brick) is resolved with that brick as the
/// source, each within `per_file` (one that takes longer is reported as
/// failed; if its heal had started, the source is already the only good
/// copy and the self-heal daemon finishes it). Each file's result, in
/// gfid order; files the indices list that are not in split-brain are
/// left out.
pub async fn resolve_all_from(
    g: &VolumeGraph,
    brick: &str,
    per_file: Duration,
) -> Result<Vec<(Gfid, Result<Resolved, ResolveError>)>, ResolveError> {
    let (s, i) = find_brick(g, brick)?;
    let (layer, members) = &g.heal_sets[s];
    let SetLayer::Replicate(set) = layer else {
        return Err(ResolveError::Refused(format!(
            "{brick} is in a disperse set: split-brain resolution is for replicate sets"
        )));
    };
    let mut listed = BTreeSet::new();
    for &m in members {
        let pc = &g.clients[m];
        let gfids = pc.pending_heal(INDEX_ENTRIES_MAX).await.map_err(|e| {
            ResolveError::Failed(format!(
                "listing the pending-heal index of {}: {e}",
                pc.name()
            ))
        })?;
        listed.extend(gfids);
    }
    let names = brick_names(g, s);
    let mut out = Vec::new();
    for gfid in listed {
        let all: Vec<usize> = (0..set.children().len()).collect();
        let views = set.views(gfid, &all).await;
        if !crate::info::in_split_brain(&views, set.arbiter()) {
            continue;
        }
        let resolve = resolve_file(layer, gfid, Policy::SourceBrick(i), &names);
        match set.runtime().clock().timeout(per_file, resolve).await {
            // Healed meanwhile (by the daemon): nothing to report.
            Ok(Err(ResolveError::NotInSplitBrain)) => {}
            Ok(r) => out.push((gfid, r)),
            Err(_) => out.push((gfid, Err(ResolveError::Failed(late(per_file))))),
        }
    }
    Ok(out)
}

/// What is said of a resolution that took longer than `limit`.
pub fn late(limit: Duration) -> String {
    format!(
        "did not finish within {} ms; if its heal had begun, the chosen copy is already the only good one and the self-heal daemon finishes it",
        limit.as_millis()
    )
}

/// A gfid as the CLI takes it after `gfid:` (8-4-4-4-12 or 32 hex
/// digits).
pub fn parse_gfid(uuid: &str) -> Option<Gfid> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    let dashes_ok = uuid.len() == 32 || uuid.split('-').map(str::len).eq([8, 4, 4, 4, 12]);
    dashes_ok.then(|| Gfid::from_hex(&hex)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfids_as_typed() {
        let g = Gfid::from_u128(0x8c5a_8a5e_1f5d_4a7e_9c83_0b0f_2f1e_6b11);
        assert_eq!(parse_gfid(&g.to_string()), Some(g));
        assert_eq!(parse_gfid(&g.to_hex()), Some(g));
        assert_eq!(parse_gfid(&g.to_string().to_uppercase()), Some(g));
        for bad in [
            "",
            "xyz",
            "8c5a8a5e-1f5d-4a7e-9c83",
            "8c5a8a5e1f5d-4a7e-9c83-0b0f2f1e6b11-",
        ] {
            assert_eq!(parse_gfid(bad), None, "{bad:?}");
        }
    }

    fn view(kind: Kind, row: &[i64]) -> BrickView {
        BrickView {
            blames: row
                .iter()
                .map(|b| {
                    let mut c = [0; 3];
                    c[kind as usize] = *b;
                    c
                })
                .collect(),
            dirty: [0; 3],
        }
    }

    #[test]
    fn the_kinds_in_split_brain() {
        let data = vec![view(Kind::Data, &[0, 1]), view(Kind::Data, &[1, 0])];
        assert_eq!(split_kinds(&data, None), (vec![Kind::Data], false));
        let meta = vec![view(Kind::Metadata, &[0, 1]), view(Kind::Metadata, &[1, 0])];
        assert_eq!(split_kinds(&meta, None), (vec![Kind::Metadata], false));
        let entry = vec![view(Kind::Entry, &[0, 1]), view(Kind::Entry, &[1, 0])];
        assert_eq!(split_kinds(&entry, None), (vec![], true));
        let one_way = vec![view(Kind::Data, &[0, 1]), view(Kind::Data, &[0, 0])];
        assert_eq!(split_kinds(&one_way, None), (vec![], false));
        let both = vec![
            BrickView {
                blames: vec![[0, 0, 0], [1, 1, 0]],
                dirty: [0; 3],
            },
            BrickView {
                blames: vec![[1, 1, 0], [0, 0, 0]],
                dirty: [0; 3],
            },
        ];
        assert_eq!(
            split_kinds(&both, None),
            (vec![Kind::Data, Kind::Metadata], false)
        );
    }

    #[test]
    fn errors_read_as_the_cli_prints_them() {
        assert_eq!(
            ResolveError::NotInSplitBrain.to_string(),
            "not in split-brain"
        );
        assert_eq!(ResolveError::Refused("x".into()).to_string(), "x");
    }
}
