//! `mortar-storage`: what a brick needs from a disk, and the disks.
//!
//! Owns the [`Storage`] trait (a small, POSIX-shaped, synchronous
//! interface over paths inside a brick), the validated [`BrickPath`], the
//! POSIX backend [`posix::PosixStorage`] (a directory on a local
//! filesystem) and, behind the `sim-disk` feature, the simulated disk
//! `sim::SimDisk` (in memory, with crash and fault injection). One
//! conformance suite (`storage/tests/conformance.rs`) runs every test body
//! on both backends.
//!
//! It must never depend on bricks (`mortar-node`: handles, gfids,
//! changelog counters, the heal index), on volumes or the management
//! daemon, or on the network. From `mortar-proto` it takes only the
//! vocabulary a disk speaks (`Errno`, `FileKind`, `Timespec`, `XattrFlags`, the statfs figures
//! and the protocol's name, path and xattr limits). `mortar-net` is an
//! optional dependency used only by the simulated disk, for the runtime
//! clock and the seeded generator that make it deterministic; production
//! builds, which leave `sim-disk` off, do not link it through here.
//!
//! Semantics every backend keeps:
//! * Paths are [`BrickPath`]s: relative, normal components only. No
//!   operation ever follows a symlink, at any position: a symlink where a
//!   directory is needed is `ELOOP`; a symlink as the final component is
//!   operated on itself (lstat semantics).
//! * A missing component is `ENOENT`; a non-directory where a directory is
//!   needed is `ENOTDIR`.
//! * Nothing is durable until `fsync`: `fsync` of a file makes its data,
//!   size and attributes durable; `fsync` of a directory makes its entries
//!   durable. (Backends may make things durable earlier, never later.)
//! * Calls are synchronous; the brick runs them on blocking threads.

// Functions stay short enough to read at once (issue 10); clippy.toml
// sets the bound.
#![warn(clippy::too_many_lines)]

pub mod posix;
#[cfg(feature = "sim-disk")]
pub mod sim;
#[cfg(feature = "sim-disk")]
pub mod testing;

use bytes::Bytes;
use mortar_proto::brick::{XattrFlags, NAME_BYTES_MAX, PATH_BYTES_MAX};
use mortar_proto::{Errno, FileKind, Timespec};

pub type SResult<T> = Result<T, Errno>;

/// A validated path inside a brick: zero or more components joined by
/// `/`, each non-empty, not `.` or `..`, free of `/` and NUL, at most 255
/// bytes; at most 4096 bytes in all. The empty path is the brick root.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrickPath(String);

/// Check one directory-entry name.
pub fn check_name(name: &str) -> SResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Errno::EINVAL);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

impl BrickPath {
    pub fn root() -> Self {
        BrickPath(String::new())
    }

    /// Parse `a/b/c` (no leading or trailing `/`).
    pub fn new(s: &str) -> SResult<Self> {
        if s.len() > PATH_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if s.is_empty() {
            return Ok(Self::root());
        }
        for c in s.split('/') {
            check_name(c)?;
        }
        Ok(BrickPath(s.to_string()))
    }

    /// This path plus one validated component.
    pub fn join(&self, name: &str) -> SResult<BrickPath> {
        check_name(name)?;
        let joined = if self.0.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", self.0, name)
        };
        if joined.len() > PATH_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(BrickPath(joined))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory and the final name; `None` for the root.
    pub fn split_last(&self) -> Option<(BrickPath, &str)> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.rsplit_once('/') {
            Some((dir, name)) => Some((BrickPath(dir.to_string()), name)),
            None => Some((BrickPath::root(), &self.0)),
        }
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }
}

impl std::fmt::Display for BrickPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("/")
        } else {
            write!(f, "/{}", self.0)
        }
    }
}

/// What `lstat` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Stable for the object's life; equal for hard links of one file.
    pub ino: u64,
    pub kind: FileKind,
    /// Permission bits only (07777).
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
}

/// What `statfs` reports: the same figures a brick sends to clients, so
/// the disk's answer is the wire's without a copy field by field.
pub use mortar_proto::brick::StatfsReply as FsStat;

