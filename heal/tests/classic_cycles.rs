//! The classic heal cycles, with default options over real loopback
//! bricks: for replica 3, replica 3 arbiter 1 and disperse 4 + 2, each
//! brick in turn is killed; through the set layer the tree changes in
//! every way a client can change it (data written, overwritten, appended,
//! cut; chmod, chown, times, user xattrs set and removed; directories,
//! nested; files and directories renamed; a file and a subtree removed;
//! hard links; symlinks); the brick comes back; the daemon's crawl
//! (`heal_graph` at the option defaults) runs until every index is
//! empty; then the comparator (`mortar_heal::compare`) finds no
//! difference between the bricks, and every file reads back through the
//! set as the model says (for disperse, also with two other bricks down,
//! so the healed brick's fragment is decoded).
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use common::Bricks;
use mortar_client::afr::Quorum;
use mortar_client::disperse::Disperse;
use mortar_client::fop::{Child, Fop, FopOut, Subvolume};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::replicate::Replicate;
use mortar_heal::compare::{compare, SetKind};
use mortar_heal::crawl::{heal_graph, CrawlLimits};
use mortar_proto::brick::{self as bp, NewObject, XattrFlags};
use mortar_proto::{options, FileKind, Gfid, Timespec};

/// Crawls a cycle may take before the heal is called stuck (each crawl
/// makes its own passes, a directory level each).
const CRAWLS_MAX: usize = 4;

/// What a path must be after heal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// Metadata a path must have after heal (only for paths that set it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: BTreeMap<String, Vec<u8>>,
}

struct Tree {
    b: Bricks,
    set: SetLayer,
    kind: SetKind,
    next: u128,
    model: BTreeMap<String, Want>,
    meta: BTreeMap<String, Meta>,
    gfids: BTreeMap<String, Gfid>,
}

impl Tree {
    async fn start(vol: &str, kind: &str) -> Tree {
        let n = if kind == "ec" { 6 } else { 3 };
        let b = Bricks::start(vol, n).await;
        let (set, kind) = match kind {
            "ec" => {
                let d = Disperse::new(&b.rt, &format!("{vol}-disperse-0"), b.children(), 2);
                (SetLayer::Disperse(Arc::new(d.unwrap())), SetKind::Disperse)
            }
            _ => {
                let arbiter = kind == "arbiter";
                let name = format!("{vol}-replicate-0");
                let r = Replicate::new(&b.rt, &name, b.children(), Quorum::Auto, arbiter);
                let arbiter = arbiter.then_some(2);
                (
                    SetLayer::Replicate(Arc::new(r)),
                    SetKind::Replicate { arbiter },
                )
            }
        };
        let mut gfids = BTreeMap::new();
        gfids.insert(String::new(), Gfid::ROOT);
        Tree {
            b,
            set,
            kind,
            next: 0xc000,
            model: BTreeMap::new(),
            meta: BTreeMap::new(),
            gfids,
        }
    }

    fn top(&self) -> Child {
        match &self.set {
            SetLayer::Replicate(r) => r.clone(),
            SetLayer::Disperse(d) => d.clone(),
        }
    }

    fn children(&self) -> &[Child] {
        match &self.set {
            SetLayer::Replicate(r) => r.children(),
            SetLayer::Disperse(d) => d.children(),
        }
    }

