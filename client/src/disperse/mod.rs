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
//! pending-heal index; the self-heal crate (`mortar-heal`) rebuilds stale
//! fragments.

mod entry;
mod geometry;
mod read;
mod version;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};

use mortar_net::{BoxFuture, Runtime};
use mortar_proto::brick::{self as bp, CounterDelta, LockKind};
use mortar_proto::{Errno, FopError, Gfid};

use crate::afr::Kind;
use crate::ec::Codec;
use crate::fop::{Child, Fop, FopOut, FopResult, Subvolume};
use crate::txn;

pub use geometry::{piece_bytes_max, pieces, Pieces};
pub use version::{current, Current, Disagreement, FragInfo, EC_XATTR};
use write::Change;
pub use write::{post_op_plan, PostOpPlan};

/// Version steps are drawn from `1..VERSION_STEP_MAX`: wide enough that
/// two updates rarely draw one step, small enough that no version
/// overflows an i64 in any file's life.
const VERSION_STEP_MAX: u64 = 1 << 24;

/// File sizes a directory listing asks for at once (bounded, well under
/// the RPC client's calls in flight).
const READDIR_SIZE_ASKS_MAX: usize = 64;

/// The change to a fragment's `[data version, metadata version, size]`
/// (the self-heal crate gives healed fragments their versions with it).
pub fn ec_delta(data: i64, meta: i64, size: i64) -> (String, CounterDelta) {
    (
        EC_XATTR.to_string(),
        CounterDelta::Add64(vec![data, meta, size]),
    )
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

    // ---- the interface of the self-heal crate ----
    //
    // `mortar-heal` rebuilds a set's fragments file by file through these
    // accessors (and `children`, `infos`, `xattrop_on`, `decode_range`,
    // `encode`, `write_each`); nothing else of the set is public.

    /// Bricks in the set (`k + m`).
    pub fn n(&self) -> usize {
        self.children.len()
    }

    /// Fragments that rebuild the data.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The set's name (its lock domain).
    pub fn set_name(&self) -> &str {
        &self.name
    }

    /// The runtime the set's tasks run on.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// A lock owner no other transaction of this client uses.
    pub fn new_lock_owner(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// File bytes per stripe (`k * 512`).
    pub fn stripe(&self) -> u64 {
        self.codec.stripe() as u64
    }

    fn up(&self) -> Vec<usize> {
        (0..self.n())
            .filter(|i| self.children[*i].is_up())
            .collect()
    }

    /// The up bricks, when there are enough to read (`k`); else ENOTCONN
    /// saying what could not be done.
    fn readable(&self, what: &str) -> FopResult<Vec<usize>> {
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
        geometry::span(self.stripe(), start, end)
    }

    /// Bytes each fragment file holds for a file of `size` bytes.
    pub fn fragment_len(&self, size: u64) -> u64 {
        geometry::fragment_len(self.stripe(), size)
    }

    /// A random version step, so two updates that each start from one
    /// version do not land on the same number. Always positive: versions
    /// only grow.
    fn step(&self) -> i64 {
        let step = self.rt.with_rng(|r| 1 + r.below(VERSION_STEP_MAX)) as i64;
        debug_assert!(step > 0);
        step
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

    /// The error for fragments of `gfid` that hold no current generation.
    pub fn disagree(&self, gfid: Gfid, d: &Disagreement) -> FopError {
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

    /// The whole-file lock requests of `gfid` (by kind and wait) under one
    /// new lock owner.
    pub fn inode_lock(&self, gfid: Gfid) -> impl Fn(LockKind, Option<u64>) -> Fop + Sync + '_ {
        let owner = self.new_lock_owner();
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
    ) -> FopResult<Vec<usize>> {
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
    pub async fn infos(&self, gfid: Gfid, idx: &[usize]) -> Vec<Option<FragInfo>> {
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
}

impl Subvolume for Disperse {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.children.iter().filter(|c| c.is_up()).count() >= self.k
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
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
                // A listing's sizes come from one brick's fragments; a
                // stat is the authority, so no entry is vouched for.
                Fop::ReaddirPlus(q) => match self.readdir(q).await? {
                    FopOut::Dir(page) => {
                        let good = vec![false; page.entries.len()];
                        Ok(FopOut::DirPlus(page, good))
                    }
                    other => Err(crate::fop::shape_error("readdir", &other)),
                },
                Fop::Readlink(_) | Fop::Getxattr(_) | Fop::Listxattr(_) => {
                    self.read_meta(gfid, op).await
                }
                Fop::Statfs => self.statfs().await,
                Fop::Rchecksum(_)
                | Fop::Discard(_)
                | Fop::GetxattrMany(_)
                | Fop::GfidKinds(_)
                | Fop::GetxattrFiles(_)
                | Fop::ReadWhole(_)
                | Fop::CreateWhole(..)
                | Fop::XattropMany(_) => Err(crate::fop::brick_only(&op)),
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
                    let l = op.entry_lock();
                    self.entry_op(l.parent, l.name, l.dirs, op).await
                }
            }
        })
    }
}
