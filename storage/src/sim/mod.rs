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
//!   data operations (writes, truncates, punched holes) since they were last made
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

mod data;
mod disk;
mod meta;
#[cfg(test)]
mod tests;
mod view;

use data::{DataOp, FileData};
use disk::Inner;
use meta::{apply_meta, free_unreachable, AttrChange, Content, Logged, Meta, MetaOp, Node};

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
// A torn write is cut at sector boundaries inside pages, and a fast
// symlink's target must fit in less than one block.
const _: () = assert!(PAGE_BYTES as u64 % SECTOR_BYTES == 0);
const _: () = assert!(FAST_SYMLINK_BYTES_MAX < PAGE_BYTES);

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
