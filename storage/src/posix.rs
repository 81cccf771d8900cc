//! A brick on a local filesystem directory.
//!
//! Every path is resolved with `openat2` beneath a descriptor of the brick
//! root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`:
//! the kernel refuses any symlink on the way and anything outside the
//! root, so no name a client chose can lead the brick out of its directory.
//! The final component is operated on with `*at` calls that do not follow
//! it (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`); xattrs go through
//! `/proc/self/fd/<parent>/<name>` with the `l*xattr` calls for the same
//! reason.
//!
//! Descriptors used for reads and writes are cached (bounded LRU) because
//! the brick addresses files by their stable handle paths, and an
//! open/close pair per 4 KiB write would double its cost.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use mortar_proto::brick::XattrFlags;
use mortar_proto::{Errno, FileKind, Timespec};
use rustix::fs::{AtFlags, FallocateFlags, Mode, OFlags, ResolveFlags};

use crate::{BrickPath, DirEntry, FsStat, SResult, Stat, Storage};

/// Read/write descriptors kept open at once.
const FD_CACHE_ENTRIES_MAX: usize = 256;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// A small LRU of open files by path.
#[derive(Default)]
struct FdCache {
    tick: u64,
    by_path: BTreeMap<String, (u64, Arc<OwnedFd>)>,
    by_tick: BTreeMap<u64, String>,
}

impl FdCache {
    fn get(&mut self, path: &str) -> Option<Arc<OwnedFd>> {
        let (old_tick, fd) = self.by_path.get(path)?.clone();
        self.tick += 1;
        self.by_tick.remove(&old_tick);
        self.by_tick.insert(self.tick, path.to_string());
        self.by_path
            .insert(path.to_string(), (self.tick, fd.clone()));
        Some(fd)
    }

    fn put(&mut self, path: &str, fd: Arc<OwnedFd>) {
        self.forget(path);
        while self.by_path.len() >= FD_CACHE_ENTRIES_MAX {
            let Some((&t, _)) = self.by_tick.iter().next() else {
                break;
            };
            if let Some(p) = self.by_tick.remove(&t) {
                self.by_path.remove(&p);
            }
        }
        self.tick += 1;
        self.by_tick.insert(self.tick, path.to_string());
        self.by_path.insert(path.to_string(), (self.tick, fd));
    }

    fn forget(&mut self, path: &str) {
        if let Some((t, _)) = self.by_path.remove(path) {
            self.by_tick.remove(&t);
        }
    }

    /// Forget `path` and everything beneath it (a renamed or removed
    /// directory takes its cached children's paths with it).
    fn forget_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .by_path
            .keys()
            .filter(|k| k.as_str() == path || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in doomed {
            self.forget(&k);
        }
    }
}

pub struct PosixStorage {
    root_path: PathBuf,
    root: OwnedFd,
    fds: Mutex<FdCache>,
}

