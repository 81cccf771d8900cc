//! The FUSE mount: kernel requests become client API calls.
//!
//! Inode numbers are handed out per mount and map to gfids (the root is
//! 1). Each request is answered from a task on the client's runtime, so a
//! slow brick delays only the requests that need it. Directory listings
//! are read once per open directory handle and served from memory to the
//! kernel's successive readdir calls. Only `user.*` xattrs are visible to
//! applications; Mortar's own metadata stays hidden.

#![allow(clippy::too_many_arguments)] // The signatures are fuser's.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use mortar_proto::brick::{self as bp, DirEntry, XattrFlags};
use mortar_proto::{Attr, FileKind, FopError, Gfid, Timespec};

use crate::api::Client;
use crate::fop::FopResult;

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);

/// Requests the kernel may have queued in the background (readahead,
/// asynchronous direct I/O) before it throttles; its default is 12, which
/// leaves a replicated mount idle between round trips.
const BACKGROUND_MAX: u16 = 64;
/// Background requests at which the kernel counts the mount congested.
const CONGESTION_THRESHOLD: u16 = 48;
/// Readahead the mount asks for, in bytes (raised on the mount's bdi too,
/// since the kernel only lowers what it offered at init).
pub const READAHEAD_BYTES: u32 = 1 << 20;
/// Largest write the kernel may send in one request, in bytes.
const WRITE_MAX_BYTES: u32 = 1 << 20;

/// Kernel capabilities the mount uses where the kernel has them: parallel
/// lookups and listings in one directory, asynchronous direct I/O, the
/// page cache dropped when a file's size or mtime changes under it, and
/// listings that bring each entry's attributes (always, so `ls -l` needs
/// no lookup per name).
fn wanted_capabilities() -> InitFlags {
    InitFlags::FUSE_ASYNC_DIO
        | InitFlags::FUSE_PARALLEL_DIROPS
        | InitFlags::FUSE_AUTO_INVAL_DATA
        | InitFlags::FUSE_DO_READDIRPLUS
}

/// Tune the kernel side of the mount at init; a value or capability the
/// kernel refuses falls back to what it allows, never fails the mount.
fn tune_kernel(config: &mut KernelConfig) {
    let _ = config.set_max_background(BACKGROUND_MAX);
    let _ = config.set_congestion_threshold(CONGESTION_THRESHOLD);
    if let Err(max) = config.set_max_readahead(READAHEAD_BYTES) {
        let _ = config.set_max_readahead(max);
    }
    if let Err(max) = config.set_max_write(WRITE_MAX_BYTES) {
        let _ = config.set_max_write(max);
    }
    let usable = wanted_capabilities() & config.capabilities();
    let _ = config.add_capabilities(usable);
}

#[derive(Default)]
struct Inodes {
    by_ino: BTreeMap<u64, Gfid>,
    by_gfid: BTreeMap<Gfid, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Self {
        let mut i = Inodes {
            next: 2,
            ..Default::default()
        };
        i.by_ino.insert(1, Gfid::ROOT);
        i.by_gfid.insert(Gfid::ROOT, 1);
        i
    }

    fn ino(&mut self, g: Gfid) -> u64 {
        if let Some(i) = self.by_gfid.get(&g) {
            return *i;
        }
        let i = self.next;
        self.next += 1;
        self.by_ino.insert(i, g);
        self.by_gfid.insert(g, i);
        i
    }
}

struct Shared {
    client: Arc<Client>,
    handle: tokio::runtime::Handle,
    inodes: Mutex<Inodes>,
    /// Open directory handles and their listings.
    dirs: Mutex<BTreeMap<u64, DirSnapshot>>,
    next_fh: Mutex<u64>,
    /// Each file's attributes at its last open (`KEEP_CACHE` or not).
    stamps: Mutex<Stamps>,
    /// The mount point, and whether its bdi readahead was raised yet.
    mountpoint: std::path::PathBuf,
    readahead_raised: std::sync::Once,
}

/// What a file looked like at an open: if nothing of it changed by the
/// next open, the pages the kernel cached since are still the file's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: Timespec,
    ctime: Timespec,
}

