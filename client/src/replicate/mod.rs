//! The replicate layer: one replica set of bricks kept identical.
//!
//! Write-type operations run as transactions (see [`crate::afr`]):
//!
//! ```text
//! lock (inode range or parent entry, on every up brick, in brick order)
//!   -> pre-op: dirty += 1, durable; the same request reads every
//!      changelog counter (no round trip of its own for the judgement)
//!   -> quorum, split-brain and arbiter checks on those counters (refuse,
//!      taking the marks back, before touching data)
//!   -> the operation on every locked brick
//!   -> post-op: dirty -= 1 where it succeeded; blame the others, durable
//!   -> unlock
//! ```
//!
//! Reads go to a brick no other brick blames; a file whose copies blame
//! each other is in split-brain and reads and writes get EIO. Entry
//! operations keep their changelog on the parent directory, so heal can
//! repair names as well as data.

pub mod rules;
mod transaction;

use std::sync::atomic::{AtomicU64, Ordering};

use mortar_net::{BoxFuture, Runtime};
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta};
use mortar_proto::{Errno, FopError, Gfid};

use crate::afr::{self, BrickView, Kind, Quorum, Verdict};
use crate::fop::{Child, Fop, FopOut, FopResult, Subvolume};
use crate::txn;

pub struct Replicate {
    name: String,
    rt: Runtime,
    children: Vec<Child>,
    /// The changelog key naming each child.
    keys: Vec<String>,
    quorum: Quorum,
    arbiter: Option<usize>,
    next_owner: AtomicU64,
}

/// What a transaction locks.
#[derive(Debug, Clone)]
enum LockOn {
    Inode { gfid: Gfid, start: u64, len: u64 },
    Entry { parent: Gfid, name: Option<String> },
}

/// The counters `names` of `gfid` on one brick, in one request
/// (`GetxattrMany`); an older brick without that procedure is asked name
/// by name. `None`: the brick did not answer (or lacks the file).
async fn brick_counters(c: &Child, gfid: Gfid, names: Vec<String>) -> Option<Vec<[i64; 3]>> {
    let many = bp::GetxattrMany {
        gfid,
        names: names.clone(),
    };
    match c.fop(Fop::GetxattrMany(many)).await {
        Ok(FopOut::Values(vals)) if vals.len() == names.len() => {
            return Some(parse_counters(&vals))
        }
        Err(e) if e.errno == Errno::EPROTO => {}
        _ => return None,
    }
    let mut vals = Vec::with_capacity(names.len());
    for n in names {
        match c.fop(Fop::Getxattr(bp::Getxattr { gfid, name: n })).await {
            Ok(FopOut::Value(v)) => vals.push(counters(&v)),
            Err(e) if e.errno == Errno::ENODATA => vals.push([0; 3]),
            _ => return None,
        }
    }
    Some(vals)
}

/// Counter values as read (an absent one is zero).
fn parse_counters(vals: &[Option<Vec<u8>>]) -> Vec<[i64; 3]> {
    vals.iter()
        .map(|v| v.as_deref().map_or([0; 3], counters))
        .collect()
}

/// One brick's view from its counters as [`Replicate::views`] asks them:
/// one per child, then dirty.
fn view_of(c: &[[i64; 3]], n: usize) -> BrickView {
    BrickView {
        blames: c[..n].to_vec(),
        dirty: c[n],
    }
}

/// One brick's view of an object from its pre-op reply (the new value of
/// every counter the pre-op named: dirty and each child's blame key), as
/// it was before the pre-op's own dirty mark of `kind`. `None` when the
/// reply lacks a key or a counter is not three wide: the brick cannot be
/// judged.
pub(crate) fn view_before_pre_op(
    reply: &[(String, CounterDelta)],
    keys: &[String],
    kind: Kind,
) -> Option<BrickView> {
    // A key first written by this pre-op reads back empty: zero.
    fn triple<T: Copy + Into<i64>>(v: &[T]) -> Option<[i64; 3]> {
        match v {
            [] => Some([0; 3]),
            [a, b, c] => Some([(*a).into(), (*b).into(), (*c).into()]),
            _ => None,
        }
    }
    let value = |name: &str| -> Option<[i64; 3]> {
        match &reply.iter().find(|(n, _)| n == name)?.1 {
            CounterDelta::Add32(v) => triple(v),
            CounterDelta::Add64(v) => triple(v),
        }
    };
    let mut dirty = value(xa::DIRTY)?;
    dirty[kind as usize] -= 1;
    let blames = keys.iter().map(|k| value(k)).collect::<Option<Vec<_>>>()?;
    Some(BrickView { blames, dirty })
}

