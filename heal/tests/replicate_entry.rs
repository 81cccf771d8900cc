//! Replica 3 over three real bricks on loopback: names made, linked,
//! renamed and removed while a brick was down come back to it through
//! entry heal, driven the way the self-heal daemon drives it (heal every
//! gfid the pending-heal indices list until they are empty), and then
//! every brick holds the same tree: names, gfids, kinds, modes, sizes,
//! data, symlink targets, changelog counters zero, index empty.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::Bricks;
use mortar_client::afr::Quorum;
use mortar_client::fop::{Fop, FopOut, Subvolume};
use mortar_client::graph::SetLayer;
use mortar_client::replicate::Replicate;
use std::sync::Arc;

use mortar_client::graph::VolumeGraph;
use mortar_heal::crawl::{heal_graph, CrawlLimits};
use mortar_heal::full::sweep_graph;
use mortar_heal::steps::heal_domain;
use mortar_heal::{heal_file, HealOutcome};
use mortar_proto::brick::LockKind;
use mortar_proto::brick::{self as bp, xattr as xa, NewObject};
use mortar_proto::options;
use mortar_proto::{Errno, FileKind, Gfid};

/// Heal rounds the test allows before it calls the heal stuck: each round
/// heals every gfid listed, and a subtree needs one round per level.
const HEAL_ROUNDS_MAX: usize = 10;

struct Tree {
    b: Bricks,
    set: SetLayer,
    next: u128,
}

impl Tree {
    async fn start(vol: &str, arbiter: bool) -> Tree {
        let b = Bricks::start(vol, 3).await;
        let set = Replicate::new(
            &b.rt,
            &format!("{vol}-replicate-0"),
            b.children(),
            Quorum::Auto,
            arbiter,
        );
        Tree {
            b,
            set: SetLayer::Replicate(std::sync::Arc::new(set)),
            next: 0xe000,
        }
    }

