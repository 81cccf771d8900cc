//! The disperse layer: one set of `k + m` bricks holding every file as
//! erasure-coded fragments (see [`crate::ec`]): brick `i` stores fragment
//! `i` of every stripe of `k * 512` bytes, so any `k` bricks rebuild the
//! data and the set survives `m` lost bricks.
//!
//! Every fragment carries `trusted.mortar.ec` = `[data version, metadata
//! version, size]` (big-endian i64s) and the dirty counters shared with
//! replicate (`trusted.mortar.dirty`: data, metadata, entry). A version
//! changes by a random step (1..2^24) on every update, so the fragments of one
//! generation of a file agree on it and two updates that each started
//! from the same version (after a failed write left a few fragments
//! behind) do not land on the same number.
//!
//! **Which fragments are trusted.** The fragments holding the file's
//! current generation are those sharing one (data version, size) and
//! being at least `k` (only one group can be: `k > m`). Reads decode only
//! from that group; fragments of any other version are stale and never
//! mixed in. With no group of `k` (more than `m` fragments missed updates
//! and the rest are unreachable) reads fail with EIO naming the versions.
//!
//! **Write-availability rule.** Reads need `k` bricks. A write-type
//! operation (write, truncate, setattr, xattrs) runs only when at least
//! `k + 1` bricks holding the current generation are up and locked;
//! otherwise it is refused with EROFS before anything is touched. The one
//! spare means a brick failing while the change is written still leaves
//! `k` fragments of the new version. It is acknowledged only when at least
//! `k` fragments took it and recorded the new version; otherwise it fails
//! with EIO and is pending. Entry operations (create, unlink, mkdir,
//! rename, ...) likewise need `k + 1` bricks up and `k` successes. So with
//! `m` = 2 and one server holding two fragments down, the set is readable
//! but refuses changes; with one brick down it takes them.
//!
//! A write runs under the whole-file lock on every up brick:
//!
//! ```text
//! lock -> pre-op: dirty += 1, read versions (durable)
//!      -> read-modify-write of partial head/tail stripes, from the current group
//!      -> fragments written to the current group
//!      -> post-op: version += step, size, dirty -= 1 only if every brick took it
//!      -> unlock
//! ```
//!
//! Reads take a shared lock on every up brick (a writer locks every up
//! brick, and any two sets of `k` bricks meet), so a read never sees a
//! write half done. Dirty left on fragments puts the file in the bricks'
//! pending-heal index; [`Disperse::heal_file`] rebuilds stale fragments.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use mortar_net::{BoxFuture, Runtime};
use mortar_proto::brick::{
    self as bp, xattr as xa, CounterDelta, LockKind, FILE_BYTES_MAX, IO_BYTES_MAX,
};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::afr::Kind;
use crate::ec::{Codec, FRAGMENT};
use crate::fop::{shape_error, Child, Fop, FopOut, FopRes, HealOutcome, HealSet, Subvolume};
use crate::{replicate, txn};

/// Per-fragment version and size: `[data version, metadata version,
/// size]` as big-endian i64s.
pub const EC_XATTR: &str = "trusted.mortar.ec";

/// File data handled per step of a large write or of heal (bounded
/// memory: this plus its fragments).
const CHUNK: u64 = 1 << 20;

/// File sizes a directory listing asks for at once (bounded, well under
/// the RPC client's calls in flight).
const READDIR_SIZE_BATCH: usize = 64;

/// What one fragment says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragInfo {
    pub data: i64,
    pub meta: i64,
    pub size: i64,
}

impl FragInfo {
    /// Missing values are zero (a file no update has touched yet).
    pub fn parse(raw: &[u8]) -> FragInfo {
        let mut v = [0i64; 3];
        for (k, chunk) in raw.chunks(8).take(3).enumerate() {
            if let Ok(b) = <[u8; 8]>::try_from(chunk) {
                v[k] = i64::from_be_bytes(b);
            }
        }
        FragInfo {
            data: v[0],
            meta: v[1],
            size: v[2],
        }
    }

    /// The xattr bytes [`FragInfo::parse`] reads.
    pub fn encode(&self) -> Vec<u8> {
        [self.data, self.meta, self.size]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect()
    }

    fn from_delta(d: &CounterDelta) -> FragInfo {
        match d {
            CounterDelta::Add64(v) => FragInfo {
                data: v.first().copied().unwrap_or(0),
                meta: v.get(1).copied().unwrap_or(0),
                size: v.get(2).copied().unwrap_or(0),
            },
            CounterDelta::Add32(_) => FragInfo::default(),
        }
    }

    /// What must agree for two fragments to be of one generation.
    fn key(&self, kind: Kind) -> (i64, i64) {
        match kind {
            Kind::Data => (self.data, self.size),
            _ => (self.meta, 0),
        }
    }
}

/// The fragments that hold a file's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Brick indices, ascending (data fragments first).
    pub bricks: Vec<usize>,
    pub info: FragInfo,
}

/// No version is held by `k` fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `(version, size, bricks)` per group seen, largest first.
    pub groups: Vec<(i64, i64, Vec<usize>)>,
    pub k: usize,
}

