//! The one interface every layer of a client graph serves: a brick, a
//! replica set, a disperse set, the distribute layer on top. File
//! operations travel as one enum so that a layer can route them by kind
//! (write-type operations become transactions in replicate, entry
//! operations pick a subvolume by name hash in distribute, and so on).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_net::BoxFuture;
use mortar_proto::brick::{self as bp, BrickRequest, CounterDelta, IO_BYTES_MAX};
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

/// The one result type of the client's file operations: the alias the
/// wire types define, so a brick's answer and a layer's are one type.
pub use mortar_proto::brick::FopResult;

use crate::protocol::ProtocolClient;

/// A file operation.
#[derive(Debug, Clone)]
pub enum Fop {
    Lookup(bp::Lookup),
    Stat(bp::Stat),
    Create(bp::Create),
    Mkdir(bp::Mkdir),
    Mknod(bp::Mknod),
    Symlink(bp::Symlink),
    Link(bp::Link),
    Unlink(bp::Unlink),
    Rmdir(bp::Rmdir),
    Rename(bp::Rename),
    Readlink(bp::Readlink),
    Open(bp::Open),
    Read(bp::Read),
    Write(bp::Write, Bytes),
    Truncate(bp::Truncate),
    Fsync(bp::Fsync),
    Setattr(bp::Setattr),
    Readdir(bp::Readdir),
    /// A readdir whose answer says, per entry, whether its attributes
    /// are the file's as a lookup would give them ([`FopOut::DirPlus`]).
    ReaddirPlus(bp::Readdir),
    Getxattr(bp::Getxattr),
    GetxattrMany(bp::GetxattrMany),
    Setxattr(bp::Setxattr),
    Removexattr(bp::Removexattr),
    Listxattr(bp::Listxattr),
    Xattrop(bp::Xattrop),
    Inodelk(bp::Inodelk),
    Entrylk(bp::Entrylk),
    Statfs,
    /// Block checksums of one brick's copy (heal's; set layers refuse it,
    /// see [`brick_only`]).
    Rchecksum(bp::Rchecksum),
    /// Punch a hole in one brick's copy (heal's; set layers refuse it).
    Discard(bp::Discard),
    /// The kinds of several gfids on one brick (heal's; set layers
    /// refuse it).
    GfidKinds(bp::GfidKinds),
    /// The same xattrs of several files on one brick (heal info's; set
    /// layers refuse it).
    GetxattrFiles(bp::GetxattrFiles),
    /// A small file's attributes, user xattrs and data in one request
    /// (heal's; set layers refuse it).
    ReadWhole(bp::ReadWhole),
    /// Make a regular file on one brick with its data, user xattrs and
    /// times, durable before it is named (heal's; set layers refuse it).
    CreateWhole(bp::CreateWhole, Bytes),
    /// Many xattrops made durable by one sync of the brick's filesystem
    /// (heal's; set layers refuse it).
    XattropMany(bp::XattropMany),
}

impl Fop {
    /// The object an operation on one file or directory works on (`None`
    /// for entry operations, locks and statfs).
    pub fn gfid(&self) -> Option<Gfid> {
        Some(match self {
            Fop::Stat(q) => q.gfid,
            Fop::Readlink(q) => q.gfid,
            Fop::Open(q) => q.gfid,
            Fop::Read(q) => q.gfid,
            Fop::Write(q, _) => q.gfid,
            Fop::Truncate(q) => q.gfid,
            Fop::Fsync(q) => q.gfid,
            Fop::Setattr(q) => q.gfid,
            Fop::Readdir(q) | Fop::ReaddirPlus(q) => q.dir,
            Fop::Getxattr(q) => q.gfid,
            Fop::GetxattrMany(q) => q.gfid,
            Fop::Setxattr(q) => q.gfid,
            Fop::Removexattr(q) => q.gfid,
            Fop::Listxattr(q) => q.gfid,
            Fop::Xattrop(q) => q.gfid,
            Fop::Inodelk(q) => q.gfid,
            Fop::Rchecksum(q) => q.gfid,
            Fop::Discard(q) => q.gfid,
            Fop::ReadWhole(q) => q.gfid,
            _ => return None,
        })
    }