impl Stamp {
    fn of(a: &Attr) -> Stamp {
        Stamp {
            size: a.size,
            mtime: a.mtime,
            ctime: a.ctime,
        }
    }
}

/// Files whose stamp the mount remembers; past this the oldest inode is
/// forgotten (its next open drops the kernel's pages, as without a stamp).
const STAMPED_FILES_MAX: usize = 65_536;

/// The stamp of each file at its last open, bounded by
/// [`STAMPED_FILES_MAX`].
#[derive(Default)]
struct Stamps {
    by_ino: BTreeMap<u64, (u64, Stamp)>,
    by_age: BTreeMap<u64, u64>,
    next_age: u64,
}

impl Stamps {
    /// Record `now` (`None`: the volume did not answer) as the stamp of
    /// `ino`'s open; true if the cached pages may be kept, which needs a
    /// stamp from the last open equal to `now`.
    fn reopened(&mut self, ino: u64, now: Option<Stamp>) -> bool {
        let before = self.by_ino.remove(&ino).map(|(age, st)| {
            self.by_age.remove(&age);
            st
        });
        let Some(now) = now else {
            return false;
        };
        let age = self.next_age;
        self.next_age += 1;
        self.by_ino.insert(ino, (age, now));
        self.by_age.insert(age, ino);
        while self.by_ino.len() > STAMPED_FILES_MAX {
            let Some((_, old)) = self.by_age.pop_first() else {
                break;
            };
            self.by_ino.remove(&old);
        }
        before == Some(now)
    }
}

/// One entry of an open directory's listing.
#[derive(Clone)]
struct Listed {
    ino: u64,
    kind: FileType,
    name: String,
    attr: FileAttr,
    /// How long the kernel may trust `attr`: [`TTL`] where it is what a
    /// lookup gives, zero where the kernel must look the name up itself.
    ttl: Duration,
}

/// Entries of one open directory, taken at its first listing call.
type DirSnapshot = Vec<Listed>;

/// Lookups a listing runs at once for entries whose attributes the
/// volume did not vouch for.
const LISTING_LOOKUPS_MAX: usize = 16;

/// The filesystem fuser drives.
pub struct MortarFs {
    s: Arc<Shared>,
}

fn errno(e: &FopError) -> FErrno {
    FErrno::from_i32(e.errno.0)
}

fn ts(t: Timespec) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nsecs)
    } else {
        UNIX_EPOCH
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
    }
}

fn to_timespec(t: TimeOrNow, clock: &mortar_net::Clock) -> Timespec {
    let st = match t {
        TimeOrNow::SpecificTime(s) => s,
        // The kernel asked for "now": wall time from the seam's clock.
        TimeOrNow::Now => clock.wall(),
    };
    let d = st.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timespec {
        secs: d.as_secs() as i64,
        nsecs: d.subsec_nanos(),
    }
}

fn name_of(n: &OsStr) -> Result<String, FErrno> {
    // Names travel as UTF-8; anything else is refused rather than mangled.
    n.to_str().map(str::to_string).ok_or(FErrno::EINVAL)
}

impl MortarFs {
    pub fn new(client: Arc<Client>, handle: tokio::runtime::Handle, mountpoint: &Path) -> MortarFs {
        MortarFs {
            s: Arc::new(Shared {
                client,
                handle,
                inodes: Mutex::new(Inodes::new()),
                dirs: Mutex::new(BTreeMap::new()),
                next_fh: Mutex::new(1),
                stamps: Mutex::new(Stamps::default()),
                mountpoint: mountpoint.to_path_buf(),
                readahead_raised: std::sync::Once::new(),
            }),
        }
    }

    /// Run `f` on the client's runtime.
    fn run<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        // The kernel sends nothing else until it has taken the init
        // reply, which only lowers readahead: raise it now, once.
        self.s
            .readahead_raised
            .call_once(|| raise_readahead(&self.s.mountpoint));
        let fut = f(self.s.clone());
        let _entered = self.s.handle.enter();
        self.s.client.runtime().spawn(fut);
    }
}

