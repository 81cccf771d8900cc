//! Disperse's heal procedure: rebuild the fragments (data) and metadata
//! of the bricks not of the current generation from those that are, give
//! them its version and size, then clear the dirty counters that were
//! read. It uses only what the set exposes (`pub` or the `pub(crate)`
//! accessors marked in [`super`]) so it can move to the `heal` crate.

use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind};
use mortar_proto::{FileKind, FopError, Gfid};

use super::{current, ec_delta, geometry, Current, Disperse, FragInfo, EC_XATTR};
use crate::afr::{counters_delta, dirty_delta, Kind};
use crate::fop::{Fop, FopResult, HealOutcome};
use crate::replicate::heal::{copy_metadata, empty_sinks, seal_sinks};
use crate::txn;

/// What each brick's counters said when heal read them.
struct Counters {
    infos: Vec<Option<FragInfo>>,
    dirty: Vec<[i32; 3]>,
}

impl Disperse {
    /// Heal one file: with every brick up and the whole file locked on
    /// all of them, rebuild the fragments (data) and metadata of the
    /// bricks that are not of the current generation from those that
    /// are, give them its version and size, then clear the dirty counters
    /// that were read (current fragments first). Directories are reported
    /// (entry heal is not built).
    pub async fn heal_file(&self, gfid: Gfid) -> HealOutcome {
        let children = self.children();
        if let Some(down) = children.iter().find(|c| !c.is_up()) {
            return HealOutcome::Skipped(format!(
                "{} is down; heal waits until every brick of {} is up",
                down.name(),
                self.set_name()
            ));
        }
        let lock = self.inode_lock(gfid);
        let (rt, set) = (self.runtime(), self.set_name());
        let locked = match txn::lock_every(rt, set, children, LockKind::Write, &lock).await {
            Ok(l) => l,
            Err(e) => return HealOutcome::Skipped(format!("{gfid}: {e}")),
        };
        let outcome = match self.heal_locked(gfid).await {
            Ok(o) => o,
            Err(e) => HealOutcome::Skipped(format!("healing {gfid}: {e}")),
        };
        txn::unlock_all(rt, set, children, &locked, &lock).await;
        outcome
    }

