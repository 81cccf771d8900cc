//! A simulated disk: the [`Storage`] trait in memory, with power loss and
//! fault injection, deterministic for a seed.
//!
//! One [`SimDisk`] is one filesystem. [`SimDisk::storage`] gives views of
//! it rooted at a directory (a brick), so several bricks can share one
//! disk as they would share one ext4 volume, and a crash hits them all.
//!
//! # Durability model
//!
//! The model is a simple, deterministic picture of ext4 with
//! `data=ordered`, strong enough that recovery code which is correct on
//! ext4 is correct here, and weak enough that code which forgets an
//! `fsync` loses data here.
//!
//! * **Metadata journal.** Every namespace or attribute change (create,
//!   mkdir, mkfifo, symlink, link, unlink, rmdir, rename, setxattr,
//!   removexattr, set_mode, set_owner, set_times, and the mtime/ctime
//!   update of a write or truncate) is applied to the current state at
//!   once and appended to one ordered journal of `MetaOp`s. Operations
//!   name inodes by number, never by path, so the journal can be replayed
//!   onto the durable state. One system call is one journal entry, so a
//!   replayed prefix is always a state the live system passed through
//!   (a rename is never half done). The durable metadata is the state at
//!   the last commit. *Any* `fsync`, of a file or a directory, commits the
//!   whole journal, like an ext4 journal commit does.
//! * **File data.** Each regular file has durable contents and a queue of
//!   data operations (writes and truncates) since they were last made
//!   durable; reads see the current contents, which are kept up to date
//!   rather than recomputed. `fsync` of a file (datasync or not) makes its
//!   data durable and commits the journal; `fsync` of a directory commits
//!   only the journal. A file's size is part of its data.
//! * **Crash** ([`SimDisk::crash`]). Metadata becomes the durable state plus
//!   a random prefix of the journal. Then every surviving regular file
//!   keeps a random prefix of its queued data operations, and with
//!   probability 1/2 the first operation it lost, if it is a write, is
//!   *torn*: a prefix of it that is a multiple of 512 bytes long (measured
//!   from the write's offset) and strictly shorter than the write reaches
//!   the disk. Lost or torn data never becomes garbage: what was not
//!   written reads as the old bytes, or zeros where the file was extended.
//!   Inodes created in the lost part of the journal vanish; inodes not
//!   reachable from the root are freed; the journal and queues are empty
//!   afterwards, and current = durable.
//! * **Early writeback.** Real disks write back on their own; here it bounds
//!   memory. A file with more than [`PENDING_DATA_OPS_MAX`] queued
//!   operations or [`PENDING_DATA_BYTES_MAX`] queued bytes has its oldest
//!   operations made durable, and a journal longer than
//!   [`META_LOG_OPS_MAX`] entries or [`META_LOG_BYTES_MAX`] bytes is
//!   committed. Backends may make things durable early, never late, so this
//!   only ever makes the model kinder.
//!
//! # Faults
//!
//! [`SimFaults`] sets probabilistic read and write errors (drawn from the
//! disk's own seeded generator, so a seed replays them), a capacity
//! (ENOSPC), and lost xattr updates: the next N setxattr/removexattr calls
//! succeed and are visible but never reach the durable state, not even
//! through a later fsync, as when a controller acknowledges a write it
//! then drops. [`SimDisk::add_latent_error`] plants a latent sector error:
//! reads of the range fail with EIO until every byte of it is rewritten.
//!
//! # Fidelity
//!
//! Error numbers and their precedence follow Linux on ext4, run as root
//! (which is how bricks run), and the order in which
//! [`crate::posix::PosixStorage`] makes its calls, because one conformance
//! suite runs on both. Where ext4's limits are tighter than the brick
//! protocol's (xattr values, which ext4 keeps in one 4 KiB block unless
//! `ea_inode` is on), the protocol's limits apply here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use mortar_net::{Clock, DetRng};
use mortar_proto::brick::{
    XattrFlags, NAME_BYTES_MAX, SYMLINK_TARGET_BYTES_MAX, XATTR_NAME_BYTES_MAX,
    XATTR_VALUE_BYTES_MAX,
};
use mortar_proto::{Errno, FileKind, Timespec};

use crate::{BrickPath, DirEntry, FsStat, SResult, Stat, Storage};

/// The disk's root directory; inode numbers are allocated upwards from
/// the next one.
const ROOT_INO: u64 = 1;
/// The unit file data is stored and allocated in, as ext4's 4 KiB blocks.
const PAGE_BYTES: usize = 4096;
/// The unit a torn write is cut at: a sector.
const SECTOR_BYTES: u64 = 512;
/// ext4's largest file with 4 KiB blocks (2^32 - 1 blocks); beyond it
/// writes and truncates fail with EFBIG.
const FILE_BYTES_MAX: u64 = ((1 << 32) - 1) * PAGE_BYTES as u64;
/// ext4's limit on hard links to one file (`EXT4_LINK_MAX`).
const LINKS_MAX: u32 = 65_000;
/// ext4 keeps symlink targets shorter than 60 bytes inside the inode, so
/// they use no blocks.
const FAST_SYMLINK_BYTES_MAX: usize = 59;
/// What `statfs` reports when no capacity fault is set.
const DEFAULT_CAPACITY_BYTES: u64 = 1 << 40;
/// Inodes the disk can hold; creating more fails with ENOSPC.
const FILES_MAX: u64 = 1 << 32;
/// Xattr names plus values one inode may hold. ext4 allows about 4 KiB
/// without `ea_inode`; this is looser so the protocol's 64 KiB values fit,
/// and exists so one inode cannot grow without bound.
const XATTR_INODE_BYTES_MAX: usize = 256 << 10;
/// Queued data operations per file before the oldest are written back.
pub const PENDING_DATA_OPS_MAX: usize = 4096;
/// Queued data bytes per file before the oldest are written back.
pub const PENDING_DATA_BYTES_MAX: u64 = 64 << 20;
/// Journal entries before the journal is committed on its own.
pub const META_LOG_OPS_MAX: usize = 65_536;
/// Journal bytes (names and xattr values) before it is committed on its own.
pub const META_LOG_BYTES_MAX: u64 = 64 << 20;
/// Latent error ranges per file. They are planted only by tests and fault
/// workloads; the bound keeps a runaway workload from growing one file's
/// list without limit.
const LATENT_RANGES_MAX: usize = 1024;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// Faults a [`SimDisk`] injects. The default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimFaults {
    /// Probability that a read fails with EIO.
    pub read_eio: f64,
    /// Probability that a write or truncate fails with EIO (changing
    /// nothing).
    pub write_eio: f64,
    /// Total file data (the sum of file sizes) beyond which writes,
    /// growing truncates and inode creation fail with ENOSPC.
    pub capacity_bytes: Option<u64>,
    /// The next N setxattr/removexattr calls succeed and are visible, but
    /// are never made durable: they are gone after the next crash even if
    /// an fsync followed them.
    pub lose_xattr_updates: u32,
}

/// Counters for tests and scenario reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    pub crashes: u64,
    /// Journal entries not yet committed.
    pub pending_meta_ops: u64,
    /// Data operations not yet durable, over all files.
    pub pending_data_ops: u64,
    /// The sum of the sizes of all current regular files.
    pub data_bytes: u64,
    pub inodes: u64,
}

/// An in-memory filesystem with crash and fault injection. See the module
/// documentation for the durability model.
pub struct SimDisk {
    inner: Mutex<Inner>,
}

/// A view of a [`SimDisk`] rooted at one of its directories. Paths given
/// to it are relative to that directory, and since a [`BrickPath`] has no
/// `..` and nothing here follows symlinks, nothing outside it is
/// reachable through the view.
#[derive(Clone)]
pub struct SimStorage {
    disk: Arc<SimDisk>,
    /// The view's root, relative to the disk's root. Kept as a path rather
    /// than an inode so the view behaves like a POSIX brick opened by
    /// path: if the directory is removed, operations fail with ENOENT.
    root: BrickPath,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

// ---------------------------------------------------------------------------
// Metadata

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    /// Entries by name.
    Dir(BTreeMap<String, u64>),
    /// The data lives in [`Inner::files`], outside the journal.
    Regular,
    Symlink(String),
    Fifo,
}

impl Content {
    fn kind(&self) -> FileKind {
        match self {
            Content::Dir(_) => FileKind::Directory,
            Content::Regular => FileKind::Regular,
            Content::Symlink(_) => FileKind::Symlink,
            Content::Fifo => FileKind::Fifo,
        }
    }
}

/// One inode's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    content: Content,
    /// Permission bits only (07777).
    mode: u32,
    uid: u32,
    gid: u32,
    /// Kept by [`apply_meta`]: entries naming the inode for non-directories,
    /// 2 plus subdirectories for directories.
    nlink: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    fn kind(&self) -> FileKind {
        self.content.kind()
    }

    fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// The namespace and attributes of every inode: what the journal covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    nodes: BTreeMap<u64, Node>,
}

impl Meta {
    fn kind(&self, ino: u64) -> Option<FileKind> {
        self.nodes.get(&ino).map(Node::kind)
    }

    fn entries(&self, dir: u64) -> Option<&BTreeMap<String, u64>> {
        match &self.nodes.get(&dir)?.content {
            Content::Dir(e) => Some(e),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Option<&mut BTreeMap<String, u64>> {
        match &mut self.nodes.get_mut(&dir)?.content {
            Content::Dir(e) => Some(e),
            _ => None,
        }
    }

    fn lookup(&self, dir: u64, name: &str) -> Option<u64> {
        self.entries(dir)?.get(name).copied()
    }

    /// Drop one entry's reference to `ino` (the entry itself is already
    /// gone from `parent`): a directory is freed, a file loses a link and is
    /// freed at zero. Returns the inode if it was freed.
    fn drop_link(
        &mut self,
        parent: u64,
        ino: u64,
        at: Timespec,
    ) -> Result<Option<u64>, &'static str> {
        let node = self
            .nodes
            .get_mut(&ino)
            .ok_or("entry names a missing inode")?;
        if node.kind() == FileKind::Directory {
            self.nodes.remove(&ino);
            let p = self.nodes.get_mut(&parent).ok_or("missing parent")?;
            p.nlink = p.nlink.saturating_sub(1);
            return Ok(Some(ino));
        }
        node.nlink = node.nlink.saturating_sub(1);
        if node.nlink == 0 {
            self.nodes.remove(&ino);
            return Ok(Some(ino));
        }
        node.ctime = at;
        Ok(None)
    }

    fn touch_dir(&mut self, dir: u64, at: Timespec) -> Result<(), &'static str> {
        let d = self.nodes.get_mut(&dir).ok_or("missing directory")?;
        d.mtime = at;
        d.ctime = at;
        Ok(())
    }
}

/// An attribute change as it is journaled: the effect, already decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AttrChange {
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    atime: Option<Timespec>,
    mtime: Option<Timespec>,
}

/// One journal entry: one system call's metadata effect, by inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MetaOp {
    /// A new inode and its first entry.
    Create {
        parent: u64,
        name: String,
        ino: u64,
        node: Node,
    },
    Link {
        parent: u64,
        name: String,
        ino: u64,
        at: Timespec,
    },
    /// Unlink or rmdir: the entry goes, and the inode with its last link.
    Remove {
        parent: u64,
        name: String,
        at: Timespec,
    },
    /// Replaces any entry at the destination, which the live path has
    /// checked is compatible and not the same inode.
    Rename {
        from_dir: u64,
        from_name: String,
        to_dir: u64,
        to_name: String,
        at: Timespec,
    },
    SetXattr {
        ino: u64,
        name: String,
        value: Vec<u8>,
        at: Timespec,
    },
    RemoveXattr {
        ino: u64,
        name: String,
        at: Timespec,
    },
    /// Sets ctime to `at` as well as what `change` names.
    SetAttr {
        ino: u64,
        change: AttrChange,
        at: Timespec,
    },
    /// A write or truncate changed the file: mtime and ctime.
    Touch { ino: u64, at: Timespec },
}

impl MetaOp {
    /// Roughly what the entry costs to keep, for the journal's byte bound.
    fn weight_bytes(&self) -> u64 {
        let var = match self {
            MetaOp::Create { name, node, .. } => {
                name.len()
                    + match &node.content {
                        Content::Symlink(t) => t.len(),
                        _ => 0,
                    }
            }
            MetaOp::Link { name, .. } | MetaOp::Remove { name, .. } => name.len(),
            MetaOp::Rename {
                from_name, to_name, ..
            } => from_name.len() + to_name.len(),
            MetaOp::SetXattr { name, value, .. } => name.len() + value.len(),
            MetaOp::RemoveXattr { name, .. } => name.len(),
            MetaOp::SetAttr { .. } | MetaOp::Touch { .. } => 0,
        };
        64 + var as u64
    }
}