    /// The directory and name an entry operation changes (for rename, the
    /// source; [`Fop::changed_dirs`] has both sides).
    pub fn entry(&self) -> Option<(Gfid, &str)> {
        Some(match self {
            Fop::Create(q) => (q.parent, &q.name),
            Fop::Mkdir(q) => (q.parent, &q.name),
            Fop::Mknod(q) => (q.parent, &q.name),
            Fop::Symlink(q) => (q.parent, &q.name),
            Fop::Link(q) => (q.new_parent, &q.new_name),
            Fop::Unlink(q) => (q.parent, &q.name),
            Fop::Rmdir(q) => (q.parent, &q.name),
            Fop::Rename(q) => (q.old_parent, &q.old_name),
            _ => return None,
        })
    }

    /// The directories an entry operation changes: its parent, and for a
    /// rename across directories both.
    pub fn changed_dirs(&self) -> Vec<Gfid> {
        match (self, self.entry()) {
            (Fop::Rename(q), _) if q.new_parent != q.old_parent => {
                vec![q.old_parent, q.new_parent]
            }
            (_, Some((parent, _))) => vec![parent],
            _ => Vec::new(),
        }
    }

    /// What a set layer locks for an entry operation: the parent and the
    /// name, except that a rename takes its whole source directory's lock
    /// (no name); and the directories whose changelog records it.
    pub fn entry_lock(&self) -> EntryLock {
        let (parent, name) = self
            .entry()
            .map(|(p, n)| (p, n.to_string()))
            .unwrap_or_default();
        EntryLock {
            parent,
            name: (!matches!(self, Fop::Rename(_))).then_some(name),
            dirs: self.changed_dirs(),
        }
    }
}

/// See [`Fop::entry_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLock {
    pub parent: Gfid,
    pub name: Option<String>,
    pub dirs: Vec<Gfid>,
}

/// What an operation returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FopOut {
    Attr(Attr),
    Done,
    Data(Bytes),
    Written(bp::WriteReply),
    Dir(bp::ReaddirReply),
    /// A [`Fop::ReaddirPlus`]'s page and, per entry, whether its
    /// attributes come from a good copy of that file (else ask a lookup).
    DirPlus(bp::ReaddirReply, Vec<bool>),
    Value(Vec<u8>),
    Values(Vec<Option<Vec<u8>>>),
    Names(Vec<String>),
    Target(String),
    Counters(Vec<(String, CounterDelta)>),
    Statfs(bp::StatfsReply),
    Checksums(bp::RchecksumReply),
    Kinds(Vec<Option<FileKind>>),
    /// Per file of a [`Fop::GetxattrFiles`]: `None` where the brick has no
    /// such file, else each name's value.
    FileValues(bp::FileValues),
    /// A [`Fop::ReadWhole`]'s answer; the data when `.data` says so.
    Whole(bp::Whole, Bytes),
    /// Per op of a [`Fop::XattropMany`]: its new values or its error.
    XattropResults(bp::XattropResults),
}

/// File data a layer moves per step when it copies or rewrites a file
/// (disperse's pieces of a large write, heal, migration): bounds the
/// memory one operation holds to this and its fragments.
pub const CHUNK_BYTES_MAX: u64 = 1 << 20;

// A step is one brick read or write, which the wire bounds.
const _: () = assert!(CHUNK_BYTES_MAX <= IO_BYTES_MAX);

/// The reply did not have the shape the operation promises: a bug in a
/// layer, reported as EIO rather than a panic.
pub fn shape_error(what: &str, got: &FopOut) -> FopError {
    FopError::new(
        Errno::EIO,
        format!("internal error: {what} returned {got:?}"),
    )
}

impl FopOut {
    pub fn attr(self) -> FopResult<Attr> {
        match self {
            FopOut::Attr(a) => Ok(a),
            other => Err(shape_error("an attribute operation", &other)),
        }
    }
    pub fn data(self) -> FopResult<Bytes> {
        match self {
            FopOut::Data(d) => Ok(d),
            other => Err(shape_error("read", &other)),
        }
    }
    pub fn counters(self) -> FopResult<Vec<(String, CounterDelta)>> {
        match self {
            FopOut::Counters(c) => Ok(c),
            other => Err(shape_error("xattrop", &other)),
        }
    }
    pub fn checksums(self) -> FopResult<bp::RchecksumReply> {
        match self {
            FopOut::Checksums(c) => Ok(c),
            other => Err(shape_error("rchecksum", &other)),
        }
    }
}

/// A set layer's answer to an operation on one brick's copy (block
/// checksums, holes): the copies of a set differ in exactly what heal
/// looks at, so heal sends these to each brick itself.
pub fn brick_only(op: &Fop) -> FopError {
    FopError::new(
        Errno::EOPNOTSUPP,
        format!("{op:?} works on one brick's copy: send it to a brick, not a set"),
    )
}

