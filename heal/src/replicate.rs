//! Replicate's heal procedure: bring the stale copies of one file up to
//! date from a good one, then clear exactly the counters that were read.
//! It reaches the set only through the accessors `mortar-client` documents
//! for this crate; which copies are good is `afr::examine`, the rule reads
//! use too.

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::fop::{Fop, FopOut};
use mortar_client::replicate::Replicate;
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind};
use mortar_proto::{options, FileKind, Gfid};

use crate::resolve::ResolveError;
use crate::split_brain::{kind_word, FavoriteChild};
use crate::steps::{
    clear_order, copy_data, copy_metadata, every_brick_up, healed_outcome, kind_of, merge_outcomes,
    with_every_brick_locked, JustMade,
};
use crate::{source, HealOutcome};

/// Heal one file: with every brick of the set up, a directory's names
/// first (entry heal, under the whole directory's entry lock), then its
/// data and metadata under the whole file locked on all bricks: copy from
/// a good copy to the stale ones and clear the counters that were read.
/// A split-brain is left alone.
pub async fn heal_file(set: &Replicate, gfid: Gfid) -> HealOutcome {
    heal_file_with(set, gfid, FavoriteChild::None).await
}

/// [`heal_file`], with a data or metadata split-brain resolved by
/// `favorite` first (unless it is `none`; see [`crate::resolve`]).
pub async fn heal_file_with(set: &Replicate, gfid: Gfid, favorite: FavoriteChild) -> HealOutcome {
    if let Err(skipped) = every_brick_up(set.children(), set.set_name()) {
        return skipped;
    }
    let entries = match kind_of(set.children(), gfid).await {
        Some(FileKind::Directory) => crate::replicate_entry::heal_entries(set, gfid).await,
        Some(_) => HealOutcome::Clean,
        None => {
            return HealOutcome::Skipped(format!(
                "{gfid} is on no brick of {} that answered",
                set.set_name()
            ))
        }
    };
    let lock = whole_file_lock(set, gfid);
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    let heal = heal_locked(set, gfid, favorite);
    let inode = with_every_brick_locked(rt, name, children, gfid, &lock, heal).await;
    merge_outcomes(entries, inode)
}

/// What one unlocked read of every copy's counters says before a healer
/// claims and locks a file (pure; table-tested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstLook {
    /// No copy marks anything (no dirty, no blame, any kind): a locked
    /// heal would find the same and change nothing, so none is run.
    Clean,
    /// These copies gave no counters: the file is not there yet (a name
    /// its directory's entry heal has still to make) or the brick did not
    /// answer. A locked heal would stop at the same point.
    Unanswered(Vec<usize>),
    /// Something is marked: claim, lock and heal.
    Marked,
}

/// [`FirstLook`] of the views every copy gave.
pub fn first_look(views: &[Option<BrickView>]) -> FirstLook {
    let unanswered: Vec<usize> = (0..views.len()).filter(|&i| views[i].is_none()).collect();
    if !unanswered.is_empty() {
        return FirstLook::Unanswered(unanswered);
    }
    let marked = views
        .iter()
        .flatten()
        .any(|v| v.dirty != [0; 3] || v.blames.iter().any(|b| *b != [0; 3]));
    if marked {
        FirstLook::Marked
    } else {
        FirstLook::Clean
    }
}

/// The outcome of `gfid` when one unlocked look settles it without a
/// claim or a lock (it is clean, or not on every brick yet), `None` when
/// it must be healed. Index crawls list many files another healer or an
/// entry heal has just healed, and files whose names are still to be
/// made: this costs one request per brick where a claimed, locked look
/// costs a dozen.
pub async fn before_claim(set: &Replicate, gfid: Gfid) -> Option<HealOutcome> {
    let all: Vec<usize> = (0..set.children().len()).collect();
    match first_look(&set.views(gfid, &all).await) {
        FirstLook::Clean => Some(HealOutcome::Clean),
        FirstLook::Marked => None,
        FirstLook::Unanswered(missing) => {
            let names: Vec<&str> = missing.iter().map(|&i| set.children()[i].name()).collect();
            Some(HealOutcome::Skipped(format!(
                "{gfid}: no counters from {} (not made there yet, or no answer); a later pass heals it",
                names.join(", ")
            )))
        }
    }
}

/// The whole-file lock on `gfid` in the set's domain (the one writes
/// take), as a request for one brick, under a fresh owner.
pub(crate) fn whole_file_lock(
    set: &Replicate,
    gfid: Gfid,
) -> impl Fn(LockKind, Option<u64>) -> Fop + Sync + '_ {
    let owner = set.new_lock_owner();
    move |kind, wait| {
        Fop::Inodelk(bp::Inodelk {
            gfid,
            domain: set.set_name().to_string(),
            kind,
            start: 0,
            len: 0,
            owner,
            wait_ms: wait,
        })
    }
}

