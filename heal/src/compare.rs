//! The brick comparator: walk every brick of one set from the root and
//! report, as data, every way the bricks differ and every mark a healed
//! set must not carry. Tests (loopback and the simulator's scenarios)
//! call it after a heal to prove the set converged.
//!
//! It works only through brick clients ([`Child`]), so it runs over real
//! bricks and in the simulator alike. What it checks, per path found on
//! any brick: the name on every brick, gfid, kind, mode, owner, symlink
//! target, `user.*` xattrs, link counts of non-directories, changelog
//! counters (every blame key and dirty) zero; replicate: the file's size
//! and bytes the same on every data brick (an arbiter holds none);
//! disperse: the fragment's length and version/size record
//! ([`EC_VERSION`]) the same on every brick. Per brick: the pending-heal
//! index empty (through [`ProtocolClient::pending_heal`], which no set
//! layer forwards, so the caller passes the set's protocol clients).
//!
//! What it does not check, and the caller should: that a dispersed file
//! *decodes* to the bytes written (read it through the set, with other
//! bricks down so the healed fragments are used), and times (every
//! brick stamps its own mtime on a write, so equal times are not a
//! property of a healthy set; a test that set times checks them itself).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};

use mortar_client::fop::{Child, Fop, FopOut, CHUNK_BYTES_MAX};
use mortar_client::protocol::ProtocolClient;
use mortar_proto::brick::{self as bp};
use mortar_proto::xattr::{changelog_key, is_changelog, DIRTY, EC_VERSION, USER_PREFIX};
use mortar_proto::{Errno, FileKind, FopError, Gfid};

/// Objects one brick's walk records before it gives up: a test's tree
/// is far smaller, and a runaway (a directory cycle, a brick that lists
/// forever) ends with an error instead of memory.
pub const WALK_OBJECTS_MAX: usize = 100_000;

/// Names asked per readdir page.
const READDIR_PAGE_ENTRIES: u32 = 1000;

/// Index entries reported per brick.
const PENDING_REPORTED_MAX: usize = 100;

/// The kind of set the bricks form, which decides what must be equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Whole copies; `arbiter`: the brick that holds names and metadata
    /// but no data.
    Replicate { arbiter: Option<usize> },
    /// Fragments: data differs by design; the version record must not.
    Disperse,
}

/// What one brick holds under one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub gfid: Gfid,
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Names of a non-directory (a directory's count is brick-local).
    pub nlink: Option<u32>,
    /// File length on the brick (a fragment's, for disperse; 0 for a
    /// directory).
    pub size: u64,
    /// Length and digest of the brick's bytes (replicate data bricks'
    /// regular files only).
    pub data: Option<(u64, u64)>,
    pub target: Option<String>,
    pub user_xattrs: BTreeMap<String, Vec<u8>>,
    /// The raw [`EC_VERSION`] value (disperse only; `None`: not set).
    pub ec: Option<Vec<u8>>,
    /// Changelog xattrs (blame or dirty) with a non-zero value.
    pub marks: BTreeMap<String, Vec<u8>>,
}

/// One brick's tree: path (`/a/b`) -> object.
pub type BrickTree = BTreeMap<String, Object>;

/// One way the set is not converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path (empty: the brick as a whole).
    pub path: String,
    /// The brick that differs (from the lowest brick holding the path).
    pub brick: usize,
    pub what: What,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Another brick has the name; this one does not.
    Missing,
    /// A field differs from brick `reference`'s: `(field, reference's
    /// value, this brick's)`.
    Field {
        field: &'static str,
        reference: usize,
        want: String,
        got: String,
    },
    /// A changelog counter is not zero.
    Mark { xattr: String, value: Vec<u8> },
    /// The pending-heal index lists these (the first few).
    Pending(Vec<Gfid>),
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("brick {brick}: more than {max} objects; the comparator walks at most that many")]
    TooMany { brick: usize, max: usize },
    #[error("brick {brick}: {what} {path:?}: {error}")]
    Brick {
        brick: usize,
        what: &'static str,
        path: String,
        error: FopError,
    },
}

