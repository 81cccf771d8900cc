//! The brick program: file operations a client (or the self-heal daemon)
//! sends to one brick.
//!
//! Entries are addressed by (parent gfid, name) and inodes by gfid, as in
//! the original system, so operations keep working across renames and the
//! client never sends a path the brick would have to trust. Creating
//! operations carry the gfid the client chose, so every brick of a replica
//! set gives one file the same identity.

use serde::{Deserialize, Serialize};

use crate::{Attr, FileKind, FopError, Gfid, Timespec};

/// The brick's program number on the messenger.
pub const PROGRAM_BRICK: u16 = 0x4252;

/// Longest name of one directory entry, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Longest path a brick will build (directory depth × names).
pub const PATH_BYTES_MAX: usize = 4096;
/// Largest single read or write.
pub const IO_BYTES_MAX: u64 = 8 << 20;
/// Largest file a brick stores (offset + length of any write).
pub const FILE_BYTES_MAX: u64 = 1 << 44;
/// Longest symlink target.
pub const SYMLINK_TARGET_BYTES_MAX: usize = 4095;
pub const XATTR_NAME_BYTES_MAX: usize = 255;
pub const XATTR_VALUE_BYTES_MAX: usize = 64 << 10;
/// Most entries one readdir page returns.
pub const READDIR_ENTRIES_MAX: u32 = 4096;
/// Most counters one xattrop may change.
pub const XATTROP_KEYS_MAX: usize = 64;
/// Most names one [`GetxattrMany`] reads (a changelog per brick of the
/// widest set, and more).
pub const GETXATTR_NAMES_MAX: usize = 64;
/// The block data heal compares by checksum: small enough that a few
/// changed bytes cost little to copy, large enough that a 1 GiB file is
/// 8192 checksums (about 340 KiB of replies).
pub const HEAL_BLOCK_BYTES: u64 = 128 << 10;
/// Most blocks one [`Rchecksum`] covers: 64 of [`HEAL_BLOCK_BYTES`] is
/// 8 MiB read per request, the bound a single read has.
pub const RCHECKSUM_BLOCKS_MAX: u64 = 64;
// One request reads at most what one read may.
const _: () = assert!(HEAL_BLOCK_BYTES * RCHECKSUM_BLOCKS_MAX <= IO_BYTES_MAX);

/// Every reply is this: the operation's result or an errno with detail.
pub type FopResult<T> = Result<T, FopError>;

/// A request type and the procedure that carries it.
pub trait BrickRequest: Serialize + serde::de::DeserializeOwned {
    const PROC: u16;
    type Reply: Serialize + serde::de::DeserializeOwned;
}

macro_rules! requests {
    ($($proc:literal $name:ident -> $reply:ty;)*) => {
        /// Procedure numbers, for dispatch and logs. Named after their
        /// request types so `procs::Lookup` reads as what it carries.
        #[allow(non_upper_case_globals)]
        pub mod procs {
            $(pub const $name: u16 = $proc;)*
        }
        $(impl BrickRequest for $name {
            const PROC: u16 = $proc;
            type Reply = $reply;
        })*
        /// The name of a procedure, for logs and errors.
        pub fn proc_name(p: u16) -> &'static str {
            match p {
                $($proc => stringify!($name),)*
                _ => "unknown",
            }
        }
    };
}

/// First call on a connection: who the client is and which brick it
/// expects. Everything else is refused until this succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub volume_id: String,
    /// Unique per client process; lock owners are scoped by it.
    pub client_id: String,
    /// For logs and lock dumps.
    pub client_name: String,
    /// The brick the client means (as the port map names it); the brick
    /// refuses a client that meant another one, which a port reused
    /// after a restart would otherwise hand it. Empty: whichever brick
    /// serves the port (tools that address a port directly).
    pub brick_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectReply {
    pub brick_path: String,
    pub volume_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub parent: Gfid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub gfid: Gfid,
}

/// Ownership and permissions for a new object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    pub gfid: Gfid,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Create a regular file; fails with EEXIST if the name exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub parent: Gfid,
    pub name: String,
    pub new: NewObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mkdir {
    pub parent: Gfid,
    pub name: String,
    pub new: NewObject,
}

/// Create a FIFO (the only special file a brick stores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mknod {
    pub parent: Gfid,
    pub name: String,
    pub new: NewObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symlink {
    pub parent: Gfid,
    pub name: String,
    pub target: String,
    pub new: NewObject,
}