impl Shared {
    fn gfid(&self, ino: INodeNo) -> Result<Gfid, FErrno> {
        self.inodes
            .lock()
            .expect("inodes")
            .by_ino
            .get(&ino.0)
            .copied()
            .ok_or(FErrno::ESTALE)
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let ino = self.inodes.lock().expect("inodes").ino(a.gfid);
        FileAttr {
            ino: INodeNo(ino),
            size: a.size,
            blocks: a.blocks,
            atime: ts(a.atime),
            mtime: ts(a.mtime),
            ctime: ts(a.ctime),
            crtime: ts(a.ctime),
            kind: kind(a.kind),
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        }
    }

    /// The listing of open directory `fh` (inode `ino`): read from the
    /// volume at offset 0, else the snapshot the first call took. With
    /// `plus`, entries carry attributes a lookup would give: the volume's
    /// where it vouches for them, else this mount's own lookup (at most
    /// [`LISTING_LOOKUPS_MAX`] at once); a name gone by then is left out.
    async fn listing(
        self: &Arc<Self>,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        plus: bool,
    ) -> Result<DirSnapshot, FErrno> {
        if offset > 0 {
            if let Some(l) = self.dirs.lock().expect("dirs").get(&fh.0).cloned() {
                return Ok(l);
            }
        }
        let g = self.gfid(ino)?;
        let entries: Vec<(DirEntry, bool)> = if plus {
            self.client.readdir_plus(g).await
        } else {
            self.client
                .readdir(g)
                .await
                .map(|v| v.into_iter().map(|e| (e, false)).collect())
        }
        .map_err(|e| errno(&e))?;
        let mut attrs: Vec<Option<(Attr, Duration)>> = entries
            .iter()
            .map(|(e, good)| good.then(|| (e.attr.clone(), TTL)))
            .collect();
        if plus {
            self.look_up_unvouched(g, &entries, &mut attrs).await;
        }
        let mut l = vec![self.dot(ino, "."), self.dot(ino, "..")];
        for ((e, _), a) in entries.into_iter().zip(attrs) {
            let (attr, ttl) = match a {
                Some(found) => found,
                None if plus => continue,
                None => (e.attr, Duration::ZERO),
            };
            let attr = self.attr(&attr);
            l.push(Listed {
                ino: attr.ino.0,
                kind: attr.kind,
                name: e.name,
                attr,
                ttl,
            });
        }
        self.dirs.lock().expect("dirs").insert(fh.0, l.clone());
        Ok(l)
    }

    /// Fill `attrs` for the entries the volume did not vouch for, by
    /// lookups of their names in `dir`: a name that is gone stays `None`;
    /// any other failure keeps the listing's attributes with no lifetime,
    /// so the kernel asks again and meets the error itself.
    async fn look_up_unvouched(
        self: &Arc<Self>,
        dir: Gfid,
        entries: &[(DirEntry, bool)],
        attrs: &mut [Option<(Attr, Duration)>],
    ) {
        let todo: Vec<usize> = (0..entries.len()).filter(|i| attrs[*i].is_none()).collect();
        for batch in todo.chunks(LISTING_LOOKUPS_MAX) {
            let handles: Vec<_> = batch
                .iter()
                .map(|i| {
                    let (client, name) = (self.client.clone(), entries[*i].0.name.clone());
                    self.client
                        .runtime()
                        .spawn(async move { client.lookup(dir, &name).await })
                })
                .collect();
            for (i, h) in batch.iter().zip(handles) {
                attrs[*i] = match h.await.ok().flatten() {
                    Some(Ok(a)) => Some((a, TTL)),
                    Some(Err(e)) if e.errno == mortar_proto::Errno::ENOENT => None,
                    _ => Some((entries[*i].0.attr.clone(), Duration::ZERO)),
                };
            }
        }
    }