    async fn op(&self, op: Fop) -> FopOut {
        let what = format!("{op:?}");
        let top = self.top();
        let out = top.fop(op).await;
        out.unwrap_or_else(|e| panic!("{what}: {e}"))
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

    fn at(&self, path: &str) -> (Gfid, String) {
        let (parent, name) = path.rsplit_once('/').expect("absolute path");
        (self.gfids[parent], name.to_string())
    }

    async fn mkdir(&mut self, path: &str) {
        let new = self.new_object(0o755);
        let (parent, name) = self.at(path);
        self.op(Fop::Mkdir(bp::Mkdir { parent, name, new })).await;
        self.gfids.insert(path.into(), new.gfid);
        self.model.insert(path.into(), Want::Dir);
    }

    async fn create(&mut self, path: &str, data: &[u8]) {
        let new = self.new_object(0o640);
        let (parent, name) = self.at(path);
        self.op(Fop::Create(bp::Create { parent, name, new })).await;
        self.gfids.insert(path.into(), new.gfid);
        self.model.insert(path.into(), Want::File(Vec::new()));
        self.write(path, 0, data).await;
    }

    /// Write `data` at `offset` of `path` (and of every name of it).
    async fn write(&mut self, path: &str, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let gfid = self.gfids[path];
        let w = bp::Write {
            gfid,
            offset: offset as u64,
        };
        self.op(Fop::Write(w, Bytes::copy_from_slice(data))).await;
        self.each_name(gfid, |d| {
            if d.len() < offset + data.len() {
                d.resize(offset + data.len(), 0);
            }
            d[offset..offset + data.len()].copy_from_slice(data);
        });
    }

    async fn truncate(&mut self, path: &str, size: usize) {
        let gfid = self.gfids[path];
        let q = bp::Truncate {
            gfid,
            size: size as u64,
        };
        self.op(Fop::Truncate(q)).await;
        self.each_name(gfid, |d| d.resize(size, 0));
    }

    fn each_name(&mut self, gfid: Gfid, f: impl Fn(&mut Vec<u8>)) {
        for (p, g) in &self.gfids {
            if let (true, Some(Want::File(d))) = (*g == gfid, self.model.get_mut(p)) {
                f(d);
            }
        }
    }

    fn file_len(&self, path: &str) -> usize {
        match &self.model[path] {
            Want::File(d) => d.len(),
            other => panic!("{path} is {other:?}"),
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
            for map in [&mut self.model] {
                if let Some(w) = map.remove(&p) {
                    map.insert(q.clone(), w);
                }
            }
            if let Some(m) = self.meta.remove(&p) {
                self.meta.insert(q, m);
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

    /// chmod, chown and set times of `path`, then set `user.new` and
    /// remove `user.old` (which [`Tree::setxattr`] set before).
    async fn change_metadata(&mut self, path: &str, n: i64) {
        let gfid = self.gfids[path];
        let mtime = Timespec {
            secs: 1_600_000_000 + n,
            nsecs: 0,
        };
        let q = bp::Setattr {
            gfid,
            mode: Some(0o600),
            uid: Some(1000 + n as u32),
            gid: Some(2000 + n as u32),
            atime: Some(mtime),
            mtime: Some(mtime),
        };
        self.op(Fop::Setattr(q)).await;
        self.setxattr(path, "user.new", format!("cycle {n}").as_bytes())
            .await;
        let q = bp::Removexattr {
            gfid,
            name: "user.old".into(),
        };
        self.op(Fop::Removexattr(q)).await;
        let m = self.meta.get_mut(path).expect("metadata set before");
        m.xattrs.remove("user.old");
        (m.mode, m.uid, m.gid, m.mtime) = (0o600, 1000 + n as u32, 2000 + n as u32, mtime);
    }

    async fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) {
        let q = bp::Setxattr {
            gfid: self.gfids[path],
            name: name.into(),
            value: value.to_vec(),
            flags: XattrFlags::Any,
        };
        self.op(Fop::Setxattr(q)).await;
        let a = self.stat(path).await;
        let m = self.meta.entry(path.into()).or_insert(Meta {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            mtime: a.mtime,
            xattrs: BTreeMap::new(),
        });
        m.xattrs.insert(name.into(), value.to_vec());
    }

    async fn stat(&self, path: &str) -> mortar_proto::Attr {
        let q = bp::Stat {
            gfid: self.gfids[path],
        };
        self.op(Fop::Stat(q)).await.attr().unwrap()
    }
}

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 + seed * 7 + i / 253) as u8)
        .collect()
}

