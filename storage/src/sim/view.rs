//! The [`Storage`] calls of a [`SimStorage`] view, with Linux's checks in
//! Linux's order.

use super::*;

/// What the kernel checks of an xattr name before looking at the file.
pub(super) fn check_xattr_name(name: &str) -> SResult<()> {
    if name.contains('\0') {
        // The name cannot become a C string.
        return Err(Errno::EINVAL);
    }
    if name.is_empty() || name.len() > XATTR_NAME_BYTES_MAX {
        return Err(Errno::ERANGE);
    }
    Ok(())
}

/// What the kernel checks of an xattr name once it has the inode, in its
/// order: the `user.` namespace only on regular files and directories
/// (`write` decides EPERM or ENODATA), then a namespace ext4 handles.
pub(super) fn check_xattr_namespace(name: &str, kind: FileKind, write: bool) -> SResult<()> {
    if name.starts_with("user.") && !matches!(kind, FileKind::Regular | FileKind::Directory) {
        return Err(if write { Errno::EPERM } else { Errno::ENODATA });
    }
    for prefix in ["user.", "trusted.", "security."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return if rest.is_empty() {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            };
        }
    }
    // `system.` holds only POSIX ACLs, which this disk does not model;
    // anything else has no handler at all.
    Err(Errno::EOPNOTSUPP)
}

impl Storage for SimStorage {
    fn describe(&self) -> String {
        format!("simdisk:{}", self.root)
    }