impl PosixStorage {
    /// Open the brick directory at `root` (which must exist and be a
    /// directory).
    pub fn open(root: &Path) -> Result<PosixStorage, String> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open brick directory {}: {e}", root.display()))?;
        Ok(PosixStorage {
            root_path: root.to_path_buf(),
            root: fd,
            fds: Mutex::new(FdCache::default()),
        })
    }

    /// Open `p` (relative) beneath the root without following anything.
    fn open_beneath(&self, p: &BrickPath, flags: OFlags) -> SResult<OwnedFd> {
        let rel = if p.is_root() { "." } else { p.as_str() };
        rustix::fs::openat2(
            &self.root,
            rel,
            // RESOLVE_NO_SYMLINKS refuses a symlink at any position,
            // the last included, with ELOOP. (O_NOFOLLOW would turn the
            // last one into ENOTDIR when O_DIRECTORY is also given.)
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )
        .map_err(errno)
    }

    /// The parent directory of `p` as an `O_PATH` descriptor, and the final
    /// name. `EINVAL` for the root itself.
    fn parent(&self, p: &BrickPath) -> SResult<(OwnedFd, String)> {
        let (dir, name) = p.split_last().ok_or(Errno::EINVAL)?;
        let fd = self.open_beneath(&dir, OFlags::PATH | OFlags::DIRECTORY)?;
        Ok((fd, name.to_string()))
    }

    /// Where the xattr calls for `p` should act: the root through a
    /// descriptor, anything else through `/proc/self/fd/<parent>/<name>`
    /// with the `l*xattr` calls (which do not follow the final component).
    fn xattr_target(&self, p: &BrickPath) -> SResult<XattrTarget> {
        if p.is_root() {
            let fd = self.open_beneath(p, OFlags::RDONLY | OFlags::DIRECTORY)?;
            return Ok(XattrTarget::Root(fd));
        }
        let (dir, name) = self.parent(p)?;
        let path = CString::new(format!("/proc/self/fd/{}/{}", fd_num(&dir), name))
            .map_err(|_| Errno::EINVAL)?;
        Ok(XattrTarget::Entry { _parent: dir, path })
    }

    fn rw_fd(&self, p: &BrickPath) -> SResult<Arc<OwnedFd>> {
        if let Some(fd) = self.fds.lock().expect("fd cache lock").get(p.as_str()) {
            return Ok(fd);
        }
        let fd = match self.open_beneath(p, OFlags::RDWR | OFlags::NONBLOCK) {
            Ok(fd) => fd,
            // O_NOFOLLOW refuses a symlink with ELOOP; the trait says a
            // non-regular file is EINVAL.
            Err(Errno::ELOOP) if self.lstat(p)?.kind == FileKind::Symlink => {
                return Err(Errno::EINVAL)
            }
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        match kind_of(st.st_mode) {
            Some(FileKind::Regular) => {}
            Some(FileKind::Directory) => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        let fd = Arc::new(fd);
        self.fds
            .lock()
            .expect("fd cache lock")
            .put(p.as_str(), fd.clone());
        Ok(fd)
    }

    fn forget(&self, p: &BrickPath) {
        self.fds
            .lock()
            .expect("fd cache lock")
            .forget_tree(p.as_str());
    }
}

enum XattrTarget {
    Root(OwnedFd),
    /// The parent descriptor must stay open while `path` is used.
    Entry {
        _parent: OwnedFd,
        path: CString,
    },
}

/// The value of xattr `name` where `target` points, growing the buffer
/// for large values (up to 64 KiB, the Linux limit).
fn xattr_value(target: &XattrTarget, name: &str) -> SResult<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let r = match target {
            XattrTarget::Root(fd) => rustix::fs::fgetxattr(fd, name, &mut buf[..]),
            XattrTarget::Entry { path, .. } => {
                rustix::fs::lgetxattr(path.as_c_str(), name, &mut buf[..])
            }
        };
        match r {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (64 << 10) + 1 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(errno(e)),
        }
    }
}