/// A new name for an existing non-directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub gfid: Gfid,
    pub new_parent: Gfid,
    pub new_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlink {
    pub parent: Gfid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rmdir {
    pub parent: Gfid,
    pub name: String,
}

/// Rename, replacing a target of a compatible kind as POSIX rename does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    pub old_parent: Gfid,
    pub old_name: String,
    pub new_parent: Gfid,
    pub new_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readlink {
    pub gfid: Gfid,
}

/// Check that a file can be opened for reading (and writing); bricks keep
/// no per-open state, so this validates and returns the attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub gfid: Gfid,
    pub write: bool,
}

/// Read `len` bytes at `offset`; the data is the reply's payload (shorter
/// at end of file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub gfid: Gfid,
    pub offset: u64,
    pub len: u64,
}

/// Write the request's payload at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub gfid: Gfid,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    pub written: u64,
    pub size: u64,
}

/// Checksum `len` bytes at `offset` in blocks of `block_size` bytes (the
/// last one shorter at the end of the range or of the file), for data heal
/// to find the blocks two copies hold differently without moving them.
/// At most [`RCHECKSUM_BLOCKS_MAX`] blocks and [`IO_BYTES_MAX`] bytes;
/// `block_size` from 1 to [`IO_BYTES_MAX`]; anything else is `EINVAL`.
/// Runs on the brick's blocking pool like a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rchecksum {
    pub gfid: Gfid,
    pub offset: u64,
    pub len: u64,
    pub block_size: u64,
}

/// One block's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockChecksum {
    /// Bytes of the file in this block: `block_size`, less at the end of
    /// the file or of the range.
    pub len: u64,
    /// Every byte is zero (holes read as zeros).
    pub zero: bool,
    /// SHA-256 of the block's bytes. Heal skips a block whose digest and
    /// length match, so the digest must make a false match practically
    /// impossible: a 32-bit CRC over millions of blocks would not.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RchecksumReply {
    /// The file's size when it was read. Blocks stop there: a range past
    /// the end has fewer blocks, or none.
    pub size: u64,
    pub blocks: Vec<BlockChecksum>,
}

/// Make `len` bytes at `offset` read as zeros, giving their blocks back
/// to the disk where it can (a hole); the size does not change. `EINVAL`
/// for `len` 0, `EFBIG` past [`FILE_BYTES_MAX`], `EOPNOTSUPP` where the
/// brick's filesystem cannot make holes (then write zeros instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discard {
    pub gfid: Gfid,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncate {
    pub gfid: Gfid,
    pub size: u64,
}

/// Make a file's (or directory's) data and metadata durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fsync {
    pub gfid: Gfid,
    pub datasync: bool,
}

/// Change what is `Some`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setattr {
    pub gfid: Gfid,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
}

/// One page of a directory, in name order, after the entry named by
/// `after` (None: from the start). `.` and `..` are not returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readdir {
    pub dir: Gfid,
    pub after: Option<String>,
    pub max_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaddirReply {
    pub entries: Vec<DirEntry>,
    /// No entries after this page.
    pub eof: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Getxattr {
    pub gfid: Gfid,
    pub name: String,
}

/// Several xattrs of one file in one round trip (heal and the replicate
/// layer read a file's changelog counters this way): each name's value in
/// the order asked, `None` where the file has no such xattr. At most
/// [`GETXATTR_NAMES_MAX`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetxattrMany {
    pub gfid: Gfid,
    pub names: Vec<String>,
}

/// The same xattrs of several files in one round trip (heal info judges a
/// whole index listing's changelog counters this way): per gfid `None`
/// where the brick holds no such file, else each name's value in the
/// order asked, `None` where absent. At most [`GETXATTR_FILES_MAX`] gfids
/// and [`GETXATTR_NAMES_MAX`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetxattrFiles {
    pub gfids: Vec<Gfid>,
    pub names: Vec<String>,
}

/// A [`GetxattrFiles`] answer: per file, `None` where the brick holds no
/// such file, else each name's value (`None` where absent).
pub type FileValues = Vec<Option<Vec<Option<Vec<u8>>>>>;

/// Most files one [`GetxattrFiles`] reads (an index page).
pub const GETXATTR_FILES_MAX: usize = 512;

/// What kind of object each of several gfids is on this brick, `None`
/// where the brick holds no object of that gfid, in the order asked; at
/// most [`GFID_KINDS_MAX`]. Heal asks this of a whole index listing (its
/// directories are healed first) and of the names a stale copy lacks (a
/// gfid it holds elsewhere is moved or linked, not made anew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GfidKinds {
    pub gfids: Vec<Gfid>,
}