/// Heal data and metadata of `gfid`, whole file locked on every brick.
pub(crate) async fn heal_locked(
    set: &Replicate,
    gfid: Gfid,
    favorite: FavoriteChild,
) -> HealOutcome {
    let all: Vec<usize> = (0..set.children().len()).collect();
    let views = set.views(gfid, &all).await;
    heal_viewed(set, gfid, favorite, &views, None).await
}

/// [`heal_locked`] with every copy's counters already read (under the
/// lock held now).
pub(crate) async fn heal_viewed(
    set: &Replicate,
    gfid: Gfid,
    favorite: FavoriteChild,
    views: &[Option<BrickView>],
    made: Option<JustMade>,
) -> HealOutcome {
    let children = set.children();
    if views.iter().any(Option::is_none) {
        return HealOutcome::Skipped(format!("not every brick answered for {gfid}"));
    }
    let mut healed: Vec<usize> = Vec::new();
    for kind in [Kind::Data, Kind::Metadata] {
        match heal_kind(set, gfid, kind, views, favorite, made).await {
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
    healed_outcome(children, &healed)
}

/// Heal the counters of one kind: the sinks brought up to date, or
/// the outcome that ends this heal.
async fn heal_kind(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    favorite: FavoriteChild,
    made: Option<JustMade>,
) -> Result<Vec<usize>, HealOutcome> {
    let children = set.children();
    if !marked(views, kind) {
        return Ok(Vec::new());
    }
    let (good, stale, resolved) = sources(set, gfid, kind, views, favorite).await?;
    // After a split-brain was resolved, the counters to clear are the
    // rewritten ones.
    let views = resolved.as_deref().unwrap_or(views);
    let (good, stale, settled) =
        settle_dirty_without_blame(set, gfid, kind, views, good, stale).await?;
    // A settlement recorded its verdict as blame: that is cleared too.
    let views = settled.as_deref().unwrap_or(views);
    // The copy a new file was just made from, when it is good: what was
    // copied already need not be again.
    let made_from = made.map(|m| m.source).filter(|m| good.contains(m));
    let Some(src) = made_from.or(good.first().copied()) else {
        return Err(HealOutcome::Skipped(format!("no good copy of {gfid}")));
    };
    let sinks: Vec<usize> = stale
        .iter()
        .copied()
        .filter(|i| !(kind == Kind::Data && Some(*i) == set.arbiter()))
        .collect();
    let copied = match kind {
        Kind::Data => copy_data(children, gfid, src, &sinks, made).await,
        _ => copy_metadata(children, gfid, src, &sinks).await,
    };
    if let Err(e) = copied {
        return Err(HealOutcome::Skipped(format!(
            "healing {gfid} from {}: {e}",
            children[src].name()
        )));
    }
    clear_counters(set, gfid, kind, views, &good).await?;
    Ok(sinks)
}

/// The good and stale copies of `kind` by the changelog; a split-brain
/// is resolved by `favorite` first when it names a policy (then the
/// counters as rewritten come back too), and is otherwise the outcome
/// that ends this heal.
async fn sources(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    favorite: FavoriteChild,
) -> Result<SourcesRead, HealOutcome> {
    let accused = match afr::examine(views, kind, set.arbiter()) {
        Verdict::Sources { good, stale } => return Ok((good, stale, None)),
        Verdict::SplitBrain { accused } => accused,
        Verdict::NoneReachable => {
            return Err(HealOutcome::Skipped(format!(
                "no brick answered for {gfid}"
            )))
        }
    };
    let split = set.split_brain(gfid, &accused).to_string();
    let Some(policy) = favorite.policy() else {
        return Err(HealOutcome::SplitBrain(split));
    };
    let settled = crate::resolve::settle(set, gfid, kind, views, policy).await;
    let (src, after) = settled.map_err(|e| match e {
        ResolveError::Refused(why) => HealOutcome::SplitBrain(format!(
            "{split}; {} {favorite} cannot resolve it: {why}",
            options::FAVORITE_CHILD_POLICY
        )),
        other => HealOutcome::Skipped(format!("resolving the split-brain of {gfid}: {other}")),
    })?;
    tracing::info!(
        set = set.set_name(),
        %gfid,
        kind = kind_word(kind),
        policy = %favorite,
        source = set.children()[src].name(),
        "split-brain resolved by {}: the source's copy is now the only good one",
        options::FAVORITE_CHILD_POLICY
    );
    match afr::examine(&after, kind, set.arbiter()) {
        Verdict::Sources { good, stale } => Ok((good, stale, Some(after))),
        other => Err(HealOutcome::Skipped(format!(
            "{gfid}: after resolving its split-brain the counters read {other:?}"
        ))),
    }
}

/// Good copies, stale copies, and the counters as rewritten when a
/// split-brain was resolved or a settlement recorded.
type SourcesRead = (Vec<usize>, Vec<usize>, Option<Vec<Option<BrickView>>>);

/// Every copy is a source by the changelog, but a transaction that never
/// reached its post-op left them dirty: make the clean copies, or else one
/// copy by the documented rule ([`crate::source`]), the sources and the
/// others their sinks, so the copies end the same. Otherwise keep the
/// changelog's verdict.
///
/// The verdict is written down before any sink is touched: each source
/// durably blames the sinks, so a heal cut short (a source that stops
/// answering after a sink was emptied) leaves sinks that reads avoid,
/// not unblamed copies that look as good as any. Returns the counters
/// with that blame added, for the final clear.
///
/// Regression (cluster scenario, `regressions::HEAL_CUT_SHORT_LEFT_A_READABLE_SINK`):
/// heal settled a dirty copy on s1 as the sink, emptied it for a whole
/// copy, then lost s2 (the source); s1, dirty and blamed by no one, then
/// served a read of zeros. Fixed by blaming before copying.
async fn settle_dirty_without_blame(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    good: Vec<usize>,
    stale: Vec<usize>,
) -> Result<SourcesRead, HealOutcome> {
    if !stale.is_empty() || good.len() < 2 || !source::dirty_without_blame(views, kind) {
        return Ok((good, stale, None));
    }
    let Some((sources, sinks)) = pick_settlement(set, gfid, kind, views, &good).await else {
        return Ok((good, stale, None));
    };
    let after = record_settlement(set, gfid, kind, views, &sources, &sinks).await?;
    Ok((sources, sinks, Some(after)))
}

/// Write a settlement down before healing by it: every source durably
/// blames every sink for `kind`. The counters as they are then.
pub(crate) async fn record_settlement(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    sources: &[usize],
    sinks: &[usize],
) -> Result<Vec<Option<BrickView>>, HealOutcome> {
    mortar_net::mark!(HEAL_SETTLED_DIRTY);
    let mut after = views.to_vec();
    for &s in sources {
        let deltas = sinks
            .iter()
            .map(|&k| (set.changelog_key(k).to_string(), kind_delta(kind, 1)))
            .collect();
        let op = bp::Xattrop {
            gfid,
            deltas,
            durable: true,
        };
        if let Err(e) = set.children()[s].fop(Fop::Xattrop(op)).await {
            return Err(HealOutcome::Skipped(format!(
                "recording on {} which copies of {gfid} heal the others: {e}",
                set.children()[s].name()
            )));
        }
        if let Some(v) = after[s].as_mut() {
            for &k in sinks {
                if let Some(b) = v.blames.get_mut(k) {
                    b[kind as usize] += 1;
                }
            }
        }
    }
    Ok(after)
}

/// Which copies heal the others in the no-blame, dirty case: the clean
/// ones ([`source::clean_sources`]), else one by [`source::pick_source`].
async fn pick_settlement(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    good: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    if let Some(settled) = source::clean_sources(views, kind, good) {
        return Some(settled);
    }
    let mut candidates = Vec::with_capacity(good.len());
    for &i in good {
        match set.children()[i].fop(Fop::Stat(bp::Stat { gfid })).await {
            Ok(FopOut::Attr(a)) => candidates.push(source::Candidate {
                brick: i,
                size: a.size,
                mtime: a.mtime,
                ctime: a.ctime,
            }),
            // A copy that cannot say what it holds is not a source.
            _ => continue,
        }
    }
    let src = source::pick_source(kind, &candidates)?;
    let sinks = good.iter().copied().filter(|i| *i != src).collect();
    Some((vec![src], sinks))
}

/// Clear exactly what was read: every brick's blame and dirty counters
/// for this kind go back to zero. Good copies first: if a later clear
/// fails (a brick dies), what is left is stale copies blaming each
/// other (writes refused until the next heal), never a good copy still
/// blaming copies that are now in sync, which a write without it would
/// turn into a false split-brain (found by client_writes seed 25).
pub(crate) async fn clear_counters(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    good: &[usize],
) -> Result<(), HealOutcome> {
    let children = set.children();
    for (i, op) in clearing_ops(set, gfid, &[kind], views, good) {
        if let Err(e) = children[i].fop(Fop::Xattrop(op)).await {
            return Err(HealOutcome::Skipped(format!(
                "clearing the counters of {gfid} on {}: {e}",
                children[i].name()
            )));
        }
    }
    Ok(())
}

/// The durable xattrops that clear exactly what `views` read of `kinds`,
/// brick by brick in [`clear_order`] (good copies first); bricks with
/// nothing to clear, or that did not answer, have none.
pub(crate) fn clearing_ops(
    set: &Replicate,
    gfid: Gfid,
    kinds: &[Kind],
    views: &[Option<BrickView>],
    good: &[usize],
) -> Vec<(usize, bp::Xattrop)> {
    let mut ops = Vec::new();
    for i in clear_order(set.children().len(), good) {
        let Some(v) = views[i].as_ref() else { continue };
        let deltas: Vec<_> = kinds
            .iter()
            .flat_map(|&kind| clearing_deltas(kind, v, |j| set.changelog_key(j)))
            .collect();
        if !deltas.is_empty() {
            let durable = true;
            ops.push((
                i,
                bp::Xattrop {
                    gfid,
                    deltas,
                    durable,
                },
            ));
        }
    }
    ops
}

/// Does any copy in `views` hold a counter of `kind` (dirty, or a blame)?
pub(crate) fn marked(views: &[Option<BrickView>], kind: Kind) -> bool {
    let k = kind as usize;
    views
        .iter()
        .flatten()
        .any(|v| v.dirty[k] != 0 || v.blames.iter().any(|b| b[k] != 0))
}

/// The changes that bring one brick's counters of `kind` (as read in
/// `v`) back to zero; `key(j)` is the changelog key blaming brick `j`.
pub(crate) fn clearing_deltas<'k>(
    kind: Kind,
    v: &BrickView,
    key: impl Fn(usize) -> &'k str,
) -> Vec<(String, CounterDelta)> {
    let k = kind as usize;
    let mut deltas: Vec<(String, CounterDelta)> = Vec::new();
    for (j, b) in v.blames.iter().enumerate() {
        if b[k] != 0 {
            deltas.push((key(j).to_string(), kind_delta(kind, -(b[k] as i32))));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(j: usize) -> &'static str {
        ["c0", "c1", "c2"][j]
    }

    /// Each non-zero counter of the kind is taken back by exactly what was
    /// read; zero counters and the other kinds are left alone.
    #[test]
    fn clearing_takes_back_exactly_the_counters_read() {
        let v = BrickView {
            blames: vec![[0, 0, 0], [3, 1, 0], [0, 2, 5]],
            dirty: [1, 0, 0],
        };
        let table: [(Kind, Vec<(String, CounterDelta)>); 3] = [
            (
                Kind::Data,
                vec![
                    ("c1".into(), kind_delta(Kind::Data, -3)),
                    (xa::DIRTY.into(), kind_delta(Kind::Data, -1)),
                ],
            ),
            (
                Kind::Metadata,
                vec![
                    ("c1".into(), kind_delta(Kind::Metadata, -1)),
                    ("c2".into(), kind_delta(Kind::Metadata, -2)),
                ],
            ),
            (
                Kind::Entry,
                vec![("c2".into(), kind_delta(Kind::Entry, -5))],
            ),
        ];
        for (kind, want) in table {
            assert_eq!(clearing_deltas(kind, &v, key), want, "{kind:?}");
        }
        let clean = BrickView {
            blames: vec![[0; 3]; 3],
            dirty: [0; 3],
        };
        assert!(clearing_deltas(Kind::Data, &clean, key).is_empty());
    }

    /// The unlocked look before a claim settles only what a locked heal
    /// would settle the same way.
    #[test]
    fn the_first_look_skips_only_what_a_locked_heal_would() {
        let clean = || {
            Some(BrickView {
                blames: vec![[0; 3]; 3],
                dirty: [0; 3],
            })
        };
        let blaming = |j: usize, k: usize| {
            let mut v = clean().expect("view");
            v.blames[j][k] = 1;
            Some(v)
        };
        let dirty = |k: usize| {
            let mut v = clean().expect("view");
            v.dirty[k] = 1;
            Some(v)
        };
        for (views, want, why) in [
            (
                vec![clean(), clean(), clean()],
                FirstLook::Clean,
                "nothing marked",
            ),
            (
                vec![blaming(2, 0), clean(), clean()],
                FirstLook::Marked,
                "a data blame",
            ),
            (
                vec![clean(), blaming(0, 1), clean()],
                FirstLook::Marked,
                "a metadata blame",
            ),
            (
                vec![clean(), clean(), blaming(1, 2)],
                FirstLook::Marked,
                "an entry blame (a directory)",
            ),
            (
                vec![dirty(0), dirty(0), dirty(0)],
                FirstLook::Marked,
                "dirty everywhere, no blame: an interrupted write",
            ),
            (
                vec![blaming(2, 0), clean(), None],
                FirstLook::Unanswered(vec![2]),
                "not on the stale brick yet",
            ),
            (
                vec![None, clean(), None],
                FirstLook::Unanswered(vec![0, 2]),
                "every missing copy is named",
            ),
        ] {
            assert_eq!(first_look(&views), want, "{why}");
        }
    }
}