/// Pick the fragments of the current generation of `kind` (data:
/// version and size; metadata: version) from what each brick said
/// (`None`: did not answer).
pub fn current(infos: &[Option<FragInfo>], k: usize, kind: Kind) -> Result<Current, Disagreement> {
    let mut groups: Vec<((i64, i64), Vec<usize>, FragInfo)> = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        let Some(info) = info else { continue };
        let key = info.key(kind);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(i),
            None => groups.push((key, vec![i], *info)),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    match groups.first() {
        Some((_, bricks, info)) if bricks.len() >= k => Ok(Current {
            bricks: bricks.clone(),
            info: *info,
        }),
        _ => Err(Disagreement {
            groups: groups.into_iter().map(|((v, s), b, _)| (v, s, b)).collect(),
            k,
        }),
    }
}

fn dirty(kind: Kind, v: i32) -> (String, CounterDelta) {
    let mut d = vec![0; 3];
    d[kind as usize] = v;
    (xa::DIRTY.to_string(), CounterDelta::Add32(d))
}

fn ec_delta(data: i64, meta: i64, size: i64) -> (String, CounterDelta) {
    (
        EC_XATTR.to_string(),
        CounterDelta::Add64(vec![data, meta, size]),
    )
}

/// Where a change landed: `full` took all of it, `partial` may hold part
/// of it (they get a version of their own), the rest were untouched.
struct Applied {
    full: Vec<usize>,
    partial: Vec<usize>,
    err: Option<FopError>,
}

/// A file change run as a transaction.
#[derive(Debug, Clone)]
enum Change {
    Write(u64, Bytes),
    Truncate(u64),
    /// setattr, setxattr, removexattr: sent as is to the current group.
    Meta(Fop),
}

pub struct Disperse {
    name: String,
    rt: Runtime,
    children: Vec<Child>,
    codec: Codec,
    k: usize,
    next_owner: AtomicU64,
}

impl Disperse {
    /// A set of `children.len()` bricks of which `redundancy` may be lost.
    pub fn new(
        rt: &Runtime,
        name: &str,
        children: Vec<Child>,
        redundancy: usize,
    ) -> Result<Disperse, String> {
        let n = children.len();
        let k = n.saturating_sub(redundancy);
        let codec = Codec::new(k, redundancy).map_err(|e| format!("{name}: {e}"))?;
        Ok(Disperse {
            name: name.to_string(),
            rt: rt.child(name.to_string()),
            children,
            codec,
            k,
            next_owner: AtomicU64::new(1),
        })
    }

    pub fn children(&self) -> &[Child] {
        &self.children
    }

    fn n(&self) -> usize {
        self.children.len()
    }

    fn stripe(&self) -> u64 {
        self.codec.stripe() as u64
    }

    fn up(&self) -> Vec<usize> {
        (0..self.n())
            .filter(|i| self.children[*i].is_up())
            .collect()
    }

    /// The up bricks, when there are enough to read (`k`); else ENOTCONN
    /// saying what could not be done.
    fn readable(&self, what: &str) -> Result<Vec<usize>, FopError> {
        let up = self.up();
        if up.len() < self.k {
            return Err(self.too_few(Errno::ENOTCONN, up.len(), what));
        }
        Ok(up)
    }

    fn names(&self, idx: &[usize]) -> String {
        idx.iter()
            .map(|i| self.children[*i].name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The stripe-aligned span covering `[start, end)`.
    fn span(&self, start: u64, end: u64) -> (u64, u64) {
        let s = self.stripe();
        (start / s * s, end.div_ceil(s) * s)
    }

    /// Bytes each fragment file holds for a file of `size` bytes.
    fn fragment_len(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe()) * FRAGMENT as u64
    }

    fn step(&self) -> i64 {
        self.rt.with_rng(|r| 1 + r.below(1 << 24)) as i64
    }

    fn too_few(&self, errno: Errno, have: usize, what: &str) -> FopError {
        FopError::new(
            errno,
            format!(
                "{}: only {have} of its {} bricks are reachable; {what} needs {} (disperse {} + {})",
                self.name,
                self.n(),
                self.k,
                self.k,
                self.n() - self.k
            ),
        )
    }

    /// A change that reached fewer than `k` bricks (`ok`): EIO, pending.
    fn pending(&self, what: &str, ok: &[usize], cause: Option<FopError>) -> FopError {
        FopError::new(
            Errno::EIO,
            format!(
                "{}: {what} on only {} bricks ({}), fewer than the {} needed; it is pending heal{}",
                self.name,
                ok.len(),
                self.names(ok),
                self.k,
                cause.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        )
    }

    fn disagree(&self, gfid: Gfid, d: &Disagreement) -> FopError {
        let groups: Vec<String> = d
            .groups
            .iter()
            .map(|(v, s, b)| format!("version {v:#x} size {s} on {}", self.names(b)))
            .collect();
        FopError::new(
            Errno::EIO,
            format!(
                "{}: the fragments of {gfid} disagree and no version is held by {} of them ({}); they are not decoded together; bring the missing bricks back and let heal run",
                self.name,
                d.k,
                if groups.is_empty() {
                    "no fragment answered".to_string()
                } else {
                    groups.join("; ")
                }
            ),
        )
    }

    fn inode_lock(&self, gfid: Gfid) -> impl Fn(LockKind, Option<u64>) -> Fop + Sync + '_ {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        move |kind, wait| {
            Fop::Inodelk(bp::Inodelk {
                gfid,
                domain: self.name.clone(),
                kind,
                start: 0,
                len: 0,
                owner,
                wait_ms: wait,
            })
        }
    }

