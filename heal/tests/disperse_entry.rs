//! Disperse 4 + 2 over six real bricks on loopback (default options):
//! names made, linked, renamed, changed and removed while a brick was
//! down, then more while another was down, come back to both through
//! entry heal, driven the way the self-heal daemon's crawl drives it
//! (heal every gfid the pending-heal indices list until they are empty).
//! Then every brick holds the same tree (names, gfids, kinds, modes, link
//! counts, symlink targets, fragment versions and lengths, no dirty
//! marks), the data decodes with the healed bricks doing the work, and a
//! name whose gfid differs between good copies is reported as split-brain
//! with nothing deleted.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::disperse::{Cluster, Rng};
use mortar_client::disperse::{FragInfo, EC_XATTR};
use mortar_client::fop::{Fop, FopOut, Subvolume};
use mortar_heal::disperse::heal_file;
use mortar_heal::HealOutcome;
use mortar_proto::brick::{self as bp, xattr as xa, NewObject};
use mortar_proto::{Errno, FileKind, Gfid};

/// Heal rounds the test allows before it calls the heal stuck: each round
/// heals every gfid listed, and a subtree needs one round per level.
const HEAL_ROUNDS_MAX: usize = 10;

/// What a path must be after heal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// The set, a gfid source, and the model of what the client made.
struct Tree {
    c: Cluster,
    next: u128,
    rng: Rng,
    model: BTreeMap<String, Want>,
    /// Path -> gfid of what the client made (directories and files).
    gfids: BTreeMap<String, Gfid>,
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').expect("absolute path")
}

impl Tree {
    async fn start(tag: &str) -> Tree {
        let mut gfids = BTreeMap::new();
        gfids.insert(String::new(), Gfid::ROOT);
        Tree {
            c: Cluster::start(tag).await,
            next: 0xd000,
            rng: Rng(0x2545f4914f6cdd1d),
            model: BTreeMap::new(),
            gfids,
        }
    }

