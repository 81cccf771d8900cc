//! The brick's logic over any [`Storage`]: gfid handles, entry and inode
//! operations, xattr rules, counters and the pending-heal index.
//!
//! Layout inside the brick directory (the name `.mortar` is reserved at the
//! brick root and invisible to clients):
//!
//! ```text
//! .mortar/handles/ab/cd/<gfid>   hard link to every non-directory
//! .mortar/dirs/ab/cd/<gfid>      symlink "<parent gfid>/<name>" per directory
//! .mortar/index/<gfid>           pending-heal index: changelog counters non-zero
//! .mortar/tmp/<gfid>             objects being created (see `create_object`)
//! ```
//!
//! Non-directories are reached by gfid through their hard link, so reads
//! and writes keep working across renames. Directories cannot be hard
//! linked, so each has a symlink naming its parent's gfid and its own name;
//! resolving walks those links up to the root in user space (never through
//! the kernel, so depth is not limited by symlink-follow limits) and checks
//! the gfid stored on the directory it lands on. Keeping directory handles
//! in their own tree means a client's own symlinks (hard linked into
//! `handles`) can never be mistaken for directory handles.
//!
//! Crash safety, in the order of operations the brick issues (a filesystem
//! journal keeps metadata operations in order, and the simulated disk
//! models exactly that):
//! * A new object is made under `.mortar/tmp`, given its gfid xattr and its
//!   handle, and only then renamed to its name: a name never exists without
//!   a gfid. Leftovers in `tmp` are removed at startup.
//! * A changelog counter going non-zero first creates the index entry, then
//!   writes the counter; going to zero writes the counter, then removes the
//!   entry. So after any crash, non-zero counters always have an index
//!   entry; an entry whose counters are all zero is pruned at startup.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use mortar_proto::brick::xattr as xa;
use mortar_proto::brick::{
    self as bp, CounterDelta, DirEntry as BrickDirEntry, XattrFlags, FILE_BYTES_MAX, IO_BYTES_MAX,
    READDIR_ENTRIES_MAX, SYMLINK_TARGET_BYTES_MAX, XATTROP_KEYS_MAX, XATTR_NAME_BYTES_MAX,
    XATTR_VALUE_BYTES_MAX,
};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::storage::{check_name, BrickPath, SResult, Stat, Storage};

/// The reserved directory at the brick root.
pub const META_DIR: &str = ".mortar";
const HANDLES: &str = ".mortar/handles";
const DIRS: &str = ".mortar/dirs";
const INDEX: &str = ".mortar/index";
const TMP: &str = ".mortar/tmp";

/// Number of lock stripes serialising counter updates per gfid.
const COUNTER_STRIPES: usize = 64;
/// Deepest directory chain `resolve` will walk before declaring a loop.
const DIR_DEPTH_MAX: usize = 2048;

pub type FopRes<T> = Result<T, FopError>;

fn fop(errno: Errno, detail: impl Into<String>) -> FopError {
    FopError::new(errno, detail)
}

/// Attach what was being done to a bare errno.
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FopRes<T>;
}

impl<T> Ctx<T> for SResult<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FopRes<T> {
        self.map_err(|e| fop(e, what()))
    }
}

#[derive(Debug, Clone)]
pub struct BrickConfig {
    pub volume_id: String,
    /// Make namespace changes durable before replying (fsync the parent
    /// directory after create, mkdir, unlink, rename...). On by default:
    /// a client's `fsync` of a directory then finds nothing left to do.
    pub fsync_namespace: bool,
}

impl BrickConfig {
    pub fn new(volume_id: impl Into<String>) -> Self {
        BrickConfig {
            volume_id: volume_id.into(),
            fsync_namespace: true,
        }
    }
}

/// One brick: a [`Storage`] plus the logic that makes it a Mortar brick.
pub struct Brick<S: Storage> {
    storage: S,
    cfg: BrickConfig,
    /// Namespace changes are exclusive; everything else shares.
    ns: RwLock<()>,
    counters: Vec<Mutex<()>>,
    /// Handle shard directories known to exist (`ab`, `ab/cd`).
    shards: Mutex<BTreeSet<String>>,
}

fn shard_dirs(base: &str, g: &Gfid) -> (String, String) {
    let h = g.to_hex();
    let a = format!("{base}/{}", &h[0..2]);
    let b = format!("{a}/{}", &h[2..4]);
    (a, b)
}

fn bp_of(s: &str) -> BrickPath {
    BrickPath::new(s).expect("internal paths are valid")
}

fn handle_path(g: &Gfid) -> BrickPath {
    let (_, b) = shard_dirs(HANDLES, g);
    bp_of(&format!("{b}/{}", g.to_hex()))
}

fn dir_handle_path(g: &Gfid) -> BrickPath {
    let (_, b) = shard_dirs(DIRS, g);
    bp_of(&format!("{b}/{}", g.to_hex()))
}

fn index_path(g: &Gfid) -> BrickPath {
    bp_of(&format!("{INDEX}/{}", g.to_hex()))
}

fn tmp_path(g: &Gfid) -> BrickPath {
    bp_of(&format!("{TMP}/{}", g.to_hex()))
}

/// What a counter xattr holds: big-endian integers of one width.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Counters {
    W32(Vec<i32>),
    W64(Vec<i64>),
}

