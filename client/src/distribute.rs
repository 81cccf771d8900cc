//! The distribute layer: files spread over subvolumes by name hash.
//!
//! * Every directory exists on every subvolume; each copy carries its hash
//!   range in `trusted.mortar.dht` (two big-endian u32: start, end
//!   inclusive). `mkdir` splits the 32-bit hash space evenly.
//! * A file is created on the subvolume whose range holds the hash of its
//!   name. Lookup asks that subvolume first and falls back to all of them
//!   (a file renamed to a name hashing elsewhere stays where its data is).
//! * A rename that moves a name's hash to another subvolume leaves a link
//!   file there (`trusted.mortar.dht.linkto` = the data's subvolume) so
//!   the hashed lookup still finds it in one step.
//! * Readdir merges every subvolume's entries in name order, skipping link
//!   files and listing directories once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use mortar_net::BoxFuture;
use mortar_proto::brick::{self as bp, XattrFlags};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::fop::{shape_error, Child, Fop, FopOut, FopResult, Subvolume};

pub use mortar_proto::xattr::{DHT_LAYOUT as LAYOUT_XATTR, DHT_LINKTO as LINKTO_XATTR};

/// FNV-1a, 32 bits: stable across versions and platforms, which is all
/// placement needs (it is not a security boundary).
pub fn name_hash(name: &str) -> u32 {
    mortar_proto::hash::fnv1a_32(name.as_bytes())
}

/// Even split of the hash space over `n` subvolumes.
pub fn even_layout(n: usize) -> Vec<(u32, u32)> {
    let n = n.max(1) as u64;
    let span = (1u64 << 32) / n;
    (0..n)
        .map(|i| {
            let start = i * span;
            let end = if i == n - 1 {
                u32::MAX as u64
            } else {
                start + span - 1
            };
            (start as u32, end as u32)
        })
        .collect()
}

fn encode_range(r: (u32, u32)) -> Vec<u8> {
    let mut v = r.0.to_be_bytes().to_vec();
    v.extend_from_slice(&r.1.to_be_bytes());
    v
}

/// Record `dir`'s hash range on one subvolume.
async fn set_range(s: &Child, dir: Gfid, range: (u32, u32)) -> FopResult<FopOut> {
    s.fop(Fop::Setxattr(bp::Setxattr {
        gfid: dir,
        name: LAYOUT_XATTR.into(),
        value: encode_range(range),
        flags: XattrFlags::Any,
    }))
    .await
}

fn decode_range(v: &[u8]) -> Option<(u32, u32)> {
    let a = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
    let b = u32::from_be_bytes(v.get(4..8)?.try_into().ok()?);
    Some((a, b))
}

/// An empty hash range (start after end): a decommissioned subvolume's.
const EMPTY_RANGE: (u32, u32) = (1, 0);

/// Split the hash space evenly over the subvolumes not in `drained`;
/// drained ones get an empty range.
pub fn active_layout(n: usize, drained: &BTreeSet<usize>) -> Vec<(u32, u32)> {
    let active: Vec<usize> = (0..n).filter(|i| !drained.contains(i)).collect();
    if active.is_empty() {
        return even_layout(n);
    }
    let even = even_layout(active.len());
    let mut out = vec![EMPTY_RANGE; n];
    for (slot, i) in active.into_iter().enumerate() {
        out[i] = even[slot];
    }
    out
}

/// Progress of moving files off decommissioned subvolumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationStats {
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    pub failures: u64,
    /// The latest failure, for the operator.
    pub last_error: Option<String>,
}

/// Copies of a file that changed while it was copied before giving up.
const MIGRATE_ATTEMPTS_MAX: u32 = 3;

pub struct Distribute {
    name: String,
    subvols: Vec<Child>,
    /// Subvolumes being drained (`remove-brick start`): no new files.
    drained: BTreeSet<usize>,
    /// Which subvolume holds a non-directory gfid (learned from lookups).
    placed: Mutex<BTreeMap<Gfid, usize>>,
    /// Directory layouts, by directory gfid.
    layouts: Mutex<BTreeMap<Gfid, Vec<(u32, u32)>>>,
}