    fn new_object(&mut self, mode: u32) -> NewObject {
        self.next += 1;
        NewObject {
            gfid: Gfid::from_u128(self.next),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    async fn op(&self, op: Fop) -> FopOut {
        let what = format!("{op:?}");
        self.c
            .set
            .fop(op)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The parent's gfid and the name of `path`.
    fn at(&self, path: &str) -> (Gfid, String) {
        let (parent, name) = split(path);
        (self.gfids[parent], name.to_string())
    }

    async fn mkdir(&mut self, path: &str) {
        let new = self.new_object(0o755);
        let (parent, name) = self.at(path);
        self.op(Fop::Mkdir(bp::Mkdir { parent, name, new })).await;
        self.gfids.insert(path.into(), new.gfid);
        self.model.insert(path.into(), Want::Dir);
    }

    /// Make `path` with `len` random bytes.
    async fn create(&mut self, path: &str, len: usize) {
        let new = self.new_object(0o640);
        let (parent, name) = self.at(path);
        self.op(Fop::Create(bp::Create { parent, name, new })).await;
        self.gfids.insert(path.into(), new.gfid);
        self.model.insert(path.into(), Want::File(Vec::new()));
        self.append(path, len).await;
    }

    /// Add `len` random bytes at the end of `path` (and of every name of
    /// that file in the model).
    async fn append(&mut self, path: &str, len: usize) {
        if len == 0 {
            return;
        }
        let data: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
        let g = self.gfids[path];
        let Some(Want::File(old)) = self.model.get(path).cloned() else {
            panic!("{path} is not a file")
        };
        let w = bp::Write {
            gfid: g,
            offset: old.len() as u64,
        };
        self.op(Fop::Write(w, Bytes::copy_from_slice(&data))).await;
        let names: Vec<String> = self
            .gfids
            .iter()
            .filter(|(p, x)| **x == g && self.model.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in names {
            if let Some(Want::File(d)) = self.model.get_mut(&p) {
                d.extend_from_slice(&data);
            }
        }
    }

    async fn symlink(&mut self, path: &str, target: &str) {
        let new = self.new_object(0o777);
        let (parent, name) = self.at(path);
        let target = target.to_string();
        let q = bp::Symlink {
            parent,
            name,
            target: target.clone(),
            new,
        };
        self.op(Fop::Symlink(q)).await;
        self.gfids.insert(path.into(), new.gfid);
        self.model.insert(path.into(), Want::Link(target));
    }

    async fn link(&mut self, from: &str, to: &str) {
        let gfid = self.gfids[from];
        let (new_parent, new_name) = self.at(to);
        let q = bp::Link {
            gfid,
            new_parent,
            new_name,
        };
        self.op(Fop::Link(q)).await;
        self.gfids.insert(to.into(), gfid);
        let want = self.model[from].clone();
        self.model.insert(to.into(), want);
    }

    /// Rename `from` to `to`, moving everything under it in the model.
    async fn rename(&mut self, from: &str, to: &str) {
        let (old_parent, old_name) = self.at(from);
        let (new_parent, new_name) = self.at(to);
        let q = bp::Rename {
            old_parent,
            old_name,
            new_parent,
            new_name,
        };
        self.op(Fop::Rename(q)).await;
        let under = |p: &String| p == from || p.starts_with(&format!("{from}/"));
        let moved: Vec<String> = self.gfids.keys().filter(|p| under(p)).cloned().collect();
        for p in moved {
            let q = format!("{to}{}", &p[from.len()..]);
            let g = self.gfids.remove(&p).unwrap();
            self.gfids.insert(q.clone(), g);
            if let Some(w) = self.model.remove(&p) {
                self.model.insert(q, w);
            }
        }
    }

    async fn unlink(&mut self, path: &str) {
        let (parent, name) = self.at(path);
        self.op(Fop::Unlink(bp::Unlink { parent, name })).await;
        self.model.remove(path);
        self.gfids.remove(path);
    }

    async fn rmdir(&mut self, path: &str) {
        let (parent, name) = self.at(path);
        self.op(Fop::Rmdir(bp::Rmdir { parent, name })).await;
        self.model.remove(path);
        self.gfids.remove(path);
    }

    async fn chmod(&self, path: &str, mode: u32) {
        let q = bp::Setattr {
            gfid: self.gfids[path],
            mode: Some(mode),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        };
        self.op(Fop::Setattr(q)).await;
    }

    /// Every gfid in any brick's pending-heal index.
    async fn pending(&self) -> BTreeSet<Gfid> {
        let mut pending = BTreeSet::new();
        for c in &self.c.b.clients {
            pending.extend(c.pending_heal(10_000).await.unwrap());
        }
        pending
    }

    /// Heal as the daemon's crawl does, until every index is empty; the
    /// outcomes of every round.
    async fn heal_until_clean(&self) -> Vec<Vec<HealOutcome>> {
        let mut rounds = Vec::new();
        for _ in 0..HEAL_ROUNDS_MAX {
            let pending = self.pending().await;
            if pending.is_empty() {
                return rounds;
            }
            let mut outcomes = Vec::new();
            for g in pending {
                outcomes.push(heal_file(&self.c.set, g).await);
            }
            rounds.push(outcomes);
        }
        panic!("indices not empty after {HEAL_ROUNDS_MAX} rounds: {rounds:#?}");
    }
}

/// What one brick holds under a path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    gfid: Gfid,
    kind: FileKind,
    mode: u32,
    /// Names of the file (0 for a directory: brick-local).
    nlink: u32,
    /// The fragment file's length (0 for a directory).
    fragment_len: u64,
    target: Option<String>,
    ec: FragInfo,
}

/// A brick's value of xattr `name` on `g` (`None`: not set).
async fn xattr_on(c: &Cluster, i: usize, g: Gfid, name: &str) -> Option<Vec<u8>> {
    let q = bp::Getxattr {
        gfid: g,
        name: name.into(),
    };
    match c.b.clients[i].fop(Fop::Getxattr(q)).await {
        Ok(FopOut::Value(v)) => Some(v),
        Err(e) if e.errno == Errno::ENODATA => None,
        other => panic!("brick {i}: getxattr {name} of {g}: {other:?}"),
    }
}

/// One brick's listing of `dir`: name -> attributes.
async fn list_on(c: &Cluster, i: usize, dir: Gfid) -> Vec<bp::DirEntry> {
    let q = bp::Readdir {
        dir,
        after: None,
        max_entries: 1000,
    };
    let FopOut::Dir(page) = c.b.clients[i].fop(Fop::Readdir(q)).await.unwrap() else {
        panic!("readdir shape")
    };
    assert!(page.eof, "test directories fit in one page");
    page.entries
}

/// Walk brick `i`'s tree from the root, recording every object (and,
/// with `marks_zero`, checking no dirty mark is left on any).
async fn walk(c: &Cluster, i: usize, marks_zero: bool) -> BTreeMap<String, Object> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![(String::new(), Gfid::ROOT)];
    while let Some((path, dir)) = dirs.pop() {
        if marks_zero {
            assert_no_dirty(c, i, dir, &path).await;
        }
        for e in list_on(c, i, dir).await {
            let p = format!("{path}/{}", e.name);
            let a = e.attr;
            let target = match a.kind {
                FileKind::Symlink => {
                    match c.b.clients[i]
                        .fop(Fop::Readlink(bp::Readlink { gfid: a.gfid }))
                        .await
                    {
                        Ok(FopOut::Target(t)) => Some(t),
                        other => panic!("readlink {p}: {other:?}"),
                    }
                }
                _ => None,
            };
            let is_dir = a.kind == FileKind::Directory;
            if is_dir {
                dirs.push((p.clone(), a.gfid));
            } else if marks_zero {
                assert_no_dirty(c, i, a.gfid, &p).await;
            }
            let ec = xattr_on(c, i, a.gfid, EC_XATTR)
                .await
                .map_or_else(FragInfo::default, |v| FragInfo::parse(&v));
            let obj = Object {
                gfid: a.gfid,
                kind: a.kind,
                mode: a.mode,
                nlink: if is_dir { 0 } else { a.nlink },
                fragment_len: if is_dir { 0 } else { a.size },
                target,
                ec,
            };
            out.insert(p, obj);
        }
    }
    out
}

async fn assert_no_dirty(c: &Cluster, i: usize, g: Gfid, path: &str) {
    if let Some(v) = xattr_on(c, i, g, xa::DIRTY).await {
        assert!(
            v.iter().all(|x| *x == 0),
            "brick {i}: {path:?} ({g}) has dirty marks {v:?}"
        );
    }
}

/// Before the failures: a directory with files to keep, link, rename,
/// move away and remove, a directory to remove with what it holds, and
/// a subtree to move.
async fn before(t: &mut Tree) {
    t.mkdir("/pre").await;
    t.create("/pre/keep", 3000).await;
    t.create("/pre/old", 700).await;
    t.create("/pre/mv", 5000).await;
    t.create("/pre/gone", 100).await;
    t.create("/pre/again", 200).await;
    t.mkdir("/pre/doomed").await;
    t.create("/pre/doomed/inner", 10).await;
    t.mkdir("/pre/tree").await;
    t.create("/pre/tree/t1", 4096).await;
    t.mkdir("/pre/tree/tsub").await;
    t.create("/pre/tree/tsub/t2", 9000).await;
}

/// With one brick down: files with data (one past a heal chunk), a
/// subtree, a symlink, hard links to a new and an old file, renames
/// within and across directories, a moved subtree, removals (a file, a
/// subtree, a name made again), and chmods of a file and a directory.
async fn while_first_down(t: &mut Tree) {
    t.mkdir("/d").await;
    let sizes = [0, 1, 511, 2048, 5000, 65_536, 300_000, (1 << 20) + 4097];
    for (n, len) in sizes.iter().enumerate() {
        t.create(&format!("/d/f{n:02}"), *len).await;
    }
    t.mkdir("/d/sub").await;
    t.mkdir("/d/sub/deep").await;
    t.create("/d/sub/deep/leaf", 1234).await;
    t.symlink("/d/link", "f01").await;
    t.link("/d/f02", "/d/f02.hard").await;
    t.link("/pre/keep", "/pre/keep.hard").await;
    t.rename("/d/f03", "/d/f03.renamed").await;
    t.rename("/pre/old", "/pre/old.renamed").await;
    t.rename("/pre/mv", "/d/moved").await;
    t.rename("/pre/tree", "/d/tree").await;
    t.unlink("/pre/gone").await;
    t.unlink("/pre/doomed/inner").await;
    t.rmdir("/pre/doomed").await;
    t.unlink("/d/f05").await;
    t.unlink("/pre/again").await;
    t.create("/pre/again", 333).await;
    t.chmod("/pre/keep", 0o600).await;
    t.chmod("/pre", 0o700).await;
    t.append("/pre/keep", 100).await;
}

/// With the first brick back (not healed) and another down: names in the
/// root, and a removal the first brick cannot take (it never had the
/// name), so each of the two holds its own stale names.
async fn while_second_down(t: &mut Tree) {
    t.create("/late", 4000).await;
    t.mkdir("/late_dir").await;
    t.create("/late_dir/x", 2500).await;
    t.unlink("/pre/old.renamed").await;
}

/// Every brick holds the tree the model says, the same on all of them,
/// with no dirty mark and empty indices.
async fn check_bricks(t: &Tree) -> BTreeMap<String, Object> {
    let reference = walk(&t.c, 0, true).await;
    let want: BTreeSet<&String> = t.model.keys().collect();
    let got: BTreeSet<&String> = reference.keys().collect();
    assert_eq!(got, want, "brick 0's tree against the model");
    for (p, w) in &t.model {
        let o = &reference[p];
        let kind = match w {
            Want::Dir => FileKind::Directory,
            Want::File(_) => FileKind::Regular,
            Want::Link(_) => FileKind::Symlink,
        };
        assert_eq!((o.gfid, o.kind), (t.gfids[p], kind), "{p}");
        if let Want::Link(target) = w {
            assert_eq!(o.target.as_deref(), Some(target.as_str()), "{p}");
        }
    }
    for (p, mode) in [("/pre", 0o700), ("/pre/keep", 0o600), ("/d/f01", 0o640)] {
        assert_eq!(reference[p].mode, mode, "{p}");
    }
    for (a, b) in [("/d/f02", "/d/f02.hard"), ("/pre/keep", "/pre/keep.hard")] {
        assert_eq!(reference[a].nlink, 2, "{a}");
        assert_eq!(reference[a], reference[b], "{a} and {b}");
    }
    for i in 1..6 {
        let got = walk(&t.c, i, true).await;
        let differ: BTreeSet<&String> = reference
            .keys()
            .chain(got.keys())
            .filter(|p| reference.get(*p) != got.get(*p))
            .collect();
        assert!(
            differ.is_empty(),
            "brick {i} differs from brick 0 at {differ:?}: {:#?}",
            differ
                .iter()
                .map(|p| (reference.get(*p), got.get(*p)))
                .collect::<Vec<_>>()
        );
    }
    for (i, c) in t.c.b.clients.iter().enumerate() {
        let left = c.pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    reference
}

/// Every file of the model reads back through the set, and every name
/// looks up to its gfid (run with two bricks down, so the healed ones
/// are among the k that answer).
async fn check_reads(t: &Tree) {
    for (p, w) in &t.model {
        let (parent, name) = t.at(p);
        let q = bp::Lookup { parent, name };
        let a = t.c.set.fop(Fop::Lookup(q)).await;
        let a = a
            .unwrap_or_else(|e| panic!("lookup {p}: {e}"))
            .attr()
            .unwrap();
        assert_eq!(a.gfid, t.gfids[p], "{p}");
        match w {
            Want::File(data) => {
                let got = t.c.read_all(a.gfid).await;
                let got = got.unwrap_or_else(|e| panic!("reading {p}: {e}"));
                assert!(
                    got == *data,
                    "{p}: {} bytes read, {} written",
                    got.len(),
                    data.len()
                );
            }
            Want::Link(target) => {
                let q = bp::Readlink { gfid: a.gfid };
                let got = t.c.set.fop(Fop::Readlink(q)).await.unwrap();
                assert_eq!(got, FopOut::Target(target.clone()), "{p}");
            }
            Want::Dir => assert_eq!(a.kind, FileKind::Directory, "{p}"),
        }
    }
}

/// Two bricks, one after the other, miss names; entry heal brings both
/// back, and the data decodes from a set that needs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_made_while_bricks_were_down_are_healed_back() {
    let mut t = Tree::start("dentry").await;
    before(&mut t).await;
    t.c.b.kill(1).await;
    while_first_down(&mut t).await;
    t.c.b.revive(1).await;
    t.c.b.kill(4).await;
    while_second_down(&mut t).await;
    t.c.b.revive(4).await;

    for i in [1, 4] {
        let stale = walk(&t.c, i, false).await;
        let reference = walk(&t.c, 0, false).await;
        assert_ne!(
            stale.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "brick {i} missed names"
        );
    }
    assert!(t.pending().await.contains(&Gfid::ROOT));
    let rounds = t.heal_until_clean().await;
    for (n, round) in rounds.iter().enumerate() {
        eprintln!("heal round {n}: {round:?}");
        for o in round {
            assert!(!matches!(o, HealOutcome::SplitBrain(_)), "round {n}: {o:?}");
        }
    }
    check_bricks(&t).await;
    // A heal of a healed directory finds nothing to do.
    assert_eq!(heal_file(&t.c.set, t.gfids["/d"]).await, HealOutcome::Clean);
    assert_eq!(heal_file(&t.c.set, Gfid::ROOT).await, HealOutcome::Clean);
    // The healed bricks (1 and 4) are among the only four that answer.
    t.c.b.kill(0).await;
    t.c.b.kill(2).await;
    check_reads(&t).await;
    let _ = std::fs::remove_dir_all(&t.c.b.dir);
}

/// A name under which the good copies hold different objects is
/// reported as split-brain: nothing is deleted or replaced, the
/// directory stays pending heal, and the other names still heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_two_gfids_is_split_brain_and_nothing_is_deleted() {
    let mut t = Tree::start("dentry-sb").await;
    t.c.b.kill(5).await;
    t.create("/a", 3000).await;
    t.c.b.revive(5).await;
    // "x" made on the bricks themselves with two gfids (0, 1 and 5: one;
    // 2, 3 and 4: the other), as no client operation can.
    let (one, other) = (Gfid::from_u128(0x5b01), Gfid::from_u128(0x5b02));
    for i in 0..6 {
        let gfid = if [0, 1, 5].contains(&i) { one } else { other };
        let q = bp::Create {
            parent: Gfid::ROOT,
            name: "x".into(),
            new: NewObject {
                gfid,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        };
        t.c.b.clients[i].fop(Fop::Create(q)).await.unwrap();
    }
    for _ in 0..2 {
        match heal_file(&t.c.set, Gfid::ROOT).await {
            HealOutcome::SplitBrain(why) => {
                assert!(why.contains("\"x\""), "{why}");
                assert!(!why.contains("\"a\""), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    for i in 0..6 {
        let names: BTreeMap<String, Gfid> = list_on(&t.c, i, Gfid::ROOT)
            .await
            .into_iter()
            .map(|e| (e.name, e.attr.gfid))
            .collect();
        let x = if [0, 1, 5].contains(&i) { one } else { other };
        assert_eq!(names.get("x"), Some(&x), "brick {i} keeps its x");
        assert_eq!(names.get("a"), Some(&t.gfids["/a"]), "brick {i} has a");
    }
    // Its marks stay: the directory is still pending heal and reported.
    assert!(t.pending().await.contains(&Gfid::ROOT));
    // The name made while brick 5 was down was still healed, data too.
    t.c.b.kill(0).await;
    t.c.b.kill(1).await;
    let Want::File(data) = &t.model["/a"] else {
        unreachable!()
    };
    assert_eq!(&t.c.read_all(t.gfids["/a"]).await.unwrap(), data);
    let _ = std::fs::remove_dir_all(&t.c.b.dir);
}