/// The counters `names` of each of `gfids` on one brick, a page of
/// [`bp::GETXATTR_FILES_MAX`] files per request (`GetxattrFiles`); per
/// file `None` where the brick did not answer or lacks it. An older brick
/// without that procedure is asked file by file ([`brick_counters`]).
async fn files_counters(c: &Child, gfids: &[Gfid], names: &[String]) -> Vec<Option<Vec<[i64; 3]>>> {
    let mut out = Vec::with_capacity(gfids.len());
    for page in gfids.chunks(bp::GETXATTR_FILES_MAX) {
        let q = bp::GetxattrFiles {
            gfids: page.to_vec(),
            names: names.to_vec(),
        };
        match c.fop(Fop::GetxattrFiles(q)).await {
            Ok(FopOut::FileValues(files)) if files.len() == page.len() => {
                out.extend(files.into_iter().map(|vals| {
                    let vals = vals.filter(|v| v.len() == names.len())?;
                    Some(parse_counters(&vals))
                }));
            }
            Err(e) if e.errno == Errno::EPROTO => {
                for &gfid in page {
                    out.push(brick_counters(c, gfid, names.to_vec()).await);
                }
            }
            _ => out.extend(page.iter().map(|_| None)),
        }
    }
    out
}

impl Replicate {
    pub fn new(
        rt: &Runtime,
        name: &str,
        children: Vec<Child>,
        quorum: Quorum,
        arbiter: bool,
    ) -> Replicate {
        let keys = children
            .iter()
            .map(|c| format!("{}{}", xa::CHANGELOG_PREFIX, c.name()))
            .collect();
        let arbiter = (arbiter && children.len() == 3).then_some(2);
        Replicate {
            name: name.to_string(),
            rt: rt.child(name.to_string()),
            children,
            keys,
            quorum,
            arbiter,
            next_owner: AtomicU64::new(1),
        }
    }

    pub fn children(&self) -> &[Child] {
        &self.children
    }

    // ---- the interface of the self-heal crate ----
    //
    // `mortar-heal` heals a set file by file through these accessors (and
    // `children`); nothing else of the set is public.

    /// The set's name (its lock domain).
    pub fn set_name(&self) -> &str {
        &self.name
    }

    /// The runtime the set's tasks run on.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The changelog key naming child `i` (where other bricks blame it).
    pub fn changelog_key(&self, i: usize) -> &str {
        &self.keys[i]
    }

    /// The arbiter's index, if the set has one.
    pub fn arbiter(&self) -> Option<usize> {
        self.arbiter
    }