#[derive(Debug, Clone)]
struct Logged {
    op: MetaOp,
    /// Marked by `lose_xattr_updates`: visible now, never durable.
    lost: bool,
}

/// Apply one journal entry. The live path and crash replay both go through
/// here, so a replayed journal means exactly what it meant live. Returns
/// the inode the entry freed, if any.
fn apply_meta(meta: &mut Meta, op: &MetaOp) -> Option<u64> {
    match try_apply_meta(meta, op) {
        Ok(freed) => freed,
        Err(what) => {
            // Entries are built against the state they are applied to (the
            // live state, or the durable state plus the entries before
            // them), so this is a bug in this module.
            debug_assert!(
                false,
                "journal entry does not fit the state: {what}: {op:?}"
            );
            tracing::error!(
                ?op,
                "simulated disk journal entry does not fit the state: {what}"
            );
            None
        }
    }
}

fn try_apply_meta(meta: &mut Meta, op: &MetaOp) -> Result<Option<u64>, &'static str> {
    match op {
        MetaOp::Create {
            parent,
            name,
            ino,
            node,
        } => {
            let mut node = node.clone();
            let is_dir = node.kind() == FileKind::Directory;
            node.nlink = if is_dir { 2 } else { 1 };
            let at = node.ctime;
            let entries = meta
                .entries_mut(*parent)
                .ok_or("create in a non-directory")?;
            if entries.insert(name.clone(), *ino).is_some() {
                return Err("create over an existing entry");
            }
            meta.nodes.insert(*ino, node);
            let p = meta.nodes.get_mut(parent).ok_or("missing parent")?;
            if is_dir {
                p.nlink += 1;
            }
            meta.touch_dir(*parent, at)?;
            Ok(None)
        }
        MetaOp::Link {
            parent,
            name,
            ino,
            at,
        } => {
            let entries = meta.entries_mut(*parent).ok_or("link in a non-directory")?;
            if entries.insert(name.clone(), *ino).is_some() {
                return Err("link over an existing entry");
            }
            let node = meta.nodes.get_mut(ino).ok_or("link to a missing inode")?;
            node.nlink += 1;
            node.ctime = *at;
            meta.touch_dir(*parent, *at)?;
            Ok(None)
        }
        MetaOp::Remove { parent, name, at } => {
            let entries = meta
                .entries_mut(*parent)
                .ok_or("remove from a non-directory")?;
            let ino = entries.remove(name).ok_or("remove of a missing entry")?;
            let freed = meta.drop_link(*parent, ino, *at)?;
            meta.touch_dir(*parent, *at)?;
            Ok(freed)
        }
        MetaOp::Rename {
            from_dir,
            from_name,
            to_dir,
            to_name,
            at,
        } => {
            let ino = meta
                .entries_mut(*from_dir)
                .ok_or("rename from a non-directory")?
                .remove(from_name)
                .ok_or("rename of a missing entry")?;
            let moved_dir = meta.kind(ino) == Some(FileKind::Directory);
            let replaced = meta
                .entries_mut(*to_dir)
                .ok_or("rename into a non-directory")?
                .insert(to_name.clone(), ino);
            let mut freed = None;
            if let Some(old) = replaced {
                if old == ino {
                    return Err("rename onto the same inode was journaled");
                }
                freed = meta.drop_link(*to_dir, old, *at)?;
            }
            if moved_dir && from_dir != to_dir {
                let f = meta
                    .nodes
                    .get_mut(from_dir)
                    .ok_or("missing source directory")?;
                f.nlink = f.nlink.saturating_sub(1);
                meta.nodes
                    .get_mut(to_dir)
                    .ok_or("missing target directory")?
                    .nlink += 1;
            }
            meta.nodes
                .get_mut(&ino)
                .ok_or("renamed inode missing")?
                .ctime = *at;
            meta.touch_dir(*from_dir, *at)?;
            meta.touch_dir(*to_dir, *at)?;
            Ok(freed)
        }
        MetaOp::SetXattr {
            ino,
            name,
            value,
            at,
        } => {
            let node = meta
                .nodes
                .get_mut(ino)
                .ok_or("setxattr on a missing inode")?;
            node.xattrs.insert(name.clone(), value.clone());
            node.ctime = *at;
            Ok(None)
        }
        MetaOp::RemoveXattr { ino, name, at } => {
            let node = meta
                .nodes
                .get_mut(ino)
                .ok_or("removexattr on a missing inode")?;
            // Absent is possible in replay: the set it undoes may have been
            // a lost update.
            node.xattrs.remove(name);
            node.ctime = *at;
            Ok(None)
        }
        MetaOp::SetAttr { ino, change, at } => {
            let node = meta
                .nodes
                .get_mut(ino)
                .ok_or("setattr on a missing inode")?;
            if let Some(m) = change.mode {
                node.mode = m;
            }
            if let Some((u, g)) = change.owner {
                node.uid = u;
                node.gid = g;
            }
            if let Some(t) = change.atime {
                node.atime = t;
            }
            if let Some(t) = change.mtime {
                node.mtime = t;
            }
            node.ctime = *at;
            Ok(None)
        }
        MetaOp::Touch { ino, at } => {
            let node = meta.nodes.get_mut(ino).ok_or("touch of a missing inode")?;
            node.mtime = *at;
            node.ctime = *at;
            Ok(None)
        }
    }
}

/// Free every inode not reachable from the root, and recount links if
/// anything went. With one journal entry per system call nothing should
/// ever be unreachable after a replay; this keeps the tree sound even so.
fn free_unreachable(meta: &mut Meta) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        if !seen.insert(ino) {
            continue;
        }
        if let Some(entries) = meta.entries(ino) {
            stack.extend(entries.values().copied());
        }
    }
    let before = meta.nodes.len();
    meta.nodes.retain(|ino, _| seen.contains(ino));
    if meta.nodes.len() == before {
        return;
    }
    tracing::warn!(
        freed = before - meta.nodes.len(),
        "simulated disk freed unreachable inodes at crash"
    );
    let mut links: BTreeMap<u64, u32> = BTreeMap::new();
    for node in meta.nodes.values() {
        if let Content::Dir(entries) = &node.content {
            for ino in entries.values() {
                *links.entry(*ino).or_default() += 1;
            }
        }
    }
    let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
    for (ino, node) in &meta.nodes {
        if let Content::Dir(entries) = &node.content {
            let n = entries
                .values()
                .filter(|c| meta.kind(**c) == Some(FileKind::Directory))
                .count();
            subdirs.insert(*ino, n as u32);
        }
    }
    for (ino, node) in meta.nodes.iter_mut() {
        node.nlink = match node.kind() {
            FileKind::Directory => 2 + subdirs.get(ino).copied().unwrap_or(0),
            _ => links.get(ino).copied().unwrap_or(0),
        };
    }
}

// ---------------------------------------------------------------------------
// File data

/// File contents in 4 KiB pages. Absent pages are holes and read as zeros.
/// Pages are shared between the durable and current copies until one of
/// them writes, so keeping both costs little.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Pages {
    size: u64,
    /// Invariant: no page at or beyond `ceil(size / PAGE_BYTES)`, and the
    /// bytes of the last page beyond `size` are zero.
    pages: BTreeMap<u64, Arc<[u8; PAGE_BYTES]>>,
}

impl Pages {
    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let page = PAGE_BYTES as u64;
        for (idx, data) in self.pages.range(offset / page..=(end - 1) / page) {
            let start = (idx * page).max(offset);
            let stop = ((idx + 1) * page).min(end);
            let src = &data[(start - idx * page) as usize..(stop - idx * page) as usize];
            out[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(src);
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let page = PAGE_BYTES as u64;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let in_page = (pos % page) as usize;
            let n = rest.len().min(PAGE_BYTES - in_page);
            let p = self
                .pages
                .entry(pos / page)
                .or_insert_with(|| Arc::new([0u8; PAGE_BYTES]));
            Arc::make_mut(p)[in_page..in_page + n].copy_from_slice(&rest[..n]);
            pos += n as u64;
            rest = &rest[n..];
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            let page = PAGE_BYTES as u64;
            drop(self.pages.split_off(&size.div_ceil(page)));
            let tail = (size % page) as usize;
            if tail != 0 {
                if let Some(p) = self.pages.get_mut(&(size / page)) {
                    Arc::make_mut(p)[tail..].fill(0);
                }
            }
        }
        self.size = size;
    }

    fn apply(&mut self, op: &DataOp) {
        match op {
            DataOp::Write { offset, data } => self.write(*offset, data),
            DataOp::Truncate { size } => self.truncate(*size),
        }
    }

    fn allocated_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE_BYTES as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    Truncate { size: u64 },
}

impl DataOp {
    fn weight_bytes(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::Truncate { .. } => 0,
        }
    }
}

/// One regular file's data. Kept while a crash could still bring its inode
/// back (it is in the current or durable metadata, or was created in the
/// uncommitted journal), since an unlinked file can return with its data.
#[derive(Debug, Clone, Default)]
struct FileData {
    durable: Pages,
    /// `durable` with `pending` applied.
    current: Pages,
    pending: VecDeque<DataOp>,
    pending_bytes: u64,
    /// Latent sector errors: sorted, disjoint `[start, end)` ranges. They
    /// belong to the medium, so they survive crashes.
    latent: Vec<(u64, u64)>,
}

impl FileData {
    fn push(&mut self, op: DataOp) {
        self.current.apply(&op);
        self.pending_bytes += op.weight_bytes();
        self.pending.push_back(op);
        // Page-cache writeback, which also bounds the queue: the oldest
        // operations reach the disk on their own.
        while self.pending.len() > PENDING_DATA_OPS_MAX
            || self.pending_bytes > PENDING_DATA_BYTES_MAX
        {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= old.weight_bytes();
            self.durable.apply(&old);
        }
    }

    fn sync(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Power loss for this file: a prefix of the queue survives, and maybe a
    /// torn piece of the first write that did not.
    fn crash(&mut self, rng: &mut DetRng) {
        let kept = rng.range_inclusive(0, self.pending.len() as u64) as usize;
        for op in self.pending.drain(..kept) {
            self.durable.apply(&op);
        }
        if let Some(DataOp::Write { offset, data }) = self.pending.front() {
            if rng.chance(0.5) {
                // Whole sectors only, and strictly fewer than the write had.
                let sectors = (data.len() as u64).div_ceil(SECTOR_BYTES);
                let torn = (rng.below(sectors) * SECTOR_BYTES) as usize;
                self.durable.write(*offset, &data[..torn]);
            }
        }
        self.pending.clear();
        self.pending_bytes = 0;
        self.current = self.durable.clone();
    }

    fn latent_overlaps(&self, start: u64, end: u64) -> bool {
        self.latent.iter().any(|&(s, e)| s < end && start < e)
    }

    /// Remove `[start, end)` from the latent ranges (rewritten or
    /// deallocated sectors no longer fail).
    fn clear_latent(&mut self, start: u64, end: u64) {
        if start >= end || !self.latent_overlaps(start, end) {
            return;
        }
        let mut out = Vec::with_capacity(self.latent.len() + 1);
        for &(s, e) in &self.latent {
            if e <= start || s >= end {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if e > end {
                out.push((end, e));
            }
        }
        self.latent = out;
    }
}

// ---------------------------------------------------------------------------
// The disk

struct Inner {
    cur: Meta,
    durable: Meta,
    log: Vec<Logged>,
    log_bytes: u64,
    /// Data of regular files, by inode. A file without an entry is empty.
    files: BTreeMap<u64, FileData>,
    /// Never reused in the disk's life, crashes included.
    next_ino: u64,
    /// Sum of the sizes of the regular files in `cur`.
    used_bytes: u64,
    faults: SimFaults,
    rng: DetRng,
    crashes: u64,
    clock: Clock,
    /// A lost xattr update was committed, so the durable metadata differs
    /// from the current one until the next crash. Only for self-checks.
    durable_diverged: bool,
}

/// Where a path leads.
struct Located<'p> {
    /// Directories from the disk root to the parent of `name`, or to the
    /// view root when the path is the view root.
    chain: Vec<u64>,
    /// The final name; `None` for the view root.
    name: Option<&'p str>,
    /// What is there, if anything.
    ino: Option<u64>,
}

impl Located<'_> {
    fn parent(&self) -> u64 {
        *self.chain.last().expect("a walk starts at the disk root")
    }
}

fn wall_now(clock: &Clock) -> Timespec {
    match clock.wall().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Timespec {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        },
        // Only a wall clock set before 1970 gets here.
        Err(_) => Timespec::default(),
    }
}

impl Inner {
    fn now(&self) -> Timespec {
        wall_now(&self.clock)
    }