    fn r(&self) -> &Replicate {
        match &self.set {
            SetLayer::Replicate(r) => r,
            SetLayer::Disperse(_) => unreachable!(),
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
        self.r()
            .fop(op)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn mkdir(&mut self, parent: Gfid, name: &str) -> Gfid {
        let new = self.new_object(0o755);
        let name = name.into();
        self.op(Fop::Mkdir(bp::Mkdir { parent, name, new })).await;
        new.gfid
    }

    async fn create(&mut self, parent: Gfid, name: &str, data: &[u8]) -> Gfid {
        let new = self.new_object(0o640);
        let name = name.into();
        self.op(Fop::Create(bp::Create { parent, name, new })).await;
        if !data.is_empty() {
            let w = bp::Write {
                gfid: new.gfid,
                offset: 0,
            };
            self.op(Fop::Write(w, Bytes::copy_from_slice(data))).await;
        }
        new.gfid
    }
}

/// Another healer's claim on `gfid` (the self-heal domain, owner 0xfeed),
/// or its release, as held by hand in the tests of one healer per file.
fn claim_by_hand(t: &Tree, gfid: Gfid, kind: LockKind) -> Fop {
    Fop::Inodelk(bp::Inodelk {
        gfid,
        domain: heal_domain(t.r().set_name()),
        kind,
        start: 0,
        len: 0,
        owner: 0xfeed,
        wait_ms: None,
    })
}

/// What one brick holds under a directory, by path.
#[derive(Debug, PartialEq, Eq)]
struct Object {
    gfid: Gfid,
    kind: FileKind,
    mode: u32,
    size: u64,
    data: Bytes,
    target: Option<String>,
}

/// Walk brick `i`'s tree from the root, recording every object (and,
/// with `counters_zero`, checking its changelog counters are zero).
async fn walk(b: &Bricks, i: usize, counters_zero: bool) -> BTreeMap<String, Object> {
    let c = &b.clients[i];
    let mut out = BTreeMap::new();
    let mut dirs = vec![(String::new(), Gfid::ROOT)];
    while let Some((path, dir)) = dirs.pop() {
        if counters_zero {
            assert_counters_zero(b, i, dir, &path).await;
        }
        let q = bp::Readdir {
            dir,
            after: None,
            max_entries: 1000,
        };
        let FopOut::Dir(page) = c.fop(Fop::Readdir(q)).await.unwrap() else {
            panic!("readdir shape")
        };
        assert!(page.eof, "test directories fit in one page");
        for e in page.entries {
            let p = format!("{path}/{}", e.name);
            let a = e.attr;
            let (data, target) = match a.kind {
                FileKind::Regular => (b.read_on(i, a.gfid).await, None),
                FileKind::Symlink => {
                    match c.fop(Fop::Readlink(bp::Readlink { gfid: a.gfid })).await {
                        Ok(FopOut::Target(t)) => (Bytes::new(), Some(t)),
                        other => panic!("readlink {p}: {other:?}"),
                    }
                }
                _ => (Bytes::new(), None),
            };
            if a.kind == FileKind::Directory {
                dirs.push((p.clone(), a.gfid));
            } else if counters_zero {
                assert_counters_zero(b, i, a.gfid, &p).await;
            }
            let size = if a.kind == FileKind::Directory {
                0
            } else {
                a.size
            };
            out.insert(
                p,
                Object {
                    gfid: a.gfid,
                    kind: a.kind,
                    mode: a.mode,
                    size,
                    data,
                    target,
                },
            );
        }
    }
    out
}

async fn assert_counters_zero(b: &Bricks, i: usize, g: Gfid, path: &str) {
    let mut names: Vec<String> = (0..3)
        .map(|j| format!("{}{}-client-{j}", xa::CHANGELOG_PREFIX, b.vol))
        .collect();
    names.push(xa::DIRTY.to_string());
    for name in names {
        let q = bp::Getxattr {
            gfid: g,
            name: name.clone(),
        };
        match b.clients[i].fop(Fop::Getxattr(q)).await {
            Ok(FopOut::Value(v)) => assert!(
                v.iter().all(|x| *x == 0),
                "brick {i}: {path:?} ({g}) has {name} = {v:?}"
            ),
            Err(e) if e.errno == Errno::ENODATA => {}
            other => panic!("brick {i}: {path:?} {name}: {other:?}"),
        }
    }
}

/// Heal as the daemon's crawl does, until every index is empty; the
/// outcomes of every round.
async fn heal_until_clean(t: &Tree) -> Vec<Vec<HealOutcome>> {
    let mut rounds = Vec::new();
    for _ in 0..HEAL_ROUNDS_MAX {
        let mut pending = std::collections::BTreeSet::new();
        for c in &t.b.clients {
            pending.extend(c.pending_heal(10_000).await.unwrap());
        }
        if pending.is_empty() {
            return rounds;
        }
        let mut outcomes = Vec::new();
        for g in pending {
            outcomes.push(heal_file(&t.set, g).await);
        }
        rounds.push(outcomes);
    }
    panic!("indices not empty after {HEAL_ROUNDS_MAX} rounds: {rounds:#?}");
}

/// The graph the daemon's crawl works on, over the tree's one set.
fn graph_of(t: &Tree) -> Arc<VolumeGraph> {
    Arc::new(VolumeGraph {
        top: t.b.children()[0].clone(),
        clients: t.b.clients.clone(),
        distribute: None,
        heal_sets: vec![(t.set.clone(), (0..t.b.clients.len()).collect())],
    })
}

/// The crawl's limits with the option's default thread count.
fn default_limits() -> CrawlLimits {
    CrawlLimits {
        files_max: 10_000,
        threads: options::get_u64(&Default::default(), options::SHD_MAX_THREADS) as usize,
        favorite_child: Default::default(),
        deferred_for: std::time::Duration::ZERO,
    }
}

/// How a cycle heals: file by file in rounds, or by the daemon's crawl.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Healer {
    Rounds,
    /// One crawl (its passes included) over every brick's index must
    /// leave them empty.
    OneCrawl,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_made_while_a_brick_was_down_are_healed_back() {
    heal_cycle("entry-r3", false, 2, Healer::Rounds).await;
}

/// The same with an arbiter: a data brick misses the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_made_while_a_data_brick_was_down_are_healed_back_with_an_arbiter() {
    heal_cycle("entry-a1", true, 0, Healer::Rounds).await;
}

/// The daemon's crawl, with the default `cluster.shd-max-threads`, heals
/// the whole tree (a directory level per pass) in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_parallel_crawl_heals_the_whole_tree() {
    heal_cycle("entry-crawl", false, 1, Healer::OneCrawl).await;
}

