//! Resolution: from a gfid to its path on the brick (handles for
//! non-directories, parent links for directories), and the small helpers
//! every operation shares.

use super::*;

pub(super) fn gfid_from_xattr(raw: &[u8]) -> SResult<Gfid> {
    let b: [u8; 16] = raw.try_into().map_err(|_| Errno::EIO)?;
    Ok(Gfid(b))
}

impl<S: Storage> Brick<S> {
    /// The path of an object by gfid, and its kind. Unknown gfids are ESTALE.
    pub fn resolve(&self, g: &Gfid) -> FopResult<(BrickPath, FileKind)> {
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
    pub fn resolve_dir(&self, g: &Gfid) -> FopResult<BrickPath> {
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
    pub(super) fn entry_path(&self, parent: &Gfid, name: &str) -> FopResult<BrickPath> {
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

    pub(super) fn attr(&self, p: &BrickPath, st: &Stat, gfid: Gfid) -> Attr {
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

    pub(super) fn gfid_at(&self, p: &BrickPath) -> FopResult<Gfid> {
        match self.storage.getxattr(p, xa::GFID) {
            Ok(v) => gfid_from_xattr(&v).ctx(|| format!("malformed gfid on {p}")),
            Err(Errno::ENODATA) => Err(fop(
                Errno::ENODATA,
                format!("{p} has no gfid (made outside Mortar or damaged); heal will repair it"),
            )),
            Err(e) => Err(fop(e, format!("read gfid of {p}"))),
        }
    }

    pub(super) fn attr_by_gfid(&self, g: &Gfid) -> FopResult<Attr> {
        let (p, _) = self.resolve(g)?;
        let st = self.storage.lstat(&p).ctx(|| format!("stat {g}"))?;
        Ok(self.attr(&p, &st, *g))
    }

    pub(super) fn sync_dir(&self, dir: &BrickPath) -> FopResult<()> {
        if self.cfg.fsync_namespace {
            self.storage
                .fsync(dir, false)
                .ctx(|| format!("fsync directory {dir}"))?;
        }
        Ok(())
    }

    pub(super) fn ensure_shard(&self, base: &str, g: &Gfid) -> FopResult<()> {
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

    pub(super) fn gfid_in_use(&self, g: &Gfid) -> FopResult<bool> {
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
}
