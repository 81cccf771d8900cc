//! Replicate's heal procedure: bring the stale copies of one file up to
//! date from a good one, then clear exactly the counters that were read.
//! It reaches the set only through the accessors `mortar-client` documents
//! for this crate; which copies are good is `afr::examine`, the rule reads
//! use too.

use mortar_client::afr::{self, kind_delta, BrickView, Kind, Verdict};
use mortar_client::fop::{Fop, FopOut};
use mortar_client::replicate::Replicate;
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind};
use mortar_proto::{FileKind, Gfid};

use crate::steps::{
    clear_order, copy_data, copy_metadata, every_brick_up, healed_outcome, kind_of, merge_outcomes,
    with_every_brick_locked,
};
use crate::{source, HealOutcome};

/// Heal one file: with every brick of the set up, a directory's names
/// first (entry heal, under the whole directory's entry lock), then its
/// data and metadata under the whole file locked on all bricks: copy from
/// a good copy to the stale ones and clear the counters that were read.
pub async fn heal_file(set: &Replicate, gfid: Gfid) -> HealOutcome {
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
    let inode =
        with_every_brick_locked(rt, name, children, gfid, &lock, heal_locked(set, gfid)).await;
    merge_outcomes(entries, inode)
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

async fn heal_locked(set: &Replicate, gfid: Gfid) -> HealOutcome {
    let children = set.children();
    let all: Vec<usize> = (0..children.len()).collect();
    let views = set.views(gfid, &all).await;
    if views.iter().any(Option::is_none) {
        return HealOutcome::Skipped(format!("not every brick answered for {gfid}"));
    }
    let mut healed: Vec<usize> = Vec::new();
    for kind in [Kind::Data, Kind::Metadata] {
        match heal_kind(set, gfid, kind, &views).await {
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
) -> Result<Vec<usize>, HealOutcome> {
    let children = set.children();
    let k = kind as usize;
    let marked = views
        .iter()
        .flatten()
        .any(|v| v.dirty[k] != 0 || v.blames.iter().any(|b| b[k] != 0));
    if !marked {
        return Ok(Vec::new());
    }
    let (good, stale) = match afr::examine(views, kind, set.arbiter()) {
        Verdict::Sources { good, stale } => (good, stale),
        Verdict::SplitBrain { accused } => {
            return Err(HealOutcome::SplitBrain(
                set.split_brain(gfid, &accused).to_string(),
            ))
        }
        Verdict::NoneReachable => {
            return Err(HealOutcome::Skipped(format!(
                "no brick answered for {gfid}"
            )))
        }
    };
    let (good, stale) = settle_dirty_without_blame(set, gfid, kind, views, good, stale).await;
    let Some(&src) = good.first() else {
        return Err(HealOutcome::Skipped(format!("no good copy of {gfid}")));
    };
    let sinks: Vec<usize> = stale
        .iter()
        .copied()
        .filter(|i| !(kind == Kind::Data && Some(*i) == set.arbiter()))
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
    clear_counters(set, gfid, kind, views, &good).await?;
    Ok(sinks)
}

/// Every copy is a source by the changelog, but a transaction that never
/// reached its post-op left them dirty: make one copy (by the documented
/// rule, [`crate::source`]) the source and the others its sinks, so the
/// copies end the same. Otherwise keep the changelog's verdict.
async fn settle_dirty_without_blame(
    set: &Replicate,
    gfid: Gfid,
    kind: Kind,
    views: &[Option<BrickView>],
    good: Vec<usize>,
    stale: Vec<usize>,
) -> (Vec<usize>, Vec<usize>) {
    if !stale.is_empty() || good.len() < 2 || !source::dirty_without_blame(views, kind) {
        return (good, stale);
    }
    let mut candidates = Vec::with_capacity(good.len());
    for &i in &good {
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
    match source::pick_source(kind, &candidates) {
        Some(src) => {
            let sinks = good.into_iter().filter(|i| *i != src).collect();
            (vec![src], sinks)
        }
        None => (good, stale),
    }
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
    for i in clear_order(children.len(), good) {
        let v = views[i].as_ref().expect("all answered");
        let deltas = clearing_deltas(kind, v, |j| set.changelog_key(j));
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
/// `v`) back to zero; `key(j)` is the changelog key blaming brick `j`.
fn clearing_deltas<'k>(
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
}