/// Most gfids one [`GfidKinds`] asks about (an index page).
pub const GFID_KINDS_MAX: usize = 512;

/// A small file whole in one round trip: its attributes, its user xattrs
/// and, when it holds at most `len_max` bytes (at most
/// [`WHOLE_BYTES_MAX`]), its data as the reply's payload. Entry heal reads
/// a source's new file this way and makes the copy with [`CreateWhole`].
/// A file with more than [`WHOLE_XATTRS_MAX`] user xattrs, or more than
/// [`WHOLE_XATTR_BYTES_MAX`] bytes of them, is refused with `E2BIG` (the
/// caller reads it piece by piece).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadWhole {
    pub gfid: Gfid,
    pub len_max: u32,
}

/// A [`ReadWhole`] answer; the data, when `data` says it is there, is the
/// reply's payload, `attr.size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whole {
    pub attr: Attr,
    /// Every `user.` xattr, by name.
    pub user_xattrs: Vec<(String, Vec<u8>)>,
    /// The payload is the file's data (its size is at most `len_max`).
    pub data: bool,
}

/// Make a regular file whole in one round trip: created as [`Create`]
/// does, with the request's payload as its data (chunks of zeros left as
/// holes), `user_xattrs` set, then `atime` and `mtime`, made durable, and
/// only then given its name, so the name never shows a part-made file.
/// At most [`WHOLE_BYTES_MAX`] bytes of data and the xattr limits of
/// [`ReadWhole`]. With `sync_dir` false the name itself is not made
/// durable: the caller fsyncs the directory (once for many names) before
/// anything relies on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWhole {
    pub parent: Gfid,
    pub name: String,
    pub new: NewObject,
    pub user_xattrs: Vec<(String, Vec<u8>)>,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub sync_dir: bool,
    /// False: the file is not fsynced either; the caller makes it durable
    /// with an [`XattropMany`] (one filesystem sync for many files) before
    /// anything relies on it.
    pub sync_file: bool,
}

/// Many [`Xattrop`]s (each on a different gfid; their own `durable` is
/// not looked at) made durable together: every op's index entry that must
/// come first is added, then one sync of the brick's filesystem if any
/// was, then every op's counters are written, then one sync (also when
/// `ops` is empty: everything written to the brick before is then
/// durable), then the index entries of files left with no pending counter
/// are removed. One sync instead of one fsync per file: heal clears the
/// counters of a window of files this way. Per op, its new values or its
/// error. At most [`XATTROP_MANY_MAX`] ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XattropMany {
    pub ops: Vec<Xattrop>,
}

/// Most ops one [`XattropMany`] carries.
pub const XATTROP_MANY_MAX: usize = 512;

/// An [`XattropMany`] answer: per op, in order.
pub type XattropResults = Vec<Result<Vec<(String, CounterDelta)>, FopError>>;

/// Most data one [`ReadWhole`] returns or one [`CreateWhole`] writes.
pub const WHOLE_BYTES_MAX: u32 = 128 << 10;
/// Most user xattrs one [`ReadWhole`] or [`CreateWhole`] carries.
pub const WHOLE_XATTRS_MAX: usize = 64;
/// Most bytes of user xattr names and values one [`ReadWhole`] or
/// [`CreateWhole`] carries.
pub const WHOLE_XATTR_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrFlags {
    Any,
    /// Fail with EEXIST if it exists.
    Create,
    /// Fail with ENODATA if it does not exist.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setxattr {
    pub gfid: Gfid,
    pub name: String,
    pub value: Vec<u8>,
    pub flags: XattrFlags,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removexattr {
    pub gfid: Gfid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listxattr {
    pub gfid: Gfid,
}

/// Deltas for one counter xattr: the value is an array of big-endian
/// integers of one width; each delta is added to the element at its index
/// (a missing xattr counts as zeros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterDelta {
    Add32(Vec<i32>),
    Add64(Vec<i64>),
}

/// Atomically add to counters and return their new values. Changelog
/// counters (`trusted.mortar.changelog.*`, `trusted.mortar.dirty`) also
/// maintain the pending-heal index. With `durable`, the change is on disk
/// before the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattrop {
    pub gfid: Gfid,
    pub deltas: Vec<(String, CounterDelta)>,
    pub durable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

/// Who holds a lock: the connection's client id plus the client's own
/// owner number (one per transaction).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    pub client_id: String,
    pub owner: u64,
}