/// Before the brick goes down: what the cycle will change.
async fn before(t: &mut Tree, n: usize) {
    let c = format!("/c{n}");
    t.mkdir(&c).await;
    t.create(&format!("{c}/data"), &bytes(n, 70_000)).await;
    t.create(&format!("{c}/trunc"), &bytes(n + 1, 9000)).await;
    t.create(&format!("{c}/meta"), b"metadata changes").await;
    t.setxattr(&format!("{c}/meta"), "user.old", b"removed later")
        .await;
    t.create(&format!("{c}/gone"), b"removed").await;
    t.create(&format!("{c}/mvfile"), b"renamed").await;
    t.mkdir(&format!("{c}/sub")).await;
    t.mkdir(&format!("{c}/sub/inner")).await;
    t.create(&format!("{c}/sub/inner/f"), b"in a removed subtree")
        .await;
    t.mkdir(&format!("{c}/mvdir")).await;
    t.create(&format!("{c}/mvdir/x"), &bytes(n + 2, 3000)).await;
}

/// With the brick down: every kind of change, through the set.
async fn while_down(t: &mut Tree, n: usize) {
    let c = format!("/c{n}");
    let data = format!("{c}/data");
    t.write(&data, 1000, &bytes(n + 3, 5000)).await;
    let end = t.file_len(&data);
    t.write(&data, end, &bytes(n + 4, 4000)).await;
    t.truncate(&format!("{c}/trunc"), 1234).await;
    t.create(&format!("{c}/new"), &bytes(n + 5, 150_000)).await;
    t.change_metadata(&format!("{c}/meta"), n as i64).await;
    t.mkdir(&format!("{c}/nd")).await;
    t.mkdir(&format!("{c}/nd/nd2")).await;
    t.mkdir(&format!("{c}/nd/nd2/nd3")).await;
    t.create(&format!("{c}/nd/nd2/nd3/leaf"), &bytes(n + 6, 2500))
        .await;
    t.rename(&format!("{c}/mvfile"), &format!("{c}/nd/mvfile2"))
        .await;
    t.rename(&format!("{c}/mvdir"), &format!("{c}/nd/mvdir2"))
        .await;
    t.unlink(&format!("{c}/gone")).await;
    t.unlink(&format!("{c}/sub/inner/f")).await;
    t.rmdir(&format!("{c}/sub/inner")).await;
    t.rmdir(&format!("{c}/sub")).await;
    t.link(&data, &format!("{c}/nd/data.hard")).await;
    t.symlink(&format!("{c}/sl"), "data").await;
    t.symlink(&format!("{c}/nd/dangling"), "../nowhere").await;
}

fn graph_of(t: &Tree) -> Arc<VolumeGraph> {
    Arc::new(VolumeGraph {
        top: t.top(),
        clients: t.b.clients.clone(),
        distribute: None,
        heal_sets: vec![(t.set.clone(), (0..t.b.clients.len()).collect())],
    })
}

fn default_limits() -> CrawlLimits {
    CrawlLimits {
        files_max: 10_000,
        threads: options::get_u64(&Default::default(), options::SHD_MAX_THREADS) as usize,
        favorite_child: Default::default(),
        deferred_for: std::time::Duration::ZERO,
    }
}

/// Crawl until every index is empty; the crawls it took.
async fn heal(t: &Tree) -> usize {
    for crawls in 0..=CRAWLS_MAX {
        let mut pending = 0;
        for c in &t.b.clients {
            pending += c.pending_heal(10_000).await.unwrap().len();
        }
        if pending == 0 {
            return crawls;
        }
        assert!(
            crawls < CRAWLS_MAX,
            "{pending} still pending after {crawls} crawls"
        );
        let sum = heal_graph(&t.b.rt, &graph_of(t), &|_| true, default_limits()).await;
        assert_eq!(sum.split_brain, 0, "{sum:?}");
    }
    unreachable!()
}