    /// Read each brick's counters with a zero xattrop (one answer per
    /// brick holding both).
    async fn read_counters(&self, gfid: Gfid, all: &[usize]) -> FopResult<Counters> {
        let read = self
            .xattrop_on(
                all,
                gfid,
                vec![dirty_delta(Kind::Data, 0), ec_delta(0, 0, 0)],
                false,
            )
            .await;
        let n = self.n();
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

    async fn heal_locked(&self, gfid: Gfid) -> FopResult<HealOutcome> {
        let children = self.children();
        let all: Vec<usize> = (0..self.n()).collect();
        let Counters { mut infos, dirty } = self.read_counters(gfid, &all).await?;
        let a = children[0]
            .fop(Fop::Stat(bp::Stat { gfid }))
            .await?
            .attr()?;
        if a.kind == FileKind::Directory {
            return Ok(HealOutcome::Skipped(format!(
                "{gfid} is a directory: entry heal is not built yet"
            )));
        }
        let k = self.k();
        let data = current(&infos, k, Kind::Data).map_err(|d| self.disagree(gfid, &d))?;
        let meta = current(&infos, k, Kind::Metadata).map_err(|d| self.disagree(gfid, &d))?;
        let outside = |c: &Current| -> Vec<usize> {
            all.iter()
                .copied()
                .filter(|i| !c.bricks.contains(i))
                .collect()
        };
        let (data_sinks, meta_sinks) = (outside(&data), outside(&meta));
        if a.kind == FileKind::Regular && !data_sinks.is_empty() {
            let size = data.info.size.max(0) as u64;
            self.rebuild(gfid, &data.bricks, &data_sinks, size).await?;
        }
        // Metadata to the metadata sinks, and back to the rebuilt data
        // sinks (rewriting them moved their times).
        let mut meta_to: Vec<usize> = meta_sinks.clone();
        meta_to.extend(data_sinks.iter().filter(|i| !meta_sinks.contains(i)));
        if !meta_to.is_empty() {
            copy_metadata(children, gfid, meta.bricks[0], &meta_to).await?;
        }
        self.set_versions(gfid, &mut infos, (&data, &data_sinks), (&meta, &meta_sinks))
            .await?;
        // Clear exactly the dirty counts read: current fragments first.
        let order: Vec<usize> = data.bricks.iter().chain(&data_sinks).copied().collect();
        self.clear_dirty(gfid, &order, &dirty).await?;
        let mut healed = data_sinks;
        healed.extend(
            meta_sinks
                .iter()
                .filter(|i| !healed.contains(i))
                .collect::<Vec<_>>(),
        );
        healed.sort_unstable();
        Ok(if healed.is_empty() {
            HealOutcome::Clean
        } else {
            HealOutcome::Healed(
                healed
                    .iter()
                    .map(|i| children[*i].name().to_string())
                    .collect(),
            )
        })
    }

    /// Take back the dirty counts heal read (`dirty`, per brick), on the
    /// bricks in `order`.
    async fn clear_dirty(&self, gfid: Gfid, order: &[usize], dirty: &[[i32; 3]]) -> FopResult<()> {
        for &i in order {
            if dirty[i].iter().all(|x| *x == 0) {
                continue;
            }
            let undo = dirty[i].map(|x| -x);
            self.children()[i]
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
    /// sink of `data` or `meta` gets what it lacks, once per brick even
    /// when it is in both lists.
    async fn set_versions(
        &self,
        gfid: Gfid,
        infos: &mut [Option<FragInfo>],
        (data, data_sinks): (&Current, &[usize]),
        (meta, meta_sinks): (&Current, &[usize]),
    ) -> FopResult<()> {
        for &i in data_sinks.iter().chain(meta_sinks.iter()) {
            let have = infos[i].unwrap_or_default();
            let (dd, ds) = if data_sinks.contains(&i) {
                (data.info.data - have.data, data.info.size - have.size)
            } else {
                (0, 0)
            };
            let dm = if meta_sinks.contains(&i) {
                meta.info.meta - have.meta
            } else {
                0
            };
            if dd == 0 && ds == 0 && dm == 0 {
                continue;
            }
            infos[i] = Some(FragInfo {
                data: have.data + dd,
                meta: have.meta + dm,
                size: have.size + ds,
            });
            self.children()[i]
                .fop(Fop::Xattrop(bp::Xattrop {
                    gfid,
                    deltas: vec![ec_delta(dd, dm, ds)],
                    durable: true,
                }))
                .await?;
        }
        Ok(())
    }

    /// Rewrite the fragments of `sinks` from `good`, a chunk at a time
    /// (all-zero chunks stay holes), then cut them to length and fsync.
    async fn rebuild(
        &self,
        gfid: Gfid,
        good: &[usize],
        sinks: &[usize],
        size: u64,
    ) -> FopResult<()> {
        let children = self.children();
        empty_sinks(children, gfid, sinks).await?;
        let s = self.stripe();
        let chunk = geometry::piece_bytes_max(s);
        let end = size.div_ceil(s) * s;
        let mut at = 0;
        while at < end {
            let to = (at + chunk).min(end);
            let buf = self.decode_range(gfid, good, at, to).await?;
            if buf.iter().any(|b| *b != 0) {
                let frags = self.encode(&buf)?;
                for (i, r) in self
                    .write_each(gfid, sinks, at / self.k() as u64, &frags)
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
            at = to;
        }
        seal_sinks(children, gfid, sinks, self.fragment_len(size)).await
    }
}

// Heal steps through a file a chunk of whole stripes at a time; the
// widest stripe a codec allows (256 fragments) must fit in one.
const _: () = assert!(crate::fop::CHUNK_BYTES_MAX >= 256 * crate::ec::FRAGMENT_BYTES as u64);