    /// A `.` or `..` entry (the kernel takes no attributes from these).
    fn dot(&self, ino: INodeNo, name: &str) -> Listed {
        let attr = FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 128 << 10,
            flags: 0,
        };
        Listed {
            ino: ino.0,
            kind: FileType::Directory,
            name: name.to_string(),
            attr,
            ttl: Duration::ZERO,
        }
    }

    fn entry(&self, reply: ReplyEntry, r: FopResult<Attr>) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

macro_rules! gfid_or_reply {
    ($s:expr, $ino:expr, $reply:expr) => {
        match $s.gfid($ino) {
            Ok(g) => g,
            Err(e) => return $reply.error(e),
        }
    };
}

macro_rules! name_or_reply {
    ($n:expr, $reply:expr) => {
        match name_of($n) {
            Ok(n) => n,
            Err(e) => return $reply.error(e),
        }
    };
}

/// The bdi (`MAJOR:MINOR`) of the mount at `mountpoint`, from a
/// `/proc/self/mountinfo` text; the last mount there wins.
fn bdi_of(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    let want = mountpoint.to_str()?;
    mountinfo.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        let _root = f.next()?;
        let point = f.next()?;
        // mountinfo escapes space, tab, newline and backslash as octal.
        let point = point
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\");
        (point == want).then(|| dev.to_string())
    })
}

/// Set the mount's bdi readahead to [`READAHEAD_BYTES`]; a failure (no
/// writable `/sys`) is logged and the kernel's readahead stays.
fn raise_readahead(mountpoint: &Path) {
    let point = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let r = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))
        .and_then(|mi| {
            bdi_of(&mi, &point).ok_or_else(|| format!("{} is not in mountinfo", point.display()))
        })
        .and_then(|bdi| {
            let f = format!("/sys/class/bdi/{bdi}/read_ahead_kb");
            std::fs::write(&f, format!("{}\n", READAHEAD_BYTES >> 10))
                .map_err(|e| format!("cannot write {f}: {e}"))
        });
    match r {
        Ok(()) => tracing::debug!(kib = READAHEAD_BYTES >> 10, "mount readahead raised"),
        Err(e) => tracing::warn!(
            "readahead stays at the kernel's default: {e} (sequential reads will be slower; \
             mount as root with /sys writable to raise it)"
        ),
    }
}

