//! Disperse's heal procedure: rebuild the fragments (data) and metadata
//! of the bricks not of the current generation from those that are, give
//! them its version and size, then clear the dirty counters that were
//! read. A directory's names are healed first by disperse entry heal
//! ([`crate::disperse_entry`]: the bricks of the directory's current
//! version generation are the good copies, the others get the names they
//! lack and lose, on the evidence of the entry marks, the names the good
//! copies removed), then its metadata here. It reaches the set only
//! through the accessors `mortar-client` documents for this crate; which
//! fragments are current is `disperse::current`, the rule reads use too.

use mortar_client::afr::{counters_delta, dirty_delta, Kind};
use mortar_client::copy::has_data;
use mortar_client::disperse::{
    current, ec_delta, piece_bytes_max, Current, Disperse, FragInfo, EC_XATTR,
};
use mortar_client::fop::{shape_error, Child, Fop, FopOut, FopResult};
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta};
use mortar_proto::{FileKind, FopError, Gfid};
use sha2::Digest;

use crate::steps::{
    clear_order, copy_metadata, empty_sinks, every_brick_up, healed_outcome, kind_of,
    merge_outcomes, seal_sinks, with_every_brick_locked,
};
use crate::{blocks, HealOutcome};

/// What each brick's counters said when heal read them.
pub(crate) struct Counters {
    pub(crate) infos: Vec<Option<FragInfo>>,
    pub(crate) dirty: Vec<[i32; 3]>,
}

/// Heal one file: with every brick up, a directory's names first (entry
/// heal, under the whole directory's entry lock), then, with the whole
/// file locked on all bricks, rebuild the fragments (data) and metadata
/// of the bricks that are not of the current generation from those that
/// are, give them its version and size, then clear the dirty counters
/// that were read (current fragments first).
pub async fn heal_file(set: &Disperse, gfid: Gfid) -> HealOutcome {
    if let Err(skipped) = every_brick_up(set.children(), set.set_name()) {
        return skipped;
    }
    let Some(kind) = kind_of(set.children(), gfid).await else {
        return HealOutcome::Skipped(format!(
            "{gfid} is on no brick of {} that answered",
            set.set_name()
        ));
    };
    let entries = match kind {
        FileKind::Directory => crate::disperse_entry::heal_entries(set, gfid).await,
        _ => HealOutcome::Clean,
    };
    merge_outcomes(entries, heal_inode(set, gfid, kind).await)
}

/// The data and metadata of one object of kind `kind` (a directory's
/// metadata only: its data version counts its entry operations, entry
/// heal's), under its whole-file lock on every brick.
pub(crate) async fn heal_inode(set: &Disperse, gfid: Gfid, kind: FileKind) -> HealOutcome {
    let lock = set.inode_lock(gfid);
    let heal = async {
        match heal_locked(set, gfid, kind).await {
            Ok(o) => o,
            Err(e) => HealOutcome::Skipped(format!("healing {gfid}: {e}")),
        }
    };
    let (rt, name, children) = (set.runtime(), set.set_name(), set.children());
    with_every_brick_locked(rt, name, children, gfid, &lock, heal).await
}

