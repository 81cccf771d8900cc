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

use std::collections::BTreeMap;
use std::sync::Mutex;

use mortar_net::BoxFuture;
use mortar_proto::brick::{self as bp, XattrFlags};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::fop::{shape_error, Child, Fop, FopOut, FopRes, Subvolume};

pub const LAYOUT_XATTR: &str = "trusted.mortar.dht";
pub const LINKTO_XATTR: &str = "trusted.mortar.dht.linkto";

/// FNV-1a, 32 bits: stable across versions and platforms, which is all
/// placement needs (it is not a security boundary).
pub fn name_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
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

fn decode_range(v: &[u8]) -> Option<(u32, u32)> {
    let a = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
    let b = u32::from_be_bytes(v.get(4..8)?.try_into().ok()?);
    Some((a, b))
}

pub struct Distribute {
    name: String,
    subvols: Vec<Child>,
    /// Which subvolume holds a non-directory gfid (learned from lookups).
    placed: Mutex<BTreeMap<Gfid, usize>>,
    /// Directory layouts, by directory gfid.
    layouts: Mutex<BTreeMap<Gfid, Vec<(u32, u32)>>>,
}

impl Distribute {
    pub fn new(name: &str, subvols: Vec<Child>) -> Distribute {
        Distribute {
            name: name.to_string(),
            subvols,
            placed: Mutex::new(BTreeMap::new()),
            layouts: Mutex::new(BTreeMap::new()),
        }
    }

    fn n(&self) -> usize {
        self.subvols.len()
    }

    /// The layout of directory `dir`, read from its copies (and written
    /// where missing, e.g. the volume root on first use).
    async fn layout(&self, dir: Gfid) -> Vec<(u32, u32)> {
        if let Some(l) = self.layouts.lock().expect("layouts").get(&dir) {
            return l.clone();
        }
        let mut layout = even_layout(self.n());
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
                    let _ = s
                        .fop(Fop::Setxattr(bp::Setxattr {
                            gfid: dir,
                            name: LAYOUT_XATTR.into(),
                            value: encode_range(layout[i]),
                            flags: XattrFlags::Any,
                        }))
                        .await;
                }
                _ => complete = false,
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
            .unwrap_or(h as usize % self.n())
    }

    fn remember(&self, gfid: Gfid, kind: FileKind, i: usize) {
        if kind != FileKind::Directory {
            self.placed.lock().expect("placed").insert(gfid, i);
        }
    }

    /// Find `name` in `parent`: the hashed subvolume first, then all.
    /// Returns the subvolume holding the data and the attributes.
    async fn find(&self, parent: Gfid, name: &str) -> Result<(usize, Attr), FopError> {
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
                Err(e) if e.errno == Errno::ENOENT => last = e,
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The subvolume holding a non-directory gfid.
    async fn locate(&self, gfid: Gfid) -> Result<usize, FopError> {
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
    async fn on_all(&self, op: Fop) -> FopRes {
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
    async fn by_gfid(&self, gfid: Gfid, op: Fop, write: bool) -> FopRes {
        if self.is_dir(gfid).await {
            return if write {
                self.on_all(op).await
            } else {
                self.subvols[0].fop(op).await
            };
        }
        let i = self.locate(gfid).await?;
        self.subvols[i].fop(op).await
    }

    async fn mkdir(&self, q: bp::Mkdir) -> FopRes {
        let layout = even_layout(self.n());
        let mut attr = None;
        for (i, s) in self.subvols.iter().enumerate() {
            let a = s.fop(Fop::Mkdir(q.clone())).await?.attr()?;
            s.fop(Fop::Setxattr(bp::Setxattr {
                gfid: q.new.gfid,
                name: LAYOUT_XATTR.into(),
                value: encode_range(layout[i]),
                flags: XattrFlags::Any,
            }))
            .await?;
            attr.get_or_insert(a);
        }
        self.layouts
            .lock()
            .expect("layouts")
            .insert(q.new.gfid, layout);
        attr.map(FopOut::Attr)
            .ok_or_else(|| FopError::new(Errno::EIO, "no subvolumes"))
    }

    async fn rename(&self, q: bp::Rename) -> FopRes {
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

    async fn unlink(&self, q: bp::Unlink) -> FopRes {
        let (src, attr) = self.find(q.parent, &q.name).await?;
        self.subvols[src].fop(Fop::Unlink(q.clone())).await?;
        let h = self.hashed(q.parent, &q.name).await;
        if h != src {
            let _ = self.subvols[h].fop(Fop::Unlink(q)).await;
        }
        self.placed.lock().expect("placed").remove(&attr.gfid);
        Ok(FopOut::Done)
    }

    async fn readdir(&self, q: bp::Readdir) -> FopRes {
        let max = q.max_entries.clamp(1, bp::READDIR_ENTRIES_MAX) as usize;
        let mut merged: BTreeMap<String, bp::DirEntry> = BTreeMap::new();
        let mut all_eof = true;
        let mut horizon: Option<String> = None;
        for s in &self.subvols {
            let page = match s.fop(Fop::Readdir(q.clone())).await? {
                FopOut::Dir(p) => p,
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
            for e in page.entries {
                let is_link = e.attr.kind == FileKind::Regular
                    && e.attr.size == 0
                    && e.attr.mode & 0o1000 != 0;
                if is_link {
                    continue;
                }
                merged.entry(e.name.clone()).or_insert(e);
            }
        }
        let mut entries: Vec<bp::DirEntry> = merged
            .into_values()
            .filter(|e| horizon.as_ref().is_none_or(|h| e.name <= *h))
            .collect();
        let eof = all_eof && entries.len() <= max;
        entries.truncate(max);
        Ok(FopOut::Dir(bp::ReaddirReply { entries, eof }))
    }

    async fn statfs(&self) -> FopRes {
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
}

impl Subvolume for Distribute {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.subvols.iter().all(|s| s.is_up())
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopRes> {
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
                Fop::Readdir(q) => self.readdir(q).await,
                Fop::Statfs => self.statfs().await,
                Fop::Stat(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Readlink(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Open(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Read(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Getxattr(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Listxattr(ref q) => self.by_gfid(q.gfid, op.clone(), false).await,
                Fop::Write(ref q, _) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Truncate(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Fsync(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Setattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Setxattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Removexattr(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Xattrop(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Inodelk(ref q) => self.by_gfid(q.gfid, op.clone(), true).await,
                Fop::Entrylk(_) => self.on_all(op).await,
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