    /// Fragments a change needs at its start: k to rebuild the data, and
    /// one more, so that a brick failing while the change is written
    /// still leaves k fragments of the new version (as erasure-coded
    /// pools elsewhere default to; with exactly k, any failure mid-write
    /// could leave no k fragments of one version).
    pub fn write_minimum(&self) -> usize {
        self.k + 1
    }

    fn too_few_to_write(&self, have: usize, what: &str) -> FopError {
        FopError::new(
            Errno::EROFS,
            format!(
                "{}: only {have} of its {} bricks are reachable with the current version; {what} needs {} (disperse {} + {}: {} to rebuild the data and one more so a brick failing during the change cannot lose it); reads still work with {}",
                self.name,
                self.n(),
                self.write_minimum(),
                self.k,
                self.n() - self.k,
                self.k,
                self.k
            ),
        )
    }

    /// Lock `gfid` on every up brick; refuse when fewer than `need` could
    /// be locked (`write`: the refusal is EROFS with the write rule).
    async fn lock_file(
        &self,
        lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
        kind: LockKind,
        write: bool,
        what: &str,
    ) -> Result<Vec<usize>, FopError> {
        let need = if write { self.write_minimum() } else { self.k };
        let refuse = |have: usize| {
            if write {
                self.too_few_to_write(have, what)
            } else {
                self.too_few(Errno::ENOTCONN, have, what)
            }
        };
        let up = self.up();
        if up.len() < need {
            return Err(refuse(up.len()));
        }
        let locked = txn::lock_all(&self.rt, &self.name, &self.children, &up, kind, lock).await?;
        if locked.len() < need {
            txn::unlock_all(&self.rt, &self.name, &self.children, &locked, lock).await;
            return Err(refuse(locked.len()));
        }
        Ok(locked)
    }

    /// What each brick of `idx` says about `gfid` (`None`: no answer).
    async fn infos(&self, gfid: Gfid, idx: &[usize]) -> Vec<Option<FragInfo>> {
        let res = txn::fan_any(&self.rt, &self.children, idx, move |c| {
            Box::pin(async move {
                match c
                    .fop(Fop::Getxattr(bp::Getxattr {
                        gfid,
                        name: EC_XATTR.into(),
                    }))
                    .await
                {
                    Ok(FopOut::Value(v)) => Some(FragInfo::parse(&v)),
                    Err(e) if e.errno == Errno::ENODATA => Some(FragInfo::default()),
                    _ => None,
                }
            })
        })
        .await;
        let mut out = vec![None; self.n()];
        for (i, r) in res {
            out[i] = r.flatten();
        }
        out
    }