impl Filesystem for MortarFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        tune_kernel(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_or_reply!(name, reply);
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            let r = s.client.lookup(p, &name).await;
            s.entry(reply, r);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.stat(g).await {
                Ok(a) => reply.attr(&TTL, &s.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            let r = async {
                let mut a = None;
                if let Some(size) = size {
                    a = Some(s.client.truncate(g, size).await?);
                }
                if mode.is_some()
                    || uid.is_some()
                    || gid.is_some()
                    || atime.is_some()
                    || mtime.is_some()
                {
                    a = Some(
                        s.client
                            .setattr(bp::Setattr {
                                gfid: g,
                                mode: mode.map(|m| m & 0o7777),
                                uid,
                                gid,
                                atime: atime.map(|t| to_timespec(t, s.client.runtime().clock())),
                                mtime: mtime.map(|t| to_timespec(t, s.client.runtime().clock())),
                            })
                            .await?,
                    );
                }
                match a {
                    Some(a) => Ok(a),
                    None => s.client.stat(g).await,
                }
            }
            .await;
            match r {
                Ok(a) => reply.attr(&TTL, &s.attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.readlink(g).await {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(name, reply);
        let (uid, gid) = (req.uid(), req.gid());
        let perm = mode & !umask & 0o7777;
        let fmt = mode & 0o170000;
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            let r = match fmt {
                0o010000 => s.client.mknod_fifo(p, &name, perm, uid, gid).await,
                0o100000 | 0 => s.client.create(p, &name, perm, uid, gid).await,
                // Device nodes and sockets are not stored by bricks.
                _ => return reply.error(FErrno::EPERM),
            };
            s.entry(reply, r);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(name, reply);
        let (uid, gid) = (req.uid(), req.gid());
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            let r = s
                .client
                .mkdir(p, &name, mode & !umask & 0o7777, uid, gid)
                .await;
            s.entry(reply, r);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            match s.client.unlink(p, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            match s.client.rmdir(p, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(link_name, reply);
        let target = name_or_reply!(target.as_os_str(), reply);
        let (uid, gid) = (req.uid(), req.gid());
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            let r = s.client.symlink(p, &name, &target, uid, gid).await;
            s.entry(reply, r);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_NOREPLACE / RENAME_EXCHANGE need atomic support across
            // bricks that the volume does not have.
            return reply.error(FErrno::EINVAL);
        }
        let name = name_or_reply!(name, reply);
        let newname = name_or_reply!(newname, reply);
        self.run(move |s| async move {
            let a = gfid_or_reply!(s, parent, reply);
            let b = gfid_or_reply!(s, newparent, reply);
            match s.client.rename(a, &name, b, &newname).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = name_or_reply!(newname, reply);
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            let p = gfid_or_reply!(s, newparent, reply);
            let r = s.client.link(g, p, &newname).await;
            s.entry(reply, r);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Bricks keep no per-open state; every read and write names the
        // file. The open asks the volume for the file's attributes: the
        // kernel keeps its cached pages only if they are what they were
        // at this mount's last open (close-to-open across clients).
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            let now = s.client.stat(g).await.ok().map(|a| Stamp::of(&a));
            let keep = s.stamps.lock().expect("stamps").reopened(ino.0, now);
            let flags = if keep {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            };
            reply.opened(FileHandle(0), flags);
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.read(g, offset, u64::from(size)).await {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's buffer is only lent for this call.
        let data = Bytes::copy_from_slice(data);
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.write(g, offset, data).await {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.fsync(g, datasync).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, ino, fh, datasync, reply)
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut next = self.s.next_fh.lock().expect("fh");
        let fh = *next;
        *next += 1;
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.run(move |s| async move {
            let listing = match s.listing(ino, fh, offset, false).await {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
            for (i, l) in listing.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(l.ino), (i + 1) as u64, l.kind, &l.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.run(move |s| async move {
            let listing = match s.listing(ino, fh, offset, true).await {
                Ok(l) => l,
                Err(e) => return reply.error(e),
            };
            for (i, l) in listing.iter().enumerate().skip(offset as usize) {
                let off = (i + 1) as u64;
                if reply.add(INodeNo(l.ino), off, &l.name, &l.ttl, &l.attr, Generation(0)) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.s.dirs.lock().expect("dirs").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.run(move |s| async move {
            match s.client.statfs().await {
                Ok(f) => reply.statfs(
                    f.blocks,
                    f.blocks_free,
                    f.blocks_avail,
                    f.files,
                    f.files_free,
                    f.block_size as u32,
                    f.name_max as u32,
                    f.block_size as u32,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name_or_reply!(name, reply);
        if !name.starts_with("user.") {
            return reply.error(FErrno::EOPNOTSUPP);
        }
        let value = value.to_vec();
        let flags = match flags {
            1 => XattrFlags::Create,
            2 => XattrFlags::Replace,
            _ => XattrFlags::Any,
        };
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.setxattr(g, &name, &value, flags).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_or_reply!(name, reply);
        if !name.starts_with("user.") {
            return reply.error(FErrno::ENODATA);
        }
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.getxattr(g, &name).await {
                Ok(v) if size == 0 => reply.size(v.len() as u32),
                Ok(v) if v.len() > size as usize => reply.error(FErrno::ERANGE),
                Ok(v) => reply.data(&v),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.listxattr(g).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names.iter().filter(|n| n.starts_with("user.")) {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    if size == 0 {
                        reply.size(buf.len() as u32)
                    } else if buf.len() > size as usize {
                        reply.error(FErrno::ERANGE)
                    } else {
                        reply.data(&buf)
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        if !name.starts_with("user.") {
            return reply.error(FErrno::ENODATA);
        }
        self.run(move |s| async move {
            let g = gfid_or_reply!(s, ino, reply);
            match s.client.removexattr(g, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_or_reply!(name, reply);
        let (uid, gid) = (req.uid(), req.gid());
        self.run(move |s| async move {
            let p = gfid_or_reply!(s, parent, reply);
            match s
                .client
                .create(p, &name, mode & !umask & 0o7777, uid, gid)
                .await
            {
                Ok(a) => reply.created(
                    &TTL,
                    &s.attr(&a),
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// Mount `client` at `mountpoint`; the mount lasts as long as the returned
/// session (dropping it unmounts).
pub fn mount(
    client: Arc<Client>,
    handle: tokio::runtime::Handle,
    mountpoint: &Path,
) -> std::io::Result<fuser::BackgroundSession> {
    let volume = client.volume.clone();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName(format!("mortar:{volume}")),
        fuser::MountOption::Subtype("mortar".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(4);
    fuser::spawn_mount(MortarFs::new(client, handle, mountpoint), mountpoint, &cfg)
}

/// Check that `Errno` values cross into the kernel unchanged.
#[cfg(test)]
mod tests {
    #[test]
    fn errno_values_are_linux_values() {
        use mortar_proto::Errno;
        assert_eq!(Errno::ENOENT.0, 2);
        assert_eq!(Errno::ENOTCONN.0, 107);
        let _ = super::errno(&mortar_proto::FopError::from(Errno::EIO));
    }

    #[test]
    fn a_reopen_keeps_the_cache_only_if_nothing_changed() {
        use super::{Stamp, Stamps, STAMPED_FILES_MAX};
        use mortar_proto::Timespec;
        let st = |size: u64, m: i64, c: i64| Stamp {
            size,
            mtime: Timespec { secs: m, nsecs: 0 },
            ctime: Timespec { secs: c, nsecs: 0 },
        };
        let mut s = Stamps::default();
        // (inode, what the volume said at open, keep the cache?)
        let cases = [
            (7, Some(st(10, 1, 1)), false), // first open: nothing to trust
            (7, Some(st(10, 1, 1)), true),  // unchanged
            (7, Some(st(10, 2, 2)), false), // written elsewhere, same size
            (7, Some(st(10, 2, 2)), true),
            (7, Some(st(10, 2, 3)), false), // times set back, ctime moved
            (7, Some(st(11, 2, 3)), false), // size alone
            (7, None, false),               // volume unreachable
            (7, Some(st(11, 2, 3)), false), // and the stamp was forgotten
            (8, Some(st(11, 2, 3)), false), // another inode, same attrs
            (7, Some(st(11, 2, 3)), true),
        ];
        for (i, (ino, now, keep)) in cases.into_iter().enumerate() {
            assert_eq!(s.reopened(ino, now), keep, "case {i}");
        }
        // Bounded: the oldest inode goes first.
        for ino in 100..100 + STAMPED_FILES_MAX as u64 {
            s.reopened(ino, Some(st(1, 1, 1)));
        }
        assert_eq!(s.by_ino.len(), STAMPED_FILES_MAX);
        assert_eq!(s.by_age.len(), STAMPED_FILES_MAX);
        assert!(!s.reopened(8, Some(st(11, 2, 3))), "8 was the oldest");
        assert!(s.reopened(100 + STAMPED_FILES_MAX as u64 - 1, Some(st(1, 1, 1))));
    }

    #[test]
    fn bdi_of_finds_the_last_mount_at_a_point() {
        use std::path::Path;
        let mi = "22 1 253:0 / / rw - ext4 /dev/vda rw\n\
                  40 22 0:52 / /mnt/a\\040b rw - fuse.mortar mortar:v rw\n\
                  41 22 0:53 / /mnt/c rw - fuse.mortar mortar:v rw\n\
                  42 22 0:57 / /mnt/c rw - fuse.mortar mortar:w rw\n";
        let cases = [
            ("/mnt/a b", Some("0:52")),
            ("/mnt/c", Some("0:57")),
            ("/", Some("253:0")),
            ("/mnt", None),
            ("/mnt/a\\040b", None),
        ];
        for (point, want) in cases {
            assert_eq!(
                super::bdi_of(mi, Path::new(point)).as_deref(),
                want,
                "{point}"
            );
        }
    }
}
