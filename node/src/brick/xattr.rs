//! The xattr rules: which names clients may read, write or only change
//! through xattrop, and the xattr calls that enforce them.

use super::*;

/// Which xattrs a client may touch, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum XattrAccess {
    /// `user.*` and Mortar's own metadata (layouts, EC markers).
    ReadWrite,
    /// gfid and volume id: set by the brick only.
    ReadOnly,
    /// Changelog counters: changed through xattrop only.
    CountersOnly,
}

pub(super) fn xattr_access(name: &str) -> FopResult<XattrAccess> {
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

impl<S: Storage> Brick<S> {
    pub fn getxattr(&self, r: &bp::Getxattr) -> FopResult<Vec<u8>> {
        xattr_access(&r.name)?;
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .getxattr(&p, &r.name)
            .ctx(|| format!("getxattr {} on {}", r.name, r.gfid))
    }

    /// The xattrs `r.names` of each of `r.gfids`, under one namespace
    /// lock: `None` for a gfid this brick does not hold (any other failure
    /// fails the whole request).
    pub fn getxattr_files(&self, r: &bp::GetxattrFiles) -> FopResult<bp::FileValues> {
        if r.gfids.len() > bp::GETXATTR_FILES_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!(
                    "{} files asked at once; at most {} are read per request",
                    r.gfids.len(),
                    bp::GETXATTR_FILES_MAX
                ),
            ));
        }
        check_names(&r.names)?;
        let _ns = self.ns.read().expect("ns lock");
        r.gfids
            .iter()
            .map(|g| match self.resolve_held(g)? {
                Some((p, _)) => self
                    .storage
                    .getxattrs(&p, &r.names)
                    .map(Some)
                    .ctx(|| format!("getxattr {} names on {g}", r.names.len())),
                None => Ok(None),
            })
            .collect()
    }

    /// The kind of each of `r.gfids` here, `None` for one this brick does
    /// not hold (any other failure fails the whole request).
    pub fn gfid_kinds(&self, r: &bp::GfidKinds) -> FopResult<Vec<Option<FileKind>>> {
        if r.gfids.len() > bp::GFID_KINDS_MAX {
            return Err(fop(
                Errno::EINVAL,
                format!(
                    "{} gfids asked at once; at most {} are looked up per request",
                    r.gfids.len(),
                    bp::GFID_KINDS_MAX
                ),
            ));
        }
        let _ns = self.ns.read().expect("ns lock");
        r.gfids
            .iter()
            .map(|g| Ok(self.resolve_held(g)?.map(|(_, kind)| kind)))
            .collect()
    }

    /// [`Brick::resolve`], `None` for a gfid this brick does not hold.
    fn resolve_held(&self, g: &Gfid) -> FopResult<Option<(BrickPath, FileKind)>> {
        match self.resolve(g) {
            Ok(found) => Ok(Some(found)),
            Err(e) if matches!(e.errno, Errno::ENOENT | Errno::ESTALE) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Each of `r.names` read under one namespace lock: a value, or
    /// `None` when absent (any other failure fails the whole request).
    pub fn getxattr_many(&self, r: &bp::GetxattrMany) -> FopResult<Vec<Option<Vec<u8>>>> {
        check_names(&r.names)?;
        let _ns = self.ns.read().expect("ns lock");
        let (p, _) = self.resolve(&r.gfid)?;
        self.storage
            .getxattrs(&p, &r.names)
            .ctx(|| format!("getxattr {} names on {}", r.names.len(), r.gfid))
    }

    pub fn setxattr(&self, r: &bp::Setxattr) -> FopResult<()> {
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

    pub fn removexattr(&self, r: &bp::Removexattr) -> FopResult<()> {
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

    pub fn listxattr(&self, g: &Gfid) -> FopResult<Vec<String>> {
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
}

/// The names of one [`bp::GetxattrMany`] or [`bp::GetxattrFiles`]: at most
/// [`bp::GETXATTR_NAMES_MAX`], each one a client may read.
fn check_names(names: &[String]) -> FopResult<()> {
    if names.len() > bp::GETXATTR_NAMES_MAX {
        return Err(fop(
            Errno::EINVAL,
            format!(
                "{} xattr names asked at once; at most {} are read per request",
                names.len(),
                bp::GETXATTR_NAMES_MAX
            ),
        ));
    }
    for name in names {
        xattr_access(name)?;
    }
    Ok(())
}