/// Make, link, rename, move and remove names with brick `down` down, bring
/// it back, heal until the indices are empty, and compare every brick.
async fn heal_cycle(vol: &str, arbiter: bool, down: usize, healer: Healer) {
    let mut t = Tree::start(vol, arbiter).await;
    // Before the failure: a directory with a file to move away, one to
    // remove, and a directory to remove with what it holds.
    let pre = t.mkdir(Gfid::ROOT, "pre").await;
    t.create(pre, "old", b"moved elsewhere while brick 2 was down")
        .await;
    t.create(pre, "gone", b"removed while brick 2 was down")
        .await;
    let doomed = t.mkdir(pre, "doomed").await;
    t.create(doomed, "inner", b"x").await;
    let tree = t.mkdir(pre, "tree").await;
    t.create(tree, "t1", b"moved with its directory").await;
    let tsub = t.mkdir(tree, "tsub").await;
    t.create(tsub, "t2", b"two levels down in a moved directory")
        .await;

    t.b.kill(down).await;
    let d = t.mkdir(Gfid::ROOT, "d").await;
    let mut files = Vec::new();
    for n in 0..20 {
        let data = if n % 2 == 0 {
            format!("file {n} ").repeat(n + 1)
        } else {
            String::new()
        };
        files.push(t.create(d, &format!("f{n:02}"), data.as_bytes()).await);
    }
    let sub = t.mkdir(d, "sub").await;
    let deep = t.mkdir(sub, "deep").await;
    t.create(deep, "leaf", b"three levels down").await;
    let new = t.new_object(0o777);
    t.op(Fop::Symlink(bp::Symlink {
        parent: d,
        name: "link".into(),
        target: "f00".into(),
        new,
    }))
    .await;
    t.op(Fop::Link(bp::Link {
        gfid: files[2],
        new_parent: d,
        new_name: "f02.hard".into(),
    }))
    .await;
    let rename = |old_parent, old_name: &str, new_parent, new_name: &str| {
        Fop::Rename(bp::Rename {
            old_parent,
            old_name: old_name.into(),
            new_parent,
            new_name: new_name.into(),
        })
    };
    t.op(rename(d, "f03", d, "f03.renamed")).await;
    t.op(rename(pre, "old", d, "moved")).await;
    // A whole subtree moves to another directory: no file in it is
    // blamed, so only entry heal's own marks bring it back.
    t.op(rename(pre, "tree", d, "tree")).await;
    t.op(Fop::Unlink(bp::Unlink {
        parent: pre,
        name: "gone".into(),
    }))
    .await;
    t.op(Fop::Unlink(bp::Unlink {
        parent: doomed,
        name: "inner".into(),
    }))
    .await;
    t.op(Fop::Rmdir(bp::Rmdir {
        parent: pre,
        name: "doomed".into(),
    }))
    .await;
    t.op(Fop::Unlink(bp::Unlink {
        parent: d,
        name: "f05".into(),
    }))
    .await;
    t.b.revive(down).await;

    let reference = if down == 0 { 1 } else { 0 };
    let good = walk(&t.b, reference, false).await;
    assert_ne!(
        walk(&t.b, down, false).await.keys().count(),
        good.len(),
        "brick {down} missed names"
    );
    let rounds = match healer {
        Healer::Rounds => heal_until_clean(&t).await,
        Healer::OneCrawl => {
            let sum = heal_graph(&t.b.rt, &graph_of(&t), &|_| true, default_limits()).await;
            eprintln!("one crawl: {sum:?}");
            assert_eq!(
                (sum.skipped, sum.split_brain, sum.busy),
                (0, 0, 0),
                "{sum:?}"
            );
            assert!(sum.healed > 0, "{sum:?}");
            Vec::new()
        }
    };
    for (n, round) in rounds.iter().enumerate() {
        eprintln!("heal round {n}: {round:?}");
    }
    for (n, round) in rounds.iter().enumerate() {
        for o in round {
            assert!(!matches!(o, HealOutcome::SplitBrain(_)), "round {n}: {o:?}");
        }
    }
    for p in [
        "/d/sub/deep/leaf",
        "/d/moved",
        "/d/tree/tsub/t2",
        "/d/f02.hard",
        "/d/link",
    ] {
        assert!(good.contains_key(p), "{p}");
    }
    assert!(!good.contains_key("/pre/gone") && !good.contains_key("/d/f05"));
    for i in 0..3 {
        let got = walk(&t.b, i, true).await;
        let differ: std::collections::BTreeSet<&String> = good
            .keys()
            .chain(got.keys())
            .filter(|p| good.get(*p) != got.get(*p))
            .collect();
        assert!(
            differ.is_empty(),
            "brick {i} after heal ({} rounds) differs from a good copy at {differ:?}",
            rounds.len()
        );
        let left = t.b.clients[i].pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    // The comparator agrees (it also checks owner, link counts, user
    // xattrs and data on data bricks only).
    let kind = mortar_heal::compare::SetKind::Replicate {
        arbiter: t.r().arbiter(),
    };
    let diffs = mortar_heal::compare::compare(t.r().children(), kind, &t.b.clients).await;
    assert_eq!(diffs.unwrap(), vec![], "the comparator finds differences");
    // A heal of the healed directory finds nothing to do.
    assert_eq!(heal_file(&t.set, d).await, HealOutcome::Clean);
    let _ = std::fs::remove_dir_all(&t.b.dir);
}

/// One healer per file: a file claimed by another healer (held here by
/// hand on brick 0, in the self-heal domain) is left to it, Busy, with
/// nothing changed; once the claim is given back, it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_another_healer_holds_is_skipped_not_waited_for() {
    let mut t = Tree::start("entry-claim", false).await;
    let f = t.create(Gfid::ROOT, "f", b"").await;
    t.b.kill(2).await;
    let w = bp::Write { gfid: f, offset: 0 };
    t.op(Fop::Write(
        w,
        Bytes::from_static(b"written while brick 2 was down"),
    ))
    .await;
    t.b.revive(2).await;
    let claim = |kind| claim_by_hand(&t, f, kind);
    t.b.clients[0].fop(claim(LockKind::Write)).await.unwrap();
    let started = std::time::Instant::now();
    let busy = heal_file(&t.set, f).await;
    assert!(matches!(busy, HealOutcome::Busy(_)), "{busy:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "did not wait"
    );
    assert!(
        t.b.read_on(2, f).await.is_empty(),
        "nothing copied while another healer holds the file"
    );
    // The loser held no brick: a third healer is refused the same way.
    assert!(matches!(heal_file(&t.set, f).await, HealOutcome::Busy(_)));
    t.b.clients[0].fop(claim(LockKind::Unlock)).await.unwrap();
    assert!(matches!(heal_file(&t.set, f).await, HealOutcome::Healed(_)));
    assert_eq!(
        &t.b.read_on(2, f).await[..],
        b"written while brick 2 was down"
    );
    let _ = std::fs::remove_dir_all(&t.b.dir);
}