/// A layer of the graph.
pub trait Subvolume: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Can operations be sent now? (A brick that is connected; a set with
    /// enough bricks.)
    fn is_up(&self) -> bool;
    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>>;
}

/// Deadline for one brick operation. Locks that wait have their own,
/// shorter, wait bound inside the request.
pub const BRICK_OP_TIMEOUT: Duration = Duration::from_secs(60);

async fn call<Q: BrickRequest>(c: &ProtocolClient, q: &Q) -> FopResult<Q::Reply> {
    Ok(c.call(q, Bytes::new(), BRICK_OP_TIMEOUT).await?.0)
}

impl Subvolume for ProtocolClient {
    fn name(&self) -> &str {
        ProtocolClient::name(self)
    }

    fn is_up(&self) -> bool {
        ProtocolClient::is_up(self)
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
        Box::pin(async move {
            Ok(match op {
                Fop::Lookup(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Stat(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Create(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Mkdir(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Mknod(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Symlink(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Link(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Unlink(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Rmdir(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Rename(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Readlink(q) => FopOut::Target(call(self, &q).await?),
                Fop::Open(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Read(q) => {
                    FopOut::Data(self.call(&q, Bytes::new(), BRICK_OP_TIMEOUT).await?.1)
                }
                Fop::Write(q, data) => {
                    let n = data.len() as u64;
                    let written = self.call(&q, data, BRICK_OP_TIMEOUT).await?.0;
                    self.note_written(n);
                    FopOut::Written(written)
                }
                Fop::Truncate(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Fsync(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Setattr(q) => FopOut::Attr(call(self, &q).await?),
                Fop::Readdir(q) => FopOut::Dir(call(self, &q).await?),
                // One brick's copy is all a brick has: its own attributes.
                Fop::ReaddirPlus(q) => {
                    let page: bp::ReaddirReply = call(self, &q).await?;
                    let good = vec![true; page.entries.len()];
                    FopOut::DirPlus(page, good)
                }
                Fop::Getxattr(q) => FopOut::Value(call(self, &q).await?),
                Fop::GetxattrMany(q) => FopOut::Values(call(self, &q).await?),
                Fop::Setxattr(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Removexattr(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Listxattr(q) => FopOut::Names(call(self, &q).await?),
                Fop::Xattrop(q) => FopOut::Counters(call(self, &q).await?),
                Fop::Inodelk(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Entrylk(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::Statfs => FopOut::Statfs(call(self, &bp::Statfs {}).await?),
                Fop::Rchecksum(q) => FopOut::Checksums(call(self, &q).await?),
                Fop::Discard(q) => {
                    call(self, &q).await?;
                    FopOut::Done
                }
                Fop::GfidKinds(q) => FopOut::Kinds(call(self, &q).await?),
                Fop::GetxattrFiles(q) => FopOut::FileValues(call(self, &q).await?),
                Fop::XattropMany(q) => FopOut::XattropResults(call(self, &q).await?),
                Fop::ReadWhole(q) => {
                    let (whole, data) = self.call(&q, Bytes::new(), BRICK_OP_TIMEOUT).await?;
                    FopOut::Whole(whole, data)
                }
                Fop::CreateWhole(q, data) => {
                    let n = data.len() as u64;
                    let attr = self.call(&q, data, BRICK_OP_TIMEOUT).await?.0;
                    self.note_written(n);
                    FopOut::Attr(attr)
                }
            })
        })
    }
}

/// A shared handle to any layer.
pub type Child = Arc<dyn Subvolume>;

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_proto::brick as bp;

    #[test]
    fn entry_locks_name_the_parent_except_for_renames() {
        let (a, b) = (Gfid::from_u128(10), Gfid::from_u128(11));
        let create = Fop::Create(bp::Create {
            parent: a,
            name: "f".into(),
            new: bp::NewObject {
                gfid: Gfid::from_u128(12),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        });
        let want = EntryLock {
            parent: a,
            name: Some("f".into()),
            dirs: vec![a],
        };
        assert_eq!(create.entry_lock(), want);
        let rename = |to: Gfid| {
            Fop::Rename(bp::Rename {
                old_parent: a,
                old_name: "f".into(),
                new_parent: to,
                new_name: "g".into(),
            })
        };
        let across = rename(b).entry_lock();
        assert_eq!(
            (across.parent, across.name, across.dirs),
            (a, None, vec![a, b])
        );
        assert_eq!(rename(a).entry_lock().dirs, vec![a]);
    }
}
