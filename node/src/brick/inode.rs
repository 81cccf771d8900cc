//! Inode operations: what is done to an object found by gfid (stat,
//! readlink, open, read, write, truncate, fsync, setattr) and statfs.

use super::*;

impl<S: Storage> Brick<S> {
    pub fn stat(&self, g: &Gfid) -> FopResult<Attr> {
        let _ns = self.ns.read().expect("ns lock");
        self.attr_by_gfid(g)
    }

    pub fn readlink(&self, g: &Gfid) -> FopResult<String> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, kind) = self.resolve(g)?;
        if kind != FileKind::Symlink {
            return Err(fop(Errno::EINVAL, format!("{g} is not a symlink")));
        }
        self.storage.readlink(&p).ctx(|| format!("readlink {g}"))
    }

    pub fn open(&self, r: &bp::Open) -> FopResult<Attr> {
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

    pub(super) fn regular_file(&self, g: &Gfid) -> FopResult<BrickPath> {
        let (p, kind) = self.resolve(g)?;
        match kind {
            FileKind::Regular => Ok(p),
            FileKind::Directory => Err(fop(Errno::EISDIR, format!("{g} is a directory"))),
            _ => Err(fop(Errno::EINVAL, format!("{g} is not a regular file"))),
        }
    }

    pub fn read(&self, r: &bp::Read) -> FopResult<Bytes> {
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

    pub fn write(&self, r: &bp::Write, data: &[u8]) -> FopResult<bp::WriteReply> {
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

    pub fn truncate(&self, r: &bp::Truncate) -> FopResult<Attr> {
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

    pub fn fsync(&self, r: &bp::Fsync) -> FopResult<()> {
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .fsync(&p, r.datasync)
            .ctx(|| format!("fsync {}", r.gfid))
    }

    pub fn setattr(&self, r: &bp::Setattr) -> FopResult<Attr> {
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

    pub fn statfs(&self) -> FopResult<bp::StatfsReply> {
        self.storage.statfs().ctx(|| "statfs".into())
    }
}