    fn lstat(&self, p: &BrickPath) -> SResult<Stat> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        d.stat(ino)
    }

    fn mkdir(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        // mkdir(2) keeps only the permission and sticky bits.
        let content = Content::Dir(BTreeMap::new());
        self.disk
            .lock()
            .create_at(&self.root, p, content, mode & 0o1777)
    }

    fn create(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        self.disk
            .lock()
            .create_at(&self.root, p, Content::Regular, mode & 0o7777)
    }

    fn mkfifo(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        self.disk
            .lock()
            .create_at(&self.root, p, Content::Fifo, mode & 0o7777)
    }

    fn symlink(&self, target: &str, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        if target.contains('\0') {
            return Err(Errno::EINVAL);
        }
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() > SYMLINK_TARGET_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        d.check_room_for_inode()?;
        let parent = loc.parent();
        d.make_node(parent, name, Content::Symlink(target.to_string()), 0o777);
        Ok(())
    }

    fn readlink(&self, p: &BrickPath) -> SResult<String> {
        let d = self.disk.lock();
        let (loc, _) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        match &d.node(ino)?.content {
            Content::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn link(&self, existing: &BrickPath, new: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (old, _) = d.locate_entry(&self.root, existing)?;
        let (loc, name) = d.locate_entry(&self.root, new)?;
        let ino = old.ino.ok_or(Errno::ENOENT)?;
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        let node = d.node(ino)?;
        if node.kind() == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        if node.nlink >= LINKS_MAX {
            return Err(Errno::EMLINK);
        }
        let (parent, at) = (loc.parent(), d.now());
        let name = name.to_string();
        d.journal(
            MetaOp::Link {
                parent,
                name,
                ino,
                at,
            },
            false,
        );
        Ok(())
    }

    fn rename(&self, from: &BrickPath, to: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (src, from_name) = d.locate_entry(&self.root, from)?;
        let (dst, to_name) = d.locate_entry(&self.root, to)?;
        let ino = src.ino.ok_or(Errno::ENOENT)?;
        // The kernel's two ancestry traps: a directory cannot move beneath
        // itself, and a target that contains the source is not empty.
        if dst.chain.contains(&ino) {
            return Err(Errno::EINVAL);
        }
        if let Some(target) = dst.ino {
            if src.chain.contains(&target) {
                return Err(Errno::ENOTEMPTY);
            }
            if target == ino {
                // Two names of one file (or one name twice): POSIX says
                // rename does nothing.
                return Ok(());
            }
            let moved_dir = d.node(ino)?.kind() == FileKind::Directory;
            match (&d.node(target)?.content, moved_dir) {
                (Content::Dir(_), false) => return Err(Errno::EISDIR),
                (Content::Dir(entries), true) if !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                (Content::Dir(_), true) => {}
                (_, true) => return Err(Errno::ENOTDIR),
                (_, false) => {}
            }
        }
        let op = MetaOp::Rename {
            from_dir: src.parent(),
            from_name: from_name.to_string(),
            to_dir: dst.parent(),
            to_name: to_name.to_string(),
            at: d.now(),
        };
        d.journal(op, false);
        Ok(())
    }

    fn unlink(&self, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        if d.node(ino)?.kind() == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let (parent, name, at) = (loc.parent(), name.to_string(), d.now());
        d.journal(MetaOp::Remove { parent, name, at }, false);
        Ok(())
    }

    fn rmdir(&self, p: &BrickPath) -> SResult<()> {
        let mut d = self.disk.lock();
        let (loc, name) = d.locate_entry(&self.root, p)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        match &d.node(ino)?.content {
            Content::Dir(entries) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            Content::Dir(_) => {}
            _ => return Err(Errno::ENOTDIR),
        }
        let (parent, name, at) = (loc.parent(), name.to_string(), d.now());
        d.journal(MetaOp::Remove { parent, name, at }, false);
        Ok(())
    }

    fn read(&self, p: &BrickPath, offset: u64, len: usize) -> SResult<Bytes> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        let p_eio = d.faults.read_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        let Some(f) = d.files.get(&ino) else {
            return Ok(Bytes::new());
        };
        let end = f.current.size.min(offset.saturating_add(len as u64));
        if offset < end && f.latent_overlaps(offset, end) {
            return Err(Errno::EIO);
        }
        Ok(Bytes::from(f.current.read(offset, len)))
    }

    fn write(&self, p: &BrickPath, offset: u64, data: &[u8]) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        if data.is_empty() {
            // A zero-length write changes nothing, not even mtime.
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let old_size = d.file_size(ino);
        let new_size = old_size.max(end);
        if let Some(cap) = d.faults.capacity_bytes {
            if new_size > old_size && d.used_bytes - old_size + new_size > cap {
                return Err(Errno::ENOSPC);
            }
        }
        let p_eio = d.faults.write_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        d.used_bytes = d.used_bytes - old_size + new_size;
        let f = d.files.entry(ino).or_default();
        f.push(DataOp::Write {
            offset,
            data: data.to_vec(),
        });
        f.clear_latent(offset, end);
        d.touch(ino);
        Ok(())
    }

    fn truncate(&self, p: &BrickPath, size: u64) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        if size > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let old_size = d.file_size(ino);
        if let Some(cap) = d.faults.capacity_bytes {
            if size > old_size && d.used_bytes - old_size + size > cap {
                return Err(Errno::ENOSPC);
            }
        }
        let p_eio = d.faults.write_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        d.used_bytes = d.used_bytes - old_size + size;
        let f = d.files.entry(ino).or_default();
        f.push(DataOp::Truncate { size });
        f.clear_latent(size, u64::MAX);
        // truncate(2) updates mtime and ctime even when the size is unchanged.
        d.touch(ino);
        Ok(())
    }

    fn punch_hole(&self, p: &BrickPath, offset: u64, len: u64) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.regular(&self.root, p)?;
        // Linux's order: a bad range is EINVAL, one past the largest file
        // EFBIG (loff_t is signed, so offsets beyond i64 are bad ranges).
        if len == 0 || offset > i64::MAX as u64 || len > i64::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > FILE_BYTES_MAX {
            return Err(Errno::EFBIG);
        }
        let p_eio = d.faults.write_eio;
        if d.rng.chance(p_eio) {
            return Err(Errno::EIO);
        }
        let f = d.files.entry(ino).or_default();
        f.push(DataOp::Punch { offset, len });
        // Deallocated sectors no longer fail.
        f.clear_latent(offset, end);
        // fallocate(2) updates mtime and ctime when it punches a hole.
        d.touch(ino);
        Ok(())
    }

    fn sync_all(&self) -> SResult<()> {
        let mut d = self.disk.lock();
        d.sync_all_files();
        d.commit_meta();
        Ok(())
    }

    fn fsync(&self, p: &BrickPath, _datasync: bool) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if d.node(ino)?.kind() == FileKind::Regular {
            d.sync_file(ino);
        }
        d.commit_meta();
        Ok(())
    }

    fn readdir(&self, p: &BrickPath) -> SResult<Vec<DirEntry>> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        match &d.node(ino)?.content {
            Content::Dir(entries) => entries
                .iter()
                .map(|(name, child)| {
                    Ok(DirEntry {
                        name: name.clone(),
                        kind: d.node(*child)?.kind(),
                    })
                })
                .collect(),
            // Never followed, as everywhere: a symlink is ELOOP.
            Content::Symlink(_) => Err(Errno::ELOOP),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn getxattr(&self, p: &BrickPath, name: &str) -> SResult<Vec<u8>> {
        let d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        let node = d.node(loc.ino.ok_or(Errno::ENOENT)?)?;
        check_xattr_namespace(name, node.kind(), false)?;
        node.xattrs.get(name).cloned().ok_or(Errno::ENODATA)
    }

    fn setxattr(&self, p: &BrickPath, name: &str, value: &[u8], flags: XattrFlags) -> SResult<()> {
        let mut d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_BYTES_MAX {
            // Linux says E2BIG, which the protocol has no number for.
            return Err(Errno::ERANGE);
        }
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        let node = d.node(ino)?;
        check_xattr_namespace(name, node.kind(), true)?;
        let old = node.xattrs.get(name);
        match (flags, old) {
            (XattrFlags::Create, Some(_)) => return Err(Errno::EEXIST),
            (XattrFlags::Replace, None) => return Err(Errno::ENODATA),
            _ => {}
        }
        let old_bytes = old.map_or(0, |v| name.len() + v.len());
        if node.xattr_bytes() - old_bytes + name.len() + value.len() > XATTR_INODE_BYTES_MAX {
            return Err(Errno::ENOSPC);
        }
        let lost = d.faults.lose_xattr_updates > 0;
        if lost {
            d.faults.lose_xattr_updates -= 1;
        }
        let op = MetaOp::SetXattr {
            ino,
            name: name.to_string(),
            value: value.to_vec(),
            at: d.now(),
        };
        d.journal(op, lost);
        Ok(())
    }

    fn removexattr(&self, p: &BrickPath, name: &str) -> SResult<()> {
        let mut d = self.disk.lock();
        let loc = d.locate(&self.root, p)?;
        check_xattr_name(name)?;
        let ino = loc.ino.ok_or(Errno::ENOENT)?;
        let node = d.node(ino)?;
        check_xattr_namespace(name, node.kind(), true)?;
        if !node.xattrs.contains_key(name) {
            return Err(Errno::ENODATA);
        }
        let lost = d.faults.lose_xattr_updates > 0;
        if lost {
            d.faults.lose_xattr_updates -= 1;
        }
        let op = MetaOp::RemoveXattr {
            ino,
            name: name.to_string(),
            at: d.now(),
        };
        d.journal(op, lost);
        Ok(())
    }

    fn listxattr(&self, p: &BrickPath) -> SResult<Vec<String>> {
        let d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        // BTreeMap keys come sorted.
        Ok(d.node(ino)?.xattrs.keys().cloned().collect())
    }

    fn set_mode(&self, p: &BrickPath, mode: u32) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if d.node(ino)?.kind() == FileKind::Symlink {
            // Linux cannot change a symlink's mode (fchmodat with
            // AT_SYMLINK_NOFOLLOW).
            return Err(Errno::EOPNOTSUPP);
        }
        let change = AttrChange {
            mode: Some(mode & 0o7777),
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn set_owner(&self, p: &BrickPath, uid: u32, gid: u32) -> SResult<()> {
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        let node = d.node(ino)?;
        // chown clears set-user-ID, and set-group-ID when group execute is
        // set, on anything but a directory, even for root.
        let mut mode = node.mode;
        if node.kind() != FileKind::Directory {
            mode &= !S_ISUID;
            if mode & S_IXGRP != 0 {
                mode &= !S_ISGID;
            }
        }
        let change = AttrChange {
            mode: (mode != node.mode).then_some(mode),
            owner: Some((uid, gid)),
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn set_times(
        &self,
        p: &BrickPath,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> SResult<()> {
        if atime.is_none() && mtime.is_none() {
            // utimensat with both times omitted returns before even looking
            // the path up.
            return Ok(());
        }
        let mut d = self.disk.lock();
        let ino = d.existing(&self.root, p)?;
        if [atime, mtime]
            .iter()
            .flatten()
            .any(|t| t.nsecs >= 1_000_000_000)
        {
            return Err(Errno::EINVAL);
        }
        let change = AttrChange {
            atime,
            mtime,
            ..AttrChange::default()
        };
        let at = d.now();
        d.journal(MetaOp::SetAttr { ino, change, at }, false);
        Ok(())
    }

    fn statfs(&self) -> SResult<FsStat> {
        let d = self.disk.lock();
        // The view root must exist, as the POSIX backend opens it.
        d.walk(self.root.components())?;
        let block = PAGE_BYTES as u64;
        let capacity = d.faults.capacity_bytes.unwrap_or(DEFAULT_CAPACITY_BYTES);
        let free = capacity.saturating_sub(d.used_bytes) / block;
        Ok(FsStat {
            block_size: block,
            blocks: capacity / block,
            blocks_free: free,
            blocks_avail: free,
            files: FILES_MAX,
            files_free: FILES_MAX.saturating_sub(d.cur.nodes.len() as u64),
            name_max: NAME_BYTES_MAX as u64,
        })
    }
}