impl Counters {
    fn parse(raw: &[u8], wide: bool) -> SResult<Counters> {
        let w = if wide { 8 } else { 4 };
        if raw.len() % w != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(if wide {
            Counters::W64(
                raw.chunks(8)
                    .map(|c| i64::from_be_bytes(c.try_into().expect("chunk of 8")))
                    .collect(),
            )
        } else {
            Counters::W32(
                raw.chunks(4)
                    .map(|c| i32::from_be_bytes(c.try_into().expect("chunk of 4")))
                    .collect(),
            )
        })
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Counters::W32(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
            Counters::W64(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
        }
    }

    fn all_zero(&self) -> bool {
        match self {
            Counters::W32(v) => v.iter().all(|x| *x == 0),
            Counters::W64(v) => v.iter().all(|x| *x == 0),
        }
    }

    /// Add `d` element-wise; overflow is ERANGE (counters never wrap).
    fn add(self, d: &CounterDelta) -> SResult<Counters> {
        fn add_vec<T: Copy + Default + std::ops::Add + num_checked::Checked>(
            mut cur: Vec<T>,
            delta: &[T],
        ) -> SResult<Vec<T>> {
            if cur.len() < delta.len() {
                cur.resize(delta.len(), T::default());
            }
            for (c, d) in cur.iter_mut().zip(delta) {
                *c = c.checked(*d).ok_or(Errno::ERANGE)?;
            }
            Ok(cur)
        }
        match (self, d) {
            (Counters::W32(c), CounterDelta::Add32(d)) => Ok(Counters::W32(add_vec(c, d)?)),
            (Counters::W64(c), CounterDelta::Add64(d)) => Ok(Counters::W64(add_vec(c, d)?)),
            _ => Err(Errno::EINVAL),
        }
    }

    fn into_delta_form(self) -> CounterDelta {
        match self {
            Counters::W32(v) => CounterDelta::Add32(v),
            Counters::W64(v) => CounterDelta::Add64(v),
        }
    }
}

mod num_checked {
    pub trait Checked: Sized {
        fn checked(self, other: Self) -> Option<Self>;
    }
    impl Checked for i32 {
        fn checked(self, other: Self) -> Option<Self> {
            self.checked_add(other)
        }
    }
    impl Checked for i64 {
        fn checked(self, other: Self) -> Option<Self> {
            self.checked_add(other)
        }
    }
}

/// Which xattrs a client may touch, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XattrAccess {
    /// `user.*` and Mortar's own metadata (layouts, EC markers).
    ReadWrite,
    /// gfid and volume id: set by the brick only.
    ReadOnly,
    /// Changelog counters: changed through xattrop only.
    CountersOnly,
}

fn xattr_access(name: &str) -> FopRes<XattrAccess> {
    if name.is_empty() || name.len() > XATTR_NAME_BYTES_MAX {
        return Err(fop(
            Errno::ERANGE,
            format!("xattr name must be 1 to {XATTR_NAME_BYTES_MAX} bytes"),
        ));
    }
    if name == xa::GFID || name == xa::VOLUME_ID {
        return Ok(XattrAccess::ReadOnly);
    }
    if xa::is_changelog(name) {
        return Ok(XattrAccess::CountersOnly);
    }
    if name.starts_with(xa::USER_PREFIX) || name.starts_with(xa::MORTAR_PREFIX) {
        return Ok(XattrAccess::ReadWrite);
    }
    Err(fop(
        Errno::EOPNOTSUPP,
        format!("xattr {name:?}: only user.* and trusted.mortar.* xattrs are stored"),
    ))
}

fn gfid_from_xattr(raw: &[u8]) -> SResult<Gfid> {
    let b: [u8; 16] = raw.try_into().map_err(|_| Errno::EIO)?;
    Ok(Gfid(b))
}

impl<S: Storage> Brick<S> {
    /// Open (and on first use, initialise) a brick on `storage`. Refuses a
    /// brick that belongs to another volume, and a filesystem that cannot
    /// store Mortar's xattrs.
    pub fn init(storage: S, cfg: BrickConfig) -> Result<Self, String> {
        let here = storage.describe();
        let root = BrickPath::root();
        let st = storage
            .lstat(&root)
            .map_err(|e| format!("brick {here}: cannot stat the brick directory: {e}"))?;
        if st.kind != FileKind::Directory {
            return Err(format!("brick {here}: not a directory"));
        }
        match storage.getxattr(&root, xa::VOLUME_ID) {
            Ok(v) if v == cfg.volume_id.as_bytes() => {}
            Ok(v) => {
                return Err(format!(
                    "brick {here} belongs to volume {:?}, not {:?}: use another directory, or \
                     remove the {} xattr and the .mortar directory if its old volume is gone",
                    String::from_utf8_lossy(&v),
                    cfg.volume_id,
                    xa::VOLUME_ID
                ))
            }
            Err(Errno::ENODATA) => storage
                .setxattr(
                    &root,
                    xa::VOLUME_ID,
                    cfg.volume_id.as_bytes(),
                    XattrFlags::Create,
                )
                .map_err(|e| {
                    format!(
                        "brick {here}: cannot store trusted.* xattrs ({e}); run the brick as root \
                         on a filesystem with xattr support (ext4, xfs)"
                    )
                })?,
            Err(e) => return Err(format!("brick {here}: cannot read xattrs: {e}")),
        }
        match storage.getxattr(&root, xa::GFID) {
            Ok(v) if v == Gfid::ROOT.0 => {}
            Ok(_) => return Err(format!("brick {here}: root directory has a foreign gfid")),
            Err(Errno::ENODATA) => storage
                .setxattr(&root, xa::GFID, &Gfid::ROOT.0, XattrFlags::Create)
                .map_err(|e| format!("brick {here}: cannot set the root gfid: {e}"))?,
            Err(e) => return Err(format!("brick {here}: cannot read the root gfid: {e}")),
        }
        for d in [META_DIR, HANDLES, DIRS, INDEX, TMP] {
            match storage.mkdir(&bp_of(d), 0o700) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(format!("brick {here}: cannot create {d}: {e}")),
            }
        }
        storage
            .fsync(&bp_of(META_DIR), false)
            .and_then(|_| storage.fsync(&root, false))
            .map_err(|e| format!("brick {here}: fsync failed: {e}"))?;
        let brick = Brick {
            storage,
            cfg,
            ns: RwLock::new(()),
            counters: (0..COUNTER_STRIPES).map(|_| Mutex::new(())).collect(),
            shards: Mutex::new(BTreeSet::new()),
        };
        brick
            .recover()
            .map_err(|e| format!("brick {here}: recovery failed: {e}"))?;
        Ok(brick)
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn config(&self) -> &BrickConfig {
        &self.cfg
    }