/// Byte-range lock on an inode within a lock domain. `len` 0 means to the
/// end of the file. With `wait_ms`, a conflicting request waits that long
/// (then EAGAIN); without, it fails at once with EAGAIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inodelk {
    pub gfid: Gfid,
    pub domain: String,
    pub kind: LockKind,
    pub start: u64,
    pub len: u64,
    pub owner: u64,
    pub wait_ms: Option<u64>,
}

/// Lock one name in a directory (or the whole directory when `name` is
/// None) within a lock domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entrylk {
    pub parent: Gfid,
    pub name: Option<String>,
    pub domain: String,
    pub kind: LockKind,
    pub owner: u64,
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statfs {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatfsReply {
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u64,
}

/// Every lock held or awaited on the brick, for diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDump {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockTarget {
    Inode { gfid: Gfid, start: u64, len: u64 },
    Entry { parent: Gfid, name: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub domain: String,
    pub target: LockTarget,
    pub kind: LockKind,
    pub owner: LockOwner,
    pub client_name: String,
    /// Unix seconds when granted (held) or requested (waiting).
    pub since: u64,
    pub granted: bool,
}

/// Page through the pending-heal index: gfids whose changelog counters are
/// not all zero, in gfid order after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexList {
    pub after: Option<Gfid>,
    pub max_entries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexListReply {
    pub gfids: Vec<Gfid>,
    pub eof: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCount {}

requests! {
    1 Connect -> ConnectReply;
    2 Lookup -> Attr;
    3 Stat -> Attr;
    4 Create -> Attr;
    5 Mkdir -> Attr;
    6 Mknod -> Attr;
    7 Symlink -> Attr;
    8 Link -> Attr;
    9 Unlink -> ();
    10 Rmdir -> ();
    11 Rename -> ();
    12 Readlink -> String;
    13 Open -> Attr;
    14 Read -> ();
    15 Write -> WriteReply;
    16 Truncate -> Attr;
    17 Fsync -> ();
    18 Setattr -> Attr;
    19 Readdir -> ReaddirReply;
    20 Getxattr -> Vec<u8>;
    21 Setxattr -> ();
    22 Removexattr -> ();
    23 Listxattr -> Vec<String>;
    24 Xattrop -> Vec<(String, CounterDelta)>;
    25 Inodelk -> ();
    26 Entrylk -> ();
    27 Statfs -> StatfsReply;
    28 LockDump -> Vec<LockInfo>;
    29 IndexList -> IndexListReply;
    30 IndexCount -> u64;
    31 Rchecksum -> RchecksumReply;
    32 Discard -> ();
    33 GetxattrMany -> Vec<Option<Vec<u8>>>;
    34 GfidKinds -> Vec<Option<FileKind>>;
    35 GetxattrFiles -> FileValues;
    36 ReadWhole -> Whole;
    37 CreateWhole -> Attr;
    38 XattropMany -> XattropResults;
}

/// Xattr names live in [`crate::xattr`]; kept here for the brick's callers.
pub use crate::xattr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedures_are_distinct_and_named() {
        assert_eq!(proc_name(procs::Lookup), "Lookup");
        assert_eq!(<Write as BrickRequest>::PROC, 15);
        assert_eq!(proc_name(999), "unknown");
        let mut seen = std::collections::BTreeSet::new();
        // Numbers are the wire: new procedures only ever append.
        assert_eq!(procs::IndexCount, 30);
        assert_eq!(procs::Rchecksum, 31);
        assert_eq!(procs::Discard, 32);
        assert_eq!(procs::GetxattrMany, 33);
        assert_eq!(procs::GfidKinds, 34);
        assert_eq!(procs::GetxattrFiles, 35);
        assert_eq!(procs::ReadWhole, 36);
        assert_eq!(procs::CreateWhole, 37);
        assert_eq!(procs::XattropMany, 38);
        for p in 1..=38u16 {
            assert_ne!(proc_name(p), "unknown", "gap at {p}");
            assert!(seen.insert(proc_name(p)));
        }
    }

    #[test]
    fn changelog_names() {
        assert!(xattr::is_changelog("trusted.mortar.changelog.vol-client-0"));
        assert!(xattr::is_changelog(xattr::DIRTY));
        assert!(!xattr::is_changelog("trusted.mortar.gfid"));
        assert!(!xattr::is_changelog("user.changelog"));
    }
}