impl Distribute {
    pub fn new(name: &str, subvols: Vec<Child>) -> Distribute {
        Self::with_drained(name, subvols, BTreeSet::new())
    }

    /// A distribute layer whose subvolumes in `drained` take no new files.
    pub fn with_drained(name: &str, subvols: Vec<Child>, drained: BTreeSet<usize>) -> Distribute {
        Distribute {
            name: name.to_string(),
            subvols,
            drained,
            placed: Mutex::new(BTreeMap::new()),
            layouts: Mutex::new(BTreeMap::new()),
        }
    }

    fn n(&self) -> usize {
        self.subvols.len()
    }

    /// Are any subvolumes being drained (`remove-brick start`)?
    pub fn has_drained(&self) -> bool {
        !self.drained.is_empty()
    }

    /// The layout of directory `dir`, read from its copies (and written
    /// where missing, e.g. the volume root on first use).
    async fn layout(&self, dir: Gfid) -> Vec<(u32, u32)> {
        if let Some(l) = self.layouts.lock().expect("layouts").get(&dir) {
            return l.clone();
        }
        let mut layout = active_layout(self.n(), &self.drained);
        let mut complete = true;
        for (i, s) in self.subvols.iter().enumerate() {
            let r = s
                .fop(Fop::Getxattr(bp::Getxattr {
                    gfid: dir,
                    name: LAYOUT_XATTR.into(),
                }))
                .await;
            match r {
                Ok(FopOut::Value(v)) => {
                    if let Some(range) = decode_range(&v) {
                        layout[i] = range;
                    }
                }
                Err(e) if e.errno == Errno::ENODATA => {
                    let _ = set_range(s, dir, layout[i]).await;
                }
                _ => complete = false,
            }
        }
        if self
            .drained
            .iter()
            .any(|i| layout.get(*i).is_some_and(|(a, b)| a <= b))
        {
            // A drained subvolume still owns hashes here: give the space
            // to the others (fix-layout), so no new file lands on it.
            layout = active_layout(self.n(), &self.drained);
            for (s, range) in self.subvols.iter().zip(&layout) {
                if set_range(s, dir, *range).await.is_err() {
                    complete = false;
                }
            }
        }
        if complete {
            self.layouts
                .lock()
                .expect("layouts")
                .insert(dir, layout.clone());
        }
        layout
    }

    async fn hashed(&self, parent: Gfid, name: &str) -> usize {
        let h = name_hash(name);
        let layout = self.layout(parent).await;
        layout
            .iter()
            .position(|(a, b)| *a <= h && h <= *b)
            .unwrap_or_else(|| {
                // No range holds it (a hole left by a crash mid-layout):
                // any subvolume that takes new files.
                let active: Vec<usize> = (0..self.n())
                    .filter(|i| !self.drained.contains(i))
                    .collect();
                if active.is_empty() {
                    h as usize % self.n()
                } else {
                    active[h as usize % active.len()]
                }
            })
    }

    fn remember(&self, gfid: Gfid, kind: FileKind, i: usize) {
        if kind != FileKind::Directory {
            self.placed.lock().expect("placed").insert(gfid, i);
        }
    }

