//! A small file whole in one request each way: [`bp::ReadWhole`] gives
//! a file's attributes, user xattrs and data; [`bp::CreateWhole`] makes a
//! copy of one, filled and durable before its name appears. Entry heal
//! copies a backlog of new small files with one request per copy instead
//! of a stat, a listing, a read, a create, a write, a setattr and an fsync.

use super::xattr::xattr_access;
use super::*;

/// One chunk of a [`bp::CreateWhole`]'s data that is all zeros is left a
/// hole (the size heal's copies keep holes at).
const HOLE_CHUNK_BYTES: usize = 4096;

impl<S: Storage> Brick<S> {
    pub fn read_whole(&self, r: &bp::ReadWhole) -> FopResult<(bp::Whole, Bytes)> {
        let len_max = u64::from(r.len_max.min(bp::WHOLE_BYTES_MAX));
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        let st = self.storage.lstat(&p).ctx(|| format!("stat {}", r.gfid))?;
        let mut attr = self.attr(&p, &st, r.gfid);
        let names: Vec<String> = self
            .storage
            .listxattr(&p)
            .ctx(|| format!("listxattr {}", r.gfid))?
            .into_iter()
            .filter(|n| n.starts_with(xa::USER_PREFIX))
            .collect();
        if names.len() > bp::WHOLE_XATTRS_MAX {
            return Err(too_many_xattrs(names.len()));
        }
        let values = self
            .storage
            .getxattrs(&p, &names)
            .ctx(|| format!("read the user xattrs of {}", r.gfid))?;
        let user_xattrs: Vec<(String, Vec<u8>)> = names
            .into_iter()
            .zip(values)
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect();
        check_xattr_bytes(&user_xattrs)?;
        let mut data = Bytes::new();
        let whole = attr.kind == FileKind::Regular && attr.size <= len_max;
        if whole {
            data = self
                .storage
                .read(&p, 0, attr.size as usize)
                .ctx(|| format!("read {}", r.gfid))?;
            // What was read is the file: the size said is the data's.
            attr.size = data.len() as u64;
        }
        let reply = bp::Whole {
            attr,
            user_xattrs,
            data: whole,
        };
        Ok((reply, data))
    }

    pub fn create_whole(&self, r: &bp::CreateWhole, data: &[u8]) -> FopResult<Attr> {
        if data.len() as u64 > u64::from(bp::WHOLE_BYTES_MAX) {
            return Err(fop(
                Errno::EINVAL,
                format!(
                    "{} bytes of data to make whole; at most {} are carried at once",
                    data.len(),
                    bp::WHOLE_BYTES_MAX
                ),
            ));
        }
        if r.user_xattrs.len() > bp::WHOLE_XATTRS_MAX {
            return Err(too_many_xattrs(r.user_xattrs.len()));
        }
        check_xattr_bytes(&r.user_xattrs)?;
        for (name, value) in &r.user_xattrs {
            if !name.starts_with(xa::USER_PREFIX) || xattr_access(name).is_err() {
                return Err(fop(
                    Errno::EINVAL,
                    format!("{name:?}: a file made whole carries user.* xattrs only"),
                ));
            }
            if value.len() > XATTR_VALUE_BYTES_MAX {
                return Err(fop(
                    Errno::ERANGE,
                    format!("xattr values are at most {XATTR_VALUE_BYTES_MAX} bytes"),
                ));
            }
        }
        let fill = |t: &BrickPath| -> SResult<()> {
            let mut end = 0;
            for (i, chunk) in data.chunks(HOLE_CHUNK_BYTES).enumerate() {
                if chunk.iter().all(|b| *b == 0) {
                    continue;
                }
                let at = i * HOLE_CHUNK_BYTES;
                self.storage.write(t, at as u64, chunk)?;
                end = at + chunk.len();
            }
            if end < data.len() {
                self.storage.truncate(t, data.len() as u64)?;
            }
            for (name, value) in &r.user_xattrs {
                self.storage.setxattr(t, name, value, XattrFlags::Create)?;
            }
            Ok(())
        };
        let make = |t: &BrickPath| -> SResult<()> {
            self.storage.create(t, r.new.mode)?;
            // A copy part-filled is not left behind in the brick's tmp.
            fill(t).inspect_err(|_| {
                let _ = self.storage.unlink(t);
            })
        };
        // Owner, mode and gfid change no time; the data is written: the
        // times set now stay, and the copy is durable before it is named.
        let seal = |t: &BrickPath| -> FopResult<()> {
            self.storage
                .set_times(t, Some(r.atime), Some(r.mtime))
                .ctx(|| format!("set times of {:?}", r.name))?;
            if !r.sync_file {
                return Ok(());
            }
            self.storage
                .fsync(t, false)
                .ctx(|| format!("fsync {:?}", r.name))
        };
        self.create_object_sealed(
            &r.parent,
            &r.name,
            &r.new,
            FileKind::Regular,
            make,
            Some(&seal),
            r.sync_dir,
        )
    }
}

fn too_many_xattrs(n: usize) -> FopError {
    fop(
        Errno::E2BIG,
        format!(
            "{n} user xattrs; at most {} travel with a file made whole (copy it piece by piece)",
            bp::WHOLE_XATTRS_MAX
        ),
    )
}

fn check_xattr_bytes(xattrs: &[(String, Vec<u8>)]) -> FopResult<()> {
    let bytes: usize = xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > bp::WHOLE_XATTR_BYTES_MAX {
        return Err(fop(
            Errno::E2BIG,
            format!(
                "{bytes} bytes of user xattrs; at most {} travel with a file made whole (copy it piece by piece)",
                bp::WHOLE_XATTR_BYTES_MAX
            ),
        ));
    }
    Ok(())
}