/// A brick's disk. See the module documentation for the semantics.
pub trait Storage: Send + Sync + 'static {
    /// Where this storage lives, for logs and errors.
    fn describe(&self) -> String;

    fn lstat(&self, p: &BrickPath) -> SResult<Stat>;
    /// `EEXIST` if anything exists at `p`.
    fn mkdir(&self, p: &BrickPath, mode: u32) -> SResult<()>;
    /// Create an empty regular file; `EEXIST` if anything exists at `p`.
    fn create(&self, p: &BrickPath, mode: u32) -> SResult<()>;
    fn mkfifo(&self, p: &BrickPath, mode: u32) -> SResult<()>;
    fn symlink(&self, target: &str, p: &BrickPath) -> SResult<()>;
    /// `EINVAL` if `p` is not a symlink.
    fn readlink(&self, p: &BrickPath) -> SResult<String>;
    /// Hard link; `EEXIST` if `new` exists, `EPERM` if `existing` is a
    /// directory.
    fn link(&self, existing: &BrickPath, new: &BrickPath) -> SResult<()>;
    /// POSIX rename: atomically replaces `to` if it exists and is
    /// compatible (`EISDIR` file over directory, `ENOTDIR` directory over
    /// file, `ENOTEMPTY` over a non-empty directory, `EINVAL` directory
    /// into itself). Renaming a path onto a hard link of the same file
    /// does nothing.
    fn rename(&self, from: &BrickPath, to: &BrickPath) -> SResult<()>;
    /// `EISDIR` for a directory.
    fn unlink(&self, p: &BrickPath) -> SResult<()>;
    /// `ENOTDIR` for a non-directory, `ENOTEMPTY` if it has entries.
    fn rmdir(&self, p: &BrickPath) -> SResult<()>;
    /// Up to `len` bytes at `offset` (fewer at end of file). `EISDIR` for a
    /// directory, `EINVAL` for anything else that is not a regular file.
    fn read(&self, p: &BrickPath, offset: u64, len: usize) -> SResult<Bytes>;
    /// Write all of `data` at `offset`, extending the file as needed.
    fn write(&self, p: &BrickPath, offset: u64, data: &[u8]) -> SResult<()>;
    fn truncate(&self, p: &BrickPath, size: u64) -> SResult<()>;
    /// Make the `len` bytes at `offset` read as zeros and give the whole
    /// blocks among them back to the filesystem (a hole), as
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)` does: the size never changes,
    /// also when the range passes the end of the file. `EINVAL` for `len`
    /// 0, `EFBIG` past the largest file, `EOPNOTSUPP` where the filesystem
    /// cannot make holes (a caller that must have zeros then writes them).
    fn punch_hole(&self, p: &BrickPath, offset: u64, len: u64) -> SResult<()>;
    /// Make durable: a file's data, size and attributes, or a directory's
    /// entries (see the module documentation).
    fn fsync(&self, p: &BrickPath, datasync: bool) -> SResult<()>;
    /// Make everything written to the filesystem holding the brick
    /// durable, as `syncfs(2)` does: one call for many files.
    fn sync_all(&self) -> SResult<()>;
    /// Every entry except `.` and `..`, in no particular order.
    fn readdir(&self, p: &BrickPath) -> SResult<Vec<DirEntry>>;
    /// `ENODATA` if absent.
    fn getxattr(&self, p: &BrickPath, name: &str) -> SResult<Vec<u8>>;
    /// Several xattrs of one object, in the order asked: a value, or
    /// `None` where absent; any other failure fails the whole call. A
    /// backend may find the object once for all of them (the posix one
    /// does); the default asks name by name.
    fn getxattrs(&self, p: &BrickPath, names: &[String]) -> SResult<Vec<Option<Vec<u8>>>> {
        names
            .iter()
            .map(|n| match self.getxattr(p, n) {
                Ok(v) => Ok(Some(v)),
                Err(Errno::ENODATA) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }
    fn setxattr(&self, p: &BrickPath, name: &str, value: &[u8], flags: XattrFlags) -> SResult<()>;
    /// `ENODATA` if absent.
    fn removexattr(&self, p: &BrickPath, name: &str) -> SResult<()>;
    fn listxattr(&self, p: &BrickPath) -> SResult<Vec<String>>;
    /// Permission bits (07777) of a non-symlink.
    fn set_mode(&self, p: &BrickPath, mode: u32) -> SResult<()>;
    fn set_owner(&self, p: &BrickPath, uid: u32, gid: u32) -> SResult<()>;
    fn set_times(
        &self,
        p: &BrickPath,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> SResult<()>;
    fn statfs(&self) -> SResult<FsStat>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brick_paths_refuse_everything_that_could_escape() {
        assert!(BrickPath::new("a/b/c").is_ok());
        assert!(BrickPath::new("").unwrap().is_root());
        for bad in ["/a", "a/", "a//b", "..", "a/../b", ".", "a/./b", "a\0b"] {
            assert_eq!(BrickPath::new(bad), Err(Errno::EINVAL), "{bad:?}");
        }
        assert_eq!(BrickPath::new(&"x".repeat(256)), Err(Errno::ENAMETOOLONG));
        let deep = vec!["d"; 2049].join("/");
        assert_eq!(BrickPath::new(&deep), Err(Errno::ENAMETOOLONG));
        let p = BrickPath::new("a/b").unwrap();
        assert_eq!(p.join("c").unwrap().as_str(), "a/b/c");
        assert_eq!(p.join("../x"), Err(Errno::EINVAL));
        assert_eq!(
            p.split_last().map(|(d, n)| (d.0, n.to_string())),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(BrickPath::root().split_last(), None);
        assert_eq!(p.to_string(), "/a/b");
    }
}