    /// Startup repair after a crash: drop half-created objects and index
    /// entries whose counters are all zero (or whose file is gone).
    fn recover(&self) -> FopRes<()> {
        let tmp = bp_of(TMP);
        for e in self
            .storage
            .readdir(&tmp)
            .ctx(|| "list .mortar/tmp".into())?
        {
            let p = tmp.join(&e.name).ctx(|| "tmp entry".into())?;
            let r = if e.kind == FileKind::Directory {
                self.storage.rmdir(&p)
            } else {
                self.storage.unlink(&p)
            };
            if let Err(err) = r {
                tracing::warn!(entry = %p, error = %err, "cannot remove a leftover of an interrupted create");
            }
        }
        let mut pruned = 0;
        for g in self.index_all()? {
            let keep = match self.resolve(&g) {
                Ok((path, _)) => !self.changelog_all_zero(&path)?,
                Err(_) => false,
            };
            if !keep {
                match self.storage.unlink(&index_path(&g)) {
                    Ok(()) | Err(Errno::ENOENT) => pruned += 1,
                    Err(e) => return Err(fop(e, format!("prune index entry {g}"))),
                }
            }
        }
        if pruned > 0 {
            self.storage
                .fsync(&bp_of(INDEX), false)
                .ctx(|| "fsync index".into())?;
            tracing::info!(pruned, "pruned index entries whose counters are clean");
        }
        Ok(())
    }

    // ---- resolution -------------------------------------------------

    /// The path of an object by gfid, and its kind. Unknown gfids are ESTALE.
    pub fn resolve(&self, g: &Gfid) -> FopRes<(BrickPath, FileKind)> {
        if *g == Gfid::ROOT {
            return Ok((BrickPath::root(), FileKind::Directory));
        }
        if g.is_null() {
            return Err(fop(Errno::EINVAL, "null gfid"));
        }
        let h = handle_path(g);
        match self.storage.lstat(&h) {
            Ok(st) => return Ok((h, st.kind)),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(fop(e, format!("stat handle of {g}"))),
        }
        Ok((self.resolve_dir(g)?, FileKind::Directory))
    }

    /// The path of a directory by gfid, walking parent links up to the root.
    pub fn resolve_dir(&self, g: &Gfid) -> FopRes<BrickPath> {
        let mut names: Vec<String> = Vec::new();
        let mut cur = *g;
        while cur != Gfid::ROOT {
            if names.len() >= DIR_DEPTH_MAX {
                return Err(fop(
                    Errno::ELOOP,
                    format!("directory chain of {g} is too deep or loops"),
                ));
            }
            let target = match self.storage.readlink(&dir_handle_path(&cur)) {
                Ok(t) => t,
                Err(Errno::ENOENT) => {
                    return Err(match self.storage.lstat(&handle_path(&cur)) {
                        Ok(_) => fop(Errno::ENOTDIR, format!("{cur} is not a directory")),
                        Err(_) => fop(
                            Errno::ESTALE,
                            format!("no file or directory has gfid {cur}"),
                        ),
                    })
                }
                Err(Errno::EINVAL) => {
                    return Err(fop(Errno::ENOTDIR, format!("{cur} is not a directory")))
                }
                Err(e) => return Err(fop(e, format!("read directory handle of {cur}"))),
            };
            let (parent, name) = target
                .split_once('/')
                .and_then(|(p, n)| Gfid::from_hex(p).map(|p| (p, n.to_string())))
                .ok_or_else(|| {
                    fop(
                        Errno::EIO,
                        format!("damaged directory handle of {cur}: {target:?}"),
                    )
                })?;
            check_name(&name).ctx(|| format!("damaged directory handle of {cur}"))?;
            names.push(name);
            cur = parent;
        }
        let mut path = BrickPath::root();
        for n in names.iter().rev() {
            path = path.join(n).ctx(|| format!("path of {g}"))?;
        }
        if !path.is_root() {
            // The handle may be stale (the directory was replaced by a
            // crash between rename and handle update): check the gfid.
            let stored = self
                .storage
                .getxattr(&path, xa::GFID)
                .ctx(|| format!("gfid of {path}"));
            match stored.and_then(|v| gfid_from_xattr(&v).ctx(|| format!("gfid of {path}"))) {
                Ok(found) if found == *g => {}
                _ => {
                    return Err(fop(
                        Errno::ESTALE,
                        format!("directory handle of {g} is stale"),
                    ))
                }
            }
        }
        Ok(path)
    }