/// Walk every brick of the set (`children`, in set order), compare, and
/// add each of `indices`' non-empty pending-heal index (pass the set's
/// protocol clients, or none to skip that check).
pub async fn compare(
    children: &[Child],
    kind: SetKind,
    indices: &[ProtocolClient],
) -> Result<Vec<Difference>, CompareError> {
    let blame: Vec<String> = children.iter().map(|c| changelog_key(c.name())).collect();
    let mut trees = Vec::new();
    for (i, c) in children.iter().enumerate() {
        let data = matches!(kind, SetKind::Replicate { arbiter } if arbiter != Some(i));
        let w = Walk {
            brick: i,
            child: c,
            data,
            ec: kind == SetKind::Disperse,
            blame: &blame,
        };
        trees.push(w.tree().await?);
    }
    let mut out = tree_differences(&trees, kind);
    for (i, c) in indices.iter().enumerate() {
        let listed = c.pending_heal(PENDING_REPORTED_MAX).await;
        let listed = listed.map_err(|error| CompareError::Brick {
            brick: i,
            what: "listing the pending-heal index",
            path: String::new(),
            error,
        })?;
        if !listed.is_empty() {
            out.push(Difference {
                path: String::new(),
                brick: i,
                what: What::Pending(listed),
            });
        }
    }
    Ok(out)
}

/// How one brick is walked.
struct Walk<'a> {
    brick: usize,
    child: &'a Child,
    /// Read and digest regular files' bytes.
    data: bool,
    /// Read the disperse version record.
    ec: bool,
    /// Changelog keys to read on every object.
    blame: &'a [String],
}