/// A crawl that finds a directory held by another healer leaves the
/// directory's pending files untried (that healer is making them and
/// heals their data with them) rather than spend a look per file and
/// brick on names not made yet; after `FILES_DEFERRED_MAX_MS` of
/// deferring a crawl tries them anyway, and once the directory is free
/// one crawl heals it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_wait_while_another_healer_holds_their_directory() {
    const FILES: u64 = 20;
    let mut t = Tree::start("entry-defer", false).await;
    let d = t.mkdir(Gfid::ROOT, "d").await;
    t.b.kill(2).await;
    for n in 0..FILES {
        t.create(d, &format!("f{n}"), b"made while brick 2 was down")
            .await;
    }
    t.b.revive(2).await;
    let claim = |kind| claim_by_hand(&t, d, kind);
    t.b.clients[0].fop(claim(LockKind::Write)).await.unwrap();
    let g = graph_of(&t);
    let sum = heal_graph(&t.b.rt, &g, &|_| true, default_limits()).await;
    assert_eq!(
        (sum.busy, sum.deferred, sum.healed, sum.skipped),
        (1, FILES, 0, 0),
        "{sum:?}"
    );
    assert!(sum.unfinished(), "deferred files are work left");
    let long = CrawlLimits {
        deferred_for: std::time::Duration::from_millis(mortar_heal::crawl::FILES_DEFERRED_MAX_MS),
        ..default_limits()
    };
    let sum = heal_graph(&t.b.rt, &g, &|_| true, long).await;
    assert_eq!(
        (sum.busy, sum.deferred, sum.skipped),
        (1, 0, FILES),
        "deferred long enough: the files are tried (and are not made yet): {sum:?}"
    );
    t.b.clients[0].fop(claim(LockKind::Unlock)).await.unwrap();
    let sum = heal_graph(&t.b.rt, &g, &|_| true, default_limits()).await;
    assert_eq!(
        (sum.busy, sum.deferred, sum.skipped, sum.split_brain),
        (0, 0, 0, 0),
        "{sum:?}"
    );
    for i in 0..3 {
        let left = t.b.clients[i].pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    let kind = mortar_heal::compare::SetKind::Replicate {
        arbiter: t.r().arbiter(),
    };
    let diffs = mortar_heal::compare::compare(t.r().children(), kind, &t.b.clients).await;
    assert_eq!(diffs.unwrap(), vec![], "the comparator finds differences");
    let _ = std::fs::remove_dir_all(&t.b.dir);
}