    /// A lock owner no other transaction of this client uses.
    pub fn new_lock_owner(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// The names of the children `idx`, joined for a message.
    fn names(&self, idx: &[usize]) -> String {
        idx.iter()
            .map(|i| self.children[*i].name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn up_mask(&self) -> Vec<bool> {
        self.children.iter().map(|c| c.is_up()).collect()
    }

    async fn fan_any<T: Send + 'static>(
        &self,
        idx: &[usize],
        make: impl Fn(Child) -> BoxFuture<'static, T>,
    ) -> Vec<(usize, Option<T>)> {
        txn::fan_any(&self.rt, &self.children, idx, make).await
    }

    async fn fan(
        &self,
        idx: &[usize],
        make: impl Fn(Child) -> BoxFuture<'static, FopResult<FopOut>>,
    ) -> Vec<(usize, FopResult<FopOut>)> {
        txn::fan(&self.rt, &self.name, &self.children, idx, make).await
    }

    /// The counters each child in `idx` holds for `gfid` (`None` for a
    /// child that did not answer).
    pub async fn views(&self, gfid: Gfid, idx: &[usize]) -> Vec<Option<BrickView>> {
        let mut names = self.keys.clone();
        names.push(xa::DIRTY.to_string());
        let results = self
            .fan_any(idx, move |c| {
                let names = names.clone();
                Box::pin(async move { brick_counters(&c, gfid, names).await })
            })
            .await;
        let n = self.children.len();
        let mut views: Vec<Option<BrickView>> = vec![None; n];
        for (i, r) in results {
            if let Some(Some(vals)) = r {
                views[i] = Some(view_of(&vals, n));
            }
        }
        views
    }

    /// [`Replicate::views`] of many files: per gfid (in the order given),
    /// every child's counters, `None` for a child that did not answer or
    /// lacks the file. One request per child per [`bp::GETXATTR_FILES_MAX`]
    /// files (`GetxattrFiles`), the children asked at once; an older brick
    /// without that procedure is asked file by file.
    pub async fn views_of_many(&self, gfids: &[Gfid]) -> Vec<Vec<Option<BrickView>>> {
        let n = self.children.len();
        let mut names = self.keys.clone();
        names.push(xa::DIRTY.to_string());
        let all: Vec<usize> = (0..n).collect();
        let asked = gfids.to_vec();
        let results = self
            .fan_any(&all, move |c| {
                let (names, asked) = (names.clone(), asked.clone());
                Box::pin(async move { files_counters(&c, &asked, &names).await })
            })
            .await;
        let mut views = vec![vec![None; n]; gfids.len()];
        for (i, per_file) in results {
            for (f, c) in per_file.into_iter().flatten().enumerate().take(gfids.len()) {
                if let Some(c) = c {
                    views[f][i] = Some(view_of(&c, n));
                }
            }
        }
        views
    }

    /// The error naming the copies of `gfid` that blame each other
    /// (also what the self-heal crate reports for a split-brain).
    pub fn split_brain(&self, gfid: Gfid, accused: &[usize]) -> FopError {
        let names: Vec<&str> = accused.iter().map(|i| self.children[*i].name()).collect();
        FopError::new(
            Errno::EIO,
            format!(
                "{}: {gfid} is in split-brain: the copies on {} blame each other; resolve it with heal before using the file",
                self.name,
                names.join(" and ")
            ),
        )
    }

    /// The bricks that are up, or ENOTCONN when none is.
    fn up_or_enotconn(&self) -> FopResult<Vec<usize>> {
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        if up.is_empty() {
            return Err(FopError::new(
                Errno::ENOTCONN,
                format!("{}: no brick of the replica set is reachable", self.name),
            ));
        }
        Ok(up)
    }

    /// Send a read-type operation to a good copy (trying the next good copy
    /// if one fails to answer).
    async fn read_from_source(&self, gfid: Gfid, kind: Kind, op: Fop) -> FopResult<FopOut> {
        self.read_from_source_at(gfid, kind, op)
            .await
            .map(|(_, out)| out)
    }

    /// The copies of `gfid` a read of `kind` may use, given every child's
    /// `views` of it: an error if the answers fall short of the read
    /// quorum or the copies are in split-brain.
    fn good_copies(
        &self,
        gfid: Gfid,
        kind: Kind,
        views: &[Option<BrickView>],
        up: &[usize],
    ) -> FopResult<Vec<usize>> {
        let answered: Vec<bool> = views.iter().map(Option::is_some).collect();
        if !rules::read_quorum_met(&self.quorum, &answered) {
            mortar_net::mark!(READ_QUORUM_REFUSED);
            return Err(FopError::new(
                Errno::ENOTCONN,
                format!(
                    "{}: cannot read {gfid} safely: {}; the copies reachable may be stale",
                    self.name,
                    self.quorum.describe(&answered)
                ),
            ));
        }
        let verdict = afr::examine(views, kind, self.arbiter);
        if let Verdict::SplitBrain { accused } = &verdict {
            return Err(self.split_brain(gfid, accused));
        }
        let mut good = afr::read_candidates(&verdict, up, kind, self.arbiter);
        // A copy left dirty by a transaction the clean copies finished
        // may lack what they hold (power loss before its post-op).
        if let Some((clean, _)) = afr::clean_sources(views, kind, &good) {
            good = clean;
        }
        good.retain(|i| up.contains(i));
        Ok(good)
    }

    /// [`Replicate::read_from_source`], and which child answered.
    async fn read_from_source_at(
        &self,
        gfid: Gfid,
        kind: Kind,
        op: Fop,
    ) -> FopResult<(usize, FopOut)> {
        let up = self.up_or_enotconn()?;
        let views = self.views(gfid, &up).await;
        let good = self.good_copies(gfid, kind, &views, &up)?;
        let mut last = None;
        for i in good {
            match self.children[i].fop(op.clone()).await {
                Err(e) if e.errno == Errno::ENOTCONN => last = Some(e),
                r => return r.map(|out| (i, out)),
            }
        }
        Err(last.unwrap_or_else(|| {
            FopError::new(
                Errno::EIO,
                format!(
                    "{}: no good copy of {gfid} is reachable (the reachable copies are stale)",
                    self.name
                ),
            )
        }))
    }

    /// A listing from a good copy of the directory, each entry marked
    /// with whether the listing brick holds a good copy of that entry's
    /// file, as a lookup would choose it (every up child has the file,
    /// read quorum, no split-brain, the brick among the read
    /// candidates): one more round trip, to every child at once, for the
    /// whole page, in place of a lookup per entry.
    async fn readdir_plus(&self, q: bp::Readdir) -> FopResult<FopOut> {
        let (from, out) = self
            .read_from_source_at(q.dir, Kind::Entry, Fop::Readdir(q.clone()))
            .await?;
        let FopOut::Dir(page) = out else {
            return Err(crate::fop::shape_error("readdir", &out));
        };
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        let gfids: Vec<Gfid> = page.entries.iter().map(|e| e.attr.gfid).collect();
        let views = if gfids.is_empty() {
            Vec::new()
        } else {
            self.views_of_many(&gfids).await
        };
        let good = page
            .entries
            .iter()
            .zip(&views)
            .map(|(e, v)| {
                let kind = if e.attr.kind == mortar_proto::FileKind::Regular {
                    Kind::Data
                } else {
                    Kind::Metadata
                };
                up.iter().all(|i| v.get(*i).is_some_and(Option::is_some))
                    && self
                        .good_copies(e.attr.gfid, kind, v, &up)
                        .is_ok_and(|g| g.contains(&from))
            })
            .collect();
        Ok(FopOut::DirPlus(page, good))
    }

    /// A write-type transaction. `ctx` are the gfids whose changelog the
    /// operation changes (the file, or the parent directories).
    async fn to_all(&self, op: Fop) -> FopResult<FopOut> {
        let up: Vec<usize> = (0..self.children.len())
            .filter(|i| self.children[*i].is_up())
            .collect();
        let results = txn::fan_op(&self.rt, &self.name, &self.children, &up, &op).await;
        let n = self.children.len();
        let ok = txn::succeeded(&results);
        let ok_mask: Vec<bool> = (0..n).map(|i| ok.contains(&i)).collect();
        let (first_ok, first_err) = txn::first_answers(results);
        match first_ok {
            Some(r) if self.quorum.met(&ok_mask) || self.quorum == Quorum::None => r,
            _ => {
                txn::release_partial(&self.rt, &self.name, &self.children, &ok, &op).await;
                Err(first_err.unwrap_or_else(|| {
                    FopError::new(
                        Errno::ENOTCONN,
                        format!("{}: no brick is reachable", self.name),
                    )
                }))
            }
        }
    }

    /// Lookup on every up brick: names must agree on the gfid; the
    /// attributes come from a good data copy.
    async fn lookup(&self, q: bp::Lookup) -> FopResult<FopOut> {
        let up = self.up_or_enotconn()?;
        let q2 = q.clone();
        let results = self
            .fan(&up, move |c| {
                let q = q2.clone();
                Box::pin(async move { c.fop(Fop::Lookup(q)).await })
            })
            .await;
        let mut found: Vec<mortar_proto::Attr> = Vec::new();
        let mut err = None;
        for (_, r) in results {
            match r {
                Ok(FopOut::Attr(a)) => found.push(a),
                Ok(other) => return Err(crate::fop::shape_error("lookup", &other)),
                Err(e) => err = Some(e),
            }
        }
        let Some(first) = found.first().cloned() else {
            return Err(err.unwrap_or_else(|| FopError::new(Errno::ENOENT, q.name.clone())));
        };
        if found.iter().any(|a| a.gfid != first.gfid) {
            return Err(FopError::new(
                Errno::EIO,
                format!("{}: {:?} has different gfids on different bricks (gfid split-brain); resolve it with heal", self.name, q.name),
            ));
        }
        let kind = if first.kind == mortar_proto::FileKind::Regular {
            Kind::Data
        } else {
            Kind::Metadata
        };
        self.read_from_source(first.gfid, kind, Fop::Stat(bp::Stat { gfid: first.gfid }))
            .await
    }
}

/// The three counters of a changelog value (missing ones are zero).
fn counters(raw: &[u8]) -> [i64; 3] {
    let mut c = [0i64; 3];
    for (k, chunk) in raw.chunks(4).take(3).enumerate() {
        if let Ok(b) = <[u8; 4]>::try_from(chunk) {
            c[k] = i64::from(i32::from_be_bytes(b));
        }
    }
    c
}

impl Subvolume for Replicate {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_up(&self) -> bool {
        self.children.iter().any(|c| c.is_up())
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
        Box::pin(async move {
            // Every arm below takes the gfid or entry its kind has.
            let gfid = op.gfid().unwrap_or_default();
            match op {
                Fop::Lookup(q) => self.lookup(q).await,
                Fop::Stat(_) | Fop::Read(_) | Fop::Open(_) => {
                    self.read_from_source(gfid, Kind::Data, op).await
                }
                Fop::Readlink(_) | Fop::Getxattr(_) | Fop::Listxattr(_) => {
                    self.read_from_source(gfid, Kind::Metadata, op).await
                }
                Fop::Readdir(_) => self.read_from_source(gfid, Kind::Entry, op).await,
                Fop::ReaddirPlus(q) => self.readdir_plus(q).await,
                Fop::Statfs => self.to_all(Fop::Statfs).await,
                Fop::Rchecksum(_)
                | Fop::Discard(_)
                | Fop::GetxattrMany(_)
                | Fop::GfidKinds(_)
                | Fop::GetxattrFiles(_)
                | Fop::ReadWhole(_)
                | Fop::CreateWhole(..)
                | Fop::XattropMany(_) => Err(crate::fop::brick_only(&op)),
                Fop::Fsync(_) | Fop::Inodelk(_) | Fop::Entrylk(_) | Fop::Xattrop(_) => {
                    self.to_all(op).await
                }
                // Whole-file locks, not the written range: writers of one
                // file share its changelog, and a transaction must see no
                // other's pre-op in flight (see [`rules::in_doubt`]).
                Fop::Write(..) | Fop::Truncate(_) => {
                    self.file_transaction(gfid, Kind::Data, op).await
                }
                Fop::Setattr(_) | Fop::Setxattr(_) | Fop::Removexattr(_) => {
                    self.file_transaction(gfid, Kind::Metadata, op).await
                }
                Fop::Create(_)
                | Fop::Mkdir(_)
                | Fop::Mknod(_)
                | Fop::Symlink(_)
                | Fop::Link(_)
                | Fop::Unlink(_)
                | Fop::Rmdir(_)
                | Fop::Rename(_) => {
                    let l = op.entry_lock();
                    let lock = LockOn::Entry {
                        parent: l.parent,
                        name: l.name,
                    };
                    self.transaction(lock, Kind::Entry, l.dirs, op).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_op_reply_gives_the_view_before_its_mark() {
        let keys: Vec<String> = (0..3)
            .map(|i| format!("{}vol-client-{i}", xa::CHANGELOG_PREFIX))
            .collect();
        let c32 = |v: &[i32]| CounterDelta::Add32(v.to_vec());
        let reply =
            |dirty: CounterDelta, blames: [CounterDelta; 3]| -> Vec<(String, CounterDelta)> {
                let mut r = vec![(xa::DIRTY.to_string(), dirty)];
                r.extend(keys.iter().cloned().zip(blames));
                r
            };
        type Row = (
            &'static str,
            Vec<(String, CounterDelta)>,
            Kind,
            Option<BrickView>,
        );
        let rows: Vec<Row> = vec![
            (
                "a clean copy: only this pre-op's mark",
                reply(
                    c32(&[1, 0, 0]),
                    [c32(&[0, 0, 0]), c32(&[0, 0, 0]), c32(&[0, 0, 0])],
                ),
                Kind::Data,
                Some(BrickView {
                    blames: vec![[0; 3]; 3],
                    dirty: [0; 3],
                }),
            ),
            (
                "an earlier unfinished write and a blame on brick 2",
                reply(
                    c32(&[2, 0, 0]),
                    [c32(&[0, 0, 0]), c32(&[0, 0, 0]), c32(&[3, 1, 0])],
                ),
                Kind::Data,
                Some(BrickView {
                    blames: vec![[0; 3], [0; 3], [3, 1, 0]],
                    dirty: [1, 0, 0],
                }),
            ),
            (
                "an entry pre-op lowers the entry counter only",
                reply(
                    c32(&[1, 0, 1]),
                    [c32(&[0, 0, 0]), c32(&[0, 0, 2]), c32(&[0, 0, 0])],
                ),
                Kind::Entry,
                Some(BrickView {
                    blames: vec![[0; 3], [0, 0, 2], [0; 3]],
                    dirty: [1, 0, 0],
                }),
            ),
            (
                "a blame key missing from the reply",
                vec![(xa::DIRTY.to_string(), c32(&[1, 0, 0]))],
                Kind::Data,
                None,
            ),
            (
                "a counter of another width",
                reply(
                    c32(&[1, 0, 0]),
                    [c32(&[0, 0]), c32(&[0, 0, 0]), c32(&[0, 0, 0])],
                ),
                Kind::Data,
                None,
            ),
        ];
        for (what, r, kind, want) in rows {
            assert_eq!(view_before_pre_op(&r, &keys, kind), want, "{what}");
        }
    }
}