    /// Rebuild the file data `[s0, s1)` (stripe-aligned) from the bricks
    /// `good` (all of one generation), reading `k` of them (data bricks
    /// first) and more only when one fails.
    async fn decode_range(
        &self,
        gfid: Gfid,
        good: &[usize],
        s0: u64,
        s1: u64,
    ) -> Result<Vec<u8>, FopError> {
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

    async fn read(&self, q: bp::Read) -> FopRes {
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

    async fn read_locked(&self, q: &bp::Read, locked: &[usize]) -> FopRes {
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
    async fn attr(&self, gfid: Gfid) -> Result<Attr, FopError> {
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
    async fn lookup(&self, q: bp::Lookup) -> FopRes {
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
    async fn readdir(&self, q: bp::Readdir) -> FopRes {
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
            // Up to a page of sizes: asked READDIR_SIZE_BATCH at a time,
            // not one round trip after another.
            let regular: Vec<usize> = (0..page.entries.len())
                .filter(|j| page.entries[*j].attr.kind == FileKind::Regular)
                .collect();
            for batch in regular.chunks(READDIR_SIZE_BATCH) {
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
    async fn read_meta(&self, gfid: Gfid, op: Fop) -> FopRes {
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
    async fn to_all(&self, op: Fop) -> FopRes {
        let up = self.up();
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &up, &op).await;
        let ok = txn::succeeded(&results);
        let first_ok = results
            .iter()
            .find(|(_, r)| r.is_ok())
            .map(|(_, r)| r.clone());
        let first_err = results.into_iter().find_map(|(_, r)| r.err());
        match first_ok {
            Some(r) if ok.len() >= self.k => r,
            _ => {
                txn::release_partial(&self.rt, &self.name, &self.children, &ok, &op).await;
                Err(first_err
                    .unwrap_or_else(|| self.too_few(Errno::ENOTCONN, ok.len(), "this operation")))
            }
        }
    }

    async fn statfs(&self) -> FopRes {
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

    // ---- entry operations ----

    /// An entry operation under the name's lock (or the whole directory's
    /// for rename) on every up brick; `parents` get their directory
    /// version stepped where it worked, and a dirty mark for heal when
    /// not every brick took it.
    async fn entry_op(
        &self,
        parent: Gfid,
        name: Option<String>,
        parents: Vec<Gfid>,
        op: Fop,
    ) -> FopRes {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let lock = |kind: LockKind, wait: Option<u64>| {
            Fop::Entrylk(bp::Entrylk {
                parent,
                name: name.clone(),
                domain: self.name.clone(),
                kind,
                owner,
                wait_ms: wait,
            })
        };
        let locked = self
            .lock_file(&lock, LockKind::Write, true, "changing a directory")
            .await?;
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &locked, &op).await;
        let ok = txn::succeeded(&results);
        if !ok.is_empty() {
            let mut deltas = vec![ec_delta(self.step(), 0, 0)];
            let all = ok.len() == self.n();
            if !all {
                deltas.push(dirty(Kind::Entry, 1));
            }
            let post = deltas.clone();
            let _ = txn::fan(&self.rt, &self.name, &self.children, &ok, move |c| {
                let (parents, deltas) = (parents.clone(), post.clone());
                Box::pin(async move {
                    for g in parents {
                        c.fop(Fop::Xattrop(bp::Xattrop {
                            gfid: g,
                            deltas: deltas.clone(),
                            durable: !all,
                        }))
                        .await?;
                    }
                    Ok(FopOut::Done)
                })
            })
            .await;
        }
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        if ok.len() >= self.k {
            let r = results
                .into_iter()
                .find(|(_, r)| r.is_ok())
                .map(|(_, r)| r)
                .expect("k succeeded");
            // A new link names a file whose size lives in its fragments.
            if let (Fop::Link(q), Ok(FopOut::Attr(_))) = (&op, &r) {
                return Ok(FopOut::Attr(self.attr(q.gfid).await?));
            }
            return r;
        }
        let first_err = results.into_iter().find_map(|(_, r)| r.err());
        if ok.is_empty() {
            return Err(
                first_err.unwrap_or_else(|| self.too_few(Errno::EIO, 0, "changing a directory"))
            );
        }
        Err(self.pending("the operation took", &ok, first_err))
    }

    // ---- file transactions ----

    async fn file_txn(&self, gfid: Gfid, kind: Kind, change: Change) -> FopRes {
        let lock = self.inode_lock(gfid);
        let locked = self
            .lock_file(&lock, LockKind::Write, true, "changing a file")
            .await?;
        let r = self.file_txn_locked(gfid, kind, change, &locked).await;
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        r
    }

    async fn xattrop_on(
        &self,
        idx: &[usize],
        gfid: Gfid,
        deltas: Vec<(String, CounterDelta)>,
        durable: bool,
    ) -> Vec<(usize, FopRes)> {
        let q = Fop::Xattrop(bp::Xattrop {
            gfid,
            deltas,
            durable,
        });
        txn::fan_op(&self.rt, &self.name, &self.children, idx, &q).await
    }

    async fn file_txn_locked(
        &self,
        gfid: Gfid,
        kind: Kind,
        change: Change,
        locked: &[usize],
    ) -> FopRes {
        let n = self.n();
        // Pre-op: mark every locked fragment dirty (durably, before any
        // data moves) and read its version and size.
        let pre = self
            .xattrop_on(locked, gfid, vec![dirty(kind, 1), ec_delta(0, 0, 0)], true)
            .await;
        let mut infos = vec![None; n];
        let mut marked = Vec::new();
        let mut pre_err = None;
        for (i, r) in pre {
            match r {
                Ok(FopOut::Counters(c)) => {
                    marked.push(i);
                    infos[i] = Some(
                        c.iter()
                            .find(|(name, _)| name == EC_XATTR)
                            .map(|(_, d)| FragInfo::from_delta(d))
                            .unwrap_or_default(),
                    );
                }
                Ok(other) => pre_err = Some(shape_error("xattrop", &other)),
                Err(e) => pre_err = Some(e),
            }
        }
        let undo = |idx: Vec<usize>| async move {
            let _ = self
                .xattrop_on(&idx, gfid, vec![dirty(kind, -1)], false)
                .await;
        };
        if marked.len() < self.write_minimum() {
            undo(marked.clone()).await;
            if marked.is_empty() {
                if let Some(e) = pre_err {
                    return Err(e);
                }
            }
            return Err(self.too_few_to_write(marked.len(), "changing a file"));
        }
        let cur = match current(&infos, self.k, kind) {
            Ok(c) => c,
            Err(d) => {
                undo(marked.clone()).await;
                let e = self.disagree(gfid, &d);
                if marked.len() < n {
                    // The current generation may be on the bricks not
                    // asked: a refusal, nothing was touched.
                    return Err(FopError::new(
                        Errno::EROFS,
                        format!(
                            "{}; refusing to change it until every brick answers",
                            e.detail
                        ),
                    ));
                }
                return Err(e);
            }
        };
        // The size, from the current data generation (a metadata change
        // is judged by metadata versions, but reports the real size).
        let old_size = match kind {
            Kind::Data => cur.info.size,
            _ => current(&infos, self.k, Kind::Data).map_or(cur.info.size, |d| d.info.size),
        }
        .max(0) as u64;
        if cur.bricks.len() < self.write_minimum() {
            // Readable, but a change now would have no margin.
            undo(marked.clone()).await;
            return Err(self.too_few_to_write(cur.bricks.len(), "changing a file"));
        }
        // Stale locked fragments keep their dirty mark: they missed
        // updates, and heal will find them by it.
        let good = cur.bricks.clone();
        let (applied, new_size, reply) = match &change {
            Change::Write(off, data) => {
                let end = off
                    .checked_add(data.len() as u64)
                    .filter(|e| *e <= FILE_BYTES_MAX);
                let Some(end) = end else {
                    undo(marked.clone()).await;
                    return Err(FopError::new(
                        Errno::EFBIG,
                        format!("{}: a write at {off} of {} bytes would pass the file size limit of {FILE_BYTES_MAX} bytes", self.name, data.len()),
                    ));
                };
                let applied = self
                    .write_fragments(gfid, &good, old_size, *off, data)
                    .await;
                let size = if data.is_empty() {
                    old_size
                } else {
                    old_size.max(end)
                };
                (applied, size, None)
            }
            Change::Truncate(t) => {
                if *t > FILE_BYTES_MAX {
                    undo(marked.clone()).await;
                    return Err(FopError::new(
                        Errno::EFBIG,
                        format!(
                            "{}: {t} bytes is past the file size limit of {FILE_BYTES_MAX} bytes",
                            self.name
                        ),
                    ));
                }
                let (applied, attr) = self.truncate_fragments(gfid, &good, old_size, *t).await;
                (applied, *t, attr)
            }
            Change::Meta(op) => {
                let results = txn::fan_op(&self.rt, &self.name, &self.children, &good, op).await;
                let reply = results
                    .iter()
                    .find(|(_, r)| r.is_ok())
                    .and_then(|(_, r)| r.clone().ok());
                // A metadata change is whole or not at all on a brick.
                let applied = Applied {
                    full: txn::succeeded(&results),
                    partial: Vec::new(),
                    err: results.into_iter().find_map(|(_, r)| r.err()),
                };
                (applied, old_size, reply)
            }
        };
        let Applied {
            full,
            partial,
            err: mut first_err,
        } = applied;
        if full.is_empty() && partial.is_empty() {
            // Nothing was changed anywhere (refused alike, or failed
            // before the first fragment was sent).
            undo(good.clone()).await;
            return Err(first_err.unwrap_or_else(|| self.too_few(Errno::EIO, 0, "changing a file")));
        }
        // Fragments that may hold part of the change get a version of
        // their own: never grouped with anything until heal rebuilds them.
        for &i in &partial {
            let _ = self
                .xattrop_on(&[i], gfid, vec![ec_delta(self.step(), 0, 0)], true)
                .await;
        }
        // Post-op where the whole change landed: the new version and
        // size; dirty cleared only when every brick of the set took it.
        let step = self.step();
        let (dv, mv) = match kind {
            Kind::Data => (step, 0),
            _ => (0, step),
        };
        let mut recorded = Vec::new();
        if !full.is_empty() {
            let mut deltas = vec![ec_delta(dv, mv, new_size as i64 - old_size as i64)];
            if full.len() == n {
                deltas.push(dirty(kind, -1));
            }
            let post = self.xattrop_on(&full, gfid, deltas, true).await;
            recorded = txn::succeeded(&post);
            if first_err.is_none() {
                first_err = post.into_iter().find_map(|(_, r)| r.err());
            }
        }
        if recorded.len() < self.k {
            let what = format!("the change to {gfid} was recorded");
            return Err(self.pending(&what, &recorded, first_err));
        }
        let fix = |mut a: Attr| {
            if a.kind == FileKind::Regular {
                a.size = new_size;
                a.blocks *= self.k as u64;
            }
            a
        };
        Ok(match (change, reply) {
            (Change::Write(_, data), _) => FopOut::Written(bp::WriteReply {
                written: data.len() as u64,
                size: new_size,
            }),
            (_, Some(FopOut::Attr(a))) => FopOut::Attr(fix(a)),
            (_, Some(other)) => other,
            (_, None) => FopOut::Done,
        })
    }

    /// Write `data` at `off` into the fragments of `good` (of a file of
    /// `old_size` bytes) in pieces of whole stripes: partial head and tail
    /// stripes are read, merged and re-encoded. A brick that fails a piece
    /// takes no more; the sequence stops when fewer than `k` are left.
    async fn write_fragments(
        &self,
        gfid: Gfid,
        good: &[usize],
        old_size: u64,
        off: u64,
        data: &Bytes,
    ) -> Applied {
        let s = self.stripe();
        let chunk = (CHUNK / s).max(1) * s;
        let mut alive: Vec<usize> = good.to_vec();
        let mut dropped: Vec<usize> = Vec::new();
        let mut err = None;
        let mut done = 0u64;
        let total = data.len() as u64;
        let stop = |alive: Vec<usize>, mut dropped: Vec<usize>, err, started: bool| {
            // Stopped early: every brick holds only part of the write.
            if started {
                dropped.extend(alive);
            }
            Applied {
                full: Vec::new(),
                partial: dropped,
                err,
            }
        };
        while done < total {
            if alive.len() < self.k {
                let e = FopError::new(
                    Errno::EIO,
                    format!(
                        "{}: writing {gfid} failed on too many bricks (only {} of the {} needed took it); it is pending heal{}",
                        self.name,
                        alive.len(),
                        self.k,
                        err.map(|e: FopError| format!(" ({e})")).unwrap_or_default()
                    ),
                );
                return stop(alive, dropped, Some(e), done > 0);
            }
            let start = off + done;
            // Pieces end on stripe boundaries, so only the first and the
            // last stripe of the whole write can be partial.
            let piece_end = (start / s * s + chunk).min(off + total);
            let (s0, s1) = self.span(start, piece_end);
            let mut buf = vec![0u8; (s1 - s0) as usize];
            let head_partial = start > s0 && s0 < old_size;
            let tail_stripe = s1 - s;
            let tail_partial =
                piece_end < s1 && tail_stripe < old_size && !(head_partial && tail_stripe == s0);
            let mut reads = Vec::new();
            if head_partial {
                reads.push(s0);
            }
            if tail_partial {
                reads.push(tail_stripe);
            }
            for at in reads {
                match self.decode_range(gfid, &alive, at, at + s).await {
                    Ok(old) => {
                        let i = (at - s0) as usize;
                        buf[i..i + s as usize].copy_from_slice(&old);
                    }
                    Err(e) => return stop(alive, dropped, Some(e), done > 0),
                }
            }
            let at = (start - s0) as usize;
            let len = (piece_end - start) as usize;
            buf[at..at + len].copy_from_slice(&data[done as usize..done as usize + len]);
            let frags = match self.codec.encode(&buf) {
                Ok(f) => f.into_iter().map(Bytes::from).collect::<Vec<_>>(),
                Err(e) => {
                    let e = FopError::new(Errno::EIO, format!("{}: encoding: {e}", self.name));
                    return stop(alive, dropped, Some(e), done > 0);
                }
            };
            let results = self
                .write_each(gfid, &alive, s0 / self.k as u64, &frags)
                .await;
            for (i, r) in results {
                if let Err(e) = r {
                    err = Some(e);
                    alive.retain(|x| *x != i);
                    dropped.push(i);
                }
            }
            done = piece_end - off;
        }
        Applied {
            full: alive,
            partial: dropped,
            err,
        }
    }

    /// Write fragment `frags[i]` to brick `i` for each `i` in `idx`.
    async fn write_each(
        &self,
        gfid: Gfid,
        idx: &[usize],
        foff: u64,
        frags: &[Bytes],
    ) -> Vec<(usize, FopRes)> {
        let handles: Vec<_> = idx
            .iter()
            .map(|&i| {
                let c = self.children[i].clone();
                let f = frags[i].clone();
                (
                    i,
                    self.rt.spawn(async move {
                        c.fop(Fop::Write(bp::Write { gfid, offset: foff }, f)).await
                    }),
                )
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for (i, h) in handles {
            let r = h.await.ok().flatten().unwrap_or_else(|| {
                Err(FopError::new(
                    Errno::EIO,
                    format!("{}: write on child {i} was cancelled", self.name),
                ))
            });
            out.push((i, r));
        }
        out
    }

    /// Truncate the file to `t`: a new partial last stripe is re-encoded
    /// with zeros past `t` (so a later extension reads zeros), and every
    /// fragment file is cut to whole stripes.
    async fn truncate_fragments(
        &self,
        gfid: Gfid,
        good: &[usize],
        old_size: u64,
        t: u64,
    ) -> (Applied, Option<FopOut>) {
        let s = self.stripe();
        let mut alive = good.to_vec();
        let mut dropped = Vec::new();
        let mut err = None;
        let mut started = false;
        if t < old_size && t % s != 0 {
            let s0 = t / s * s;
            let encoded = match self.decode_range(gfid, good, s0, s0 + s).await {
                Ok(mut buf) => {
                    buf[(t - s0) as usize..].fill(0);
                    self.codec.encode(&buf).map_err(|e| {
                        FopError::new(Errno::EIO, format!("{}: encoding: {e}", self.name))
                    })
                }
                Err(e) => Err(e),
            };
            let frags: Vec<Bytes> = match encoded {
                Ok(f) => f.into_iter().map(Bytes::from).collect(),
                Err(e) => {
                    let nothing = Applied {
                        full: Vec::new(),
                        partial: Vec::new(),
                        err: Some(e),
                    };
                    return (nothing, None);
                }
            };
            started = true;
            for (i, r) in self
                .write_each(gfid, &alive.clone(), s0 / self.k as u64, &frags)
                .await
            {
                if let Err(e) = r {
                    err = Some(e);
                    alive.retain(|x| *x != i);
                    dropped.push(i);
                }
            }
        }
        if started && alive.len() < self.k {
            dropped.extend(alive);
            let e = FopError::new(
                Errno::EIO,
                format!(
                    "{}: truncating {gfid} failed on too many bricks; it is pending heal{}",
                    self.name,
                    err.map(|e: FopError| format!(" ({e})")).unwrap_or_default()
                ),
            );
            return (
                Applied {
                    full: Vec::new(),
                    partial: dropped,
                    err: Some(e),
                },
                None,
            );
        }
        let q = Fop::Truncate(bp::Truncate {
            gfid,
            size: self.fragment_len(t),
        });
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &alive, &q).await;
        let reply = results
            .iter()
            .find(|(_, r)| r.is_ok())
            .and_then(|(_, r)| r.clone().ok());
        for (i, r) in results {
            if let Err(e) = r {
                err = Some(e);
                alive.retain(|x| *x != i);
                // A brick whose last stripe was rewritten but not cut is
                // partly changed; one that refused the cut alone is not.
                if started {
                    dropped.push(i);
                }
            }
        }
        (
            Applied {
                full: alive,
                partial: dropped,
                err,
            },
            reply,
        )
    }

    // ---- self-heal (used by the self-heal daemon) ----

    /// Heal one file: with every brick up and the whole file locked on
    /// all of them, rebuild the fragments (data) and metadata of the
    /// bricks that are not of the current generation from those that
    /// are, give them its version and size, then clear the dirty counters
    /// that were read (current fragments first). Directories are reported
    /// (entry heal is not built).
    pub async fn heal_file(&self, gfid: Gfid) -> HealOutcome {
        let n = self.n();
        if let Some(down) = (0..n).find(|i| !self.children[*i].is_up()) {
            return HealOutcome::Skipped(format!(
                "{} is down; heal waits until every brick of {} is up",
                self.children[down].name(),
                self.name
            ));
        }
        let lock = self.inode_lock(gfid);
        let locked =
            match txn::lock_every(&self.rt, &self.name, &self.children, LockKind::Write, &lock)
                .await
            {
                Ok(l) => l,
                Err(e) => return HealOutcome::Skipped(format!("{gfid}: {e}")),
            };
        let outcome = match self.heal_locked(gfid).await {
            Ok(o) => o,
            Err(e) => HealOutcome::Skipped(format!("healing {gfid}: {e}")),
        };
        txn::unlock_all(&self.rt, &self.name, &self.children, &locked, &lock).await;
        outcome
    }

    async fn heal_locked(&self, gfid: Gfid) -> Result<HealOutcome, FopError> {
        let n = self.n();
        let all: Vec<usize> = (0..n).collect();
        // Read each brick's counters with a zero xattrop (one answer per
        // brick holding both).
        let read = self
            .xattrop_on(
                &all,
                gfid,
                vec![dirty(Kind::Data, 0), ec_delta(0, 0, 0)],
                false,
            )
            .await;
        let mut infos = vec![None; n];
        let mut dirt = vec![vec![0i32; 3]; n];
        for (i, r) in read {
            let c = r?.counters()?;
            for (name, d) in c {
                match (name.as_str(), &d) {
                    (EC_XATTR, _) => infos[i] = Some(FragInfo::from_delta(&d)),
                    (xa::DIRTY, CounterDelta::Add32(v)) => {
                        for (j, x) in v.iter().take(3).enumerate() {
                            dirt[i][j] = *x;
                        }
                    }
                    _ => {}
                }
            }
        }
        let a = self.children[0]
            .fop(Fop::Stat(bp::Stat { gfid }))
            .await?
            .attr()?;
        if a.kind == FileKind::Directory {
            return Ok(HealOutcome::Skipped(format!(
                "{gfid} is a directory: entry heal is not built yet"
            )));
        }
        let data = current(&infos, self.k, Kind::Data).map_err(|d| self.disagree(gfid, &d))?;
        let meta = current(&infos, self.k, Kind::Metadata).map_err(|d| self.disagree(gfid, &d))?;
        let data_sinks: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !data.bricks.contains(i))
            .collect();
        let meta_sinks: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !meta.bricks.contains(i))
            .collect();
        if a.kind == FileKind::Regular && !data_sinks.is_empty() {
            self.rebuild(
                gfid,
                &data.bricks,
                &data_sinks,
                data.info.size.max(0) as u64,
            )
            .await?;
        }
        // Metadata to the metadata sinks, and back to the rebuilt data
        // sinks (rewriting them moved their times).
        let mut meta_to: Vec<usize> = meta_sinks.clone();
        meta_to.extend(data_sinks.iter().filter(|i| !meta_sinks.contains(i)));
        if !meta_to.is_empty() {
            replicate::copy_metadata(&self.children, gfid, meta.bricks[0], &meta_to).await?;
        }
        // The healed fragments take the current versions and size.
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
            // Done once per brick even when it is in both lists.
            infos[i] = Some(FragInfo {
                data: have.data + dd,
                meta: have.meta + dm,
                size: have.size + ds,
            });
            self.children[i]
                .fop(Fop::Xattrop(bp::Xattrop {
                    gfid,
                    deltas: vec![ec_delta(dd, dm, ds)],
                    durable: true,
                }))
                .await?;
        }
        // Clear exactly the dirty counts read: current fragments first.
        let order: Vec<usize> = data
            .bricks
            .iter()
            .copied()
            .chain(all.iter().copied().filter(|i| !data.bricks.contains(i)))
            .collect();
        for i in order {
            if dirt[i].iter().all(|x| *x == 0) {
                continue;
            }
            let undo: Vec<i32> = dirt[i].iter().map(|x| -x).collect();
            self.children[i]
                .fop(Fop::Xattrop(bp::Xattrop {
                    gfid,
                    deltas: vec![(xa::DIRTY.to_string(), CounterDelta::Add32(undo))],
                    durable: true,
                }))
                .await?;
        }
        let mut healed = data_sinks.clone();
        for i in meta_sinks {
            if !healed.contains(&i) {
                healed.push(i);
            }
        }
        healed.sort_unstable();
        Ok(if healed.is_empty() {
            HealOutcome::Clean
        } else {
            HealOutcome::Healed(
                healed
                    .iter()
                    .map(|i| self.children[*i].name().to_string())
                    .collect(),
            )
        })
    }

    /// Rewrite the fragments of `sinks` from `good`, a chunk at a time
    /// (all-zero chunks stay holes), then cut them to length and fsync.
    async fn rebuild(
        &self,
        gfid: Gfid,
        good: &[usize],
        sinks: &[usize],
        size: u64,
    ) -> Result<(), FopError> {
        replicate::empty_sinks(&self.children, gfid, sinks).await?;
        let s = self.stripe();
        let chunk = CHUNK / s * s;
        let end = size.div_ceil(s) * s;
        let mut at = 0;
        while at < end {
            let to = (at + chunk).min(end);
            let buf = self.decode_range(gfid, good, at, to).await?;
            if buf.iter().any(|b| *b != 0) {
                let frags: Vec<Bytes> = self
                    .codec
                    .encode(&buf)
                    .map_err(|e| {
                        FopError::new(Errno::EIO, format!("{}: encoding: {e}", self.name))
                    })?
                    .into_iter()
                    .map(Bytes::from)
                    .collect();
                for (i, r) in self
                    .write_each(gfid, sinks, at / self.k as u64, &frags)
                    .await
                {
                    r.map_err(|e| {
                        FopError::new(
                            e.errno,
                            format!("writing a fragment to {}: {e}", self.children[i].name()),
                        )
                    })?;
                }
            }
            at = to;
        }
        replicate::seal_sinks(&self.children, gfid, sinks, self.fragment_len(size)).await
    }
}

impl Subvolume for Disperse {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.children.iter().filter(|c| c.is_up()).count() >= self.k
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopRes> {
        Box::pin(async move {
            // Every arm below takes the gfid or entry its kind has.
            let gfid = op.gfid().unwrap_or_default();
            match op {
                Fop::Lookup(q) => self.lookup(q).await,
                Fop::Stat(_) => Ok(FopOut::Attr(self.attr(gfid).await?)),
                Fop::Open(_) => {
                    self.to_all(op).await?;
                    Ok(FopOut::Attr(self.attr(gfid).await?))
                }
                Fop::Read(q) => self.read(q).await,
                Fop::Readdir(q) => self.readdir(q).await,
                Fop::Readlink(_) | Fop::Getxattr(_) | Fop::Listxattr(_) => {
                    self.read_meta(gfid, op).await
                }
                Fop::Statfs => self.statfs().await,
                Fop::Fsync(_) | Fop::Inodelk(_) | Fop::Entrylk(_) | Fop::Xattrop(_) => {
                    self.to_all(op).await
                }
                Fop::Write(q, data) => {
                    self.file_txn(gfid, Kind::Data, Change::Write(q.offset, data))
                        .await
                }
                Fop::Truncate(q) => {
                    self.file_txn(gfid, Kind::Data, Change::Truncate(q.size))
                        .await
                }
                Fop::Setattr(_) | Fop::Setxattr(_) | Fop::Removexattr(_) => {
                    self.file_txn(gfid, Kind::Metadata, Change::Meta(op)).await
                }
                Fop::Create(_)
                | Fop::Mkdir(_)
                | Fop::Mknod(_)
                | Fop::Symlink(_)
                | Fop::Link(_)
                | Fop::Unlink(_)
                | Fop::Rmdir(_)
                | Fop::Rename(_) => {
                    let (parent, name) = op
                        .entry()
                        .map(|(p, n)| (p, n.to_string()))
                        .unwrap_or_default();
                    // A rename locks its whole source directory.
                    let name = (!matches!(op, Fop::Rename(_))).then_some(name);
                    let dirs = op.changed_dirs();
                    self.entry_op(parent, name, dirs, op).await
                }
            }
        })
    }
}

impl HealSet for Disperse {
    fn heal_file(&self, gfid: Gfid) -> BoxFuture<'_, HealOutcome> {
        Box::pin(Disperse::heal_file(self, gfid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data: i64, size: i64) -> Option<FragInfo> {
        Some(FragInfo {
            data,
            meta: 0,
            size,
        })
    }

    #[test]
    fn the_current_group_needs_k_fragments_of_one_version_and_size() {
        // 4 + 2: two stale fragments are left out.
        let v = [
            info(7, 100),
            info(7, 100),
            info(3, 50),
            info(7, 100),
            None,
            info(7, 100),
        ];
        let c = current(&v, 4, Kind::Data).unwrap();
        assert_eq!(c.bricks, vec![0, 1, 3, 5]);
        assert_eq!(c.info.size, 100);
        // Three of a version are not enough, whatever the others hold.
        let v = [
            info(7, 100),
            info(7, 100),
            info(3, 50),
            info(7, 100),
            None,
            info(3, 50),
        ];
        let d = current(&v, 4, Kind::Data).unwrap_err();
        assert_eq!(d.groups[0], (7, 100, vec![0, 1, 3]));
        assert_eq!(d.groups[1], (3, 50, vec![2, 5]));
        // One version with two sizes is two generations.
        let v = [
            info(7, 100),
            info(7, 100),
            info(7, 101),
            info(7, 100),
            info(7, 101),
            info(7, 101),
        ];
        assert!(current(&v, 4, Kind::Data).is_err());
        // Metadata versions are their own.
        let mut v = [info(7, 100); 6];
        v[2] = Some(FragInfo {
            data: 7,
            meta: 9,
            size: 100,
        });
        assert_eq!(
            current(&v, 4, Kind::Metadata).unwrap().bricks,
            vec![0, 1, 3, 4, 5]
        );
        assert_eq!(current(&v, 4, Kind::Data).unwrap().bricks.len(), 6);
    }

    #[test]
    fn frag_info_round_trips_through_the_xattr_bytes() {
        let mut raw = Vec::new();
        for x in [5i64, -1, 1 << 40] {
            raw.extend_from_slice(&x.to_be_bytes());
        }
        let info = FragInfo {
            data: 5,
            meta: -1,
            size: 1 << 40,
        };
        assert_eq!(FragInfo::parse(&raw), info);
        assert_eq!(info.encode(), raw);
        assert_eq!(FragInfo::parse(&[]), FragInfo::default());
        assert_eq!(FragInfo::parse(&raw[..8]).data, 5);
    }
}
