//! Reads: file data decoded from `k` fragments of the current
//! generation, attributes, lookup, directory pages, metadata reads, and
//! the operations sent to every brick.

use bytes::Bytes;
use mortar_proto::brick::{self as bp, LockKind, IO_BYTES_MAX};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use super::{current, Disperse, FragInfo, EC_XATTR, READDIR_SIZE_ASKS_MAX};
use crate::afr::Kind;
use crate::fop::{shape_error, Fop, FopOut, FopResult};
use crate::txn;

impl Disperse {
    /// Rebuild the file data `[s0, s1)` (stripe-aligned) from the bricks
    /// `good` (all of one generation), reading `k` of them (data bricks
    /// first) and more only when one fails.
    pub async fn decode_range(
        &self,
        gfid: Gfid,
        good: &[usize],
        s0: u64,
        s1: u64,
    ) -> FopResult<Vec<u8>> {
        let k = self.k;
        let (foff, flen) = (s0 / k as u64, (s1 - s0) / k as u64);
        let mut got: Vec<Option<Vec<u8>>> = vec![None; self.n()];
        let mut have = 0;
        let mut next = 0;
        let mut last_err = None;
        while have < k && next < good.len() {
            let batch: Vec<usize> = good[next..(next + k - have).min(good.len())].to_vec();
            next += batch.len();
            let q = Fop::Read(bp::Read {
                gfid,
                offset: foff,
                len: flen,
            });
            for (i, r) in txn::fan_op(&self.rt, &self.name, &self.children, &batch, &q).await {
                match r {
                    Ok(FopOut::Data(d)) => {
                        // Past a fragment file's end is zeros (sparse).
                        let mut v = d.to_vec();
                        v.resize(flen as usize, 0);
                        got[i] = Some(v);
                        have += 1;
                    }
                    Ok(other) => last_err = Some(shape_error("read", &other)),
                    Err(e) => last_err = Some(e),
                }
            }
        }
        if have < k {
            return Err(FopError::new(
                Errno::EIO,
                format!(
                    "{}: only {have} of the {k} fragments needed to rebuild {gfid} could be read{}",
                    self.name,
                    last_err.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            ));
        }
        self.codec
            .decode(&got)
            .map_err(|e| FopError::new(Errno::EIO, format!("{}: decoding {gfid}: {e}", self.name)))
    }

    // ---- reads ----

    pub(super) async fn read(&self, q: bp::Read) -> FopResult<FopOut> {
        let lock = self.inode_lock(q.gfid);
        let locked = self
            .lock_file(&lock, LockKind::Read, false, "reading")
            .await?;
        let r = self.read_locked(&q, &locked).await;
        // Give the shared lock back without waiting for the answers (one
        // round trip less per read); a writer that comes first waits for
        // it like for any reader's.
        let (rt, name, children) = (self.rt.clone(), self.name.clone(), self.children.clone());
        let unlock = lock(LockKind::Unlock, None);
        self.rt.spawn(async move {
            let _ = txn::fan_op(&rt, &name, &children, &locked, &unlock).await;
        });
        r
    }

    async fn read_locked(&self, q: &bp::Read, locked: &[usize]) -> FopResult<FopOut> {
        let infos = self.infos(q.gfid, locked).await;
        let cur = current(&infos, self.k, Kind::Data).map_err(|d| self.disagree(q.gfid, &d))?;
        let size = cur.info.size.max(0) as u64;
        let len = q.len.min(IO_BYTES_MAX);
        if q.offset >= size || len == 0 {
            return Ok(FopOut::Data(Bytes::new()));
        }
        let end = q.offset.saturating_add(len).min(size);
        let (s0, s1) = self.span(q.offset, end);
        let buf = self.decode_range(q.gfid, &cur.bricks, s0, s1).await?;
        let from = (q.offset - s0) as usize;
        let to = (end - s0) as usize;
        Ok(FopOut::Data(Bytes::copy_from_slice(&buf[from..to])))
    }

    /// Attributes: kind, mode, owner and times from the current metadata
    /// generation; size from the current data generation. Without a lock
    /// first; if a write in flight makes the fragments disagree, again
    /// under a shared lock.
    pub(super) async fn attr(&self, gfid: Gfid) -> FopResult<Attr> {
        let up = self.readable("reading")?;
        match self.attr_from(gfid, &up).await {
            Ok(a) => Ok(a),
            Err((e, false)) => Err(e),
            Err((_, true)) => {
                let lock = self.inode_lock(gfid);
                let locked = self
                    .lock_file(&lock, LockKind::Read, false, "reading")
                    .await?;
                let r = self.attr_from(gfid, &locked).await.map_err(|(e, _)| e);
                txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
                r
            }
        }
    }

    /// `Err((e, true))`: the fragments disagree (worth a locked retry).
    async fn attr_from(&self, gfid: Gfid, idx: &[usize]) -> Result<Attr, (FopError, bool)> {
        let res = txn::fan_any(&self.rt, &self.children, idx, move |c| {
            Box::pin(async move {
                // Both questions at once (one round trip).
                let (stat, info) = tokio::join!(
                    c.fop(Fop::Stat(bp::Stat { gfid })),
                    c.fop(Fop::Getxattr(bp::Getxattr {
                        gfid,
                        name: EC_XATTR.into(),
                    }))
                );
                let a = stat?.attr()?;
                let info = match info {
                    Ok(FopOut::Value(v)) => FragInfo::parse(&v),
                    Err(e) if e.errno == Errno::ENODATA => FragInfo::default(),
                    Err(e) => return Err(e),
                    Ok(other) => return Err(shape_error("getxattr", &other)),
                };
                Ok::<_, FopError>((a, info))
            })
        })
        .await;
        let mut attrs: Vec<Option<Attr>> = vec![None; self.n()];
        let mut infos = vec![None; self.n()];
        let mut errs: Vec<FopError> = Vec::new();
        for (i, r) in res {
            match r {
                Some(Ok((a, info))) => {
                    attrs[i] = Some(a);
                    infos[i] = Some(info);
                }
                Some(Err(e)) => {
                    // ENOENT/ESTALE first: they decide "gone".
                    if matches!(e.errno, Errno::ENOENT | Errno::ESTALE) {
                        errs.insert(0, e);
                    } else {
                        errs.push(e);
                    }
                }
                None => {}
            }
        }
        let answered = infos.iter().filter(|i| i.is_some()).count();
        if answered < self.k {
            // Gone from k bricks is gone (a brick that was down when it
            // was removed still has it).
            let gone = errs
                .iter()
                .filter(|e| matches!(e.errno, Errno::ENOENT | Errno::ESTALE))
                .count();
            let e = match errs.into_iter().next() {
                Some(e) if answered == 0 || gone >= self.k => e,
                _ => self.too_few(Errno::EIO, answered, "reading"),
            };
            return Err((e, false));
        }
        let meta =
            current(&infos, self.k, Kind::Metadata).map_err(|d| (self.disagree(gfid, &d), true))?;
        let mut a = attrs[meta.bricks[0]].clone().expect("answered");
        if a.kind == FileKind::Regular {
            let data =
                current(&infos, self.k, Kind::Data).map_err(|d| (self.disagree(gfid, &d), true))?;
            a.size = data.info.size.max(0) as u64;
            a.blocks = attrs[data.bricks[0]].as_ref().map_or(0, |d| d.blocks) * self.k as u64;
        }
        Ok(a)
    }

    /// Lookup on every up brick: the name exists when `k` bricks have it
    /// (fewer is a name left by a failed create or an unlink that reached
    /// most bricks), with one gfid.
    pub(super) async fn lookup(&self, q: bp::Lookup) -> FopResult<FopOut> {
        let up = self.readable("looking up a name")?;
        let results = txn::fan_op(
            &self.rt,
            &self.name,
            &self.children,
            &up,
            &Fop::Lookup(q.clone()),
        )
        .await;
        let mut found: Vec<Attr> = Vec::new();
        let mut missing = None;
        let mut err = None;
        for (_, r) in results {
            match r {
                Ok(FopOut::Attr(a)) => found.push(a),
                Ok(other) => return Err(shape_error("lookup", &other)),
                Err(e) if e.errno == Errno::ENOENT => missing = Some(e),
                Err(e) => err = Some(e),
            }
        }
        // The gfid held by k bricks (a brick that was down while the name
        // was removed and made again still has the old one).
        let mut by_gfid: Vec<(Gfid, usize)> = Vec::new();
        for a in &found {
            match by_gfid.iter_mut().find(|(g, _)| *g == a.gfid) {
                Some(e) => e.1 += 1,
                None => by_gfid.push((a.gfid, 1)),
            }
        }
        let Some(&(g, _)) = by_gfid.iter().find(|(_, c)| *c >= self.k) else {
            if by_gfid.len() > 1 {
                return Err(FopError::new(
                    Errno::EIO,
                    format!(
                        "{}: {:?} has different gfids on different bricks and none is on {}; resolve it with heal",
                        self.name, q.name, self.k
                    ),
                ));
            }
            return Err(missing.or(err).unwrap_or_else(|| {
                FopError::new(
                    Errno::ENOENT,
                    format!("{}: {:?} not found", self.name, q.name),
                )
            }));
        };
        Ok(FopOut::Attr(self.attr(g).await?))
    }

    /// A directory page from a brick of the largest group of agreeing
    /// directory versions (a brick that missed creates while down lists
    /// fewer names), with file sizes taken from that brick's fragments.
    pub(super) async fn readdir(&self, q: bp::Readdir) -> FopResult<FopOut> {
        let up = self.readable("listing a directory")?;
        let infos = self.infos(q.dir, &up).await;
        let best = match current(&infos, 1, Kind::Data) {
            Ok(c) => c.bricks,
            Err(_) => up.clone(),
        };
        let mut last = None;
        for i in best {
            let c = &self.children[i];
            let mut page = match c.fop(Fop::Readdir(q.clone())).await {
                Ok(FopOut::Dir(p)) => p,
                Ok(other) => return Err(shape_error("readdir", &other)),
                Err(e) if e.errno == Errno::ENOTCONN => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Up to a page of sizes: asked READDIR_SIZE_ASKS_MAX at a time,
            // not one round trip after another.
            let regular: Vec<usize> = (0..page.entries.len())
                .filter(|j| page.entries[*j].attr.kind == FileKind::Regular)
                .collect();
            for batch in regular.chunks(READDIR_SIZE_ASKS_MAX) {
                let asks: Vec<_> = batch
                    .iter()
                    .map(|&j| {
                        let (c, gfid) = (c.clone(), page.entries[j].attr.gfid);
                        let ask = self.rt.spawn(async move {
                            c.fop(Fop::Getxattr(bp::Getxattr {
                                gfid,
                                name: EC_XATTR.into(),
                            }))
                            .await
                        });
                        (j, ask)
                    })
                    .collect();
                for (j, ask) in asks {
                    let e = &mut page.entries[j];
                    e.attr.size = match ask.await.ok().flatten() {
                        Some(Ok(FopOut::Value(v))) => FragInfo::parse(&v).size.max(0) as u64,
                        _ => 0,
                    };
                    e.attr.blocks *= self.k as u64;
                }
            }
            return Ok(FopOut::Dir(page));
        }
        Err(last.unwrap_or_else(|| self.too_few(Errno::ENOTCONN, 0, "listing a directory")))
    }

    /// Metadata reads (getxattr, listxattr, readlink) from a brick of the
    /// current metadata generation.
    pub(super) async fn read_meta(&self, gfid: Gfid, op: Fop) -> FopResult<FopOut> {
        let up = self.readable("reading")?;
        let infos = self.infos(gfid, &up).await;
        let cur = current(&infos, self.k, Kind::Metadata).map_err(|d| self.disagree(gfid, &d))?;
        let mut last = None;
        for i in cur.bricks {
            match self.children[i].fop(op.clone()).await {
                Err(e) if e.errno == Errno::ENOTCONN => last = Some(e),
                r => return r,
            }
        }
        Err(last.unwrap_or_else(|| self.too_few(Errno::ENOTCONN, 0, "reading")))
    }

    /// Operations sent to every up brick (fsync, open, locks from layers
    /// above); success when `k` bricks took it.
    pub(super) async fn to_all(&self, op: Fop) -> FopResult<FopOut> {
        let up = self.up();
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &up, &op).await;
        let ok = txn::succeeded(&results);
        let (first_ok, first_err) = txn::first_answers(results);
        match first_ok {
            Some(r) if ok.len() >= self.k => r,
            _ => {
                txn::release_partial(&self.rt, &self.name, &self.children, &ok, &op).await;
                Err(first_err
                    .unwrap_or_else(|| self.too_few(Errno::ENOTCONN, ok.len(), "this operation")))
            }
        }
    }

    pub(super) async fn statfs(&self) -> FopResult<FopOut> {
        let up = self.up();
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &up, &Fop::Statfs).await;
        let mut total: Option<bp::StatfsReply> = None;
        let k = self.k as u64;
        for (_, r) in results {
            if let Ok(FopOut::Statfs(r)) = r {
                // Capacity is k times the smallest brick.
                let scaled = bp::StatfsReply {
                    blocks: r.blocks * k,
                    blocks_free: r.blocks_free * k,
                    blocks_avail: r.blocks_avail * k,
                    ..r
                };
                total = Some(match total {
                    None => scaled,
                    Some(t) => bp::StatfsReply {
                        blocks: t.blocks.min(scaled.blocks),
                        blocks_free: t.blocks_free.min(scaled.blocks_free),
                        blocks_avail: t.blocks_avail.min(scaled.blocks_avail),
                        files: t.files.min(scaled.files),
                        files_free: t.files_free.min(scaled.files_free),
                        ..t
                    },
                });
            }
        }
        total
            .map(FopOut::Statfs)
            .ok_or_else(|| self.too_few(Errno::ENOTCONN, 0, "statfs"))
    }
}
