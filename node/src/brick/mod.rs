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
//!   writes the counter; going to zero writes the counter and keeps the
//!   entry for the file's next write (`kept`: bounded; the entry of a gfid
//!   it lets go is removed after the counter, and index listings pass over
//!   kept entries whose counters are clean). So after any crash, non-zero
//!   counters always have an index entry; an entry whose counters are all
//!   zero is pruned at startup.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use mortar_proto::brick::xattr as xa;
use mortar_proto::brick::{
    self as bp, CounterDelta, DirEntry as BrickDirEntry, XattrFlags, FILE_BYTES_MAX, IO_BYTES_MAX,
    PATH_BYTES_MAX, READDIR_ENTRIES_MAX, SYMLINK_TARGET_BYTES_MAX, XATTROP_KEYS_MAX,
    XATTR_NAME_BYTES_MAX, XATTR_VALUE_BYTES_MAX,
};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};
use mortar_storage::{check_name, BrickPath, SResult, Stat, Storage};

use crate::NodeError;

/// The reserved directory at the brick root.
pub const META_DIR: &str = ".mortar";
const HANDLES: &str = ".mortar/handles";
const DIRS: &str = ".mortar/dirs";
const INDEX: &str = ".mortar/index";
/// The file every pending-heal index entry is a hard link to: adding an
/// entry is a link, not a new inode, and removing one frees none (inode
/// allocation on a busy ext4 was a tenth of a write-heavy run's CPU).
const INDEX_BASE: &str = ".mortar/index-base";
const TMP: &str = ".mortar/tmp";

/// Number of lock stripes serialising counter updates per gfid.
const COUNTER_STRIPES: usize = 64;
/// Deepest directory chain `resolve` will walk before declaring a loop.
const DIR_DEPTH_MAX: usize = 2048;
// The longest legal path ("a/a/.../a") has (PATH_BYTES_MAX + 1) / 2
// components; `resolve_dir` must walk that far before it calls a chain a
// loop, or it would refuse directories a client was allowed to make.
const _: () = assert!(DIR_DEPTH_MAX >= PATH_BYTES_MAX.div_ceil(2));
// `xattrop` picks a stripe with `% COUNTER_STRIPES`.
const _: () = assert!(COUNTER_STRIPES > 0);

pub use checksum::block_checksum;
use kept::KeptIndex;
pub use kept::INDEX_KEPT_MAX;
pub use mortar_proto::brick::FopResult;

fn fop(errno: Errno, detail: impl Into<String>) -> FopError {
    FopError::new(errno, detail)
}

/// Attach what was being done to a bare errno.
trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FopResult<T>;
}

impl<T> Ctx<T> for SResult<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FopResult<T> {
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
    /// Index entries kept for files whose changelog went clean.
    kept: Mutex<KeptIndex>,
}

fn shard_dirs(base: &str, g: &Gfid) -> (String, String) {
    let h = g.to_hex();
    let a = format!("{base}/{}", &h[0..2]);
    let b = format!("{a}/{}", &h[2..4]);
    (a, b)
}

/// Whether a non-directory whose handle has `nlink` links is only its
/// handle: no name in the tree links it (the handle is one of the links).
/// An unlink whose last name's removal reached the disk before its
/// handle's did, or a create cut short between its handle and its rename
/// into place, leaves one; nothing can reach it (no client has it open
/// across a restart), so startup drops it with its index entry.
///
/// Regression (cluster seed 302): a rename over a file on s2 was durable
/// and the replaced file's handle removal was not when s2 lost power; the
/// handle kept its changelog marks and index entry, the other bricks no
/// longer held the gfid, and heal skipped it for ever as "not made there
/// yet"; fixed by dropping such handles in recovery.
pub(crate) fn orphaned(kind: FileKind, nlink: u32) -> bool {
    kind != FileKind::Directory && nlink <= 1
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

mod checksum;
mod counters;
mod entry;
mod inode;
mod kept;
mod resolve;
mod whole;
mod xattr;
mod xattrop_many;

/// Stamp the brick root with `volume_id` on first use; refuse a brick
/// stamped for another volume.
fn claim_volume<S: Storage>(storage: &S, brick: &str, volume_id: &str) -> Result<(), NodeError> {
    let root = BrickPath::root();
    match storage.getxattr(&root, xa::VOLUME_ID) {
        Ok(v) if v == volume_id.as_bytes() => Ok(()),
        Ok(v) => Err(NodeError::ForeignVolume {
            brick: brick.to_string(),
            found: String::from_utf8_lossy(&v).into_owned(),
            wanted: volume_id.to_string(),
            xattr: xa::VOLUME_ID,
        }),
        Err(Errno::ENODATA) => storage
            .setxattr(
                &root,
                xa::VOLUME_ID,
                volume_id.as_bytes(),
                XattrFlags::Create,
            )
            .map_err(|errno| NodeError::NoXattrs {
                brick: brick.to_string(),
                errno,
            }),
        Err(errno) => Err(NodeError::ReadVolumeId {
            brick: brick.to_string(),
            errno,
        }),
    }
}

/// Give the brick root the root gfid on first use; refuse any other.
fn claim_root_gfid<S: Storage>(storage: &S, brick: &str) -> Result<(), NodeError> {
    let root = BrickPath::root();
    match storage.getxattr(&root, xa::GFID) {
        Ok(v) if v == Gfid::ROOT.0 => Ok(()),
        Ok(_) => Err(NodeError::ForeignRootGfid {
            brick: brick.to_string(),
        }),
        Err(Errno::ENODATA) => storage
            .setxattr(&root, xa::GFID, &Gfid::ROOT.0, XattrFlags::Create)
            .map_err(|errno| NodeError::SetRootGfid {
                brick: brick.to_string(),
                errno,
            }),
        Err(errno) => Err(NodeError::ReadRootGfid {
            brick: brick.to_string(),
            errno,
        }),
    }
}

/// Create the `.mortar` tree (if missing) and make it durable.
fn make_meta_dirs<S: Storage>(storage: &S, brick: &str) -> Result<(), NodeError> {
    for dir in [META_DIR, HANDLES, DIRS, INDEX, TMP] {
        match storage.mkdir(&bp_of(dir), 0o700) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => {
                return Err(NodeError::CreateMetaDir {
                    brick: brick.to_string(),
                    dir,
                    errno,
                })
            }
        }
    }
    // Without it each index entry is a file of its own (see `index_add`).
    let _ = storage.create(&bp_of(INDEX_BASE), 0o600);
    storage
        .fsync(&bp_of(META_DIR), false)
        .and_then(|_| storage.fsync(&BrickPath::root(), false))
        .map_err(|errno| NodeError::Fsync {
            brick: brick.to_string(),
            errno,
        })
}