/// Every path of the model reads back through the set as it should.
async fn check_reads(t: &Tree, when: &str) {
    for (p, w) in &t.model {
        let (parent, name) = t.at(p);
        let a = t.top().fop(Fop::Lookup(bp::Lookup { parent, name })).await;
        let a = a
            .unwrap_or_else(|e| panic!("{when}: lookup {p}: {e}"))
            .attr();
        let a = a.unwrap();
        assert_eq!(a.gfid, t.gfids[p], "{when}: {p}");
        match w {
            Want::Dir => assert_eq!(a.kind, FileKind::Directory, "{when}: {p}"),
            Want::Link(target) => {
                let got = t.op(Fop::Readlink(bp::Readlink { gfid: a.gfid })).await;
                assert_eq!(got, FopOut::Target(target.clone()), "{when}: {p}");
            }
            Want::File(data) => {
                assert_eq!(a.size, data.len() as u64, "{when}: {p}");
                let q = bp::Read {
                    gfid: a.gfid,
                    offset: 0,
                    len: a.size + 4096,
                };
                let got = t.op(Fop::Read(q)).await.data().unwrap();
                assert!(got[..] == data[..], "{when}: {p}: bytes differ");
            }
        }
    }
    for (p, m) in &t.meta {
        let a = t.stat(p).await;
        let got = (a.mode, a.uid, a.gid, a.mtime);
        assert_eq!(got, (m.mode, m.uid, m.gid, m.mtime), "{when}: {p}");
        let names = t.op(Fop::Listxattr(bp::Listxattr { gfid: a.gfid })).await;
        let FopOut::Names(names) = names else {
            panic!("{when}: listxattr {p}: {names:?}")
        };
        let user: Vec<&String> = names.iter().filter(|n| n.starts_with("user.")).collect();
        assert_eq!(user, m.xattrs.keys().collect::<Vec<_>>(), "{when}: {p}");
    }
}

/// Times are not the comparator's (each brick stamps its own on a
/// write): the ones the cycle set must be on every brick.
async fn check_times(t: &Tree) {
    for (p, m) in &t.meta {
        for (i, c) in t.b.clients.iter().enumerate() {
            let q = bp::Stat { gfid: t.gfids[p] };
            let a = c.fop(Fop::Stat(q)).await.unwrap().attr().unwrap();
            assert_eq!(a.mtime, m.mtime, "brick {i}: {p}");
        }
    }
}

/// Every brick of the set in turn: kill, change, revive, heal, compare.
async fn cycles(vol: &str, kind: &str) {
    let mut t = Tree::start(vol, kind).await;
    let n = t.b.clients.len();
    for down in 0..n {
        let started = Instant::now();
        before(&mut t, down).await;
        t.b.kill(down).await;
        while_down(&mut t, down).await;
        t.b.revive(down).await;
        // The comparator sees what the brick missed before heal.
        let stale = compare(t.children(), t.kind, &[]).await.unwrap();
        assert!(
            stale.iter().any(|d| d.brick == down),
            "{vol}: brick {down} missed nothing? {stale:#?}"
        );
        let crawls = heal(&t).await;
        let diffs = compare(t.children(), t.kind, &t.b.clients).await.unwrap();
        assert!(
            diffs.is_empty(),
            "{vol}: brick {down} healed in {crawls} crawls, but: {diffs:#?}"
        );
        check_times(&t).await;
        check_reads(&t, &format!("brick {down} healed")).await;
        if t.kind == SetKind::Disperse {
            let others = [(down + 1) % n, (down + 2) % n];
            for &o in &others {
                t.b.kill(o).await;
            }
            check_reads(&t, &format!("brick {down} healed, {others:?} down")).await;
            for &o in &others {
                t.b.revive(o).await;
            }
        }
        eprintln!(
            "{vol}: brick {down}: healed in {crawls} crawl(s), {} paths, {:?}",
            t.model.len(),
            started.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(&t.b.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_3_every_brick_in_turn() {
    cycles("classic-r3", "replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_3_arbiter_1_every_brick_in_turn() {
    cycles("classic-a1", "arbiter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disperse_4_2_every_brick_in_turn() {
    cycles("classic-ec", "ec").await;
}