/// Read each brick's counters with a zero xattrop (one answer per
/// brick holding both).
pub(crate) async fn read_counters(
    set: &Disperse,
    gfid: Gfid,
    all: &[usize],
) -> FopResult<Counters> {
    let read = set
        .xattrop_on(
            all,
            gfid,
            vec![dirty_delta(Kind::Data, 0), ec_delta(0, 0, 0)],
            false,
        )
        .await;
    let n = set.n();
    let mut infos = vec![None; n];
    let mut dirty = vec![[0i32; 3]; n];
    for (i, r) in read {
        for (name, d) in r?.counters()? {
            match (name.as_str(), &d) {
                (EC_XATTR, _) => infos[i] = Some(FragInfo::from_delta(&d)),
                (xa::DIRTY, CounterDelta::Add32(v)) => {
                    for (j, x) in v.iter().take(3).enumerate() {
                        dirty[i][j] = *x;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Counters { infos, dirty })
}

async fn heal_locked(set: &Disperse, gfid: Gfid, kind: FileKind) -> FopResult<HealOutcome> {
    let children = set.children();
    let all: Vec<usize> = (0..set.n()).collect();
    let Counters {
        mut infos,
        mut dirty,
    } = read_counters(set, gfid, &all).await?;
    let k = set.k();
    let meta = current(&infos, k, Kind::Metadata).map_err(|d| set.disagree(gfid, &d))?;
    let data = match kind {
        // A directory's data version and entry marks are entry heal's.
        FileKind::Directory => {
            for d in &mut dirty {
                d[Kind::Entry as usize] = 0;
            }
            None
        }
        _ => Some(current(&infos, k, Kind::Data).map_err(|d| set.disagree(gfid, &d))?),
    };
    let data_sinks = data
        .as_ref()
        .map_or_else(Vec::new, |d| sinks_outside(&all, d));
    let meta_sinks = sinks_outside(&all, &meta);
    if let (Some(data), FileKind::Regular, false) = (&data, kind, data_sinks.is_empty()) {
        let size = data.info.size.max(0) as u64;
        rebuild(set, gfid, &data.bricks, &data_sinks, size).await?;
    }
    // Metadata to the metadata sinks, and back to the rebuilt data
    // sinks (rewriting them moved their times).
    let mut meta_to: Vec<usize> = meta_sinks.clone();
    meta_to.extend(data_sinks.iter().filter(|i| !meta_sinks.contains(i)));
    if !meta_to.is_empty() {
        copy_metadata(children, gfid, meta.bricks[0], &meta_to).await?;
    }
    let data_part = data.as_ref().map(|d| (d, &data_sinks[..]));
    set_versions(set, gfid, &mut infos, data_part, (&meta, &meta_sinks)).await?;
    // Clear exactly the dirty counts read: current fragments first.
    let good = data.as_ref().unwrap_or(&meta);
    clear_dirty(set, gfid, &clear_order(set.n(), &good.bricks), &dirty).await?;
    let mut healed = data_sinks;
    healed.extend(
        meta_sinks
            .iter()
            .filter(|i| !healed.contains(i))
            .collect::<Vec<_>>(),
    );
    healed.sort_unstable();
    Ok(healed_outcome(children, &healed))
}

/// The bricks of `all` that do not hold the `current` generation: the
/// ones heal rewrites.
fn sinks_outside(all: &[usize], current: &Current) -> Vec<usize> {
    all.iter()
        .copied()
        .filter(|i| !current.bricks.contains(i))
        .collect()
}

/// What a fragment that holds `have` lacks of the current generation:
/// `(data version, metadata version, size)` steps, taking the data
/// version and size from `data` and the metadata version from `meta`
/// when it is a sink of that kind (`None`: it is not).
pub(crate) fn version_gap(
    have: FragInfo,
    data: Option<&FragInfo>,
    meta: Option<&FragInfo>,
) -> (i64, i64, i64) {
    let (dd, ds) = data.map_or((0, 0), |d| (d.data - have.data, d.size - have.size));
    let dm = meta.map_or(0, |m| m.meta - have.meta);
    (dd, dm, ds)
}

/// Take back the dirty counts heal read (`dirty`, per brick), on the
/// bricks in `order`.
async fn clear_dirty(
    set: &Disperse,
    gfid: Gfid,
    order: &[usize],
    dirty: &[[i32; 3]],
) -> FopResult<()> {
    for &i in order {
        if dirty[i].iter().all(|x| *x == 0) {
            continue;
        }
        let undo = dirty[i].map(|x| -x);
        set.children()[i]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid,
                deltas: vec![(xa::DIRTY.to_string(), counters_delta(undo))],
                durable: true,
            }))
            .await?;
    }
    Ok(())
}

/// The healed fragments take the current versions and size: each
/// sink of `data` (none for a directory) or `meta` gets what it lacks,
/// once per brick even when it is in both lists.
async fn set_versions(
    set: &Disperse,
    gfid: Gfid,
    infos: &mut [Option<FragInfo>],
    data: Option<(&Current, &[usize])>,
    (meta, meta_sinks): (&Current, &[usize]),
) -> FopResult<()> {
    let (data, data_sinks) = match data {
        Some((d, s)) => (Some(&d.info), s),
        None => (None, &[][..]),
    };
    for &i in data_sinks.iter().chain(meta_sinks.iter()) {
        let have = infos[i].unwrap_or_default();
        let (dd, dm, ds) = version_gap(
            have,
            data.filter(|_| data_sinks.contains(&i)),
            meta_sinks.contains(&i).then_some(&meta.info),
        );
        if dd == 0 && ds == 0 && dm == 0 {
            continue;
        }
        infos[i] = Some(FragInfo {
            data: have.data + dd,
            meta: have.meta + dm,
            size: have.size + ds,
        });
        set.children()[i]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid,
                deltas: vec![ec_delta(dd, dm, ds)],
                durable: true,
            }))
            .await?;
    }
    Ok(())
}

