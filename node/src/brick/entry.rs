//! Entry operations: lookups and every change to a directory's names
//! (create, mkdir, mknod, symlink, link, unlink, rmdir, rename, readdir).

use super::*;

/// A step run on an object being made, after it is stamped and before it
/// is named (see [`Brick::create_object_sealed`]).
pub(super) type Seal<'a> = Option<&'a dyn Fn(&BrickPath) -> FopResult<()>>;

/// Whether a name that stands where a link of gfid `g` is asked for is
/// `g`'s own file with its gfid xattr lost (the same inode as `g`'s
/// handle, no gfid): then the link is made by giving the gfid back.
///
/// Regression (cluster seed 375): a disk that dropped xattr updates lost
/// a new file's gfid; listings skipped the name, and heal's link of it
/// failed with EEXIST for ever; fixed by this rule in [`Brick::link`].
pub(crate) fn restores_lost_gfid(name_ino: u64, gfid_lost: bool, handle_ino: u64) -> bool {
    gfid_lost && name_ino == handle_ino
}

impl<S: Storage> Brick<S> {
    pub fn lookup(&self, parent: &Gfid, name: &str) -> FopResult<Attr> {
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
    pub(super) fn create_object(
        &self,
        parent: &Gfid,
        name: &str,
        new: &bp::NewObject,
        kind: FileKind,
        make: impl FnOnce(&BrickPath) -> SResult<()>,
    ) -> FopResult<Attr> {
        self.create_object_sealed(parent, name, new, kind, make, None, true)
    }

    /// [`Self::create_object`]; `seal` runs on the stamped object just
    /// before it is given its handle and name; `sync_dir` false leaves the
    /// directory's fsync to the caller.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_object_sealed(
        &self,
        parent: &Gfid,
        name: &str,
        new: &bp::NewObject,
        kind: FileKind,
        make: impl FnOnce(&BrickPath) -> SResult<()>,
        seal: Seal<'_>,
        sync_dir: bool,
    ) -> FopResult<Attr> {
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
        self.stamp_and_place(&tmp, &p, (parent, name), new, kind, seal)
            .map_err(undo)?;
        if sync_dir {
            let (dir, _) = p.split_last().expect("entry has a parent");
            self.sync_dir(&dir)?;
        }
        let st = self
            .storage
            .lstat(&p)
            .ctx(|| format!("stat new {name:?}"))?;
        Ok(self.attr(&p, &st, new.gfid))
    }

    /// Give the object being made at `tmp` its owner, mode, gfid and
    /// handle, then rename it to `p` (`entry` is its parent and name).
    fn stamp_and_place(
        &self,
        tmp: &BrickPath,
        p: &BrickPath,
        entry: (&Gfid, &str),
        new: &bp::NewObject,
        kind: FileKind,
        seal: Seal<'_>,
    ) -> FopResult<()> {
        let (parent, name) = entry;
        self.storage
            .set_owner(tmp, new.uid, new.gid)
            .ctx(|| format!("set owner of {name:?}"))?;
        if kind != FileKind::Symlink {
            // The mode the client asked for, whatever the brick
            // process's umask (and after chown, which clears set-id
            // bits).
            self.storage
                .set_mode(tmp, new.mode & 0o7777)
                .ctx(|| format!("set mode of {name:?}"))?;
        }
        self.storage
            .setxattr(tmp, xa::GFID, &new.gfid.0, XattrFlags::Create)
            .ctx(|| format!("set gfid of {name:?}"))?;
        if let Some(seal) = seal {
            seal(tmp)?;
        }
        if kind == FileKind::Directory {
            self.ensure_shard(DIRS, &new.gfid)?;
            let target = format!("{}/{}", parent.to_hex(), name);
            self.storage
                .symlink(&target, &dir_handle_path(&new.gfid))
                .ctx(|| format!("create directory handle of {name:?}"))?;
        } else {
            self.ensure_shard(HANDLES, &new.gfid)?;
            self.storage
                .link(tmp, &handle_path(&new.gfid))
                .ctx(|| format!("create handle of {name:?}"))?;
        }
        self.storage
            .rename(tmp, p)
            .ctx(|| format!("move {name:?} into place"))
    }