impl<S: Storage> Brick<S> {
    /// Open (and on first use, initialise) a brick on `storage`. Refuses a
    /// brick that belongs to another volume, and a filesystem that cannot
    /// store Mortar's xattrs.
    pub fn init(storage: S, cfg: BrickConfig) -> Result<Self, NodeError> {
        let brick = storage.describe();
        let st = storage
            .lstat(&BrickPath::root())
            .map_err(|errno| NodeError::StatRoot {
                brick: brick.clone(),
                errno,
            })?;
        if st.kind != FileKind::Directory {
            return Err(NodeError::NotADirectory { brick });
        }
        claim_volume(&storage, &brick, &cfg.volume_id)?;
        claim_root_gfid(&storage, &brick)?;
        make_meta_dirs(&storage, &brick)?;
        let b = Brick {
            storage,
            cfg,
            ns: RwLock::new(()),
            counters: (0..COUNTER_STRIPES).map(|_| Mutex::new(())).collect(),
            shards: Mutex::new(BTreeSet::new()),
            kept: Mutex::new(KeptIndex::default()),
        };
        b.recover()
            .map_err(|error| NodeError::Recovery { brick, error })?;
        Ok(b)
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn config(&self) -> &BrickConfig {
        &self.cfg
    }

    /// At startup, drop the handle of non-directory `g` if no name links it
    /// any more ([`orphaned`]); true if it was dropped.
    fn drop_if_orphaned(&self, g: &Gfid) -> FopResult<bool> {
        let h = handle_path(g);
        let st = match self.storage.lstat(&h) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(fop(e, format!("stat handle of {g}"))),
        };
        if !orphaned(st.kind, st.nlink) {
            return Ok(false);
        }
        tracing::warn!(gfid = %g, "dropping a file no name links any more (an unlink or create cut short by a crash)");
        match self.storage.unlink(&h) {
            Ok(()) | Err(Errno::ENOENT) => Ok(true),
            Err(e) => Err(fop(e, format!("remove the orphaned handle of {g}"))),
        }
    }

    /// Startup repair after a crash: drop half-created objects, files no
    /// name links any more, and index entries whose counters are all zero
    /// (or whose file is gone).
    fn recover(&self) -> FopResult<()> {
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
            // The handle is made before the rename into place.
            if let Some(g) = Gfid::from_hex(&e.name) {
                self.drop_if_orphaned(&g)?;
            }
        }
        let mut pruned = 0;
        for g in self.index_all()? {
            let keep = match self.resolve(&g) {
                Ok(_) if self.drop_if_orphaned(&g)? => false,
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
}

#[cfg(test)]
mod tests {
    use super::orphaned;
    use mortar_proto::FileKind;

    #[test]
    fn only_a_file_left_with_just_its_handle_is_orphaned() {
        #[rustfmt::skip]
        let rows = [
            (FileKind::Regular,   1, true,  "only the handle links it"),
            (FileKind::Regular,   2, false, "one name and the handle"),
            (FileKind::Regular,   3, false, "two hard links and the handle"),
            (FileKind::Symlink,   1, true,  "a symlink is hard linked as a handle too"),
            (FileKind::Fifo,      1, true,  "so is a FIFO"),
            (FileKind::Directory, 1, false, "directories have symlink handles; never dropped"),
            (FileKind::Regular,   0, true,  "a count below the handle itself is still no name"),
        ];
        for (kind, nlink, want, why) in rows {
            assert_eq!(orphaned(kind, nlink), want, "{why}");
        }
    }
}
