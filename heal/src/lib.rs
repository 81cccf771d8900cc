//! `mortar-heal`: the self-heal daemon (`mortar shd`) and the index crawl
//! it runs over the client's set layers.
//!
//! It owns when to heal (triggers, bounds per crawl), what a crawl
//! reports, and how one file of a set is healed: the replicate procedure
//! (bring the stale copies to a good one, writing only the blocks whose
//! checksums differ, `heal/src/blocks.rs`; clear the counters read) and the disperse one
//! (rebuild fragments outside the current generation), and for a
//! directory first its names (entry heal: one plan, [`entry::plan`], for
//! both set kinds, each telling its good copies and its evidence for
//! removals its own way), and how a replicate split-brain is resolved
//! (the policies, pure, in [`split_brain`]; the procedure, by the CLI or
//! by the daemon's `cluster.favorite-child-policy`, in [`resolve`]). It
//! reaches bricks
//! only through `mortar-client`'s public layers (the volume graph's
//! [`SetLayer`](mortar_client::graph::SetLayer)s and the accessors each
//! set documents for this crate) and must never talk to a disk, link the
//! management daemon, or block on anything without a deadline.
#![warn(clippy::too_many_lines)]

mod blocks;
mod commit;
pub mod compare;
pub mod crawl;
pub mod daemon;
pub mod disperse;
pub mod disperse_entry;
pub mod entry;
mod entry_steps;
pub mod error;
pub mod full;
pub mod info;
pub mod replicate;
mod replicate_entry;
pub mod resolve;
pub mod source;
pub mod split_brain;
pub mod steps;

use mortar_client::graph::SetLayer;
use mortar_proto::Gfid;

use crate::split_brain::FavoriteChild;

/// What healing one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealOutcome {
    /// Nothing was marked: the copies agree.
    Clean,
    /// These bricks were brought up to date.
    Healed(Vec<String>),
    /// The copies blame each other; left alone (reads and writes get EIO).
    SplitBrain(String),
    /// Not healed now (a brick down, a lock not granted, an error); why.
    Skipped(String),
    /// Another healer (this daemon's other worker, or another server's
    /// daemon) is healing it now; left to that one.
    Busy(String),
}

/// Heal one file of `set` by the procedure of its kind, once this healer
/// has claimed it on every brick of the set (the self-heal domain,
/// [`steps::heal_domain`]): exactly one healer works on a file at a time,
/// and the others skip it rather than wait. A healer that dies loses its
/// claim with its connections; the file stays in the index and the next
/// crawl heals it from the start (every step of a heal can be redone).
/// A replicate split-brain is left alone ([`heal_file_with`] may resolve
/// it).
pub async fn heal_file(set: &SetLayer, gfid: Gfid) -> HealOutcome {
    heal_file_with(set, gfid, FavoriteChild::None).await
}

/// [`heal_file`], resolving a replicate split-brain by `favorite` (the
/// volume's `cluster.favorite-child-policy`) unless it is `none`.
pub async fn heal_file_with(set: &SetLayer, gfid: Gfid, favorite: FavoriteChild) -> HealOutcome {
    if let SetLayer::Replicate(r) = set {
        if let Some(settled) = replicate::before_claim(r, gfid).await {
            return settled;
        }
    }
    let heal = async {
        match set {
            SetLayer::Replicate(r) => replicate::heal_file_with(r, gfid, favorite).await,
            SetLayer::Disperse(d) => disperse::heal_file(d, gfid).await,
        }
    };
    claimed(set, gfid, heal).await.unwrap_or_else(|o| o)
}

/// Run `work` once this healer has claimed `gfid` on every brick of
/// `set` (every brick must be up), then give the claim back. `Err`: the
/// outcome that says why it was not claimed (another healer holds it, a
/// brick is down or refused); `work` did not run.
pub(crate) async fn claimed<T>(
    set: &SetLayer,
    gfid: Gfid,
    work: impl std::future::Future<Output = T>,
) -> Result<T, HealOutcome> {
    let (rt, name, children, owner) = match set {
        SetLayer::Replicate(r) => (r.runtime(), r.set_name(), r.children(), r.new_lock_owner()),
        SetLayer::Disperse(d) => (d.runtime(), d.set_name(), d.children(), d.new_lock_owner()),
    };
    steps::every_brick_up(children, name)?;
    let lock = steps::claim_lock(name, gfid, owner);
    let claimed = steps::claim(rt, name, children, gfid, &lock).await?;
    let out = work.await;
    mortar_client::txn::unlock_all(rt, name, children, &claimed, &lock).await;
    Ok(out)
}