impl Walk<'_> {
    fn err(&self, what: &'static str, path: &str) -> impl FnOnce(FopError) -> CompareError {
        let (brick, path) = (self.brick, path.to_string());
        move |error| CompareError::Brick {
            brick,
            what,
            path,
            error,
        }
    }

    async fn op(&self, op: Fop, what: &'static str, path: &str) -> Result<FopOut, CompareError> {
        self.child.fop(op).await.map_err(self.err(what, path))
    }

    /// Every object under the root, by path.
    async fn tree(&self) -> Result<BrickTree, CompareError> {
        let mut out = BrickTree::new();
        let mut dirs = vec![(String::new(), Gfid::ROOT)];
        while let Some((path, dir)) = dirs.pop() {
            let mut after = None;
            loop {
                let q = bp::Readdir {
                    dir,
                    after: after.clone(),
                    max_entries: READDIR_PAGE_ENTRIES,
                };
                let FopOut::Dir(page) = self.op(Fop::Readdir(q), "readdir", &path).await? else {
                    return Err(self.err("readdir", &path)(shape("readdir")));
                };
                after = page.entries.last().map(|e| e.name.clone());
                for e in page.entries {
                    let p = format!("{path}/{}", e.name);
                    if e.attr.kind == FileKind::Directory {
                        dirs.push((p.clone(), e.attr.gfid));
                    }
                    let obj = self.object(&p, &e.attr).await?;
                    out.insert(p, obj);
                    if out.len() > WALK_OBJECTS_MAX {
                        return Err(CompareError::TooMany {
                            brick: self.brick,
                            max: WALK_OBJECTS_MAX,
                        });
                    }
                }
                if page.eof || after.is_none() {
                    break;
                }
            }
        }
        // The root itself: its metadata and marks count too.
        let attr = self.stat(Gfid::ROOT).await?;
        out.insert("/".into(), self.object("/", &attr).await?);
        Ok(out)
    }

    async fn stat(&self, gfid: Gfid) -> Result<mortar_proto::Attr, CompareError> {
        let out = self.op(Fop::Stat(bp::Stat { gfid }), "stat", "/").await?;
        out.attr().map_err(self.err("stat", "/"))
    }

    async fn object(&self, p: &str, a: &mortar_proto::Attr) -> Result<Object, CompareError> {
        let is_dir = a.kind == FileKind::Directory;
        let target = match a.kind {
            FileKind::Symlink => {
                let q = bp::Readlink { gfid: a.gfid };
                match self.op(Fop::Readlink(q), "readlink", p).await? {
                    FopOut::Target(t) => Some(t),
                    _ => return Err(self.err("readlink", p)(shape("readlink"))),
                }
            }
            _ => None,
        };
        let data = match (self.data, a.kind) {
            (true, FileKind::Regular) => Some(self.digest(p, a.gfid).await?),
            _ => None,
        };
        let ec = if self.ec {
            self.xattr(a.gfid, EC_VERSION, p).await?
        } else {
            None
        };
        Ok(Object {
            gfid: a.gfid,
            kind: a.kind,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            nlink: (!is_dir).then_some(a.nlink),
            size: if is_dir { 0 } else { a.size },
            data,
            target,
            user_xattrs: self.user_xattrs(a.gfid, p).await?,
            ec,
            marks: self.marks(a.gfid, p).await?,
        })
    }

    /// Length and digest of the brick's copy, read in chunks.
    async fn digest(&self, p: &str, gfid: Gfid) -> Result<(u64, u64), CompareError> {
        let mut h = DefaultHasher::new();
        let mut offset = 0;
        loop {
            let q = bp::Read {
                gfid,
                offset,
                len: CHUNK_BYTES_MAX,
            };
            let d = self.op(Fop::Read(q), "read", p).await?;
            let d = d.data().map_err(self.err("read", p))?;
            h.write(&d);
            offset += d.len() as u64;
            // A short read is the end of the brick's copy.
            if (d.len() as u64) < CHUNK_BYTES_MAX {
                return Ok((offset, h.finish()));
            }
        }
    }

    async fn xattr(
        &self,
        gfid: Gfid,
        name: &str,
        p: &str,
    ) -> Result<Option<Vec<u8>>, CompareError> {
        let q = bp::Getxattr {
            gfid,
            name: name.into(),
        };
        match self.child.fop(Fop::Getxattr(q)).await {
            Ok(FopOut::Value(v)) => Ok(Some(v)),
            Ok(_) => Err(self.err("getxattr", p)(shape("getxattr"))),
            Err(e) if e.errno == Errno::ENODATA => Ok(None),
            Err(e) => Err(self.err("getxattr", p)(e)),
        }
    }

    async fn names(&self, gfid: Gfid, p: &str) -> Result<Vec<String>, CompareError> {
        match self
            .op(Fop::Listxattr(bp::Listxattr { gfid }), "listxattr", p)
            .await?
        {
            FopOut::Names(n) => Ok(n),
            _ => Err(self.err("listxattr", p)(shape("listxattr"))),
        }
    }

    async fn user_xattrs(
        &self,
        gfid: Gfid,
        p: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, CompareError> {
        let mut out = BTreeMap::new();
        for n in self.names(gfid, p).await? {
            if n.starts_with(USER_PREFIX) {
                if let Some(v) = self.xattr(gfid, &n, p).await? {
                    out.insert(n, v);
                }
            }
        }
        Ok(out)
    }

    /// Every changelog counter on `gfid` that is not zero: the set's
    /// blame keys and dirty, and any other the brick lists.
    async fn marks(&self, gfid: Gfid, p: &str) -> Result<BTreeMap<String, Vec<u8>>, CompareError> {
        let mut names: BTreeSet<String> = self.blame.iter().cloned().collect();
        names.insert(DIRTY.to_string());
        let listed = self.names(gfid, p).await?;
        names.extend(listed.into_iter().filter(|n| is_changelog(n)));
        let mut out = BTreeMap::new();
        for n in names {
            if let Some(v) = self.xattr(gfid, &n, p).await? {
                if v.iter().any(|b| *b != 0) {
                    out.insert(n, v);
                }
            }
        }
        Ok(out)
    }
}

fn shape(what: &str) -> FopError {
    FopError::new(Errno::EIO, format!("{what}: unexpected reply shape"))
}

/// Every difference between the bricks' trees (`trees[i]`: brick `i`'s),
/// and every mark left on any object. Per path, the reference is the
/// lowest brick holding it; for data fields, the lowest data brick.
pub fn tree_differences(trees: &[BrickTree], kind: SetKind) -> Vec<Difference> {
    let paths: BTreeSet<&String> = trees.iter().flat_map(|t| t.keys()).collect();
    // Only replicate copies data whole: a fragment's bytes differ by design.
    let is_data = |i: usize| matches!(kind, SetKind::Replicate { arbiter } if arbiter != Some(i));
    let mut out = Vec::new();
    for p in paths {
        let holders: Vec<usize> = (0..trees.len())
            .filter(|&i| trees[i].contains_key(p))
            .collect();
        let reference = holders[0];
        let data_ref = holders.iter().copied().find(|&i| is_data(i));
        for i in 0..trees.len() {
            let Some(got) = trees[i].get(p) else {
                out.push(diff(p, i, What::Missing));
                continue;
            };
            for (field, want, got) in object_differences(&trees[reference][p], got, false) {
                let what = What::Field {
                    field,
                    reference,
                    want,
                    got,
                };
                out.push(diff(p, i, what));
            }
            if let (Some(r), true) = (data_ref, is_data(i) && data_ref != Some(i)) {
                for (field, want, got) in object_differences(&trees[r][p], got, true) {
                    let what = What::Field {
                        field,
                        reference: r,
                        want,
                        got,
                    };
                    out.push(diff(p, i, what));
                }
            }
            for (xattr, value) in &got.marks {
                let what = What::Mark {
                    xattr: xattr.clone(),
                    value: value.clone(),
                };
                out.push(diff(p, i, what));
            }
        }
    }
    out
}