/// Bring the fragments of `sinks` to what `good` decode to, then cut them
/// to length and fsync. A chunk of stripes at a time the data is decoded
/// and re-encoded, and each sink's fragment compared block by block with
/// the checksums its brick gives (`Rchecksum`, [`bp::HEAL_BLOCK_BYTES`]
/// blocks): only blocks that differ are written, and blocks that became
/// zeros become holes ([`blocks::need`], the replicate copy's rule). A
/// brick that gives no checksums (an older one) has every sink rewritten
/// whole instead ([`rebuild_whole`]).
async fn rebuild(
    set: &Disperse,
    gfid: Gfid,
    good: &[usize],
    sinks: &[usize],
    size: u64,
) -> FopResult<()> {
    let children = set.children();
    match rebuild_blocks(set, gfid, good, sinks, size).await {
        Ok(()) => seal_sinks(children, gfid, sinks, set.fragment_len(size)).await,
        Err(blocks::Stop::Failed(e)) => Err(e),
        Err(blocks::Stop::NoChecksums { brick, err }) => {
            tracing::warn!(%gfid, %brick, error = %err, "no block checksums; rewriting whole fragments");
            rebuild_whole(set, gfid, good, sinks, size).await
        }
    }
}

/// [`rebuild`]'s block compare; `NoChecksums` only before anything was
/// written.
async fn rebuild_blocks(
    set: &Disperse,
    gfid: Gfid,
    good: &[usize],
    sinks: &[usize],
    size: u64,
) -> Result<(), blocks::Stop> {
    let children = set.children();
    let k = set.k() as u64;
    for (at, to) in stripe_chunks(set, size) {
        let buf = set.decode_range(gfid, good, at, to).await?;
        let frags = if has_data(&buf) {
            Some(set.encode(&buf)?)
        } else {
            None
        };
        let (foff, flen) = (at / k, (to - at) / k);
        let zeros = vec![0u8; flen as usize];
        for &i in sinks {
            let q = bp::Rchecksum {
                gfid,
                offset: foff,
                len: flen,
                block_size: bp::HEAL_BLOCK_BYTES,
            };
            let theirs = match children[i].fop(Fop::Rchecksum(q)).await {
                Ok(FopOut::Checksums(r)) => r.blocks,
                Ok(other) => return Err(shape_error("rchecksum", &other).into()),
                Err(err) if at == 0 && blocks::unsupported(&err) => {
                    let brick = children[i].name().to_string();
                    return Err(blocks::Stop::NoChecksums { brick, err });
                }
                Err(e) => return Err(e.into()),
            };
            let mine: &[u8] = frags.as_ref().map_or(&zeros, |f| &f[i]);
            mend_fragment(&children[i], gfid, foff, mine, &theirs).await?;
        }
    }
    Ok(())
}

/// Write to one stale fragment, at `foff`, the blocks of `mine` (the
/// re-encoded fragment) that its brick's checksums `theirs` say differ,
/// and make zeros where `mine` became zeros.
async fn mend_fragment(
    c: &Child,
    gfid: Gfid,
    foff: u64,
    mine: &[u8],
    theirs: &[bp::BlockChecksum],
) -> FopResult<()> {
    for (b, block) in mine.chunks(bp::HEAL_BLOCK_BYTES as usize).enumerate() {
        let off = foff + b as u64 * bp::HEAL_BLOCK_BYTES;
        let zero = !has_data(block);
        let ours = bp::BlockChecksum {
            len: block.len() as u64,
            zero,
            // The rule does not look at a block of zeros' digest.
            sha256: if zero {
                [0; 32]
            } else {
                sha2::Sha256::digest(block).into()
            },
        };
        match blocks::need(&ours, theirs.get(b)) {
            blocks::Need::Keep => {}
            blocks::Need::Copy => {
                let data = bytes::Bytes::copy_from_slice(block);
                blocks::write(c, gfid, off, data).await?;
            }
            blocks::Need::Zero => blocks::make_zeros(c, gfid, off, ours.len).await?,
        }
    }
    Ok(())
}