/// Two daemons crawling the same indices at once (each good brick lists
/// every file): every file is healed exactly once between them, none is
/// left, none is split-brain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_crawling_at_once_heal_each_file_once() {
    const FILES: usize = 200;
    let mut t = Tree::start("entry-two", false).await;
    let d = t.mkdir(Gfid::ROOT, "d").await;
    let mut files = Vec::new();
    for n in 0..FILES {
        files.push(t.create(d, &format!("f{n}"), b"before").await);
    }
    t.b.kill(2).await;
    for &f in &files {
        let w = bp::Write { gfid: f, offset: 0 };
        t.op(Fop::Write(w, Bytes::from_static(b"after!"))).await;
    }
    t.b.revive(2).await;
    let g = graph_of(&t);
    let on = |i: usize| {
        move |a: &mortar_client::protocol::BrickAddress| a.brick_path == format!("/b{i}")
    };
    let (a, b) = (on(0), on(1));
    let (sa, sb) = tokio::join!(
        heal_graph(&t.b.rt, &g, &a, default_limits()),
        heal_graph(&t.b.rt, &g, &b, default_limits()),
    );
    eprintln!("daemon a: {sa:?}\ndaemon b: {sb:?}");
    assert_eq!(sa.healed + sb.healed, FILES as u64, "each file healed once");
    assert_eq!(
        (sa.split_brain, sb.split_brain, sa.skipped, sb.skipped),
        (0, 0, 0, 0)
    );
    // What one daemon left as busy the other healed: nothing is pending.
    for i in 0..3 {
        let left = t.b.clients[i].pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    for &f in &files {
        assert_eq!(&t.b.read_on(2, f).await[..], b"after!");
    }
    let _ = std::fs::remove_dir_all(&t.b.dir);
}