    /// The path of entry `name` in directory `parent`, after checking the
    /// name. `.mortar` at the brick root is reserved.
    fn entry_path(&self, parent: &Gfid, name: &str) -> FopRes<BrickPath> {
        check_name(name).ctx(|| format!("bad name {name:?}"))?;
        if *parent == Gfid::ROOT && name == META_DIR {
            return Err(fop(
                Errno::EACCES,
                "the name .mortar is reserved at the volume root",
            ));
        }
        let dir = self.resolve_dir(parent)?;
        dir.join(name)
            .ctx(|| format!("path of {name:?} in {parent}"))
    }

    fn attr(&self, p: &BrickPath, st: &Stat, gfid: Gfid) -> Attr {
        // Non-directories carry one extra link: the brick's handle.
        let nlink = if st.kind == FileKind::Directory {
            st.nlink
        } else {
            st.nlink.saturating_sub(1)
        };
        let _ = p;
        Attr {
            gfid,
            kind: st.kind,
            mode: st.mode,
            nlink,
            uid: st.uid,
            gid: st.gid,
            size: st.size,
            blocks: st.blocks,
            atime: st.atime,
            mtime: st.mtime,
            ctime: st.ctime,
        }
    }

    fn gfid_at(&self, p: &BrickPath) -> FopRes<Gfid> {
        match self.storage.getxattr(p, xa::GFID) {
            Ok(v) => gfid_from_xattr(&v).ctx(|| format!("malformed gfid on {p}")),
            Err(Errno::ENODATA) => Err(fop(
                Errno::ENODATA,
                format!("{p} has no gfid (made outside Mortar or damaged); heal will repair it"),
            )),
            Err(e) => Err(fop(e, format!("read gfid of {p}"))),
        }
    }

    fn attr_by_gfid(&self, g: &Gfid) -> FopRes<Attr> {
        let (p, _) = self.resolve(g)?;
        let st = self.storage.lstat(&p).ctx(|| format!("stat {g}"))?;
        Ok(self.attr(&p, &st, *g))
    }

    fn sync_dir(&self, dir: &BrickPath) -> FopRes<()> {
        if self.cfg.fsync_namespace {
            self.storage
                .fsync(dir, false)
                .ctx(|| format!("fsync directory {dir}"))?;
        }
        Ok(())
    }