    pub fn create(&self, r: &bp::Create) -> FopResult<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Regular, |t| {
            self.storage.create(t, r.new.mode)
        })
    }

    pub fn mkdir(&self, r: &bp::Mkdir) -> FopResult<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Directory, |t| {
            self.storage.mkdir(t, r.new.mode)
        })
    }

    pub fn mknod(&self, r: &bp::Mknod) -> FopResult<Attr> {
        self.create_object(&r.parent, &r.name, &r.new, FileKind::Fifo, |t| {
            self.storage.mkfifo(t, r.new.mode)
        })
    }

    pub fn symlink(&self, r: &bp::Symlink) -> FopResult<Attr> {
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

    pub fn link(&self, r: &bp::Link) -> FopResult<Attr> {
        let _ns = self.ns.write().expect("ns lock");
        let (src, kind) = self.resolve(&r.gfid)?;
        if kind == FileKind::Directory {
            return Err(fop(Errno::EPERM, "directories cannot be hard linked"));
        }
        let p = self.entry_path(&r.new_parent, &r.new_name)?;
        if let Ok(there) = self.storage.lstat(&p) {
            let handle = self
                .storage
                .lstat(&src)
                .ctx(|| format!("stat {}", r.gfid))?;
            let lost = matches!(self.gfid_at(&p), Err(ref e) if e.errno == Errno::ENODATA);
            if restores_lost_gfid(there.ino, lost, handle.ino) {
                // The name is this very file, whose gfid a lying disk
                // dropped: give it back rather than refuse the heal.
                tracing::warn!(entry = %p, gfid = %r.gfid, "restoring a lost gfid");
                self.storage
                    .setxattr(&p, xa::GFID, &r.gfid.0, XattrFlags::Any)
                    .ctx(|| format!("restore the gfid of {:?}", r.new_name))?;
                let (dir, _) = p.split_last().expect("entry has a parent");
                self.sync_dir(&dir)?;
                return Ok(self.attr(&p, &there, r.gfid));
            }
        }
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
    pub(super) fn release_if_last(&self, g: &Gfid, st: &Stat) -> FopResult<()> {
        if st.kind != FileKind::Directory && st.nlink <= 2 {
            match self.storage.unlink(&handle_path(g)) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fop(e, format!("remove handle of {g}"))),
            }
            self.drop_index_entry(g);
        }
        Ok(())
    }

    pub fn unlink(&self, r: &bp::Unlink) -> FopResult<()> {
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

    pub fn rmdir(&self, r: &bp::Rmdir) -> FopResult<()> {
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
            self.drop_index_entry(&g);
        }
        let (dir, _) = p.split_last().expect("entry has a parent");
        self.sync_dir(&dir)
    }

    pub fn rename(&self, r: &bp::Rename) -> FopResult<()> {
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
                self.drop_index_entry(&dg);
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

    pub fn readdir(&self, r: &bp::Readdir) -> FopResult<bp::ReaddirReply> {
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
}

#[cfg(test)]
mod tests {
    use super::restores_lost_gfid;

    #[test]
    fn a_lost_gfid_is_given_back_only_to_the_same_file() {
        #[rustfmt::skip]
        let table = [
            // (name's inode, its gfid lost, the handle's inode, given back)
            (7, true,  7, true),
            (7, false, 7, false), // it has a gfid: a link there is EEXIST
            (8, true,  7, false), // another file without a gfid: left alone
            (8, false, 7, false),
        ];
        for (name, lost, handle, want) in table {
            assert_eq!(
                restores_lost_gfid(name, lost, handle),
                want,
                "{name} {lost} {handle}"
            );
        }
    }
}