    /// Walk directories from the disk root. Nothing is followed: a symlink
    /// where a directory is needed is ELOOP, anything else ENOTDIR.
    fn walk<'a>(&self, comps: impl Iterator<Item = &'a str>) -> SResult<Vec<u64>> {
        let mut chain = vec![ROOT_INO];
        for c in comps {
            let dir = *chain.last().expect("a walk starts at the disk root");
            let child = self.cur.lookup(dir, c).ok_or(Errno::ENOENT)?;
            match self.cur.kind(child) {
                Some(FileKind::Directory) => chain.push(child),
                Some(FileKind::Symlink) => return Err(Errno::ELOOP),
                Some(_) => return Err(Errno::ENOTDIR),
                None => return Err(Errno::EIO),
            }
        }
        Ok(chain)
    }

    fn locate<'p>(&self, root: &BrickPath, p: &'p BrickPath) -> SResult<Located<'p>> {
        match p.split_last() {
            None => {
                let chain = self.walk(root.components())?;
                let ino = *chain.last().expect("a walk starts at the disk root");
                Ok(Located {
                    chain,
                    name: None,
                    ino: Some(ino),
                })
            }
            Some((dir, name)) => {
                let chain = self.walk(root.components().chain(dir.components()))?;
                let parent = *chain.last().expect("a walk starts at the disk root");
                let ino = self.cur.lookup(parent, name);
                Ok(Located {
                    chain,
                    name: Some(name),
                    ino,
                })
            }
        }
    }

    /// The entry for a namespace change at `p`: its parent and name. The
    /// view root has no name to change, which is EINVAL, as for the POSIX
    /// backend.
    fn locate_entry<'p>(
        &self,
        root: &BrickPath,
        p: &'p BrickPath,
    ) -> SResult<(Located<'p>, &'p str)> {
        if p.is_root() {
            return Err(Errno::EINVAL);
        }
        let loc = self.locate(root, p)?;
        let name = loc.name.ok_or(Errno::EINVAL)?;
        Ok((loc, name))
    }

    fn existing(&self, root: &BrickPath, p: &BrickPath) -> SResult<u64> {
        self.locate(root, p)?.ino.ok_or(Errno::ENOENT)
    }

    fn node(&self, ino: u64) -> SResult<&Node> {
        // Every inode a walk or lookup returns is in `cur`.
        self.cur.nodes.get(&ino).ok_or(Errno::EIO)
    }

    fn file_size(&self, ino: u64) -> u64 {
        self.files.get(&ino).map_or(0, |f| f.current.size)
    }

    fn stat(&self, ino: u64) -> SResult<Stat> {
        let n = self.node(ino)?;
        let (size, blocks) = match &n.content {
            Content::Regular => match self.files.get(&ino) {
                Some(f) => (f.current.size, f.current.allocated_bytes() / 512),
                None => (0, 0),
            },
            // An ext4 directory of one block, as every directory here is.
            Content::Dir(_) => (PAGE_BYTES as u64, PAGE_BYTES as u64 / 512),
            Content::Symlink(t) => {
                let blocks = if t.len() <= FAST_SYMLINK_BYTES_MAX {
                    0
                } else {
                    PAGE_BYTES as u64 / 512
                };
                (t.len() as u64, blocks)
            }
            Content::Fifo => (0, 0),
        };
        Ok(Stat {
            ino,
            kind: n.kind(),
            mode: n.mode,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            size,
            blocks,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    /// Apply a journal entry to the current state and journal it.
    fn journal(&mut self, op: MetaOp, lost: bool) {
        if let Some(freed) = apply_meta(&mut self.cur, &op) {
            // The data stays (a crash can bring the file back); it just no
            // longer counts against the capacity.
            self.used_bytes -= self.file_size(freed);
        }
        self.log_bytes += op.weight_bytes();
        self.log.push(Logged { op, lost });
        if self.log.len() > META_LOG_OPS_MAX || self.log_bytes > META_LOG_BYTES_MAX {
            // The journal bound: commit as a full ext4 journal would.
            self.commit_meta();
        }
    }

    /// Record that a write or truncate changed `ino`. Consecutive changes to
    /// one file share one journal entry, so a stream of writes does not
    /// fill the journal.
    fn touch(&mut self, ino: u64) {
        let at = self.now();
        if let Some(Logged {
            op:
                MetaOp::Touch {
                    ino: last,
                    at: last_at,
                },
            lost: false,
        }) = self.log.last_mut()
        {
            if *last == ino {
                *last_at = at;
                if let Some(n) = self.cur.nodes.get_mut(&ino) {
                    n.mtime = at;
                    n.ctime = at;
                }
                return;
            }
        }
        self.journal(MetaOp::Touch { ino, at }, false);
    }

    /// Commit the journal: the durable metadata catches up with the current
    /// one, except for lost xattr updates.
    fn commit_meta(&mut self) {
        self.durable_diverged |= self.log.iter().any(|l| l.lost);
        for l in self.log.drain(..) {
            if !l.lost {
                apply_meta(&mut self.durable, &l.op);
            }
        }
        self.log_bytes = 0;
        if cfg!(test) && !self.durable_diverged {
            assert_eq!(
                self.durable, self.cur,
                "commit must make the durable metadata the current one"
            );
        }
        // Data of inodes gone from both states can never come back.
        let (cur, durable) = (&self.cur, &self.durable);
        self.files
            .retain(|ino, _| cur.nodes.contains_key(ino) || durable.nodes.contains_key(ino));
    }

    fn check_room_for_inode(&self) -> SResult<()> {
        if self.cur.nodes.len() as u64 >= FILES_MAX {
            return Err(Errno::ENOSPC);
        }
        match self.faults.capacity_bytes {
            Some(cap) if self.used_bytes >= cap => Err(Errno::ENOSPC),
            _ => Ok(()),
        }
    }

    /// Create an inode and its entry `parent/name` (the caller checked the
    /// name is free). Group and set-group-ID are inherited from a set-gid
    /// parent, as on ext4.
    fn make_node(&mut self, parent: u64, name: &str, content: Content, mode: u32) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let at = self.now();
        let (mut gid, mut mode) = (0, mode);
        if let Some(p) = self.cur.nodes.get(&parent) {
            if p.mode & S_ISGID != 0 {
                gid = p.gid;
                if matches!(content, Content::Dir(_)) {
                    mode |= S_ISGID;
                }
            }
        }
        let node = Node {
            content,
            mode,
            uid: 0,
            gid,
            nlink: 0,
            atime: at,
            mtime: at,
            ctime: at,
            xattrs: BTreeMap::new(),
        };
        self.journal(
            MetaOp::Create {
                parent,
                name: name.to_string(),
                ino,
                node,
            },
            false,
        );
        ino
    }

    fn create_at(
        &mut self,
        root: &BrickPath,
        p: &BrickPath,
        content: Content,
        mode: u32,
    ) -> SResult<()> {
        let (loc, name) = self.locate_entry(root, p)?;
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        self.check_room_for_inode()?;
        let parent = loc.parent();
        self.make_node(parent, name, content, mode);
        Ok(())
    }

    /// The inode at `p` if it is a regular file: EISDIR for a directory,
    /// EINVAL for anything else, as for `read`, `write` and `truncate`.
    fn regular(&self, root: &BrickPath, p: &BrickPath) -> SResult<u64> {
        let ino = self.existing(root, p)?;
        match self.node(ino)?.kind() {
            FileKind::Regular => Ok(ino),
            FileKind::Directory => Err(Errno::EISDIR),
            FileKind::Symlink | FileKind::Fifo => Err(Errno::EINVAL),
        }
    }

    fn sync_file(&mut self, ino: u64) {
        if let Some(f) = self.files.get_mut(&ino) {
            f.sync();
        }
    }

    fn crash(&mut self, rng: &mut DetRng) {
        let kept = rng.range_inclusive(0, self.log.len() as u64) as usize;
        let mut meta = self.durable.clone();
        for l in &self.log[..kept] {
            if !l.lost {
                apply_meta(&mut meta, &l.op);
            }
        }
        free_unreachable(&mut meta);
        self.files
            .retain(|ino, _| meta.kind(*ino) == Some(FileKind::Regular));
        for f in self.files.values_mut() {
            f.crash(rng);
        }
        self.used_bytes = self.files.values().map(|f| f.current.size).sum();
        self.cur = meta.clone();
        self.durable = meta;
        self.log.clear();
        self.log_bytes = 0;
        self.crashes += 1;
        self.durable_diverged = false;
    }
}

/// What the kernel checks of an xattr name before looking at the file.
fn check_xattr_name(name: &str) -> SResult<()> {
    if name.contains('\0') {
        // The name cannot become a C string.
        return Err(Errno::EINVAL);
    }
    if name.is_empty() || name.len() > XATTR_NAME_BYTES_MAX {
        return Err(Errno::ERANGE);
    }
    Ok(())
}

/// What the kernel checks of an xattr name once it has the inode, in its
/// order: the `user.` namespace only on regular files and directories
/// (`write` decides EPERM or ENODATA), then a namespace ext4 handles.
fn check_xattr_namespace(name: &str, kind: FileKind, write: bool) -> SResult<()> {
    if name.starts_with("user.") && !matches!(kind, FileKind::Regular | FileKind::Directory) {
        return Err(if write { Errno::EPERM } else { Errno::ENODATA });
    }
    for prefix in ["user.", "trusted.", "security."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return if rest.is_empty() {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            };
        }
    }
    // `system.` holds only POSIX ACLs, which this disk does not model;
    // anything else has no handler at all.
    Err(Errno::EOPNOTSUPP)
}