/// The ranges `[at, to)` of file data heal steps through: whole stripes,
/// at most [`piece_bytes_max`] at a time, up to the stripe that holds
/// byte `size`.
fn stripe_chunks(set: &Disperse, size: u64) -> impl Iterator<Item = (u64, u64)> {
    let s = set.stripe();
    let chunk = piece_bytes_max(s);
    let end = size.div_ceil(s) * s;
    (0..end)
        .step_by(chunk as usize)
        .map(move |at| (at, (at + chunk).min(end)))
}

/// Rewrite the fragments of `sinks` from `good` whole, a chunk at a time
/// (all-zero chunks stay holes), then cut them to length and fsync.
async fn rebuild_whole(
    set: &Disperse,
    gfid: Gfid,
    good: &[usize],
    sinks: &[usize],
    size: u64,
) -> FopResult<()> {
    let children = set.children();
    empty_sinks(children, gfid, sinks).await?;
    for (at, to) in stripe_chunks(set, size) {
        let buf = set.decode_range(gfid, good, at, to).await?;
        if has_data(&buf) {
            let frags = set.encode(&buf)?;
            for (i, r) in set
                .write_each(gfid, sinks, at / set.k() as u64, &frags)
                .await
            {
                r.map_err(|e| {
                    FopError::new(
                        e.errno,
                        format!("writing a fragment to {}: {e}", children[i].name()),
                    )
                })?;
            }
        }
    }
    seal_sinks(children, gfid, sinks, set.fragment_len(size)).await
}

// Heal steps through a file a chunk of whole stripes at a time; the
// widest stripe a codec allows (256 fragments) must fit in one.
const _: () =
    assert!(mortar_client::fop::CHUNK_BYTES_MAX >= 256 * mortar_client::ec::FRAGMENT_BYTES as u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data: i64, meta: i64, size: i64) -> Option<FragInfo> {
        Some(FragInfo { data, meta, size })
    }

    /// Heal's choice on 4 + 2 sets: the sinks of each kind are the bricks
    /// outside that kind's current generation (a brick that missed only a
    /// setattr is a metadata sink, not a data one).
    #[test]
    fn sinks_are_the_bricks_outside_each_current_generation() {
        let all: Vec<usize> = (0..6).collect();
        // (fragments, data sinks, metadata sinks)
        let table = [
            (vec![info(7, 3, 100); 6], vec![], vec![]),
            (
                vec![
                    info(7, 3, 100),
                    info(2, 1, 40),
                    info(7, 3, 100),
                    info(7, 3, 100),
                    info(7, 3, 100),
                    info(7, 3, 100),
                ],
                vec![1],
                vec![1],
            ),
            (
                vec![
                    info(7, 3, 100),
                    info(7, 1, 100),
                    info(7, 3, 100),
                    None,
                    info(7, 3, 100),
                    info(7, 3, 100),
                ],
                vec![3],
                vec![1, 3],
            ),
        ];
        for (infos, data_sinks, meta_sinks) in table {
            let data = current(&infos, 4, Kind::Data).unwrap();
            let meta = current(&infos, 4, Kind::Metadata).unwrap();
            assert_eq!(sinks_outside(&all, &data), data_sinks, "{infos:?}");
            assert_eq!(sinks_outside(&all, &meta), meta_sinks, "{infos:?}");
        }
    }

    /// A sink gets exactly the steps to the current versions of the kinds
    /// it is a sink of, and nothing of the others.
    #[test]
    fn a_sink_takes_the_versions_it_lacks_of_its_kinds_only() {
        let cur = FragInfo {
            data: 9,
            meta: 5,
            size: 300,
        };
        let have = FragInfo {
            data: 4,
            meta: 2,
            size: 100,
        };
        let table = [
            (Some(&cur), Some(&cur), (5, 3, 200)),
            (Some(&cur), None, (5, 0, 200)),
            (None, Some(&cur), (0, 3, 0)),
            (None, None, (0, 0, 0)),
        ];
        for (data, meta, want) in table {
            assert_eq!(version_gap(have, data, meta), want, "{data:?} {meta:?}");
        }
        // A fragment no update touched (no xattr) counts from zero.
        assert_eq!(
            version_gap(FragInfo::default(), Some(&cur), Some(&cur)),
            (9, 5, 300)
        );
    }
}