    /// Find `name` in `parent`: the hashed subvolume first, then all.
    /// Returns the subvolume holding the data and the attributes.
    async fn find(&self, parent: Gfid, name: &str) -> FopResult<(usize, Attr)> {
        let h = self.hashed(parent, name).await;
        let q = bp::Lookup {
            parent,
            name: name.to_string(),
        };
        let mut order: Vec<usize> = vec![h];
        order.extend((0..self.n()).filter(|i| *i != h));
        let mut last = FopError::new(Errno::ENOENT, format!("{name:?} not found"));
        for i in order {
            match self.subvols[i].fop(Fop::Lookup(q.clone())).await {
                Ok(FopOut::Attr(a)) => {
                    if a.kind == FileKind::Regular && a.size == 0 {
                        // A link file: follow it to the data.
                        if let Ok(FopOut::Value(v)) = self.subvols[i]
                            .fop(Fop::Getxattr(bp::Getxattr {
                                gfid: a.gfid,
                                name: LINKTO_XATTR.into(),
                            }))
                            .await
                        {
                            let target = String::from_utf8_lossy(&v).to_string();
                            if let Some(t) = self.subvols.iter().position(|s| s.name() == target) {
                                let attr = self.subvols[t]
                                    .fop(Fop::Stat(bp::Stat { gfid: a.gfid }))
                                    .await?
                                    .attr()?;
                                self.remember(attr.gfid, attr.kind, t);
                                return Ok((t, attr));
                            }
                        }
                    }
                    self.remember(a.gfid, a.kind, i);
                    return Ok((i, a));
                }
                Ok(other) => return Err(shape_error("lookup", &other)),
                // A real failure (EIO, ENOTCONN...) says more than a
                // later subvolume's "not here": keep the first one.
                Err(e) if e.errno == Errno::ENOENT => {
                    if last.errno == Errno::ENOENT {
                        last = e;
                    }
                }
                Err(e) => {
                    if last.errno == Errno::ENOENT {
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }

    /// The subvolume holding a non-directory gfid.
    async fn locate(&self, gfid: Gfid) -> FopResult<usize> {
        if let Some(i) = self.placed.lock().expect("placed").get(&gfid) {
            return Ok(*i);
        }
        for (i, s) in self.subvols.iter().enumerate() {
            if let Ok(FopOut::Attr(a)) = s.fop(Fop::Stat(bp::Stat { gfid })).await {
                if a.kind != FileKind::Directory && a.size == 0 {
                    // Could be a link file; prefer a copy with data.
                    let is_link = matches!(
                        s.fop(Fop::Getxattr(bp::Getxattr {
                            gfid,
                            name: LINKTO_XATTR.into()
                        }))
                        .await,
                        Ok(FopOut::Value(_))
                    );
                    if is_link {
                        continue;
                    }
                }
                self.remember(gfid, a.kind, i);
                return Ok(i);
            }
        }
        Err(FopError::new(
            Errno::ESTALE,
            format!("{}: no subvolume has {gfid}", self.name),
        ))
    }

    async fn is_dir(&self, gfid: Gfid) -> bool {
        if gfid == Gfid::ROOT {
            return true;
        }
        if self.placed.lock().expect("placed").contains_key(&gfid) {
            return false;
        }
        matches!(
            self.subvols[0].fop(Fop::Stat(bp::Stat { gfid })).await,
            Ok(FopOut::Attr(a)) if a.kind == FileKind::Directory
        )
    }

    /// Send to every subvolume (directory operations); the first error
    /// wins, the first reply is returned.
    async fn on_all(&self, op: Fop) -> FopResult<FopOut> {
        let mut first = None;
        for s in &self.subvols {
            let r = s.fop(op.clone()).await;
            match (&first, r) {
                (_, Err(e)) => return Err(e),
                (None, Ok(v)) => first = Some(v),
                _ => {}
            }
        }
        first.ok_or_else(|| FopError::new(Errno::EIO, format!("{} has no subvolumes", self.name)))
    }

    /// Route an operation on a gfid: directories everywhere (reads from
    /// the first), files where they live.
    async fn by_gfid(&self, gfid: Gfid, op: Fop, write: bool) -> FopResult<FopOut> {
        if self.is_dir(gfid).await {
            return if write {
                self.on_all(op).await
            } else {
                self.subvols[0].fop(op).await
            };
        }
        let i = self.locate(gfid).await?;
        match self.subvols[i].fop(op.clone()).await {
            // The file moved (migrated by remove-brick, or renamed away by
            // another client): forget where it was and look again.
            Err(e) if matches!(e.errno, Errno::ESTALE | Errno::ENOENT) => {
                self.placed.lock().expect("placed").remove(&gfid);
                match self.locate(gfid).await {
                    Ok(j) if j != i => self.subvols[j].fop(op).await,
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    async fn mkdir(&self, q: bp::Mkdir) -> FopResult<FopOut> {
        let layout = active_layout(self.n(), &self.drained);
        let mut attr = None;
        for (i, s) in self.subvols.iter().enumerate() {
            let a = s.fop(Fop::Mkdir(q.clone())).await?.attr()?;
            set_range(s, q.new.gfid, layout[i]).await?;
            attr.get_or_insert(a);
        }
        self.layouts
            .lock()
            .expect("layouts")
            .insert(q.new.gfid, layout);
        attr.map(FopOut::Attr)
            .ok_or_else(|| FopError::new(Errno::EIO, "no subvolumes"))
    }

    async fn rename(&self, q: bp::Rename) -> FopResult<FopOut> {
        let (src, attr) = self.find(q.old_parent, &q.old_name).await?;
        if attr.kind == FileKind::Directory {
            return self.on_all(Fop::Rename(q)).await;
        }
        // POSIX rename replaces the target: remove it where it lives if
        // that is another subvolume.
        if let Ok((dst, dattr)) = self.find(q.new_parent, &q.new_name).await {
            if dst != src && dattr.gfid != attr.gfid {
                self.subvols[dst]
                    .fop(Fop::Unlink(bp::Unlink {
                        parent: q.new_parent,
                        name: q.new_name.clone(),
                    }))
                    .await?;
            }
        }
        self.subvols[src].fop(Fop::Rename(q.clone())).await?;
        let h = self.hashed(q.new_parent, &q.new_name).await;
        if h != src {
            // A link file where the new name hashes points at the data.
            let link_gfid = attr.gfid;
            let _ = self.subvols[h]
                .fop(Fop::Unlink(bp::Unlink {
                    parent: q.new_parent,
                    name: q.new_name.clone(),
                }))
                .await;
            let made = self.subvols[h]
                .fop(Fop::Create(bp::Create {
                    parent: q.new_parent,
                    name: q.new_name.clone(),
                    new: bp::NewObject {
                        gfid: link_gfid,
                        mode: 0o1000,
                        uid: 0,
                        gid: 0,
                    },
                }))
                .await;
            if made.is_ok() {
                let _ = self.subvols[h]
                    .fop(Fop::Setxattr(bp::Setxattr {
                        gfid: link_gfid,
                        name: LINKTO_XATTR.into(),
                        value: self.subvols[src].name().as_bytes().to_vec(),
                        flags: XattrFlags::Any,
                    }))
                    .await;
            }
        }
        // Any old link file for the old name goes.
        let old_h = self.hashed(q.old_parent, &q.old_name).await;
        if old_h != src {
            let _ = self.subvols[old_h]
                .fop(Fop::Unlink(bp::Unlink {
                    parent: q.old_parent,
                    name: q.old_name.clone(),
                }))
                .await;
        }
        Ok(FopOut::Done)
    }

    async fn unlink(&self, q: bp::Unlink) -> FopResult<FopOut> {
        let (src, attr) = self.find(q.parent, &q.name).await?;
        self.subvols[src].fop(Fop::Unlink(q.clone())).await?;
        let h = self.hashed(q.parent, &q.name).await;
        if h != src {
            let _ = self.subvols[h].fop(Fop::Unlink(q)).await;
        }
        self.placed.lock().expect("placed").remove(&attr.gfid);
        Ok(FopOut::Done)
    }

    /// One merged page of every subvolume's listing; with `plus`, each
    /// entry says whether its attributes are a lookup's (a file's come
    /// from the one subvolume holding it; a directory is on every
    /// subvolume, so its attributes are left to a lookup).
    async fn readdir(&self, q: bp::Readdir, plus: bool) -> FopResult<FopOut> {
        let max = q.max_entries.clamp(1, bp::READDIR_ENTRIES_MAX) as usize;
        let mut merged: BTreeMap<String, (bp::DirEntry, bool)> = BTreeMap::new();
        let mut all_eof = true;
        let mut horizon: Option<String> = None;
        let one = self.subvols.len() == 1;
        for s in &self.subvols {
            let (page, good) = match s
                .fop(if plus {
                    Fop::ReaddirPlus(q.clone())
                } else {
                    Fop::Readdir(q.clone())
                })
                .await?
            {
                FopOut::Dir(p) => {
                    let n = p.entries.len();
                    (p, vec![false; n])
                }
                FopOut::DirPlus(p, good) if good.len() == p.entries.len() => (p, good),
                other => return Err(shape_error("readdir", &other)),
            };
            if !page.eof {
                all_eof = false;
                // Entries beyond this subvolume's last name may be missing
                // from it: only names up to the smallest last name are
                // complete across subvolumes.
                if let Some(last) = page.entries.last() {
                    if horizon.as_ref().is_none_or(|h| last.name < *h) {
                        horizon = Some(last.name.clone());
                    }
                }
            }
            for (e, good) in page.entries.into_iter().zip(good) {
                let is_link = e.attr.kind == FileKind::Regular
                    && e.attr.size == 0
                    && e.attr.mode & 0o1000 != 0;
                if is_link {
                    continue;
                }
                let good = good && (one || e.attr.kind != FileKind::Directory);
                merged.entry(e.name.clone()).or_insert((e, good));
            }
        }
        let (mut entries, mut good): (Vec<bp::DirEntry>, Vec<bool>) = merged
            .into_values()
            .filter(|(e, _)| horizon.as_ref().is_none_or(|h| e.name <= *h))
            .unzip();
        let eof = all_eof && entries.len() <= max;
        entries.truncate(max);
        good.truncate(max);
        let page = bp::ReaddirReply { entries, eof };
        Ok(if plus {
            FopOut::DirPlus(page, good)
        } else {
            FopOut::Dir(page)
        })
    }

    async fn statfs(&self) -> FopResult<FopOut> {
        let mut total: Option<bp::StatfsReply> = None;
        for s in &self.subvols {
            if let Ok(FopOut::Statfs(r)) = s.fop(Fop::Statfs).await {
                total = Some(match total {
                    None => r,
                    Some(t) => bp::StatfsReply {
                        block_size: t.block_size,
                        blocks: t.blocks + r.blocks * r.block_size / t.block_size.max(1),
                        blocks_free: t.blocks_free
                            + r.blocks_free * r.block_size / t.block_size.max(1),
                        blocks_avail: t.blocks_avail
                            + r.blocks_avail * r.block_size / t.block_size.max(1),
                        files: t.files + r.files,
                        files_free: t.files_free + r.files_free,
                        name_max: t.name_max.min(r.name_max),
                    },
                });
            }
        }
        total.map(FopOut::Statfs).ok_or_else(|| {
            FopError::new(
                Errno::ENOTCONN,
                format!("{}: no subvolume answered statfs", self.name),
            )
        })
    }

    // ---- migration off drained subvolumes (remove-brick start) ----

    /// Move every file off the drained subvolumes to where its name hashes
    /// now, directory by directory (fixing each layout first), then delete
    /// the source. Link files on drained subvolumes are dropped (lookups
    /// fall back to every subvolume). `report` is called after every file.
    /// A file that changed while it was copied is copied again (up to 3
    /// times) before its source is removed; failures are counted and the
    /// sweep goes on.
    pub async fn migrate_drained(
        &self,
        report: &(dyn Fn(&MigrationStats) + Send + Sync),
    ) -> MigrationStats {
        let mut st = MigrationStats::default();
        if self.drained.is_empty() || self.subvols.len() < 2 {
            return st;
        }
        let mut queue = VecDeque::from([Gfid::ROOT]);
        let mut seen = BTreeSet::from([Gfid::ROOT]);
        while let Some(dir) = queue.pop_front() {
            st.dirs += 1;
            self.layouts.lock().expect("layouts").remove(&dir);
            let _ = self.layout(dir).await;
            for k in self.drained.iter().copied() {
                let mut after: Option<String> = None;
                loop {
                    let page = match self.subvols[k]
                        .fop(Fop::Readdir(bp::Readdir {
                            dir,
                            after: after.clone(),
                            max_entries: 256,
                        }))
                        .await
                    {
                        Ok(FopOut::Dir(p)) => p,
                        Ok(other) => {
                            fail(&mut st, format!("readdir: {other:?}"));
                            break;
                        }
                        Err(e) => {
                            fail(
                                &mut st,
                                format!("listing {dir} on {}: {e}", self.subvols[k].name()),
                            );
                            break;
                        }
                    };
                    for e in &page.entries {
                        match e.attr.kind {
                            FileKind::Directory => {
                                if seen.insert(e.attr.gfid) {
                                    queue.push_back(e.attr.gfid);
                                }
                            }
                            _ => {
                                match self.migrate_entry(k, dir, e).await {
                                    Ok(bytes) => {
                                        if let Some(b) = bytes {
                                            st.files += 1;
                                            st.bytes += b;
                                        }
                                    }
                                    Err(why) => fail(&mut st, why),
                                }
                                report(&st);
                            }
                        }
                    }
                    after = page.entries.last().map(|e| e.name.clone());
                    if page.eof || after.is_none() {
                        break;
                    }
                }
            }
        }
        report(&st);
        st
    }

    /// Move one non-directory. `Ok(Some(bytes))` when a file moved,
    /// `Ok(None)` when only a link file was dropped.
    async fn migrate_entry(
        &self,
        k: usize,
        dir: Gfid,
        e: &bp::DirEntry,
    ) -> Result<Option<u64>, String> {
        let src = &self.subvols[k];
        let name = &e.name;
        let a = &e.attr;
        let is_link = a.kind == FileKind::Regular && a.size == 0 && a.mode & 0o1000 != 0;
        if is_link {
            unlink_from(src, dir, name).await?;
            return Ok(None);
        }
        let t = self.hashed(dir, name).await;
        if self.drained.contains(&t) {
            return Err(format!("no subvolume takes {name:?}: every one is drained"));
        }
        let dst = &self.subvols[t];
        clear_target(src, dst, dir, name, a).await?;
        let new = bp::NewObject {
            gfid: a.gfid,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
        };
        if a.kind == FileKind::Symlink {
            copy_symlink(src, dst, dir, name, a.gfid, new).await?;
            unlink_from(src, dir, name).await?;
            self.remember(a.gfid, a.kind, t);
            return Ok(Some(0));
        }
        if a.kind != FileKind::Regular {
            return Err(format!(
                "{name:?} is a {:?}; only files and symlinks migrate",
                a.kind
            ));
        }
        let mut before = a.clone();
        for attempt in 1..=MIGRATE_ATTEMPTS_MAX {
            copy_file(src, dst, dir, name, &before, new).await?;
            let after = src
                .fop(Fop::Stat(bp::Stat { gfid: a.gfid }))
                .await
                .and_then(FopOut::attr)
                .map_err(|err| format!("checking {name:?} on {}: {err}", src.name()))?;
            if after.size == before.size && after.mtime == before.mtime {
                unlink_from(src, dir, name).await?;
                self.remember(a.gfid, a.kind, t);
                return Ok(Some(before.size));
            }
            tracing::info!(file = %name, attempt, "file changed while it was copied; copying again");
            before = after;
        }
        Err(format!(
            "{name:?} kept changing while it was copied ({MIGRATE_ATTEMPTS_MAX} attempts); left on {}",
            src.name()
        ))
    }
}

/// Remove `name` in `dir` from `src` (the last step of a move).
async fn unlink_from(src: &Child, dir: Gfid, name: &str) -> Result<(), String> {
    src.fop(Fop::Unlink(bp::Unlink {
        parent: dir,
        name: name.to_string(),
    }))
    .await
    .map(|_| ())
    .map_err(|err| format!("removing {name:?} from {}: {err}", src.name()))
}

/// A link file at the target (pointing here), or a leftover of this very
/// file, is in the way and goes; a different file there refuses the move.
async fn clear_target(
    src: &Child,
    dst: &Child,
    dir: Gfid,
    name: &str,
    a: &Attr,
) -> Result<(), String> {
    if let Ok(FopOut::Attr(old)) = dst
        .fop(Fop::Lookup(bp::Lookup {
            parent: dir,
            name: name.to_string(),
        }))
        .await
    {
        if old.gfid == a.gfid || (old.size == 0 && old.mode & 0o1000 != 0) {
            let _ = dst
                .fop(Fop::Unlink(bp::Unlink {
                    parent: dir,
                    name: name.to_string(),
                }))
                .await;
        } else {
            return Err(format!(
                "{name:?} exists on both {} and {} as different files; left in place",
                src.name(),
                dst.name()
            ));
        }
    }
    Ok(())
}

/// Make the symlink `gfid` of `src` on `dst`.
async fn copy_symlink(
    src: &Child,
    dst: &Child,
    dir: Gfid,
    name: &str,
    gfid: Gfid,
    new: bp::NewObject,
) -> Result<(), String> {
    let target = match src.fop(Fop::Readlink(bp::Readlink { gfid })).await {
        Ok(FopOut::Target(t)) => t,
        Ok(other) => return Err(format!("readlink {name:?}: {other:?}")),
        Err(err) => return Err(format!("readlink {name:?}: {err}")),
    };
    dst.fop(Fop::Symlink(bp::Symlink {
        parent: dir,
        name: name.to_string(),
        target,
        new,
    }))
    .await
    .map(|_| ())
    .map_err(|err| format!("creating {name:?} on {}: {err}", dst.name()))
}

/// One copy of the regular file `before` (as it was when the copy
/// started) from `src` to a fresh file on `dst`: data, size, user xattrs,
/// times, fsync.
async fn copy_file(
    src: &Child,
    dst: &Child,
    dir: Gfid,
    name: &str,
    before: &Attr,
    new: bp::NewObject,
) -> Result<(), String> {
    let gfid = before.gfid;
    let _ = dst
        .fop(Fop::Unlink(bp::Unlink {
            parent: dir,
            name: name.to_string(),
        }))
        .await;
    dst.fop(Fop::Create(bp::Create {
        parent: dir,
        name: name.to_string(),
        new,
    }))
    .await
    .map_err(|err| format!("creating {name:?} on {}: {err}", dst.name()))?;
    copy_data(src, dst, name, gfid, before.size).await?;
    dst.fop(Fop::Truncate(bp::Truncate {
        gfid,
        size: before.size,
    }))
    .await
    .map_err(|err| format!("sizing {name:?} on {}: {err}", dst.name()))?;
    copy_user_xattrs(src, dst, gfid).await;
    let _ = dst
        .fop(Fop::Setattr(bp::Setattr {
            gfid,
            mode: None,
            uid: None,
            gid: None,
            atime: Some(before.atime),
            mtime: Some(before.mtime),
        }))
        .await;
    dst.fop(Fop::Fsync(bp::Fsync {
        gfid,
        datasync: false,
    }))
    .await
    .map(|_| ())
    .map_err(|err| format!("syncing {name:?} on {}: {err}", dst.name()))
}

/// Copy `size` bytes of `gfid` a chunk at a time; holes stay holes
/// (all-zero chunks are not written).
async fn copy_data(
    src: &Child,
    dst: &Child,
    name: &str,
    gfid: Gfid,
    size: u64,
) -> Result<(), String> {
    crate::copy::copy_keeping_holes(src, &[dst], gfid, size)
        .await
        .map_err(|f| {
            let (verb, dir) = if f.reading {
                ("reading", "from")
            } else {
                ("writing", "to")
            };
            format!("{verb} {name:?} {dir} {}: {}", f.brick, f.err)
        })
}

/// The user xattrs of `gfid` on `src`, set on `dst` (best effort).
async fn copy_user_xattrs(src: &Child, dst: &Child, gfid: Gfid) {
    let Ok(FopOut::Names(names)) = src.fop(Fop::Listxattr(bp::Listxattr { gfid })).await else {
        return;
    };
    for x in names.into_iter().filter(|x| x.starts_with("user.")) {
        if let Ok(FopOut::Value(v)) = src
            .fop(Fop::Getxattr(bp::Getxattr {
                gfid,
                name: x.clone(),
            }))
            .await
        {
            let _ = dst
                .fop(Fop::Setxattr(bp::Setxattr {
                    gfid,
                    name: x,
                    value: v,
                    flags: XattrFlags::Any,
                }))
                .await;
        }
    }
}

fn fail(st: &mut MigrationStats, why: String) {
    tracing::warn!(error = %why, "migration");
    st.failures += 1;
    st.last_error = Some(why);
}

impl Subvolume for Distribute {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.subvols.iter().all(|s| s.is_up())
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
        Box::pin(async move {
            if self.subvols.len() == 1 {
                return self.subvols[0].fop(op).await;
            }
            match op {
                Fop::Lookup(q) => self
                    .find(q.parent, &q.name)
                    .await
                    .map(|(_, a)| FopOut::Attr(a)),
                Fop::Mkdir(q) => self.mkdir(q).await,
                Fop::Rmdir(_) => self.on_all(op).await,
                Fop::Create(ref q) => {
                    let i = self.hashed(q.parent, &q.name).await;
                    let r = self.subvols[i].fop(op.clone()).await?;
                    if let FopOut::Attr(a) = &r {
                        self.remember(a.gfid, a.kind, i);
                    }
                    Ok(r)
                }
                Fop::Mknod(ref q) => {
                    let i = self.hashed(q.parent, &q.name).await;
                    self.subvols[i].fop(op.clone()).await
                }
                Fop::Symlink(ref q) => {
                    let i = self.hashed(q.parent, &q.name).await;
                    self.subvols[i].fop(op.clone()).await
                }
                Fop::Link(ref q) => {
                    let i = self.locate(q.gfid).await?;
                    self.subvols[i].fop(op.clone()).await
                }
                Fop::Unlink(q) => self.unlink(q).await,
                Fop::Rename(q) => self.rename(q).await,
                Fop::Readdir(q) => self.readdir(q, false).await,
                Fop::ReaddirPlus(q) => self.readdir(q, true).await,
                Fop::Statfs => self.statfs().await,
                Fop::Stat(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Readlink(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Open(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Read(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Getxattr(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::GetxattrMany(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Listxattr(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Write(ref q, _) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Truncate(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Fsync(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Setattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Setxattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Removexattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Xattrop(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Inodelk(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Rchecksum(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Discard(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Entrylk(_) => self.on_all(op).await,
                Fop::GfidKinds(_)
                | Fop::GetxattrFiles(_)
                | Fop::ReadWhole(_)
                | Fop::CreateWhole(..)
                | Fop::XattropMany(_) => Err(crate::fop::brick_only(&op)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_cover_the_hash_space_without_overlap() {
        for n in 1..9 {
            let l = even_layout(n);
            assert_eq!(l.len(), n);
            assert_eq!(l[0].0, 0);
            assert_eq!(l[n - 1].1, u32::MAX);
            for w in l.windows(2) {
                assert_eq!(w[0].1 as u64 + 1, w[1].0 as u64);
            }
        }
        // Drained subvolumes get nothing; the rest still cover everything.
        for n in 2..7 {
            for d in 0..n {
                let drained = BTreeSet::from([d]);
                let l = active_layout(n, &drained);
                assert!(l[d].0 > l[d].1, "drained {d} of {n} has {:?}", l[d]);
                let mut live: Vec<(u32, u32)> = l
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != d)
                    .map(|(_, r)| *r)
                    .collect();
                live.sort();
                assert_eq!(live[0].0, 0);
                assert_eq!(live[live.len() - 1].1, u32::MAX);
                for w in live.windows(2) {
                    assert_eq!(w[0].1 as u64 + 1, w[1].0 as u64);
                }
            }
        }
        assert_eq!(decode_range(&encode_range((5, 9))), Some((5, 9)));
        assert_eq!(decode_range(b"short"), None);
    }

    #[test]
    fn hashing_is_stable_and_spreads() {
        assert_eq!(name_hash(""), 0x811c_9dc5);
        assert_eq!(name_hash("a"), 0xe40c_292c);
        let l = even_layout(4);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let h = name_hash(&format!("file-{i}"));
            counts[l.iter().position(|(a, b)| *a <= h && h <= *b).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
    }
}