fn diff(path: &str, brick: usize, what: What) -> Difference {
    Difference {
        path: path.to_string(),
        brick,
        what,
    }
}

/// The fields in which `got` differs from `want`: with `data`, only the
/// data fields (size, bytes; compared between data bricks), else every
/// other field. Marks are not compared (each brick's own).
pub fn object_differences(
    want: &Object,
    got: &Object,
    data: bool,
) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let mut field = |name: &'static str, w: String, g: String| {
        if w != g {
            out.push((name, w, g));
        }
    };
    if data {
        field("size", want.size.to_string(), got.size.to_string());
        field(
            "data",
            format!("{:?}", want.data),
            format!("{:?}", got.data),
        );
        return out;
    }
    field("gfid", want.gfid.to_string(), got.gfid.to_string());
    field(
        "kind",
        format!("{:?}", want.kind),
        format!("{:?}", got.kind),
    );
    field(
        "mode",
        format!("{:o}", want.mode),
        format!("{:o}", got.mode),
    );
    field("uid", want.uid.to_string(), got.uid.to_string());
    field("gid", want.gid.to_string(), got.gid.to_string());
    field(
        "nlink",
        format!("{:?}", want.nlink),
        format!("{:?}", got.nlink),
    );
    field(
        "target",
        format!("{:?}", want.target),
        format!("{:?}", got.target),
    );
    let xattrs = |o: &Object| format!("{:?}", o.user_xattrs);
    field("user xattrs", xattrs(want), xattrs(got));
    field("ec version", ec_version(&want.ec), ec_version(&got.ec));
    if want.ec.is_some() || got.ec.is_some() {
        // A fragment's length follows the file's; only disperse records
        // one on every object.
        field("fragment size", want.size.to_string(), got.size.to_string());
    }
    out
}