    fn ensure_shard(&self, base: &str, g: &Gfid) -> FopRes<()> {
        let (a, b) = shard_dirs(base, g);
        let mut known = self.shards.lock().expect("shard lock");
        for d in [a, b] {
            if known.contains(&d) {
                continue;
            }
            match self.storage.mkdir(&bp_of(&d), 0o700) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(fop(e, format!("create handle directory {d}"))),
            }
            known.insert(d);
        }
        Ok(())
    }

    fn gfid_in_use(&self, g: &Gfid) -> FopRes<bool> {
        if *g == Gfid::ROOT || g.is_null() {
            return Ok(true);
        }
        for p in [handle_path(g), dir_handle_path(g)] {
            match self.storage.lstat(&p) {
                Ok(_) => return Ok(true),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(fop(e, format!("check gfid {g}"))),
            }
        }
        Ok(false)
    }

    // ---- entry operations -------------------------------------------

    pub fn lookup(&self, parent: &Gfid, name: &str) -> FopRes<Attr> {
        let _ns = self.ns.read().expect("ns lock");
        let p = self.entry_path(parent, name)?;
        let st = self
            .storage
            .lstat(&p)
            .ctx(|| format!("lookup {name:?} in {parent}"))?;
        let g = self.gfid_at(&p)?;
        Ok(self.attr(&p, &st, g))
    }

    /// Make a new object named `name` in `parent` with the client's gfid:
    /// built under `.mortar/tmp`, stamped with its gfid, given its handle,
    /// then renamed into place, so the name never exists without a gfid.
    fn create_object(
        &self,
        parent: &Gfid,
        name: &str,
        new: &bp::NewObject,
        kind: FileKind,
        make: impl FnOnce(&BrickPath) -> SResult<()>,
    ) -> FopRes<Attr> {
        let _ns = self.ns.write().expect("ns lock");
        let p = self.entry_path(parent, name)?;
        match self.storage.lstat(&p) {
            Ok(_) => return Err(fop(Errno::EEXIST, format!("{name:?} exists in {parent}"))),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(fop(e, format!("check {name:?} in {parent}"))),
        }
        if self.gfid_in_use(&new.gfid)? {
            return Err(fop(
                Errno::EEXIST,
                format!("gfid {} is already in use on this brick", new.gfid),
            ));
        }
        let tmp = tmp_path(&new.gfid);
        make(&tmp).ctx(|| format!("create {name:?} in {parent}"))?;
        let undo = |e: FopError| -> FopError {
            let _ = if kind == FileKind::Directory {
                self.storage.rmdir(&tmp)
            } else {
                self.storage.unlink(&tmp)
            };
            e
        };
        let finish = || -> FopRes<()> {
            self.storage
                .set_owner(&tmp, new.uid, new.gid)
                .ctx(|| format!("set owner of {name:?}"))?;
            if kind != FileKind::Symlink {
                // The mode the client asked for, whatever the brick
                // process's umask (and after chown, which clears set-id
                // bits).
                self.storage
                    .set_mode(&tmp, new.mode & 0o7777)
                    .ctx(|| format!("set mode of {name:?}"))?;
            }
            self.storage
                .setxattr(&tmp, xa::GFID, &new.gfid.0, XattrFlags::Create)
                .ctx(|| format!("set gfid of {name:?}"))?;
            if kind == FileKind::Directory {
                self.ensure_shard(DIRS, &new.gfid)?;
                let target = format!("{}/{}", parent.to_hex(), name);
                self.storage
                    .symlink(&target, &dir_handle_path(&new.gfid))
                    .ctx(|| format!("create directory handle of {name:?}"))?;
            } else {
                self.ensure_shard(HANDLES, &new.gfid)?;
                self.storage
                    .link(&tmp, &handle_path(&new.gfid))
                    .ctx(|| format!("create handle of {name:?}"))?;
            }
            self.storage
                .rename(&tmp, &p)
                .ctx(|| format!("move {name:?} into place"))
        };
        finish().map_err(undo)?;
        let (dir, _) = p.split_last().expect("entry has a parent");
        self.sync_dir(&dir)?;
        let st = self
            .storage
            .lstat(&p)
            .ctx(|| format!("stat new {name:?}"))?;
        Ok(self.attr(&p, &st, new.gfid))
    }

    pub fn create(&self, r: &bp::Create) -> FopRes<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Regular, |t| {
            self.storage.create(t, r.new.mode)
        })
    }

    pub fn mkdir(&self, r: &bp::Mkdir) -> FopRes<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Directory, |t| {
            self.storage.mkdir(t, r.new.mode)
        })
    }

    pub fn mknod(&self, r: &bp::Mknod) -> FopRes<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Fifo, |t| {
            self.storage.mkfifo(t, r.new.mode)
        })
    }

    pub fn symlink(&self, r: &bp::Symlink) -> FopRes<Attr> {
        if r.target.is_empty() || r.target.contains('\0') {
            return Err(fop(
                Errno::EINVAL,
                "symlink target must be non-empty and free of NUL",
            ));
        }
        if r.target.len() > SYMLINK_TARGET_BYTES_MAX {
            return Err(fop(
                Errno::ENAMETOOLONG,
                format!("symlink target longer than {SYMLINK_TARGET_BYTES_MAX} bytes"),
            ));
        }
        // The target is stored verbatim and never followed by the brick;
        // clients resolve symlinks themselves.
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Symlink, |t| {
            self.storage.symlink(&r.target, t)
        })
    }

    pub fn link(&self, r: &bp::Link) -> FopRes<Attr> {
        let _ns = self.ns.write().expect("ns lock");
        let (src, kind) = self.resolve(&r.gfid)?;
        if kind == FileKind::Directory {
            return Err(fop(Errno::EPERM, "directories cannot be hard linked"));
        }
        let p = self.entry_path(&r.new_parent, &r.new_name)?;
        self.storage
            .link(&src, &p)
            .ctx(|| format!("link {} as {:?}", r.gfid, r.new_name))?;
        let (dir, _) = p.split_last().expect("entry has a parent");
        self.sync_dir(&dir)?;
        let st = self.storage.lstat(&p).ctx(|| "stat new link".into())?;
        Ok(self.attr(&p, &st, r.gfid))
    }

    /// Drop the handle (and index entry) of a non-directory whose last
    /// name went away.
    fn release_if_last(&self, g: &Gfid, st: &Stat) -> FopRes<()> {
        if st.kind != FileKind::Directory && st.nlink <= 2 {
            match self.storage.unlink(&handle_path(g)) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fop(e, format!("remove handle of {g}"))),
            }
            let _ = self.storage.unlink(&index_path(g));
        }
        Ok(())
    }

    pub fn unlink(&self, r: &bp::Unlink) -> FopRes<()> {
        let _ns = self.ns.write().expect("ns lock");
        let p = self.entry_path(&r.parent, &r.name)?;
        let st = self
            .storage
            .lstat(&p)
            .ctx(|| format!("unlink {:?}", r.name))?;
        if st.kind == FileKind::Directory {
            return Err(fop(Errno::EISDIR, format!("{:?} is a directory", r.name)));
        }
        let g = self.gfid_at(&p).ok();
        self.storage
            .unlink(&p)
            .ctx(|| format!("unlink {:?}", r.name))?;
        if let Some(g) = g {
            self.release_if_last(&g, &st)?;
        }
        let (dir, _) = p.split_last().expect("entry has a parent");
        self.sync_dir(&dir)
    }

    pub fn rmdir(&self, r: &bp::Rmdir) -> FopRes<()> {
        let _ns = self.ns.write().expect("ns lock");
        let p = self.entry_path(&r.parent, &r.name)?;
        let st = self
            .storage
            .lstat(&p)
            .ctx(|| format!("rmdir {:?}", r.name))?;
        if st.kind != FileKind::Directory {
            return Err(fop(
                Errno::ENOTDIR,
                format!("{:?} is not a directory", r.name),
            ));
        }
        let g = self.gfid_at(&p).ok();
        self.storage
            .rmdir(&p)
            .ctx(|| format!("rmdir {:?}", r.name))?;
        if let Some(g) = g {
            let _ = self.storage.unlink(&dir_handle_path(&g));
            let _ = self.storage.unlink(&index_path(&g));
        }
        let (dir, _) = p.split_last().expect("entry has a parent");
        self.sync_dir(&dir)
    }

    pub fn rename(&self, r: &bp::Rename) -> FopRes<()> {
        let _ns = self.ns.write().expect("ns lock");
        let from = self.entry_path(&r.old_parent, &r.old_name)?;
        let to = self.entry_path(&r.new_parent, &r.new_name)?;
        let src = self
            .storage
            .lstat(&from)
            .ctx(|| format!("rename {:?}", r.old_name))?;
        let src_gfid = self.gfid_at(&from)?;
        let dst = match self.storage.lstat(&to) {
            Ok(st) => Some((st.clone(), self.gfid_at(&to).ok())),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(fop(e, format!("rename onto {:?}", r.new_name))),
        };
        if let Some((_, Some(dg))) = &dst {
            if *dg == src_gfid {
                // Two names of one file: POSIX says nothing happens.
                return Ok(());
            }
        }
        self.storage
            .rename(&from, &to)
            .ctx(|| format!("rename {:?} to {:?}", r.old_name, r.new_name))?;
        if src.kind == FileKind::Directory {
            // Point the directory's handle at its new parent and name,
            // replacing the old link atomically.
            let h = dir_handle_path(&src_gfid);
            let tmp = tmp_path(&src_gfid);
            let target = format!("{}/{}", r.new_parent.to_hex(), r.new_name);
            let _ = self.storage.unlink(&tmp);
            self.storage
                .symlink(&target, &tmp)
                .and_then(|_| self.storage.rename(&tmp, &h))
                .ctx(|| format!("update directory handle of {src_gfid}"))?;
        }
        if let Some((dst_st, Some(dg))) = dst {
            if dst_st.kind == FileKind::Directory {
                let _ = self.storage.unlink(&dir_handle_path(&dg));
                let _ = self.storage.unlink(&index_path(&dg));
            } else {
                self.release_if_last(&dg, &dst_st)?;
            }
        }
        let (a, _) = from.split_last().expect("entry has a parent");
        let (b, _) = to.split_last().expect("entry has a parent");
        self.sync_dir(&a)?;
        if a != b {
            self.sync_dir(&b)?;
        }
        Ok(())
    }

    pub fn readdir(&self, r: &bp::Readdir) -> FopRes<bp::ReaddirReply> {
        let _ns = self.ns.read().expect("ns lock");
        let max = r.max_entries.clamp(1, READDIR_ENTRIES_MAX) as usize;
        let dir = self.resolve_dir(&r.dir)?;
        let mut names: Vec<String> = self
            .storage
            .readdir(&dir)
            .ctx(|| format!("readdir {}", r.dir))?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| !(dir.is_root() && n == META_DIR))
            .collect();
        names.sort();
        let start = match &r.after {
            Some(a) => names.partition_point(|n| n <= a),
            None => 0,
        };
        let mut entries = Vec::new();
        let mut i = start;
        while i < names.len() && entries.len() < max {
            let name = &names[i];
            i += 1;
            let p = dir.join(name).ctx(|| format!("entry {name:?}"))?;
            let st = match self.storage.lstat(&p) {
                Ok(st) => st,
                // Removed since the listing: skip it, as readdir does.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(fop(e, format!("stat {p}"))),
            };
            let Ok(g) = self.gfid_at(&p) else {
                tracing::warn!(entry = %p, "skipping an entry without a gfid (heal will repair it)");
                continue;
            };
            entries.push(BrickDirEntry {
                name: name.clone(),
                attr: self.attr(&p, &st, g),
            });
        }
        Ok(bp::ReaddirReply {
            entries,
            eof: i >= names.len(),
        })
    }

    // ---- inode operations -------------------------------------------

    pub fn stat(&self, g: &Gfid) -> FopRes<Attr> {
        let _ns = self.ns.read().expect("ns lock");
        self.attr_by_gfid(g)
    }

    pub fn readlink(&self, g: &Gfid) -> FopRes<String> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, kind) = self.resolve(g)?;
        if kind != FileKind::Symlink {
            return Err(fop(Errno::EINVAL, format!("{g} is not a symlink")));
        }
        self.storage.readlink(&p).ctx(|| format!("readlink {g}"))
    }

    pub fn open(&self, r: &bp::Open) -> FopRes<Attr> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, kind) = self.resolve(&r.gfid)?;
        match kind {
            FileKind::Regular => {}
            FileKind::Directory if !r.write => {}
            FileKind::Directory => {
                return Err(fop(Errno::EISDIR, format!("{} is a directory", r.gfid)))
            }
            FileKind::Symlink => return Err(fop(Errno::ELOOP, format!("{} is a symlink", r.gfid))),
            FileKind::Fifo => return Err(fop(Errno::EINVAL, format!("{} is a FIFO", r.gfid))),
        }
        let st = self.storage.lstat(&p).ctx(|| format!("open {}", r.gfid))?;
        Ok(self.attr(&p, &st, r.gfid))
    }

    fn regular_file(&self, g: &Gfid) -> FopRes<BrickPath> {
        let (p, kind) = self.resolve(g)?;
        match kind {
            FileKind::Regular => Ok(p),
            FileKind::Directory => Err(fop(Errno::EISDIR, format!("{g} is a directory"))),
            _ => Err(fop(Errno::EINVAL, format!("{g} is not a regular file"))),
        }
    }

    pub fn read(&self, r: &bp::Read) -> FopRes<Bytes> {
        if r.len > IO_BYTES_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!(
                    "read of {} bytes exceeds the {IO_BYTES_MAX}-byte limit",
                    r.len
                ),
            ));
        }
        if r.offset
            .checked_add(r.len)
            .is_none_or(|end| end > FILE_BYTES_MAX)
        {
            // Nothing can exist there; report end of file.
            return Ok(Bytes::new());
        }
        let _ns = self.ns.read().expect("ns lock");
        let p = self.regular_file(&r.gfid)?;
        self.storage
            .read(&p, r.offset, r.len as usize)
            .ctx(|| format!("read {} at {}", r.gfid, r.offset))
    }

    pub fn write(&self, r: &bp::Write, data: &[u8]) -> FopRes<bp::WriteReply> {
        let len = data.len() as u64;
        if len > IO_BYTES_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!("write of {len} bytes exceeds the {IO_BYTES_MAX}-byte limit"),
            ));
        }
        if r.offset
            .checked_add(len)
            .is_none_or(|end| end > FILE_BYTES_MAX)
        {
            return Err(fop(
                Errno::EFBIG,
                format!("write past {FILE_BYTES_MAX} bytes, the largest file a brick stores"),
            ));
        }
        let _ns = self.ns.read().expect("ns lock");
        let p = self.regular_file(&r.gfid)?;
        self.storage
            .write(&p, r.offset, data)
            .ctx(|| format!("write {} at {}", r.gfid, r.offset))?;
        let st = self.storage.lstat(&p).ctx(|| format!("stat {}", r.gfid))?;
        Ok(bp::WriteReply {
            written: len,
            size: st.size,
        })
    }

    pub fn truncate(&self, r: &bp::Truncate) -> FopRes<Attr> {
        if r.size > FILE_BYTES_MAX {
            return Err(fop(
                Errno::EFBIG,
                format!("size {} exceeds the largest file a brick stores", r.size),
            ));
        }
        let _ns = self.ns.read().expect("ns lock");
        let p = self.regular_file(&r.gfid)?;
        self.storage
            .truncate(&p, r.size)
            .ctx(|| format!("truncate {}", r.gfid))?;
        let st = self.storage.lstat(&p).ctx(|| format!("stat {}", r.gfid))?;
        Ok(self.attr(&p, &st, r.gfid))
    }

    pub fn fsync(&self, r: &bp::Fsync) -> FopRes<()> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .fsync(&p, r.datasync)
            .ctx(|| format!("fsync {}", r.gfid))
    }

    pub fn setattr(&self, r: &bp::Setattr) -> FopRes<Attr> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        if let Some(mode) = r.mode {
            self.storage
                .set_mode(&p, mode & 0o7777)
                .ctx(|| format!("chmod {}", r.gfid))?;
        }
        if r.uid.is_some() || r.gid.is_some() {
            let st = self.storage.lstat(&p).ctx(|| format!("stat {}", r.gfid))?;
            self.storage
                .set_owner(&p, r.uid.unwrap_or(st.uid), r.gid.unwrap_or(st.gid))
                .ctx(|| format!("chown {}", r.gfid))?;
        }
        if r.atime.is_some() || r.mtime.is_some() {
            self.storage
                .set_times(&p, r.atime, r.mtime)
                .ctx(|| format!("set times of {}", r.gfid))?;
        }
        let st = self.storage.lstat(&p).ctx(|| format!("stat {}", r.gfid))?;
        Ok(self.attr(&p, &st, r.gfid))
    }

    pub fn statfs(&self) -> FopRes<bp::StatfsReply> {
        let s = self.storage.statfs().ctx(|| "statfs".into())?;
        Ok(bp::StatfsReply {
            block_size: s.block_size,
            blocks: s.blocks,
            blocks_free: s.blocks_free,
            blocks_avail: s.blocks_avail,
            files: s.files,
            files_free: s.files_free,
            name_max: s.name_max,
        })
    }

    // ---- xattrs -------------------------------------------------------

    pub fn getxattr(&self, r: &bp::Getxattr) -> FopRes<Vec<u8>> {
        xattr_access(&r.name)?;
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .getxattr(&p, &r.name)
            .ctx(|| format!("getxattr {} on {}", r.name, r.gfid))
    }

    pub fn setxattr(&self, r: &bp::Setxattr) -> FopRes<()> {
        match xattr_access(&r.name)? {
            XattrAccess::ReadWrite => {}
            XattrAccess::ReadOnly => {
                return Err(fop(
                    Errno::EPERM,
                    format!("{} is set by the brick only", r.name),
                ))
            }
            XattrAccess::CountersOnly => {
                return Err(fop(
                    Errno::EPERM,
                    format!("{} is a changelog counter: change it with xattrop", r.name),
                ))
            }
        }
        if r.value.len() > XATTR_VALUE_BYTES_MAX {
            return Err(fop(
                Errno::ERANGE,
                format!("xattr values are at most {XATTR_VALUE_BYTES_MAX} bytes"),
            ));
        }
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .setxattr(&p, &r.name, &r.value, r.flags)
            .ctx(|| format!("setxattr {} on {}", r.name, r.gfid))
    }

    pub fn removexattr(&self, r: &bp::Removexattr) -> FopRes<()> {
        match xattr_access(&r.name)? {
            XattrAccess::ReadWrite => {}
            _ => {
                return Err(fop(
                    Errno::EPERM,
                    format!("{} cannot be removed by clients", r.name),
                ))
            }
        }
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .removexattr(&p, &r.name)
            .ctx(|| format!("removexattr {} on {}", r.name, r.gfid))
    }

    pub fn listxattr(&self, g: &Gfid) -> FopRes<Vec<String>> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(g)?;
        let names = self
            .storage
            .listxattr(&p)
            .ctx(|| format!("listxattr {g}"))?;
        Ok(names
            .into_iter()
            .filter(|n| xattr_access(n).is_ok())
            .collect())
    }

    // ---- counters and the pending-heal index ---------------------------

    fn changelog_all_zero(&self, p: &BrickPath) -> FopRes<bool> {
        for name in self.storage.listxattr(p).ctx(|| format!("listxattr {p}"))? {
            if !xa::is_changelog(&name) {
                continue;
            }
            let raw = match self.storage.getxattr(p, &name) {
                Ok(v) => v,
                Err(Errno::ENODATA) => continue,
                Err(e) => return Err(fop(e, format!("read {name} on {p}"))),
            };
            // Width is unknown here; zero is zero at either width.
            if raw.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Atomically add to counter xattrs and return their new values,
    /// keeping the pending-heal index in step with changelog counters.
    pub fn xattrop(&self, r: &bp::Xattrop) -> FopRes<Vec<(String, CounterDelta)>> {
        if r.deltas.is_empty() || r.deltas.len() > XATTROP_KEYS_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!("xattrop takes 1 to {XATTROP_KEYS_MAX} counters"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (name, d) in &r.deltas {
            if xattr_access(name)? == XattrAccess::ReadOnly || !name.starts_with(xa::MORTAR_PREFIX)
            {
                return Err(fop(
                    Errno::EPERM,
                    format!(
                        "{name} is not a counter (counters live under {})",
                        xa::MORTAR_PREFIX
                    ),
                ));
            }
            let n = match d {
                CounterDelta::Add32(v) => v.len(),
                CounterDelta::Add64(v) => v.len(),
            };
            if n == 0 || n * 8 > XATTR_VALUE_BYTES_MAX {
                return Err(fop(
                    Errno::EINVAL,
                    format!("{name}: bad counter array length {n}"),
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(fop(
                    Errno::EINVAL,
                    format!("{name} appears twice in one xattrop"),
                ));
            }
        }
        let _ns = self.ns.read().expect("ns lock");
        let stripe = r
            .gfid
            .0
            .iter()
            .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(*b as usize));
        let _counter_lock = self.counters[stripe % COUNTER_STRIPES]
            .lock()
            .expect("counter lock");
        let (p, _) = self.resolve(&r.gfid)?;

        let mut updated = Vec::with_capacity(r.deltas.len());
        for (name, d) in &r.deltas {
            let wide = matches!(d, CounterDelta::Add64(_));
            let cur = match self.storage.getxattr(&p, name) {
                Ok(raw) => Counters::parse(&raw, wide)
                    .ctx(|| format!("{name} on {} holds a value of another width", r.gfid))?,
                Err(Errno::ENODATA) => {
                    if wide {
                        Counters::W64(Vec::new())
                    } else {
                        Counters::W32(Vec::new())
                    }
                }
                Err(e) => return Err(fop(e, format!("read {name} on {}", r.gfid))),
            };
            let new = cur
                .add(d)
                .ctx(|| format!("{name} on {} would overflow", r.gfid))?;
            updated.push((name.clone(), new));
        }

        let touches_changelog = updated.iter().any(|(n, _)| xa::is_changelog(n));
        let idx = index_path(&r.gfid);
        let indexed = match self.storage.lstat(&idx) {
            Ok(_) => true,
            Err(Errno::ENOENT) => false,
            Err(e) => return Err(fop(e, "stat index entry")),
        };
        let mut pending_after = indexed;
        if touches_changelog {
            let op_nonzero = updated
                .iter()
                .any(|(n, c)| xa::is_changelog(n) && !c.all_zero());
            pending_after = op_nonzero || {
                // Only other changelog keys can keep the file pending now.
                let mut others_nonzero = false;
                for name in self.storage.listxattr(&p).ctx(|| "listxattr".into())? {
                    if xa::is_changelog(&name) && !updated.iter().any(|(n, _)| *n == name) {
                        let raw = self.storage.getxattr(&p, &name).unwrap_or_default();
                        if raw.iter().any(|b| *b != 0) {
                            others_nonzero = true;
                            break;
                        }
                    }
                }
                others_nonzero
            };
        }

        // Index entry before the counters when entering the index...
        if pending_after && !indexed {
            match self.storage.create(&idx, 0o600) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(fop(e, format!("add {} to the heal index", r.gfid))),
            }
            if r.durable {
                self.storage
                    .fsync(&bp_of(INDEX), false)
                    .ctx(|| "fsync heal index".into())?;
            }
        }
        for (name, c) in &updated {
            self.storage
                .setxattr(&p, name, &c.encode(), XattrFlags::Any)
                .ctx(|| format!("write {name} on {}", r.gfid))?;
        }
        if r.durable {
            self.storage
                .fsync(&p, false)
                .ctx(|| format!("fsync {}", r.gfid))?;
        }
        // ...and after them when leaving it.
        if !pending_after && indexed {
            match self.storage.unlink(&idx) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fop(e, format!("remove {} from the heal index", r.gfid))),
            }
        }
        Ok(updated
            .into_iter()
            .map(|(n, c)| (n, c.into_delta_form()))
            .collect())
    }

    fn index_all(&self) -> FopRes<Vec<Gfid>> {
        let mut v: Vec<Gfid> = self
            .storage
            .readdir(&bp_of(INDEX))
            .ctx(|| "list the heal index".into())?
            .into_iter()
            .filter_map(|e| Gfid::from_hex(&e.name))
            .collect();
        v.sort();
        Ok(v)
    }

    /// A page of the pending-heal index: cost is proportional to the
    /// number of entries in the index, not to the files on the brick.
    pub fn index_list(&self, r: &bp::IndexList) -> FopRes<bp::IndexListReply> {
        let max = r.max_entries.clamp(1, READDIR_ENTRIES_MAX) as usize;
        let all = self.index_all()?;
        let start = match r.after {
            Some(a) => all.partition_point(|g| *g <= a),
            None => 0,
        };
        let end = (start + max).min(all.len());
        Ok(bp::IndexListReply {
            gfids: all[start..end].to_vec(),
            eof: end >= all.len(),
        })
    }

    pub fn index_count(&self) -> FopRes<u64> {
        Ok(self.index_all()?.len() as u64)
    }
}