fn fd_num(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn kind_of(mode: u32) -> Option<FileKind> {
    match mode & 0o170000 {
        0o100000 => Some(FileKind::Regular),
        0o040000 => Some(FileKind::Directory),
        0o120000 => Some(FileKind::Symlink),
        0o010000 => Some(FileKind::Fifo),
        _ => None,
    }
}

fn to_stat(st: &rustix::fs::Stat) -> SResult<Stat> {
    // Sockets and device nodes are never created by a brick; one found in
    // a brick directory was put there by hand and is not served.
    let kind = kind_of(st.st_mode).ok_or(Errno::EOPNOTSUPP)?;
    let ts = |secs: i64, nsecs: i64| Timespec {
        secs,
        nsecs: nsecs as u32,
    };
    Ok(Stat {
        ino: st.st_ino,
        kind,
        mode: st.st_mode & 0o7777,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: ts(st.st_atime, st.st_atime_nsec as i64),
        mtime: ts(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: ts(st.st_ctime, st.st_ctime_nsec as i64),
    })
}

fn rustix_xattr_flags(f: XattrFlags) -> rustix::fs::XattrFlags {
    match f {
        XattrFlags::Any => rustix::fs::XattrFlags::empty(),
        XattrFlags::Create => rustix::fs::XattrFlags::CREATE,
        XattrFlags::Replace => rustix::fs::XattrFlags::REPLACE,
    }
}

fn to_rustix_ts(t: Option<Timespec>) -> rustix::fs::Timespec {
    match t {
        Some(t) => rustix::fs::Timespec {
            tv_sec: t.secs,
            tv_nsec: t.nsecs.into(),
        },
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
    }
}

impl Storage for PosixStorage {
    fn describe(&self) -> String {
        format!("posix:{}", self.root_path.display())
    }

    fn lstat(&self, p: &BrickPath) -> SResult<Stat> {
        if p.is_root() {
            return to_stat(&rustix::fs::fstat(&self.root).map_err(errno)?);
        }
        let (dir, name) = self.parent(p)?;
        let st =
            rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        to_stat(&st)
    }

    fn mkdir(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(mode & 0o7777)).map_err(errno)
    }

    fn create(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        let fd = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )
        .map_err(errno)?;
        drop(fd);
        Ok(())
    }

    fn mkfifo(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        rustix::fs::mknodat(
            &dir,
            name.as_str(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(mode & 0o7777),
            0,
        )
        .map_err(errno)
    }

    fn symlink(&self, target: &str, p: &BrickPath) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        rustix::fs::symlinkat(target, &dir, name.as_str()).map_err(errno)
    }

    fn readlink(&self, p: &BrickPath) -> SResult<String> {
        let (dir, name) = self.parent(p)?;
        let target = rustix::fs::readlinkat(&dir, name.as_str(), Vec::new()).map_err(errno)?;
        target.into_string().map_err(|_| Errno::EINVAL)
    }

    fn link(&self, existing: &BrickPath, new: &BrickPath) -> SResult<()> {
        let (odir, oname) = self.parent(existing)?;
        let (ndir, nname) = self.parent(new)?;
        rustix::fs::linkat(
            &odir,
            oname.as_str(),
            &ndir,
            nname.as_str(),
            AtFlags::empty(),
        )
        .map_err(errno)
    }

    fn rename(&self, from: &BrickPath, to: &BrickPath) -> SResult<()> {
        let (odir, oname) = self.parent(from)?;
        let (ndir, nname) = self.parent(to)?;
        self.forget(from);
        self.forget(to);
        rustix::fs::renameat(&odir, oname.as_str(), &ndir, nname.as_str()).map_err(errno)
    }

    fn unlink(&self, p: &BrickPath) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        self.forget(p);
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).map_err(errno)
    }

    fn rmdir(&self, p: &BrickPath) -> SResult<()> {
        let (dir, name) = self.parent(p)?;
        self.forget(p);
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR).map_err(errno)
    }

    fn read(&self, p: &BrickPath, offset: u64, len: usize) -> SResult<Bytes> {
        let fd = self.rw_fd(p)?;
        let mut buf = BytesMut::zeroed(len);
        let mut got = 0;
        while got < len {
            let n = rustix::io::pread(fd.as_fd(), &mut buf[got..], offset + got as u64)
                .map_err(errno)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf.freeze())
    }

    fn write(&self, p: &BrickPath, offset: u64, data: &[u8]) -> SResult<()> {
        let fd = self.rw_fd(p)?;
        let mut done = 0;
        while done < data.len() {
            let n = rustix::io::pwrite(fd.as_fd(), &data[done..], offset + done as u64)
                .map_err(errno)?;
            if n == 0 {
                return Err(Errno::EIO);
            }
            done += n;
        }
        Ok(())
    }

    fn truncate(&self, p: &BrickPath, size: u64) -> SResult<()> {
        let fd = self.rw_fd(p)?;
        rustix::fs::ftruncate(fd.as_fd(), size).map_err(errno)
    }

    fn punch_hole(&self, p: &BrickPath, offset: u64, len: u64) -> SResult<()> {
        let fd = self.rw_fd(p)?;
        let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(fd.as_fd(), mode, offset, len).map_err(errno)
    }

    fn sync_all(&self) -> SResult<()> {
        // syncfs refuses the root's O_PATH descriptor (EBADF).
        let root = self.open_beneath(&BrickPath::root(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        rustix::fs::syncfs(&root).map_err(errno)
    }

    fn fsync(&self, p: &BrickPath, datasync: bool) -> SResult<()> {
        let st = self.lstat(p)?;
        let fd = match st.kind {
            FileKind::Directory => self.open_beneath(p, OFlags::RDONLY | OFlags::DIRECTORY)?,
            FileKind::Regular => self.open_beneath(p, OFlags::RDONLY)?,
            // A symlink's or FIFO's durable state is its directory entry
            // and inode, which the directory's fsync covers.
            FileKind::Symlink | FileKind::Fifo => {
                let (dir, _) = p.split_last().ok_or(Errno::EINVAL)?;
                self.open_beneath(&dir, OFlags::RDONLY | OFlags::DIRECTORY)?
            }
        };
        if datasync && st.kind == FileKind::Regular {
            rustix::fs::fdatasync(&fd).map_err(errno)
        } else {
            rustix::fs::fsync(&fd).map_err(errno)
        }
    }

    fn readdir(&self, p: &BrickPath) -> SResult<Vec<DirEntry>> {
        let fd = self.open_beneath(p, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(errno)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(errno)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                tracing::warn!(dir = %p, "skipping an entry whose name is not UTF-8");
                continue;
            };
            let kind = match entry.file_type() {
                rustix::fs::FileType::RegularFile => FileKind::Regular,
                rustix::fs::FileType::Directory => FileKind::Directory,
                rustix::fs::FileType::Symlink => FileKind::Symlink,
                rustix::fs::FileType::Fifo => FileKind::Fifo,
                rustix::fs::FileType::Unknown => {
                    let st =
                        rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
                    match kind_of(st.st_mode) {
                        Some(k) => k,
                        None => continue,
                    }
                }
                _ => continue,
            };
            out.push(DirEntry {
                name: name.to_string(),
                kind,
            });
        }
        Ok(out)
    }

    fn getxattr(&self, p: &BrickPath, name: &str) -> SResult<Vec<u8>> {
        let target = self.xattr_target(p)?;
        xattr_value(&target, name)
    }

    fn getxattrs(&self, p: &BrickPath, names: &[String]) -> SResult<Vec<Option<Vec<u8>>>> {
        // The object is found once (one open of its parent), not per name.
        let target = self.xattr_target(p)?;
        names
            .iter()
            .map(|n| match xattr_value(&target, n) {
                Ok(v) => Ok(Some(v)),
                Err(Errno::ENODATA) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    fn setxattr(&self, p: &BrickPath, name: &str, value: &[u8], flags: XattrFlags) -> SResult<()> {
        let f = rustix_xattr_flags(flags);
        match self.xattr_target(p)? {
            XattrTarget::Root(fd) => rustix::fs::fsetxattr(&fd, name, value, f).map_err(errno),
            XattrTarget::Entry { path, .. } => {
                rustix::fs::lsetxattr(path.as_c_str(), name, value, f).map_err(errno)
            }
        }
    }

    fn removexattr(&self, p: &BrickPath, name: &str) -> SResult<()> {
        match self.xattr_target(p)? {
            XattrTarget::Root(fd) => rustix::fs::fremovexattr(&fd, name).map_err(errno),
            XattrTarget::Entry { path, .. } => {
                rustix::fs::lremovexattr(path.as_c_str(), name).map_err(errno)
            }
        }
    }

    fn listxattr(&self, p: &BrickPath) -> SResult<Vec<String>> {
        let target = self.xattr_target(p)?;
        let mut buf = vec![0u8; 1024];
        let n = loop {
            let r = match &target {
                XattrTarget::Root(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
                XattrTarget::Entry { path, .. } => {
                    rustix::fs::llistxattr(path.as_c_str(), &mut buf[..])
                }
            };
            match r {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => {
                    buf.resize(buf.len() * 4, 0);
                }
                Err(e) => return Err(errno(e)),
            }
        };
        let mut names: Vec<String> = buf[..n]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| std::str::from_utf8(s).ok().map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }

    fn set_mode(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let st = self.lstat(p)?;
        if st.kind == FileKind::Symlink {
            return Err(Errno::EOPNOTSUPP);
        }
        // chmod has no "do not follow" form on Linux; going through the
        // O_PATH descriptor's /proc link changes exactly the object opened.
        let fd = self.open_beneath(p, OFlags::PATH)?;
        let proc_path = format!("/proc/self/fd/{}", fd_num(&fd));
        rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode & 0o7777)).map_err(errno)
    }

    fn set_owner(&self, p: &BrickPath, uid: u32, gid: u32) -> SResult<()> {
        let (fd, name) = if p.is_root() {
            (self.open_beneath(p, OFlags::PATH)?, String::new())
        } else {
            self.parent(p)?
        };
        let flags = if p.is_root() {
            AtFlags::EMPTY_PATH
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        rustix::fs::chownat(
            &fd,
            name.as_str(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            flags,
        )
        .map_err(errno)
    }

    fn set_times(
        &self,
        p: &BrickPath,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> SResult<()> {
        let times = rustix::fs::Timestamps {
            last_access: to_rustix_ts(atime),
            last_modification: to_rustix_ts(mtime),
        };
        if p.is_root() {
            let fd = self.open_beneath(p, OFlags::RDONLY | OFlags::DIRECTORY)?;
            return rustix::fs::futimens(&fd, &times).map_err(errno);
        }
        let (dir, name) = self.parent(p)?;
        rustix::fs::utimensat(&dir, name.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
    }

    fn statfs(&self) -> SResult<FsStat> {
        let fd = self.open_beneath(&BrickPath::root(), OFlags::RDONLY | OFlags::DIRECTORY)?;
        let s = rustix::fs::fstatvfs(&fd).map_err(errno)?;
        Ok(FsStat {
            block_size: s.f_frsize,
            blocks: s.f_blocks,
            blocks_free: s.f_bfree,
            blocks_avail: s.f_bavail,
            files: s.f_files,
            files_free: s.f_ffree,
            name_max: s.f_namemax,
        })
    }
}