/// A fragment's [`EC_VERSION`] as compared: a value of all zeros is the
/// same as none, as disperse reads them (an absent xattr is version 0).
///
/// Regression (cluster seed 10, shared files): a disperse file's version
/// was all zeros on one brick and not set on another; the comparator
/// called the copies different for ever though every reader and heal
/// sees one version; fixed by comparing through this function.
pub fn ec_version(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(b) if b.iter().any(|x| *x != 0) => format!("{b:?}"),
        _ => "version 0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_all_zero_version_is_no_version() {
        for (a, b, same, why) in [
            (None, Some(vec![0u8; 24]), true, "unset and all zeros"),
            (
                Some(vec![0; 24]),
                Some(vec![0; 24]),
                true,
                "all zeros twice",
            ),
            (None, None, true, "unset twice"),
            (None, Some(vec![1; 24]), false, "unset and version 1"),
            (
                Some(vec![0; 24]),
                Some(vec![2; 24]),
                false,
                "zeros and version 2",
            ),
            (Some(vec![3; 24]), Some(vec![3; 24]), true, "one version"),
        ] {
            assert_eq!(ec_version(&a) == ec_version(&b), same, "{why}");
        }
    }

    fn file(gfid: u128) -> Object {
        Object {
            gfid: Gfid::from_u128(gfid),
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            nlink: Some(1),
            size: 5,
            data: Some((5, 42)),
            target: None,
            user_xattrs: BTreeMap::new(),
            ec: None,
            marks: BTreeMap::new(),
        }
    }

    /// Why, each brick's object at `/f` (`None`: no such name), the set
    /// kind, and the differences wanted as (brick, field).
    type Row = (
        &'static str,
        Vec<Option<Object>>,
        SetKind,
        Vec<(usize, &'static str)>,
    );

    fn trees(objs: Vec<Option<Object>>) -> Vec<BrickTree> {
        objs.into_iter()
            .map(|o| o.map(|o| ("/f".to_string(), o)).into_iter().collect())
            .collect()
    }

    fn fields(d: &[Difference]) -> Vec<(usize, &'static str)> {
        d.iter()
            .map(|d| match &d.what {
                What::Field { field, .. } => (d.brick, *field),
                What::Missing => (d.brick, "missing"),
                What::Mark { .. } => (d.brick, "mark"),
                What::Pending(_) => (d.brick, "pending"),
            })
            .collect()
    }

    #[test]
    fn every_difference_is_reported_against_the_lowest_holder() {
        let f = file(1);
        let with = |change: &dyn Fn(&mut Object)| {
            let mut o = file(1);
            change(&mut o);
            o
        };
        let r3 = SetKind::Replicate { arbiter: None };
        let a1 = SetKind::Replicate { arbiter: Some(2) };
        let no_data = with(&|o| (o.size, o.data) = (0, None));
        let ec = |v: u8| with(&|o| (o.data, o.ec) = (None, Some(vec![v; 24])));
        let mut marks = BTreeMap::new();
        marks.insert(DIRTY.to_string(), vec![0, 0, 0, 1]);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("equal", vec![Some(f.clone()), Some(f.clone()), Some(f.clone())], r3, vec![]),
            ("missing", vec![Some(f.clone()), None, Some(f.clone())], r3, vec![(1, "missing")]),
            ("mode", vec![Some(f.clone()), Some(f.clone()), Some(with(&|o| o.mode = 0o600))], r3, vec![(2, "mode")]),
            ("owner", vec![Some(f.clone()), Some(with(&|o| (o.uid, o.gid) = (7, 8)))], r3, vec![(1, "uid"), (1, "gid")]),
            ("gfid and kind", vec![Some(f.clone()), Some(with(&|o| (o.gfid, o.kind) = (Gfid::from_u128(2), FileKind::Symlink)))], r3, vec![(1, "gfid"), (1, "kind")]),
            ("links", vec![Some(f.clone()), Some(with(&|o| o.nlink = Some(2)))], r3, vec![(1, "nlink")]),
            ("target", vec![Some(f.clone()), Some(with(&|o| o.target = Some("x".into())))], r3, vec![(1, "target")]),
            ("xattrs", vec![Some(f.clone()), Some(with(&|o| { o.user_xattrs.insert("user.a".into(), vec![1]); }))], r3, vec![(1, "user xattrs")]),
            ("data", vec![Some(f.clone()), Some(with(&|o| o.data = Some((5, 43))))], r3, vec![(1, "data")]),
            ("size", vec![Some(f.clone()), Some(with(&|o| (o.size, o.data) = (4, Some((4, 42)))))], r3, vec![(1, "size"), (1, "data")]),
            ("an arbiter holds no data", vec![Some(f.clone()), Some(f.clone()), Some(no_data.clone())], a1, vec![]),
            ("data is not compared to the arbiter", vec![Some(no_data.clone()), Some(f.clone()), Some(f.clone())], SetKind::Replicate { arbiter: Some(0) }, vec![]),
            ("stale data brick next to an arbiter", vec![Some(f.clone()), Some(with(&|o| o.data = Some((5, 1)))), Some(no_data)], a1, vec![(1, "data")]),
            ("marks", vec![Some(f.clone()), Some(with(&|o| o.marks = marks.clone()))], r3, vec![(1, "mark")]),
            ("ec version", vec![Some(ec(1)), Some(ec(1)), Some(ec(2))], SetKind::Disperse, vec![(2, "ec version")]),
            ("fragment size", vec![Some(ec(1)), Some(with(&|o| (o.data, o.ec, o.size) = (None, Some(vec![1; 24]), 9)))], SetKind::Disperse, vec![(1, "fragment size")]),
            ("reference is the lowest holder", vec![None, Some(f.clone()), Some(with(&|o| o.mode = 0))], r3, vec![(0, "missing"), (2, "mode")]),
        ];
        for (why, objs, kind, want) in table {
            let got = tree_differences(&trees(objs), kind);
            assert_eq!(fields(&got), want, "{why}: {got:#?}");
        }
    }

    #[test]
    fn a_difference_names_both_values() {
        let mut g = file(1);
        g.mode = 0o600;
        assert_eq!(
            object_differences(&file(1), &g, false),
            vec![("mode", "644".to_string(), "600".to_string())]
        );
        assert!(object_differences(&file(1), &g, true).is_empty());
    }
}