/// `volume heal NAME full`: what no index lists is healed too. Brick 2 is
/// replaced by an empty disk (killed, its directory wiped, started
/// again), and behind the volume's back brick 1 loses a name, one file
/// is cut short on brick 0 and another chmodded on brick 1: no counter
/// records any of it. One sweep with default options makes every brick
/// the same tree again, and removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sweep_heals_what_the_indices_missed() {
    let mut t = Tree::start("entry-full", false).await;
    let d = t.mkdir(Gfid::ROOT, "d").await;
    let sub = t.mkdir(d, "sub").await;
    let mut files = Vec::new();
    for n in 0..30 {
        let data = format!("file {n} ").repeat(n + 1);
        files.push(t.create(d, &format!("f{n:02}"), data.as_bytes()).await);
    }
    t.create(sub, "deep", b"in a subdirectory").await;
    let new = t.new_object(0o777);
    t.op(Fop::Symlink(bp::Symlink {
        parent: d,
        name: "link".into(),
        target: "f00".into(),
        new,
    }))
    .await;
    t.op(Fop::Link(bp::Link {
        gfid: files[1],
        new_parent: sub,
        new_name: "f01.hard".into(),
    }))
    .await;
    let good = walk(&t.b, 0, true).await;

    t.b.kill(2).await;
    std::fs::remove_dir_all(t.b.dir.join("b2")).unwrap();
    t.b.revive(2).await;
    let alone = |i: usize, op: Fop| {
        let c = t.b.clients[i].clone();
        async move { c.fop(op).await.unwrap() }
    };
    alone(
        1,
        Fop::Unlink(bp::Unlink {
            parent: d,
            name: "f05".into(),
        }),
    )
    .await;
    alone(
        0,
        Fop::Truncate(bp::Truncate {
            gfid: files[7],
            size: 3,
        }),
    )
    .await;
    let chmod = bp::Setattr {
        gfid: files[8],
        mode: Some(0o600),
        uid: None,
        gid: None,
        atime: None,
        mtime: None,
    };
    alone(1, Fop::Setattr(chmod)).await;
    for i in 0..3 {
        assert!(
            t.b.clients[i].pending_heal(10).await.unwrap().is_empty(),
            "no index knows"
        );
    }
    assert!(walk(&t.b, 2, false).await.is_empty(), "brick 2 is empty");
    // The index crawl finds nothing to do.
    let idx = heal_graph(&t.b.rt, &graph_of(&t), &|_| true, default_limits()).await;
    assert_eq!(idx.healed, 0, "{idx:?}");

    let sum = sweep_graph(&t.b.rt, &graph_of(&t), &|_| true, default_limits()).await;
    eprintln!("full sweep: {sum:?}");
    assert_eq!((sum.skipped, sum.split_brain), (0, 0), "{sum:?}");
    let reference = walk(&t.b, 0, true).await;
    for i in 1..3 {
        let got = walk(&t.b, i, true).await;
        let differ: Vec<&String> = reference
            .keys()
            .chain(got.keys())
            .filter(|p| reference.get(*p) != got.get(*p))
            .collect();
        assert!(differ.is_empty(), "brick {i} differs at {differ:?}");
    }
    // Nothing was removed: the name brick 1 lost is back, and every name
    // the tree had is there.
    for p in good.keys() {
        assert!(reference.contains_key(p), "{p} lost");
    }
    // The file cut short on brick 0 got one copy's data everywhere (the
    // larger, by the documented rule), the chmod one copy's mode.
    assert_eq!(reference["/d/f07"].size, good["/d/f07"].size);
    assert_eq!(reference["/d/f07"].data, good["/d/f07"].data);
    let again = sweep_graph(&t.b.rt, &graph_of(&t), &|_| true, default_limits()).await;
    assert_eq!(again.healed, 0, "a second sweep finds nothing: {again:?}");
    let _ = std::fs::remove_dir_all(&t.b.dir);
}