impl SimDisk {
    /// A fresh empty disk (root directory only). `seed` drives the
    /// probabilistic faults.
    pub fn new(seed: u64) -> Arc<SimDisk> {
        let clock = Clock::new();
        let at = wall_now(&clock);
        let root = Node {
            content: Content::Dir(BTreeMap::new()),
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            atime: at,
            mtime: at,
            ctime: at,
            xattrs: BTreeMap::new(),
        };
        let meta = Meta {
            nodes: BTreeMap::from([(ROOT_INO, root)]),
        };
        Arc::new(SimDisk {
            inner: Mutex::new(Inner {
                cur: meta.clone(),
                durable: meta,
                log: Vec::new(),
                log_bytes: 0,
                files: BTreeMap::new(),
                next_ino: ROOT_INO + 1,
                used_bytes: 0,
                faults: SimFaults::default(),
                rng: DetRng::from_seed(seed),
                crashes: 0,
                clock,
                durable_diverged: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means an earlier call panicked half way through a
        // change; the state cannot be trusted, so neither can this call.
        self.inner
            .lock()
            .expect("simulated disk lock poisoned by an earlier panic")
    }

    /// A view of the disk rooted at directory `root` ("" is the disk root,
    /// "bricks/b1" a subdirectory), creating missing directories durably,
    /// like `mkdir -p` followed by fsyncs.
    pub fn storage(self: &Arc<Self>, root: &str) -> SResult<SimStorage> {
        let root = BrickPath::new(root)?;
        let mut d = self.lock();
        let mut dir = ROOT_INO;
        let mut made = false;
        for c in root.components() {
            match d.cur.lookup(dir, c) {
                Some(child) => match d.cur.kind(child) {
                    Some(FileKind::Directory) => dir = child,
                    Some(FileKind::Symlink) => return Err(Errno::ELOOP),
                    _ => return Err(Errno::ENOTDIR),
                },
                None => {
                    dir = d.make_node(dir, c, Content::Dir(BTreeMap::new()), 0o755);
                    made = true;
                }
            }
        }
        if made {
            d.commit_meta();
        }
        drop(d);
        Ok(SimStorage {
            disk: Arc::clone(self),
            root,
        })
    }

    /// Power loss: keep what was durable and a random part of what was not,
    /// per the module documentation. Faults stay as they were set.
    pub fn crash(&self, rng: &mut DetRng) {
        self.lock().crash(rng);
    }

    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// The faults in force (`lose_xattr_updates` counts down as it is used).
    pub fn faults(&self) -> SimFaults {
        self.lock().faults.clone()
    }

    /// Reads of regular file `path` (from the disk root, e.g.
    /// "bricks/b1/x") that overlap `[start, start + len)` fail with EIO
    /// until every byte of the range has been rewritten. Truncating below
    /// the range also clears it (the sectors are no longer the file's).
    pub fn add_latent_error(&self, path: &str, start: u64, len: u64) -> SResult<()> {
        let p = BrickPath::new(path)?;
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let mut d = self.lock();
        let ino = d.regular(&BrickPath::root(), &p)?;
        let f = d.files.entry(ino).or_default();
        f.clear_latent(start, end);
        if f.latent.len() >= LATENT_RANGES_MAX {
            return Err(Errno::ENOSPC);
        }
        let at = f.latent.partition_point(|&(s, _)| s < start);
        f.latent.insert(at, (start, end));
        Ok(())
    }

    pub fn stats(&self) -> SimDiskStats {
        let d = self.lock();
        SimDiskStats {
            crashes: d.crashes,
            pending_meta_ops: d.log.len() as u64,
            pending_data_ops: d.files.values().map(|f| f.pending.len() as u64).sum(),
            data_bytes: d.used_bytes,
            inodes: d.cur.nodes.len() as u64,
        }
    }
}

impl Storage for SimStorage {
    fn describe(&self) -> String {
        format!("simdisk:{}", self.root)
    }

    fn lstat(&self, p: &BrickPath) -> SResult<Stat> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        d.stat(ino)
    }

    fn mkdir(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        // mkdir(2) keeps only the permission and sticky bits.
        let content = Content::Dir(BTreeMap::new());
        self.disk
            .lock()
            .create_at(&self.root, p, content, mode & 0o1777)
    }

    fn create(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        self.disk
            .lock()
            .create_at(&self.root, p, Content::Regular, mode & 0o7777)
    }

    fn mkfifo(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        self.disk
            .lock()
            .create_at(&self.root, p, Content::Fifo, mode & 0o7777)
    }

    fn symlink(&self, target: &str, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        if target.contains('\0') {
            return Err(Errno::EINVAL);
        }
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > SYMLINK_TARGET_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        d.check_room_for_inode()?;
        let parent = loc.parent();
        d.make_node(parent, name, Content::Symlink(target.to_string()), 0o777);
        Ok(())
    }

    fn readlink(&self, p: &BrickPath) -> SResult<String> {
        let d = self.disk.lock();
        let (loc, _) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        match &d.node(ino)?.content {
            Content::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn link(&self, existing: &BrickPath, new: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (old, _) = d.locate_entry(&self.root, existing)?;
        let (loc, name) = d.locate_entry(&self.root, new)?;
        let ino = old.ino.ok_or(Errno::ENOENT)?;
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        let node = d.node(ino)?;
        if node.kind() == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        if node.nlink >= LINKS_MAX {
            return Err(Errno::EMLINK);
        }
        let (parent, at) = (loc.parent(), d.now());
        let name = name.to_string();
        d.journal(
            MetaOp::Link {
                parent,
                name,
                ino,
                at,
            },
            false,
        );
        Ok(())
    }

    fn rename(&self, from: &BrickPath, to: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (src, from_name) = d.locate_entry(&self.root, from)?;
        let (dst, to_name) = d.locate_entry(&self.root, to)?;
        let ino = src.ino.ok_or(Errno::ENOENT)?;
        // The kernel's two ancestry traps: a directory cannot move beneath
        // itself, and a target that contains the source is not empty.
        if dst.chain.contains(&ino) {
            return Err(Errno::EINVAL);
        }
        if let Some(target) = dst.ino {
            if src.chain.contains(&target) {
                return Err(Errno::ENOTEMPTY);
            }
            if target == ino {
                // Two names of one file (or one name twice): POSIX says
                // rename does nothing.
                return Ok(());
            }
            let moved_dir = d.node(ino)?.kind() == FileKind::Directory;
            match (&d.node(target)?.content, moved_dir) {
                (Content::Dir(_), false) => return Err(Errno::EISDIR),
                (Content::Dir(entries), true) if !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                (Content::Dir(_), true) => {}
                (_, true) => return Err(Errno::ENOTDIR),
                (_, false) => {}
            }
        }
        let op = MetaOp::Rename {
            from_dir: src.parent(),
            from_name: from_name.to_string(),
            to_dir: dst.parent(),
            to_name: to_name.to_string(),
            at: d.now(),
        };
        d.journal(op, false);
        Ok(())
    }

    fn unlink(&self, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        if d.node(ino)?.kind() == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let (parent, name, at) = (loc.parent(), name.to_string(), d.now());
        d.journal(MetaOp::Remove { parent, name, at }, false);
        Ok(())
    }

    fn rmdir(&self, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        match &d.node(ino)?.content {
            Content::Dir(entries) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            Content::Dir(_) => {}
            _ => return Err(Errno::ENOTDIR),
        }
        let (parent, name, at) = (loc.parent(), name.to_string(), d.now());
        d.journal(MetaOp::Remove { parent, name, at }, false);
        Ok(())
    }

    fn read(&self, p: &BrickPath, offset: u64, len: usize) -> SResult<Bytes> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        let p_eio = d.faults.read_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        let Some(f) = d.files.get(&ino) else {
            return Ok(Bytes::new());
        };
        let end = f.current.size.min(offset.saturating_add(len as u64));
        if offset < end && f.latent_overlaps(offset, end) {
            return Err(Errno::EIO);
        }
        Ok(Bytes::from(f.current.read(offset, len)))
    }

    fn write(&self, p: &BrickPath, offset: u64, data: &[u8]) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        if data.is_empty() {
            // A zero-length write changes nothing, not even mtime.
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let old_size = d.file_size(ino);
        let new_size = old_size.max(end);
        if let Some(cap) = d.faults.capacity_bytes {
            if new_size > old_size && d.used_bytes - old_size + new_size > cap {
                return Err(Errno::ENOSPC);
            }
        }
        let p_eio = d.faults.write_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        d.used_bytes = d.used_bytes - old_size + new_size;
        let f = d.files.entry(ino).or_default();
        f.push(DataOp::Write {
            offset,
            data: data.to_vec(),
        });
        f.clear_latent(offset, end);
        d.touch(ino);
        Ok(())
    }

    fn truncate(&self, p: &BrickPath, size: u64) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        if size > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let old_size = d.file_size(ino);
        if let Some(cap) = d.faults.capacity_bytes {
            if size > old_size && d.used_bytes - old_size + size > cap {
                return Err(Errno::ENOSPC);
            }
        }
        let p_eio = d.faults.write_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        d.used_bytes = d.used_bytes - old_size + size;
        let f = d.files.entry(ino).or_default();
        f.push(DataOp::Truncate { size });
        f.clear_latent(size, u64::MAX);
        // truncate(2) updates mtime and ctime even when the size is unchanged.
        d.touch(ino);
        Ok(())
    }

    fn fsync(&self, p: &BrickPath, _datasync: bool) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if d.node(ino)?.kind() == FileKind::Regular {
            d.sync_file(ino);
        }
        d.commit_meta();
        Ok(())
    }

    fn readdir(&self, p: &BrickPath) -> SResult<Vec<DirEntry>> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        match &d.node(ino)?.content {
            Content::Dir(entries) => entries
                .iter()
                .map(|(name, child)| {
                    Ok(DirEntry {
                        name: name.clone(),
                        kind: d.node(*child)?.kind(),
                    })
                })
                .collect(),
            // Never followed, as everywhere: a symlink is ELOOP.
            Content::Symlink(_) => Err(Errno::ELOOP),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn getxattr(&self, p: &BrickPath, name: &str) -> SResult<Vec<u8>> {
        let d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        let node = d.node(loc.ino.ok_or(Errno::ENOENT)?)?;
        check_xattr_namespace(name, node.kind(), false)?;
        node.xattrs.get(name).cloned().ok_or(Errno::ENODATA)
    }

    fn setxattr(&self, p: &BrickPath, name: &str, value: &[u8], flags: XattrFlags) -> SResult<()> {
        let mut d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_BYTES_MAX {
            // Linux says E2BIG, which the protocol has no number for.
            return Err(Errno::ERANGE);
        }
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        let node = d.node(ino)?;
        check_xattr_namespace(name, node.kind(), true)?;
        let old = node.xattrs.get(name);
        match (flags, old) {
            (XattrFlags::Create, Some(_)) => return Err(Errno::EEXIST),
            (XattrFlags::Replace, None) => return Err(Errno::ENODATA),
            _ => {}
        }
        let old_bytes = old.map_or(0, |v| name.len() + v.len());
        if node.xattr_bytes() - old_bytes + name.len() + value.len() > XATTR_INODE_BYTES_MAX {
            return Err(Errno::ENOSPC);
        }
        let lost = d.faults.lose_xattr_updates > 0;
        if lost {
            d.faults.lose_xattr_updates -= 1;
        }
        let op = MetaOp::SetXattr {
            ino,
            name: name.to_string(),
            value: value.to_vec(),
            at: d.now(),
        };
        d.journal(op, lost);
        Ok(())
    }

    fn removexattr(&self, p: &BrickPath, name: &str) -> SResult<()> {
        let mut d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        let node = d.node(ino)?;
        check_xattr_namespace(name, node.kind(), true)?;
        if !node.xattrs.contains_key(name) {
            return Err(Errno::ENODATA);
        }
        let lost = d.faults.lose_xattr_updates > 0;
        if lost {
            d.faults.lose_xattr_updates -= 1;
        }
        let op = MetaOp::RemoveXattr {
            ino,
            name: name.to_string(),
            at: d.now(),
        };
        d.journal(op, lost);
        Ok(())
    }

    fn listxattr(&self, p: &BrickPath) -> SResult<Vec<String>> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        // BTreeMap keys come sorted.
        Ok(d.node(ino)?.xattrs.keys().cloned().collect())
    }

    fn set_mode(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if d.node(ino)?.kind() == FileKind::Symlink {
            // Linux cannot change a symlink's mode (fchmodat with
            // AT_SYMLINK_NOFOLLOW).
            return Err(Errno::EOPNOTSUPP);
        }
        let change = AttrChange {
            mode: Some(mode & 0o7777),
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn set_owner(&self, p: &BrickPath, uid: u32, gid: u32) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        let node = d.node(ino)?;
        // chown clears set-user-ID, and set-group-ID when group execute is
        // set, on anything but a directory, even for root.
        let mut mode = node.mode;
        if node.kind() != FileKind::Directory {
            mode &= !S_ISUID;
            if mode & S_IXGRP != 0 {
                mode &= !S_ISGID;
            }
        }
        let change = AttrChange {
            mode: (mode != node.mode).then_some(mode),
            owner: Some((uid, gid)),
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn set_times(
        &self,
        p: &BrickPath,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> SResult<()> {
        if atime.is_none() && mtime.is_none() {
            // utimensat with both times omitted returns before even looking
            // the path up.
            return Ok(());
        }
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if [atime, mtime]
            .iter()
            .flatten()
            .any(|t| t.nsecs >= 1_000_000_000)
        {
            return Err(Errno::EINVAL);
        }
        let change = AttrChange {
            atime,
            mtime,
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn statfs(&self) -> SResult<FsStat> {
        let d = self.disk.lock();
        // The view root must exist, as the POSIX backend opens it.
        d.walk(self.root.components())?;
        let block = PAGE_BYTES as u64;
        let capacity = d.faults.capacity_bytes.unwrap_or(DEFAULT_CAPACITY_BYTES);
        let free = capacity.saturating_sub(d.used_bytes) / block;
        Ok(FsStat {
            block_size: block,
            blocks: capacity / block,
            blocks_free: free,
            blocks_avail: free,
            files: FILES_MAX,
            files_free: FILES_MAX.saturating_sub(d.cur.nodes.len() as u64),
            name_max: NAME_BYTES_MAX as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(s: &str) -> BrickPath {
        BrickPath::new(s).expect("test paths are valid")
    }

    fn fresh() -> (Arc<SimDisk>, SimStorage) {
        let disk = SimDisk::new(1);
        let s = disk.storage("").unwrap();
        (disk, s)
    }

    fn read_all(s: &SimStorage, p: &str) -> Vec<u8> {
        let size = s.lstat(&bp(p)).unwrap().size;
        s.read(&bp(p), 0, size as usize).unwrap().to_vec()
    }

    fn write_file(s: &SimStorage, p: &str, data: &[u8]) {
        s.create(&bp(p), 0o644).unwrap();
        s.write(&bp(p), 0, data).unwrap();
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + 3) % 251) as u8 ^ salt).collect()
    }

    fn exists(s: &SimStorage, p: &str) -> bool {
        match s.lstat(&bp(p)) {
            Ok(_) => true,
            Err(Errno::ENOENT) => false,
            Err(e) => panic!("lstat {p}: {e}"),
        }
    }

    /// The tree invariants: every entry names a live inode, link counts
    /// match the entries, everything is reachable from the root, and the
    /// data accounting matches the files. After a crash, also: nothing is
    /// pending and the durable state is the current one.
    fn check_consistent(disk: &SimDisk) {
        let d = disk.lock();
        let meta = &d.cur;
        let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
        for (ino, node) in &meta.nodes {
            if let Content::Dir(entries) = &node.content {
                let mut subdirs = 0;
                for (name, child) in entries {
                    let c = meta.nodes.get(child).unwrap_or_else(|| {
                        panic!("entry {name} in {ino} names missing inode {child}")
                    });
                    if c.kind() == FileKind::Directory {
                        subdirs += 1;
                    }
                    *refs.entry(*child).or_default() += 1;
                }
                assert_eq!(node.nlink, 2 + subdirs, "directory {ino} nlink");
            }
        }
        for (ino, node) in &meta.nodes {
            let r = refs.get(ino).copied().unwrap_or(0);
            if *ino == ROOT_INO {
                assert_eq!(r, 0);
                continue;
            }
            assert!(r >= 1, "inode {ino} has no entry");
            if node.kind() == FileKind::Directory {
                assert_eq!(r, 1, "directory {ino} has one entry");
            } else {
                assert_eq!(node.nlink, r, "inode {ino} nlink");
            }
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![ROOT_INO];
        while let Some(ino) = stack.pop() {
            assert!(
                seen.insert(ino),
                "inode {ino} reached twice: a directory cycle"
            );
            if let Some(e) = meta.entries(ino) {
                stack.extend(
                    e.values()
                        .filter(|c| meta.kind(**c) == Some(FileKind::Directory)),
                );
            }
        }
        let dirs = meta
            .nodes
            .values()
            .filter(|n| n.kind() == FileKind::Directory)
            .count();
        assert_eq!(seen.len(), dirs, "every directory reachable from the root");
        let used: u64 = d
            .files
            .iter()
            .filter(|(ino, _)| meta.kind(**ino) == Some(FileKind::Regular))
            .map(|(_, f)| f.current.size)
            .sum();
        assert_eq!(used, d.used_bytes, "data accounting");
        let created_since_commit: BTreeSet<u64> = d
            .log
            .iter()
            .filter_map(|l| match l.op {
                MetaOp::Create { ino, .. } => Some(ino),
                _ => None,
            })
            .collect();
        for (ino, f) in &d.files {
            assert!(
                meta.nodes.contains_key(ino)
                    || d.durable.nodes.contains_key(ino)
                    || created_since_commit.contains(ino),
                "data kept for inode {ino}, which no crash can bring back"
            );
            let mut durable = f.durable.clone();
            for op in &f.pending {
                durable.apply(op);
            }
            assert_eq!(
                durable, f.current,
                "current data is durable data plus the queue"
            );
        }
        assert!(d.next_ino > meta.nodes.keys().copied().max().unwrap_or(0));
    }

    fn check_quiescent_after_crash(disk: &SimDisk) {
        check_consistent(disk);
        let d = disk.lock();
        assert!(d.log.is_empty());
        assert_eq!(d.cur, d.durable);
        assert!(d
            .files
            .values()
            .all(|f| f.pending.is_empty() && f.durable == f.current));
    }

    #[test]
    fn namespace_operations_and_their_errnos() {
        let (disk, s) = fresh();
        s.mkdir(&bp("d"), 0o755).unwrap();
        s.create(&bp("d/f"), 0o644).unwrap();
        s.mkfifo(&bp("d/p"), 0o600).unwrap();
        let st = s.lstat(&bp("d/f")).unwrap();
        assert_eq!(
            (st.kind, st.mode, st.nlink, st.size, st.uid, st.gid),
            (FileKind::Regular, 0o644, 1, 0, 0, 0)
        );
        assert_eq!(s.lstat(&bp("d/p")).unwrap().kind, FileKind::Fifo);
        let d = s.lstat(&bp("d")).unwrap();
        assert_eq!(
            (d.kind, d.mode, d.nlink, d.size, d.blocks),
            (FileKind::Directory, 0o755, 2, 4096, 8)
        );
        assert_eq!(s.lstat(&BrickPath::root()).unwrap().nlink, 3);
        assert!(st.ino > d.ino, "inode numbers grow");
        let mut names = s.readdir(&bp("d")).unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![
                DirEntry {
                    name: "f".into(),
                    kind: FileKind::Regular
                },
                DirEntry {
                    name: "p".into(),
                    kind: FileKind::Fifo
                },
            ]
        );

        assert_eq!(s.lstat(&bp("nope")), Err(Errno::ENOENT));
        assert_eq!(s.lstat(&bp("nope/x")), Err(Errno::ENOENT));
        assert_eq!(s.lstat(&bp("d/f/x")), Err(Errno::ENOTDIR));
        assert_eq!(s.create(&bp("d/p/x"), 0o644), Err(Errno::ENOTDIR));
        for p in ["d", "d/f", "d/p"] {
            assert_eq!(s.mkdir(&bp(p), 0o755), Err(Errno::EEXIST), "{p}");
            assert_eq!(s.create(&bp(p), 0o644), Err(Errno::EEXIST), "{p}");
            assert_eq!(s.mkfifo(&bp(p), 0o644), Err(Errno::EEXIST), "{p}");
            assert_eq!(s.symlink("t", &bp(p)), Err(Errno::EEXIST), "{p}");
        }
        assert_eq!(s.unlink(&bp("d")), Err(Errno::EISDIR));
        assert_eq!(s.unlink(&bp("d/nope")), Err(Errno::ENOENT));
        assert_eq!(s.rmdir(&bp("d/f")), Err(Errno::ENOTDIR));
        assert_eq!(s.rmdir(&bp("d")), Err(Errno::ENOTEMPTY));
        assert_eq!(s.rmdir(&bp("nope")), Err(Errno::ENOENT));
        assert_eq!(s.readlink(&bp("d/f")), Err(Errno::EINVAL));
        assert_eq!(s.readdir(&bp("d/f")), Err(Errno::ENOTDIR));
        assert_eq!(s.read(&bp("d"), 0, 10), Err(Errno::EISDIR));
        assert_eq!(s.read(&bp("d/p"), 0, 10), Err(Errno::EINVAL));
        assert_eq!(s.write(&bp("d"), 0, b"x"), Err(Errno::EISDIR));
        assert_eq!(s.write(&bp("d/p"), 0, b"x"), Err(Errno::EINVAL));
        assert_eq!(s.truncate(&bp("d"), 0), Err(Errno::EISDIR));
        assert_eq!(s.truncate(&bp("d/p"), 0), Err(Errno::EINVAL));
        assert_eq!(s.read(&bp("d/nope"), 0, 1), Err(Errno::ENOENT));

        // The view root cannot be removed, renamed or created.
        let root = BrickPath::root();
        assert_eq!(s.unlink(&root), Err(Errno::EINVAL));
        assert_eq!(s.rmdir(&root), Err(Errno::EINVAL));
        assert_eq!(s.rename(&root, &bp("x")), Err(Errno::EINVAL));
        assert_eq!(s.rename(&bp("d/f"), &root), Err(Errno::EINVAL));
        assert_eq!(s.mkdir(&root, 0o755), Err(Errno::EINVAL));
        assert_eq!(s.link(&root, &bp("x")), Err(Errno::EINVAL));
        assert_eq!(s.link(&bp("d/f"), &root), Err(Errno::EINVAL));
        assert_eq!(s.read(&root, 0, 1), Err(Errno::EISDIR));
        assert!(s.fsync(&root, false).is_ok());

        // Hard links.
        s.link(&bp("d/f"), &bp("g")).unwrap();
        let (f, g) = (s.lstat(&bp("d/f")).unwrap(), s.lstat(&bp("g")).unwrap());
        assert_eq!((f.ino, f.nlink, g.nlink), (g.ino, 2, 2));
        assert_eq!(s.link(&bp("d"), &bp("e")), Err(Errno::EPERM));
        assert_eq!(s.link(&bp("d/f"), &bp("d/p")), Err(Errno::EEXIST));
        assert_eq!(
            s.link(&bp("d"), &bp("g")),
            Err(Errno::EEXIST),
            "EEXIST comes before EPERM"
        );
        assert_eq!(s.link(&bp("nope"), &bp("x")), Err(Errno::ENOENT));
        s.write(&bp("g"), 0, b"shared").unwrap();
        assert_eq!(read_all(&s, "d/f"), b"shared");
        s.unlink(&bp("d/f")).unwrap();
        assert_eq!(s.lstat(&bp("g")).unwrap().nlink, 1);
        assert_eq!(read_all(&s, "g"), b"shared");

        // Directory link counts follow subdirectories.
        s.mkdir(&bp("d/sub"), 0o700).unwrap();
        assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 3);
        s.rmdir(&bp("d/sub")).unwrap();
        assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 2);
        s.unlink(&bp("d/p")).unwrap();
        s.rmdir(&bp("d")).unwrap();
        assert_eq!(s.lstat(&BrickPath::root()).unwrap().nlink, 2);

        // Inode numbers are never reused.
        let before = s.lstat(&bp("g")).unwrap().ino;
        s.unlink(&bp("g")).unwrap();
        s.create(&bp("h"), 0o644).unwrap();
        assert!(s.lstat(&bp("h")).unwrap().ino > before);

        // Symlink targets: empty and overlong are refused as Linux does.
        assert_eq!(s.symlink("", &bp("l")), Err(Errno::ENOENT));
        assert_eq!(
            s.symlink(&"x".repeat(4096), &bp("l")),
            Err(Errno::ENAMETOOLONG)
        );
        s.symlink(&"x".repeat(4095), &bp("l")).unwrap();
        assert_eq!(s.lstat(&bp("l")).unwrap().size, 4095);
        assert_eq!(s.describe(), "simdisk:/");
        check_consistent(&disk);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (disk, s) = fresh();
        s.mkdir(&bp("real"), 0o755).unwrap();
        write_file(&s, "real/f", b"data");
        s.symlink("real", &bp("ln")).unwrap();
        s.symlink("/etc", &bp("abs")).unwrap();
        let st = s.lstat(&bp("ln")).unwrap();
        assert_eq!(
            (st.kind, st.mode, st.size, st.blocks),
            (FileKind::Symlink, 0o777, 4, 0)
        );
        assert_eq!(s.readlink(&bp("ln")).unwrap(), "real");
        assert_eq!(s.readlink(&bp("abs")).unwrap(), "/etc");

        // Through a symlink in a directory position: ELOOP, for every call.
        let through = bp("ln/f");
        assert_eq!(s.lstat(&through), Err(Errno::ELOOP));
        assert_eq!(s.read(&through, 0, 4), Err(Errno::ELOOP));
        assert_eq!(s.write(&through, 0, b"x"), Err(Errno::ELOOP));
        assert_eq!(s.create(&bp("ln/g"), 0o644), Err(Errno::ELOOP));
        assert_eq!(s.mkdir(&bp("ln/g"), 0o755), Err(Errno::ELOOP));
        assert_eq!(s.unlink(&through), Err(Errno::ELOOP));
        assert_eq!(s.rename(&through, &bp("x")), Err(Errno::ELOOP));
        assert_eq!(s.rename(&bp("real/f"), &bp("ln/f2")), Err(Errno::ELOOP));
        assert_eq!(s.link(&through, &bp("x")), Err(Errno::ELOOP));
        assert_eq!(s.getxattr(&through, "user.a"), Err(Errno::ELOOP));
        assert_eq!(s.fsync(&through, false), Err(Errno::ELOOP));
        assert_eq!(s.lstat(&bp("abs/passwd")), Err(Errno::ELOOP));

        // As the final component, the link itself is what is operated on.
        assert_eq!(s.readdir(&bp("ln")), Err(Errno::ELOOP));
        assert_eq!(s.read(&bp("ln"), 0, 4), Err(Errno::EINVAL));
        assert_eq!(s.write(&bp("ln"), 0, b"x"), Err(Errno::EINVAL));
        assert_eq!(s.truncate(&bp("ln"), 0), Err(Errno::EINVAL));
        assert_eq!(s.rmdir(&bp("ln")), Err(Errno::ENOTDIR));
        assert_eq!(s.set_mode(&bp("ln"), 0o600), Err(Errno::EOPNOTSUPP));
        s.set_owner(&bp("ln"), 7, 8).unwrap();
        assert_eq!(s.lstat(&bp("ln")).unwrap().uid, 7);
        assert_eq!(
            s.lstat(&bp("real")).unwrap().uid,
            0,
            "the target is untouched"
        );
        s.setxattr(&bp("ln"), "trusted.t", b"v", XattrFlags::Any)
            .unwrap();
        assert_eq!(s.getxattr(&bp("ln"), "trusted.t").unwrap(), b"v");
        assert!(s.listxattr(&bp("real")).unwrap().is_empty());
        s.link(&bp("ln"), &bp("ln2")).unwrap();
        assert_eq!(s.lstat(&bp("ln2")).unwrap().kind, FileKind::Symlink);
        s.unlink(&bp("ln")).unwrap();
        s.unlink(&bp("ln2")).unwrap();
        assert_eq!(read_all(&s, "real/f"), b"data");
        check_consistent(&disk);
    }

    #[test]
    fn rename_follows_posix() {
        let (disk, s) = fresh();
        write_file(&s, "a", b"A");
        write_file(&s, "b", b"B");
        s.mkdir(&bp("d"), 0o755).unwrap();
        s.mkdir(&bp("e"), 0o755).unwrap();
        write_file(&s, "e/x", b"X");
        s.mkdir(&bp("d/sub"), 0o755).unwrap();
        s.mkdir(&bp("d/sub/deep"), 0o755).unwrap();

        // File over file replaces it atomically; the old one is freed.
        let b_ino = s.lstat(&bp("b")).unwrap().ino;
        s.rename(&bp("a"), &bp("b")).unwrap();
        assert!(!exists(&s, "a"));
        assert_eq!(read_all(&s, "b"), b"A");
        assert_ne!(s.lstat(&bp("b")).unwrap().ino, b_ino);
        assert!(!disk.lock().cur.nodes.contains_key(&b_ino));

        // Kind mismatches and non-empty targets.
        assert_eq!(s.rename(&bp("b"), &bp("d")), Err(Errno::EISDIR));
        assert_eq!(s.rename(&bp("d"), &bp("b")), Err(Errno::ENOTDIR));
        assert_eq!(s.rename(&bp("d"), &bp("e")), Err(Errno::ENOTEMPTY));
        assert_eq!(s.rename(&bp("nope"), &bp("x")), Err(Errno::ENOENT));
        assert_eq!(s.rename(&bp("b"), &bp("nope/x")), Err(Errno::ENOENT));
        assert_eq!(s.rename(&bp("b"), &bp("b/x")), Err(Errno::ENOTDIR));

        // A directory cannot move beneath itself; a target that contains
        // the source is not empty.
        assert_eq!(s.rename(&bp("d"), &bp("d/x")), Err(Errno::EINVAL));
        assert_eq!(s.rename(&bp("d"), &bp("d/sub/deep/x")), Err(Errno::EINVAL));
        assert_eq!(s.rename(&bp("d"), &bp("d/sub")), Err(Errno::EINVAL));
        assert_eq!(s.rename(&bp("d/sub/deep"), &bp("d")), Err(Errno::ENOTEMPTY));
        assert_eq!(s.rename(&bp("d/sub"), &bp("d")), Err(Errno::ENOTEMPTY));

        // Onto itself or a hard link of itself: nothing happens.
        s.rename(&bp("b"), &bp("b")).unwrap();
        s.link(&bp("b"), &bp("b2")).unwrap();
        s.rename(&bp("b"), &bp("b2")).unwrap();
        assert!(exists(&s, "b") && exists(&s, "b2"));
        assert_eq!(s.lstat(&bp("b")).unwrap().nlink, 2);
        s.rename(&bp("d"), &bp("d")).unwrap();

        // Directory over an empty directory, across parents: link counts.
        s.mkdir(&bp("e/empty"), 0o755).unwrap();
        assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 3);
        s.rename(&bp("d/sub"), &bp("e/empty")).unwrap();
        assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 2);
        assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 3);
        assert!(exists(&s, "e/empty/deep"));
        s.rename(&bp("e/empty"), &bp("d/moved")).unwrap();
        assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 3);
        assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 2);

        // Renaming a file over one of several links drops just that link.
        write_file(&s, "c", b"C");
        s.rename(&bp("c"), &bp("b2")).unwrap();
        assert_eq!(s.lstat(&bp("b")).unwrap().nlink, 1);
        assert_eq!(read_all(&s, "b2"), b"C");
        check_consistent(&disk);
    }

    #[test]
    fn data_reads_writes_truncates_and_holes() {
        let (disk, s) = fresh();
        write_file(&s, "f", b"hello");
        let f = bp("f");
        assert_eq!(&s.read(&f, 0, 5).unwrap()[..], b"hello");
        assert_eq!(&s.read(&f, 3, 100).unwrap()[..], b"lo");
        assert!(s.read(&f, 5, 10).unwrap().is_empty());
        assert!(s.read(&f, 1 << 40, 10).unwrap().is_empty());
        assert_eq!(s.lstat(&f).unwrap().blocks, 8);

        // A write past the end leaves a hole that reads as zeros.
        s.write(&f, 10_000, b"x").unwrap();
        let st = s.lstat(&f).unwrap();
        assert_eq!(
            (st.size, st.blocks),
            (10_001, 16),
            "the hole's middle page is not allocated"
        );
        let all = s.read(&f, 0, 20_000).unwrap();
        assert_eq!(all.len(), 10_001);
        assert_eq!(&all[..5], b"hello");
        assert!(all[5..10_000].iter().all(|b| *b == 0));
        assert_eq!(all[10_000], b'x');

        // Shrinking then growing again reads zeros, not the old bytes.
        s.truncate(&f, 3).unwrap();
        assert_eq!(read_all(&s, "f"), b"hel");
        s.truncate(&f, 8192).unwrap();
        let all = read_all(&s, "f");
        assert_eq!(all.len(), 8192);
        assert_eq!(&all[..3], b"hel");
        assert!(all[3..].iter().all(|b| *b == 0));
        s.truncate(&f, 1 << 30).unwrap();
        assert_eq!(
            s.lstat(&f).unwrap().blocks,
            8,
            "growing by truncate allocates nothing"
        );

        // Sizes and limits.
        assert_eq!(s.write(&f, FILE_BYTES_MAX, b"x"), Err(Errno::EFBIG));
        assert_eq!(s.write(&f, u64::MAX, b"x"), Err(Errno::EFBIG));
        assert_eq!(s.truncate(&f, FILE_BYTES_MAX + 1), Err(Errno::EFBIG));
        s.write(&f, FILE_BYTES_MAX - 1, b"x").unwrap();
        assert_eq!(s.lstat(&f).unwrap().size, FILE_BYTES_MAX);
        s.truncate(&f, 0).unwrap();
        assert_eq!(s.lstat(&f).unwrap().blocks, 0);

        // Against a plain vector: random writes and truncates across pages.
        let mut model: Vec<u8> = Vec::new();
        let mut rng = DetRng::from_seed(99);
        for round in 0..400u32 {
            if rng.chance(0.2) {
                let size = rng.below(40_000) as usize;
                s.truncate(&f, size as u64).unwrap();
                model.resize(size, 0);
            } else {
                let off = rng.below(30_000) as usize;
                let mut data = vec![0u8; rng.range_inclusive(1, 9000) as usize];
                rng.fill(&mut data);
                s.write(&f, off as u64, &data).unwrap();
                if model.len() < off + data.len() {
                    model.resize(off + data.len(), 0);
                }
                model[off..off + data.len()].copy_from_slice(&data);
            }
            if round % 50 == 0 {
                let off = rng.below(model.len() as u64 + 1) as usize;
                let len = rng.below(10_000) as usize;
                let want = &model[off.min(model.len())..(off + len).min(model.len())];
                assert_eq!(&s.read(&f, off as u64, len).unwrap()[..], want);
            }
        }
        assert_eq!(read_all(&s, "f"), model);
        assert_eq!(disk.stats().data_bytes, model.len() as u64);
        check_consistent(&disk);
    }

    #[test]
    fn xattrs_follow_linux() {
        let (disk, s) = fresh();
        write_file(&s, "f", b"");
        let f = bp("f");
        assert_eq!(s.getxattr(&f, "user.a"), Err(Errno::ENODATA));
        assert_eq!(s.removexattr(&f, "user.a"), Err(Errno::ENODATA));
        assert_eq!(
            s.setxattr(&f, "user.a", b"1", XattrFlags::Replace),
            Err(Errno::ENODATA)
        );
        s.setxattr(&f, "user.a", b"1", XattrFlags::Create).unwrap();
        assert_eq!(
            s.setxattr(&f, "user.a", b"2", XattrFlags::Create),
            Err(Errno::EEXIST)
        );
        s.setxattr(&f, "user.a", b"2", XattrFlags::Replace).unwrap();
        assert_eq!(s.getxattr(&f, "user.a").unwrap(), b"2");
        s.setxattr(&f, "user.a", b"", XattrFlags::Any).unwrap();
        assert_eq!(s.getxattr(&f, "user.a").unwrap(), b"");
        s.setxattr(&f, "user.b", b"", XattrFlags::Any).unwrap();
        s.setxattr(&f, "trusted.c", b"", XattrFlags::Any).unwrap();
        s.setxattr(&f, "security.d", b"", XattrFlags::Any).unwrap();
        assert_eq!(
            s.listxattr(&f).unwrap(),
            vec!["security.d", "trusted.c", "user.a", "user.b"]
        );
        s.removexattr(&f, "user.a").unwrap();
        assert_eq!(s.getxattr(&f, "user.a"), Err(Errno::ENODATA));

        // Names and values.
        let long = format!("user.{}", "n".repeat(251));
        assert_eq!(
            s.setxattr(&f, &long, b"", XattrFlags::Any),
            Err(Errno::ERANGE)
        );
        s.setxattr(&f, &long[..255], b"", XattrFlags::Any).unwrap();
        assert_eq!(s.getxattr(&f, ""), Err(Errno::ERANGE));
        assert_eq!(
            s.setxattr(&f, "user.v", &vec![0; (64 << 10) + 1], XattrFlags::Any),
            Err(Errno::ERANGE)
        );
        s.setxattr(&f, "user.v", &vec![7; 64 << 10], XattrFlags::Any)
            .unwrap();
        assert_eq!(s.getxattr(&f, "user.v").unwrap().len(), 64 << 10);
        assert_eq!(
            s.setxattr(&f, "plain", b"", XattrFlags::Any),
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(s.getxattr(&f, "system.x"), Err(Errno::EOPNOTSUPP));
        assert_eq!(
            s.setxattr(&f, "user.", b"", XattrFlags::Any),
            Err(Errno::EINVAL)
        );
        // Name checks come before the final lookup, as in the kernel.
        assert_eq!(s.getxattr(&bp("nope"), ""), Err(Errno::ERANGE));
        assert_eq!(s.getxattr(&bp("nope"), "user.a"), Err(Errno::ENOENT));
        assert_eq!(s.getxattr(&bp("nope/x"), ""), Err(Errno::ENOENT));

        // user.* lives only on regular files and directories.
        s.mkfifo(&bp("p"), 0o600).unwrap();
        assert_eq!(
            s.setxattr(&bp("p"), "user.a", b"", XattrFlags::Any),
            Err(Errno::EPERM)
        );
        assert_eq!(s.getxattr(&bp("p"), "user.a"), Err(Errno::ENODATA));
        s.setxattr(&bp("p"), "trusted.a", b"x", XattrFlags::Any)
            .unwrap();
        s.setxattr(&BrickPath::root(), "trusted.root", b"r", XattrFlags::Any)
            .unwrap();
        assert_eq!(
            s.getxattr(&BrickPath::root(), "trusted.root").unwrap(),
            b"r"
        );

        // One inode's xattrs are bounded.
        let mut i = 0;
        let err = loop {
            match s.setxattr(
                &f,
                &format!("user.big{i}"),
                &vec![1; 64 << 10],
                XattrFlags::Any,
            ) {
                Ok(()) => i += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, Errno::ENOSPC);
        assert!(i < 8);
        check_consistent(&disk);
    }

    #[test]
    fn attributes_and_times() {
        let (_disk, s) = fresh();
        s.mkdir(&bp("d"), 0o2775).unwrap();
        s.set_owner(&bp("d"), 10, 20).unwrap();
        s.set_mode(&bp("d"), 0o2775).unwrap();
        write_file(&s, "d/f", b"x");
        // A set-gid directory hands on its group, and the bit to subdirs.
        assert_eq!(s.lstat(&bp("d/f")).unwrap().gid, 20);
        s.mkdir(&bp("d/sub"), 0o755).unwrap();
        let sub = s.lstat(&bp("d/sub")).unwrap();
        assert_eq!((sub.gid, sub.mode), (20, 0o2755));

        let f = bp("d/f");
        s.set_mode(&f, 0o6755).unwrap();
        assert_eq!(s.lstat(&f).unwrap().mode, 0o6755);
        s.set_owner(&f, 1, 2).unwrap();
        let st = s.lstat(&f).unwrap();
        assert_eq!(
            (st.uid, st.gid, st.mode),
            (1, 2, 0o0755),
            "chown clears set-id bits"
        );
        s.set_mode(&f, 0o12644).unwrap();
        assert_eq!(
            s.lstat(&f).unwrap().mode,
            0o2644,
            "only permission bits are kept"
        );
        assert_eq!(s.set_mode(&bp("nope"), 0o644), Err(Errno::ENOENT));

        let old = Timespec {
            secs: 1000,
            nsecs: 5,
        };
        s.set_times(&f, Some(old), None).unwrap();
        let st = s.lstat(&f).unwrap();
        assert_eq!(st.atime, old);
        assert_ne!(st.mtime, old);
        s.set_times(&f, None, Some(old)).unwrap();
        let st = s.lstat(&f).unwrap();
        assert_eq!((st.atime, st.mtime), (old, old));
        assert!(st.ctime > old);
        assert_eq!(
            s.set_times(&bp("nope"), None, None),
            Ok(()),
            "nothing to do, no lookup"
        );
        assert_eq!(
            s.set_times(&bp("nope"), Some(old), None),
            Err(Errno::ENOENT)
        );
        let bad = Timespec {
            secs: 0,
            nsecs: 1_000_000_000,
        };
        assert_eq!(s.set_times(&f, Some(bad), None), Err(Errno::EINVAL));

        // Data changes move mtime; entry changes move the directory's.
        s.write(&f, 0, b"y").unwrap();
        assert!(s.lstat(&f).unwrap().mtime > old);
        s.set_times(&bp("d"), Some(old), Some(old)).unwrap();
        s.create(&bp("d/g"), 0o644).unwrap();
        assert!(s.lstat(&bp("d")).unwrap().mtime > old);
        s.set_times(&f, None, Some(old)).unwrap();
        s.truncate(&f, 1).unwrap();
        assert!(
            s.lstat(&f).unwrap().mtime > old,
            "truncate to the same size still touches"
        );

        let fs = s.statfs().unwrap();
        assert_eq!(
            (fs.block_size, fs.blocks, fs.files, fs.name_max),
            (4096, 1 << 28, 1 << 32, 255)
        );
        assert!(fs.blocks_free < fs.blocks && fs.files_free < fs.files);
    }

    #[test]
    fn crash_keeps_fsynced_data_byte_exact() {
        let disk = SimDisk::new(5);
        let s = disk.storage("brick").unwrap();
        let mut rng = DetRng::from_seed(17);
        let mut expected = vec![0u8; 20_000];
        rng.fill(&mut expected);
        s.mkdir(&bp("d"), 0o755).unwrap();
        write_file(&s, "d/keep", &expected);
        s.setxattr(&bp("d/keep"), "trusted.k", b"v1", XattrFlags::Any)
            .unwrap();
        s.fsync(&bp("d/keep"), true).unwrap();
        let mut crashes_changed_something = 0;
        for round in 0..200u64 {
            assert_eq!(read_all(&s, "d/keep"), expected, "round {round}");
            assert_eq!(s.getxattr(&bp("d/keep"), "trusted.k").unwrap(), b"v1");

            // New synced data, which must survive from here on.
            let off = rng.below(25_000) as usize;
            let mut chunk = vec![0u8; rng.range_inclusive(1, 3000) as usize];
            rng.fill(&mut chunk);
            s.write(&bp("d/keep"), off as u64, &chunk).unwrap();
            if expected.len() < off + chunk.len() {
                expected.resize(off + chunk.len(), 0);
            }
            expected[off..off + chunk.len()].copy_from_slice(&chunk);
            s.fsync(&bp("d/keep"), round % 2 == 0).unwrap();

            // Unsynced work elsewhere, which the crash may keep or not.
            let name = format!("d/tmp{round}");
            s.create(&bp(&name), 0o644).unwrap();
            s.write(&bp(&name), 0, &chunk).unwrap();
            s.setxattr(
                &bp("d"),
                "trusted.round",
                &round.to_be_bytes(),
                XattrFlags::Any,
            )
            .unwrap();
            if round % 3 == 0 {
                let _ = s.rename(&bp(&name), &bp("d/renamed"));
            }
            let before = disk.stats();
            disk.crash(&mut DetRng::from_seed(round));
            if exists(&s, &name) != (round % 3 != 0) || exists(&s, "d/renamed") {
                crashes_changed_something += 1;
            }
            assert_eq!(disk.stats().crashes, round + 1);
            assert!(before.pending_meta_ops > 0);
            check_quiescent_after_crash(&disk);
        }
        assert_eq!(read_all(&s, "d/keep"), expected);
        assert!(crashes_changed_something > 0);
    }

    #[test]
    fn crash_leaves_unsynced_writes_absent_whole_or_torn_at_sectors() {
        const SIZE: usize = 16_384;
        const W1: (usize, usize) = (1000, 9000);
        const W2LEN: usize = 3000;
        let a = pattern(SIZE, 0);
        // Differs from `a` at every position, so each byte tells its origin.
        let b: Vec<u8> = a[W1.0..W1.0 + W1.1].iter().map(|x| !x).collect();
        let c: Vec<u8> = pattern(W2LEN, 0x5a).iter().map(|x| x | 1).collect();
        let (mut w1_none, mut w1_torn, mut w1_full, mut w2_torn, mut w2_full) = (0, 0, 0, 0, 0);
        for seed in 0..200u64 {
            let disk = SimDisk::new(seed);
            let s = disk.storage("").unwrap();
            write_file(&s, "f", &a);
            s.fsync(&bp("f"), false).unwrap();
            s.write(&bp("f"), W1.0 as u64, &b).unwrap();
            s.write(&bp("f"), SIZE as u64, &c).unwrap();
            assert_eq!(disk.stats().pending_data_ops, 2);
            disk.crash(&mut DetRng::from_seed(seed));
            check_quiescent_after_crash(&disk);

            let got = read_all(&s, "f");
            assert!(got.len() >= SIZE, "seed {seed}: the synced size is kept");
            assert_eq!(got[..W1.0], a[..W1.0], "seed {seed}");
            let t1 = got[W1.0..W1.0 + W1.1]
                .iter()
                .zip(&b)
                .take_while(|(g, w)| g == w)
                .count();
            assert_eq!(
                got[W1.0 + t1..SIZE],
                a[W1.0 + t1..],
                "seed {seed}: after the new bytes, the old ones"
            );
            assert!(t1 == W1.1 || t1 % 512 == 0, "seed {seed}: torn at {t1}");
            let t2 = got.len() - SIZE;
            assert_eq!(
                got[SIZE..],
                c[..t2],
                "seed {seed}: the extension holds written bytes only"
            );
            assert!(
                t2 == W2LEN || t2 % 512 == 0,
                "seed {seed}: extension torn at {t2}"
            );
            assert!(
                t2 == 0 || t1 == W1.1,
                "seed {seed}: a later write never survives an earlier lost one"
            );
            match t1 {
                0 => w1_none += 1,
                t if t == W1.1 => w1_full += 1,
                _ => w1_torn += 1,
            }
            match t2 {
                0 => {}
                t if t == W2LEN => w2_full += 1,
                _ => w2_torn += 1,
            }
        }
        for (what, n) in [
            ("absent", w1_none),
            ("torn", w1_torn),
            ("whole", w1_full),
            ("extension torn", w2_torn),
            ("extension whole", w2_full),
        ] {
            assert!(n > 5, "outcome {what} seen {n} times in 200");
        }
    }

    #[test]
    fn crash_keeps_creates_made_durable_by_a_directory_fsync() {
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..60u64 {
            let disk = SimDisk::new(seed);
            let s = disk.storage("").unwrap();
            s.mkdir(&bp("d"), 0o755).unwrap();
            s.create(&bp("d/durable"), 0o644).unwrap();
            s.fsync(&bp("d"), false).unwrap();
            s.create(&bp("d/maybe"), 0o644).unwrap();
            s.write(&bp("d/maybe"), 0, b"unsynced").unwrap();
            s.mkdir(&bp("d/maybe-dir"), 0o755).unwrap();
            s.create(&bp("d/maybe-dir/inner"), 0o644).unwrap();
            disk.crash(&mut DetRng::from_seed(seed));
            check_quiescent_after_crash(&disk);
            assert!(exists(&s, "d/durable"), "seed {seed}");
            if exists(&s, "d/maybe") {
                kept += 1;
                let data = read_all(&s, "d/maybe");
                assert!(
                    data.is_empty() || data == b"unsynced",
                    "seed {seed}: {data:?}"
                );
            } else {
                lost += 1;
                assert!(
                    !exists(&s, "d/maybe-dir"),
                    "seed {seed}: journal order is kept"
                );
            }
        }
        assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");

        // fsync of a file commits the journal too, its creation included.
        let disk = SimDisk::new(3);
        let s = disk.storage("").unwrap();
        write_file(&s, "f", b"synced");
        s.fsync(&bp("f"), true).unwrap();
        disk.crash(&mut DetRng::from_seed(3));
        assert_eq!(read_all(&s, "f"), b"synced");
    }

    #[test]
    fn crash_can_bring_back_an_unsynced_unlink_with_its_data() {
        let (mut back, mut gone) = (0, 0);
        for seed in 0..40u64 {
            let disk = SimDisk::new(seed);
            let s = disk.storage("").unwrap();
            write_file(&s, "f", b"durable");
            s.fsync(&bp("f"), false).unwrap();
            s.write(&bp("f"), 0, b"DUR").unwrap();
            s.unlink(&bp("f")).unwrap();
            assert_eq!(disk.stats().data_bytes, 0);
            disk.crash(&mut DetRng::from_seed(seed));
            check_quiescent_after_crash(&disk);
            if exists(&s, "f") {
                back += 1;
                let data = read_all(&s, "f");
                assert!(
                    data == b"durable" || data == b"DURable",
                    "seed {seed}: {data:?}"
                );
            } else {
                gone += 1;
                assert!(
                    disk.lock().files.is_empty(),
                    "the data of a freed inode is dropped"
                );
            }
        }
        assert!(back > 0 && gone > 0, "back {back}, gone {gone}");
    }

    #[test]
    fn crash_makes_a_cross_directory_rename_all_or_nothing() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..100u64 {
            let disk = SimDisk::new(seed);
            let s = disk.storage("").unwrap();
            s.mkdir(&bp("a"), 0o755).unwrap();
            s.mkdir(&bp("b"), 0o755).unwrap();
            write_file(&s, "a/f", b"moving");
            write_file(&s, "a/g", b"new");
            write_file(&s, "b/g", b"old");
            for p in ["a/f", "a/g", "b/g", "a", "b"] {
                s.fsync(&bp(p), false).unwrap();
            }
            // Other journal entries around the renames, so the cut falls
            // before, between and after them.
            s.setxattr(&bp("a"), "trusted.x", b"1", XattrFlags::Any)
                .unwrap();
            s.rename(&bp("a/f"), &bp("b/f")).unwrap();
            s.create(&bp("a/between"), 0o644).unwrap();
            s.rename(&bp("a/g"), &bp("b/g")).unwrap();
            s.create(&bp("b/after"), 0o644).unwrap();
            disk.crash(&mut DetRng::from_seed(seed));
            check_quiescent_after_crash(&disk);

            let (in_a, in_b) = (exists(&s, "a/f"), exists(&s, "b/f"));
            assert!(in_a != in_b, "seed {seed}: in a {in_a}, in b {in_b}");
            let moved = if in_a { "a/f" } else { "b/f" };
            assert_eq!(read_all(&s, moved), b"moving", "seed {seed}");
            // The replacing rename: either both old names or the new file
            // under the old name, never a missing `b/g`.
            let second = match (exists(&s, "a/g"), read_all(&s, "b/g").as_slice()) {
                (true, b"old") => false,
                (false, b"new") => true,
                (a, g) => panic!("seed {seed}: a/g exists {a}, b/g holds {g:?}"),
            };
            assert!(!second || in_b, "seed {seed}: journal order is kept");
            assert_eq!(
                s.readdir(&bp("b"))
                    .unwrap()
                    .iter()
                    .filter(|e| e.name == "g")
                    .count(),
                1
            );
            outcomes.insert((in_b, second));
        }
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    }

    #[test]
    fn lost_xattr_updates_are_visible_then_gone_after_a_crash() {
        for seed in 0..10u64 {
            let disk = SimDisk::new(seed);
            let s = disk.storage("").unwrap();
            write_file(&s, "f", b"");
            let f = bp("f");
            s.setxattr(&f, "trusted.k", b"v1", XattrFlags::Any).unwrap();
            s.setxattr(&f, "trusted.gone", b"g", XattrFlags::Any)
                .unwrap();
            s.fsync(&f, false).unwrap();

            disk.set_faults(SimFaults {
                lose_xattr_updates: 3,
                ..SimFaults::default()
            });
            s.setxattr(&f, "trusted.k", b"v2", XattrFlags::Any).unwrap();
            s.removexattr(&f, "trusted.gone").unwrap();
            s.setxattr(&f, "trusted.new", b"n", XattrFlags::Any)
                .unwrap();
            assert_eq!(disk.faults().lose_xattr_updates, 0);
            // The fourth update is an ordinary one.
            s.setxattr(&f, "trusted.kept", b"y", XattrFlags::Any)
                .unwrap();
            assert_eq!(s.getxattr(&f, "trusted.k").unwrap(), b"v2");
            assert_eq!(s.getxattr(&f, "trusted.gone"), Err(Errno::ENODATA));
            assert_eq!(s.getxattr(&f, "trusted.new").unwrap(), b"n");
            s.fsync(&f, false).unwrap();
            s.fsync(&BrickPath::root(), false).unwrap();
            assert_eq!(
                s.getxattr(&f, "trusted.k").unwrap(),
                b"v2",
                "still visible before the crash"
            );

            disk.crash(&mut DetRng::from_seed(seed));
            check_quiescent_after_crash(&disk);
            assert_eq!(s.getxattr(&f, "trusted.k").unwrap(), b"v1", "seed {seed}");
            assert_eq!(s.getxattr(&f, "trusted.gone").unwrap(), b"g", "seed {seed}");
            assert_eq!(
                s.getxattr(&f, "trusted.new"),
                Err(Errno::ENODATA),
                "seed {seed}"
            );
            assert_eq!(s.getxattr(&f, "trusted.kept").unwrap(), b"y", "seed {seed}");
        }
    }

    #[test]
    fn read_and_write_errors_are_injected() {
        let (disk, s) = fresh();
        write_file(&s, "f", b"contents");
        let f = bp("f");
        disk.set_faults(SimFaults {
            read_eio: 1.0,
            ..SimFaults::default()
        });
        assert_eq!(s.read(&f, 0, 8), Err(Errno::EIO));
        assert!(s.lstat(&f).is_ok(), "metadata reads are not data reads");
        disk.set_faults(SimFaults {
            write_eio: 1.0,
            ..SimFaults::default()
        });
        assert_eq!(s.write(&f, 0, b"XXXX"), Err(Errno::EIO));
        assert_eq!(s.truncate(&f, 2), Err(Errno::EIO));
        assert_eq!(s.write(&f, 100, b"grow"), Err(Errno::EIO));
        assert_eq!(
            read_all(&s, "f"),
            b"contents",
            "a failed write changes nothing"
        );
        assert_eq!(disk.stats().data_bytes, 8);

        disk.set_faults(SimFaults {
            read_eio: 0.5,
            write_eio: 0.5,
            ..SimFaults::default()
        });
        let reads: Vec<bool> = (0..100).map(|_| s.read(&f, 0, 8).is_ok()).collect();
        let writes: Vec<bool> = (0..100).map(|_| s.write(&f, 0, b"c").is_ok()).collect();
        assert!(reads.iter().any(|ok| *ok) && reads.iter().any(|ok| !*ok));
        assert!(writes.iter().any(|ok| *ok) && writes.iter().any(|ok| !*ok));
        check_consistent(&disk);
    }

    #[test]
    fn capacity_gives_enospc() {
        let (disk, s) = fresh();
        disk.set_faults(SimFaults {
            capacity_bytes: Some(10_000),
            ..SimFaults::default()
        });
        let f = bp("f");
        write_file(&s, "f", &[1; 8000]);
        assert_eq!(s.write(&f, 8000, &[2; 3000]), Err(Errno::ENOSPC));
        assert_eq!(s.lstat(&f).unwrap().size, 8000);
        s.write(&f, 0, &[3; 8000]).unwrap();
        assert_eq!(s.truncate(&f, 20_000), Err(Errno::ENOSPC));
        s.truncate(&f, 10_000).unwrap();
        assert_eq!(s.create(&bp("g"), 0o644), Err(Errno::ENOSPC));
        assert_eq!(s.mkdir(&bp("d"), 0o755), Err(Errno::ENOSPC));
        assert_eq!(s.symlink("t", &bp("l")), Err(Errno::ENOSPC));
        assert_eq!(
            s.create(&f, 0o644),
            Err(Errno::EEXIST),
            "EEXIST before ENOSPC"
        );
        let fs = s.statfs().unwrap();
        assert_eq!((fs.blocks, fs.blocks_free), (2, 0));
        s.truncate(&f, 5000).unwrap();
        s.create(&bp("g"), 0o644).unwrap();
        s.write(&bp("g"), 0, &[4; 5000]).unwrap();
        assert_eq!(s.write(&bp("g"), 5000, b"x"), Err(Errno::ENOSPC));
        s.unlink(&f).unwrap();
        s.write(&bp("g"), 5000, b"x").unwrap();
        assert_eq!(disk.stats().data_bytes, 5001);
        check_consistent(&disk);
    }

    #[test]
    fn latent_errors_fail_overlapping_reads_until_rewritten() {
        let disk = SimDisk::new(2);
        let s = disk.storage("bricks/b1").unwrap();
        write_file(&s, "f", &[9; 10_000]);
        let f = bp("f");
        disk.add_latent_error("bricks/b1/f", 4096, 100).unwrap();
        assert_eq!(disk.add_latent_error("bricks/b1", 0, 1), Err(Errno::EISDIR));
        assert_eq!(
            disk.add_latent_error("bricks/b1/nope", 0, 1),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            disk.add_latent_error("bricks/b1/f", u64::MAX, 2),
            Err(Errno::EINVAL)
        );

        assert_eq!(s.read(&f, 0, 4096).unwrap().len(), 4096);
        assert_eq!(s.read(&f, 4196, 1000).unwrap().len(), 1000);
        assert_eq!(s.read(&f, 4000, 200), Err(Errno::EIO));
        assert_eq!(s.read(&f, 4195, 1), Err(Errno::EIO));
        assert_eq!(s.read(&f, 0, 20_000), Err(Errno::EIO));
        // Survives a crash: it is the medium's, not the cache's.
        s.fsync(&f, false).unwrap();
        disk.crash(&mut DetRng::from_seed(1));
        assert_eq!(s.read(&f, 4096, 1), Err(Errno::EIO));

        // Rewriting part of the range heals only that part.
        s.write(&f, 4096, &[1; 50]).unwrap();
        assert_eq!(s.read(&f, 4096, 50).unwrap().len(), 50);
        assert_eq!(s.read(&f, 4100, 100), Err(Errno::EIO));
        s.write(&f, 4146, &[2; 50]).unwrap();
        let all = read_all(&s, "f");
        assert_eq!(all.len(), 10_000);
        assert_eq!((all[4096], all[4146], all[4196]), (1, 2, 9));

        // Truncating the range away clears it too.
        disk.add_latent_error("bricks/b1/f", 9000, 500).unwrap();
        assert_eq!(s.read(&f, 8999, 2), Err(Errno::EIO));
        s.truncate(&f, 9000).unwrap();
        s.truncate(&f, 10_000).unwrap();
        assert_eq!(s.read(&f, 8999, 2).unwrap().to_vec(), vec![9, 0]);
    }

    #[test]
    fn views_are_isolated_and_durable() {
        let disk = SimDisk::new(4);
        let whole = disk.storage("").unwrap();
        let b1 = disk.storage("bricks/b1").unwrap();
        let b2 = disk.storage("bricks/b2").unwrap();
        assert_eq!(b1.describe(), "simdisk:/bricks/b1");
        write_file(&b1, "x", b"one");
        write_file(&b2, "x", b"two");
        assert_eq!(read_all(&b1, "x"), b"one");
        assert_eq!(read_all(&b2, "x"), b"two");
        assert_eq!(read_all(&whole, "bricks/b1/x"), b"one");
        assert!(
            !exists(&b1, "bricks"),
            "paths are relative to the view's root"
        );
        assert_eq!(b1.rmdir(&BrickPath::root()), Err(Errno::EINVAL));
        assert_eq!(b1.rename(&BrickPath::root(), &bp("y")), Err(Errno::EINVAL));
        assert_eq!(b1.readdir(&BrickPath::root()).unwrap().len(), 1);

        // The view roots were made durably; nothing else was synced.
        disk.crash(&mut DetRng::from_seed(0));
        assert!(b1.lstat(&BrickPath::root()).is_ok() && b2.lstat(&BrickPath::root()).is_ok());
        assert!(b1.statfs().is_ok());
        // Opening an existing view again creates nothing.
        let again = disk.storage("bricks/b1").unwrap();
        assert_eq!(disk.stats().pending_meta_ops, 0);
        assert_eq!(
            again.lstat(&BrickPath::root()).unwrap().ino,
            b1.lstat(&BrickPath::root()).unwrap().ino
        );

        // A view whose root went away fails, and roots are never followed
        // through symlinks or files.
        let _ = b2.unlink(&bp("x"));
        whole.rmdir(&bp("bricks/b2")).unwrap();
        assert_eq!(b2.lstat(&BrickPath::root()), Err(Errno::ENOENT));
        assert_eq!(b2.create(&bp("y"), 0o644), Err(Errno::ENOENT));
        assert_eq!(b2.statfs(), Err(Errno::ENOENT));
        whole.symlink("bricks", &bp("ln")).unwrap();
        assert!(matches!(disk.storage("ln/b1"), Err(Errno::ELOOP)));
        write_file(&whole, "file", b"");
        assert!(matches!(disk.storage("file/b"), Err(Errno::ENOTDIR)));
        assert!(matches!(disk.storage("/abs"), Err(Errno::EINVAL)));
        check_consistent(&disk);
    }

    #[test]
    fn random_workload_with_crashes_keeps_the_tree_consistent() {
        let disk = SimDisk::new(11);
        let s = disk.storage("").unwrap();
        let mut rng = DetRng::from_seed(23);
        let names = [
            "a", "b", "c", "d/a", "d/b", "d/e/a", "e", "d/e", "d", "d/e/b",
        ];
        let mut ok = 0;
        for step in 0..3000u32 {
            let p = bp(names[rng.below(names.len() as u64) as usize]);
            let q = bp(names[rng.below(names.len() as u64) as usize]);
            let r = match rng.below(12) {
                0 => s.mkdir(&p, 0o755),
                1 | 2 => s.create(&p, 0o644),
                3 => s.unlink(&p),
                4 => s.rmdir(&p),
                5 | 6 => s.rename(&p, &q),
                7 => s.link(&p, &q),
                8 => s.symlink("d", &p),
                9 => s.write(&p, rng.below(10_000), &[step as u8; 700]),
                10 => s.truncate(&p, rng.below(10_000)),
                _ => s.fsync(&p, false),
            };
            ok += r.is_ok() as u32;
            if step % 100 == 99 {
                check_consistent(&disk);
                disk.crash(&mut DetRng::from_seed(u64::from(step)));
                check_quiescent_after_crash(&disk);
            }
        }
        assert!(
            ok > 300,
            "the workload must mostly do things: {ok} succeeded"
        );
    }

    #[test]
    fn one_seed_gives_one_history() {
        /// Every call's result, then what survived the crash.
        struct History {
            results: Vec<SResult<()>>,
            listing: SResult<Vec<DirEntry>>,
            contents: Vec<SResult<Bytes>>,
        }
        let run = |seed: u64| -> History {
            let disk = SimDisk::new(seed);
            let s = disk.storage("b").unwrap();
            disk.set_faults(SimFaults {
                write_eio: 0.3,
                ..SimFaults::default()
            });
            let mut results = Vec::new();
            for i in 0..50u8 {
                let p = bp(&format!("f{}", i % 7));
                results.push(s.create(&p, 0o644));
                results.push(s.write(&p, u64::from(i) * 100, &[i; 1500]));
                if i % 5 == 0 {
                    results.push(s.fsync(&p, false));
                }
            }
            disk.crash(&mut DetRng::from_seed(seed ^ 0xfeed));
            History {
                results,
                listing: s.readdir(&BrickPath::root()),
                contents: (0..7)
                    .map(|i| s.read(&bp(&format!("f{i}")), 0, 1 << 20))
                    .collect(),
            }
        };
        let (a, b, c) = (run(8), run(8), run(9));
        assert_eq!(
            (&a.results, &a.listing, &a.contents),
            (&b.results, &b.listing, &b.contents)
        );
        assert_ne!((&a.results, &a.contents), (&c.results, &c.contents));
        assert!(a.results.iter().any(|r| r.is_err()) && a.results.iter().any(|r| r.is_ok()));
    }

    #[test]
    fn pending_queues_are_bounded() {
        let (disk, s) = fresh();
        write_file(&s, "f", b"");
        s.fsync(&bp("f"), false).unwrap();
        for i in 0..5000u64 {
            s.write(&bp("f"), i, &[1]).unwrap();
        }
        let st = disk.stats();
        assert_eq!(st.pending_data_ops, PENDING_DATA_OPS_MAX as u64);
        assert_eq!(
            st.pending_meta_ops, 1,
            "one file's writes share one journal entry"
        );
        disk.crash(&mut DetRng::from_seed(0));
        let size = s.lstat(&bp("f")).unwrap().size;
        assert!(
            size >= 5000 - PENDING_DATA_OPS_MAX as u64,
            "written back early: {size}"
        );

        // Bytes bound too: one big write is written back at once.
        s.write(&bp("f"), 0, &vec![2; (PENDING_DATA_BYTES_MAX + 1) as usize])
            .unwrap();
        assert_eq!(disk.stats().pending_data_ops, 0);
        s.truncate(&bp("f"), 0).unwrap();
        s.fsync(&bp("f"), false).unwrap();

        for i in 0..(META_LOG_OPS_MAX as u32 + 10) {
            s.set_mode(&bp("f"), 0o600 | (i & 0o77)).unwrap();
        }
        assert!(disk.stats().pending_meta_ops <= META_LOG_OPS_MAX as u64);
        assert!(
            disk.stats().pending_meta_ops < 100,
            "the journal was committed on its own"
        );
    }

    #[test]
    fn sim_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SimDisk>();
        assert_send_sync::<SimStorage>();
        let _: Box<dyn Storage> = Box::new(fresh().1);
    }
}
