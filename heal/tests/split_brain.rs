//! Split-brain resolution over real bricks on loopback. A volume
//! (distribute over replica sets, `cluster.quorum-type none`) is mounted
//! from a volfile; a split-brain is made the way it happens: brick 0 is
//! killed and the file written on the others, brick 0 comes back and the
//! others are killed, and the file is written on brick 0 alone. Each copy
//! then blames the others, and reads get EIO. Each resolution (the CLI's
//! bigger-file, latest-mtime, source-brick with and without a file, and
//! every `cluster.favorite-child-policy` through the daemon's crawl) must
//! leave every copy byte-identical to the chosen one, every counter zero,
//! every index empty, and reads through the volume working; refusals
//! change nothing.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Bricks, T};
use mortar_client::api::Client;
use mortar_client::fop::{Fop, FopOut, Subvolume};
use mortar_heal::crawl::{heal_graph, CrawlLimits};
use mortar_heal::resolve::{self, Choice, Located, ResolveError};
use mortar_heal::split_brain::FavoriteChild;
use mortar_proto::brick::{self as bp, xattr as xa};
use mortar_proto::volfile::Graph;
use mortar_proto::volume::Transport;
use mortar_proto::xlator::{ClientLayer, DistributeLayer, ReplicateLayer, Xlator};
use mortar_proto::{Errno, Gfid};

/// A mounted volume of `sets` x `replica` bricks.
struct Vol {
    b: Bricks,
    client: Client,
    replica: usize,
}

/// The client volfile: distribute over `sets` replica sets of `replica`
/// bricks each, brick `i` at `/b{i}` (client `i` of the graph).
fn volfile(vol: &str, sets: usize, replica: usize) -> String {
    let mut nodes = Vec::new();
    let mut set_names = Vec::new();
    for s in 0..sets {
        let mut names = Vec::new();
        for i in s * replica..(s + 1) * replica {
            let name = format!("{vol}-client-{i}");
            let layer = Xlator::Client(ClientLayer {
                remote_host: "127.0.0.1".into(),
                remote_subvolume: format!("/b{i}"),
                transport: Transport::Tcp,
                ping_timeout_secs: 5,
                volume_id: vol.into(),
            });
            nodes.push(layer.to_node(&name, vec![]));
            names.push(name);
        }
        let set = Xlator::Replicate(ReplicateLayer {
            arbiter: false,
            quorum_type: "none".into(),
            quorum_count: 1,
        });
        let set_name = format!("{vol}-replicate-{s}");
        nodes.push(set.to_node(&set_name, names));
        set_names.push(set_name);
    }
    let top = Xlator::Distribute(DistributeLayer::default());
    nodes.push(top.to_node(vol, set_names));
    Graph {
        description: format!("volume {vol} (client graph)"),
        nodes,
    }
    .render()
}

fn brick(i: usize) -> String {
    format!("127.0.0.1:/b{i}")
}

impl Vol {
    async fn start(vol: &str, sets: usize, replica: usize) -> Vol {
        let b = Bricks::start(vol, sets * replica).await;
        let text = volfile(vol, sets, replica);
        let client = Client::from_volfile(&b.rt, vol, &text, b.map_port()).unwrap();
        assert_eq!(client.wait_all_bricks(T).await, sets * replica);
        Vol { b, client, replica }
    }

    /// Kill `bricks`; wait until the volume's own connections saw it.
    async fn kill(&mut self, bricks: &[usize]) {
        let g = self.client.graph();
        for &i in bricks {
            self.b.kill(i).await;
            let st = g.clients[i].state();
            tokio::time::timeout(T, st.wait_for(|s| !s.up))
                .await
                .expect("the volume saw the brick go");
        }
    }

    async fn revive(&mut self, bricks: &[usize]) {
        for &i in bricks {
            self.b.revive(i).await;
        }
        let all = self.client.graph().clients.len();
        assert_eq!(self.client.wait_all_bricks(T).await, all);
    }

    async fn write(&self, path: &str, data: &[u8]) {
        self.client
            .write_path(path, data)
            .await
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }

    async fn chmod(&self, gfid: Gfid, mode: u32) {
        let q = bp::Setattr {
            gfid,
            mode: Some(mode),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        };
        self.client.setattr(q).await.unwrap();
    }

    async fn locate(&self, path: &str) -> Located {
        resolve::locate_path(&self.client, path).await.unwrap()
    }

    /// The bricks (volume-wide indices) of the set holding `path`.
    async fn members(&self, path: &str) -> Vec<usize> {
        let at = self.locate(path).await;
        assert_eq!(at.sets.len(), 1, "{path} is in one set");
        self.client.graph().heal_sets[at.sets[0]].1.clone()
    }

    /// Create `path` (all bricks up), then split its copies: the first
    /// brick of its set ends with `lone` (written last, alone), the others
    /// with `pair` (written first, while the first was down). The file's
    /// gfid and set members.
    async fn split_data(&mut self, path: &str, pair: &[u8], lone: &[u8]) -> (Gfid, Vec<usize>) {
        self.write(path, b"before").await;
        let m = self.members(path).await;
        let gfid = self.locate(path).await.gfid;
        self.kill(&m[..1]).await;
        self.write(path, pair).await;
        self.revive(&m[..1]).await;
        // Later by the clock, so the lone copy's mtime is the latest.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.kill(&m[1..]).await;
        self.write(path, lone).await;
        self.revive(&m[1..]).await;
        (gfid, m)
    }

    /// The same with modes: the first brick gets `lone`, the others `pair`.
    async fn split_mode(&mut self, path: &str, pair: u32, lone: u32) -> (Gfid, Vec<usize>) {
        self.write(path, b"same data everywhere").await;
        let m = self.members(path).await;
        let gfid = self.locate(path).await.gfid;
        self.kill(&m[..1]).await;
        self.chmod(gfid, pair).await;
        self.revive(&m[..1]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.kill(&m[1..]).await;
        self.chmod(gfid, lone).await;
        self.revive(&m[1..]).await;
        (gfid, m)
    }

    async fn mode_on(&self, i: usize, gfid: Gfid) -> u32 {
        match self.b.clients[i]
            .fop(Fop::Stat(bp::Stat { gfid }))
            .await
            .unwrap()
        {
            FopOut::Attr(a) => a.mode,
            other => panic!("{other:?}"),
        }
    }

    /// Reads through the volume give EIO and say split-brain.
    async fn assert_split(&self, path: &str) {
        let e = self.client.read_path(path).await.unwrap_err();
        assert_eq!(e.errno, Errno::EIO, "{path}: {e}");
        assert!(e.detail.contains("split-brain"), "{path}: {e}");
    }

    /// Every copy of `path` (bricks `members`) holds `data`, its counters
    /// are zero, every index is empty and reads through the volume give
    /// `data`.
    async fn assert_healed_to(&self, path: &str, gfid: Gfid, members: &[usize], data: &[u8]) {
        for &i in members {
            assert_eq!(
                &self.b.read_on(i, gfid).await[..],
                data,
                "{path} on brick {i}"
            );
        }
        self.assert_clean(path, gfid, members).await;
        let read = self.client.read_path(path).await.unwrap();
        assert_eq!(&read[..], data, "{path} through the volume");
    }

    async fn assert_clean(&self, path: &str, gfid: Gfid, members: &[usize]) {
        for &i in members {
            assert_counters_zero(&self.b, self.replica, members, i, gfid, path).await;
        }
        for (i, c) in self.b.clients.iter().enumerate() {
            let left = c.pending_heal(100).await.unwrap();
            assert!(left.is_empty(), "brick {i} index still lists {left:?}");
        }
    }

    fn finish(self) {
        self.client.unmount();
        let _ = std::fs::remove_dir_all(&self.b.dir);
    }
}

async fn assert_counters_zero(
    b: &Bricks,
    replica: usize,
    members: &[usize],
    i: usize,
    g: Gfid,
    path: &str,
) {
    assert_eq!(members.len(), replica);
    let mut names: Vec<String> = members
        .iter()
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
                "brick {i}: {path} has {name} = {v:?}"
            ),
            Err(e) if e.errno == Errno::ENODATA => {}
            other => panic!("brick {i}: {path} {name}: {other:?}"),
        }
    }
}

async fn resolve_path(
    v: &Vol,
    path: &str,
    choice: Choice,
) -> Result<resolve::Resolved, ResolveError> {
    let at = v.locate(path).await;
    resolve::resolve_located(&v.client.graph(), &at, &choice).await
}

const OLD_LONG: &[u8] = b"written first, on the pair, and longer";
const NEW_SHORT: &[u8] = b"written last, alone";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigger_file_makes_the_largest_copy_the_source() {
    let mut v = Vol::start("sb-bigger", 1, 2).await;
    let (g, m) = v.split_data("/f", OLD_LONG, NEW_SHORT).await;
    v.assert_split("/f").await;
    let r = resolve_path(&v, "/f", Choice::BiggerFile).await.unwrap();
    assert_eq!(r.sources, vec![(mortar_client::afr::Kind::Data, 1)]);
    v.assert_healed_to("/f", g, &m, OLD_LONG).await;
    // Resolved once: a second try finds nothing to resolve.
    let again = resolve_path(&v, "/f", Choice::BiggerFile).await;
    assert_eq!(again, Err(ResolveError::NotInSplitBrain));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_mtime_makes_the_newest_copy_the_source() {
    let mut v = Vol::start("sb-mtime", 1, 2).await;
    let (g, m) = v.split_data("/f", OLD_LONG, NEW_SHORT).await;
    v.assert_split("/f").await;
    let r = resolve_path(&v, "/f", Choice::LatestMtime).await.unwrap();
    assert_eq!(r.sources, vec![(mortar_client::afr::Kind::Data, 0)]);
    v.assert_healed_to("/f", g, &m, NEW_SHORT).await;
    v.finish();
}

/// `source-brick` with a file, by path and by gfid, on replica 3 (the
/// pair's second brick named: neither the largest nor the newest), and
/// on a metadata split-brain, which bigger-file and latest-mtime refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_brick_with_a_file() {
    let mut v = Vol::start("sb-source", 1, 3).await;
    let (g, m) = v
        .split_data("/f", b"the pair", b"the lone copy, longer")
        .await;
    v.assert_split("/f").await;
    let r = resolve_path(&v, "/f", Choice::SourceBrick(brick(2)))
        .await
        .unwrap();
    assert_eq!(r.sources, vec![(mortar_client::afr::Kind::Data, 2)]);
    v.assert_healed_to("/f", g, &m, b"the pair").await;

    let (g, m) = v.split_mode("/m", 0o600, 0o640).await;
    let e = v.client.getxattr(g, "user.x").await.unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "metadata reads get EIO: {e}");
    for choice in [Choice::BiggerFile, Choice::LatestMtime] {
        match resolve_path(&v, "/m", choice.clone()).await {
            Err(ResolveError::Refused(why)) => {
                assert!(why.contains("metadata split-brain"), "{choice:?}: {why}")
            }
            other => panic!("{choice:?}: {other:?}"),
        }
    }
    let at = resolve::locate_gfid(&v.client.graph(), g).await.unwrap();
    let r = resolve::resolve_located(&v.client.graph(), &at, &Choice::SourceBrick(brick(0)))
        .await
        .unwrap();
    assert_eq!(r.sources, vec![(mortar_client::afr::Kind::Metadata, 0)]);
    for &i in &m {
        assert_eq!(v.mode_on(i, g).await, 0o640, "brick {i}");
    }
    v.assert_healed_to("/m", g, &m, b"same data everywhere")
        .await;
    v.finish();
}

/// `source-brick` without a file: every split-brain file its set's
/// indices list is healed from it (data and metadata); a file that is
/// only waiting for heal is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_brick_without_a_file_resolves_every_split_brain_file() {
    let mut v = Vol::start("sb-all", 1, 2).await;
    let (a, m) = v.split_data("/a", b"pair a", b"lone a").await;
    let (b, _) = v.split_data("/b", b"pair b, longer", b"lone b").await;
    let (c, _) = v.split_mode("/c", 0o600, 0o604).await;
    v.write("/pending", b"before").await;
    let pending = v.locate("/pending").await.gfid;
    v.kill(&[1]).await;
    v.write("/pending", b"brick 1 missed this").await;
    v.revive(&[1]).await;

    let g = v.client.graph();
    let results = resolve::resolve_all_from(&g, &brick(1), T).await.unwrap();
    let mut got: Vec<Gfid> = results.iter().map(|(g, _)| *g).collect();
    let mut want = vec![a, b, c];
    got.sort();
    want.sort();
    assert_eq!(got, want, "every split-brain file, and only those");
    for (g, r) in &results {
        assert!(r.is_ok(), "{g}: {r:?}");
    }
    for (path, gfid, data) in [("/a", a, &b"pair a"[..]), ("/b", b, b"pair b, longer")] {
        for &i in &m {
            assert_eq!(&v.b.read_on(i, gfid).await[..], data, "{path} on {i}");
        }
        assert_eq!(&v.client.read_path(path).await.unwrap()[..], data);
    }
    for &i in &m {
        assert_eq!(v.mode_on(i, c).await, 0o600, "brick {i}");
    }
    // The file only waiting for heal is still that: brick 1 is stale.
    assert!(v.b.clients[0]
        .pending_heal(10)
        .await
        .unwrap()
        .contains(&pending));
    assert_eq!(&v.b.read_on(1, pending).await[..], b"before");
    v.finish();
}

/// What is refused changes nothing: a file not in split-brain (clean, or
/// merely waiting for heal), bigger-file over equal sizes, a source
/// brick outside the file's set or outside the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing() {
    let mut v = Vol::start("sb-refuse", 2, 2).await;
    v.write("/clean", b"the same everywhere").await;
    for choice in [Choice::BiggerFile, Choice::LatestMtime] {
        assert_eq!(
            resolve_path(&v, "/clean", choice).await,
            Err(ResolveError::NotInSplitBrain)
        );
    }
    let m = v.members("/clean").await;
    let r = resolve_path(&v, "/clean", Choice::SourceBrick(brick(m[1]))).await;
    assert_eq!(r, Err(ResolveError::NotInSplitBrain));

    let (g, m) = v
        .split_data("/same-size", b"pair: 12345", b"lone: 54321")
        .await;
    let before: Vec<Bytes> = futures_read(&v, g, &m).await;
    match resolve_path(&v, "/same-size", Choice::BiggerFile).await {
        Err(ResolveError::Refused(why)) => assert!(
            why.contains("no bigger file")
                && why.contains(&brick(m[0]))
                && why.contains(&brick(m[1])),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let other_set: Vec<usize> = (0..4).filter(|i| !m.contains(i)).collect();
    match resolve_path(&v, "/same-size", Choice::SourceBrick(brick(other_set[0]))).await {
        Err(ResolveError::Refused(why)) => {
            assert!(
                why.contains("not in the replica set that holds the file"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    match resolve_path(
        &v,
        "/same-size",
        Choice::SourceBrick("127.0.0.1:/nowhere".into()),
    )
    .await
    {
        Err(ResolveError::Refused(why)) => assert!(why.contains("not a brick"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(futures_read(&v, g, &m).await, before, "nothing was copied");
    v.assert_split("/same-size").await;
    // The operator's choice still works after the refusals.
    resolve_path(&v, "/same-size", Choice::SourceBrick(brick(m[0])))
        .await
        .unwrap();
    v.assert_healed_to("/same-size", g, &m, b"lone: 54321")
        .await;
    v.finish();
}

async fn futures_read(v: &Vol, g: Gfid, members: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for &i in members {
        out.push(v.b.read_on(i, g).await);
    }
    out
}

/// One crawl of the self-heal daemon, with `policy`, over every brick.
async fn crawl(v: &Vol, policy: FavoriteChild) -> mortar_heal::crawl::HealSummary {
    let limits = CrawlLimits {
        files_max: 10_000,
        threads: 4,
        favorite_child: policy,
        deferred_for: std::time::Duration::ZERO,
    };
    heal_graph(&v.b.rt, &v.client.graph(), &|_| true, limits).await
}

/// `none` (the default) leaves the split-brain as it is; each policy
/// resolves its own way through the daemon's crawl: size and mtime on
/// data (replica 2), ctime on metadata, majority on replica 3 (two copies
/// against one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn favorite_child_policies_resolve_through_the_crawl() {
    let mut v = Vol::start("sb-favorite", 1, 2).await;
    let (g, m) = v.split_data("/size", OLD_LONG, NEW_SHORT).await;
    let sum = crawl(&v, FavoriteChild::None).await;
    assert_eq!((sum.split_brain, sum.healed), (1, 0), "{sum:?}");
    v.assert_split("/size").await;
    let sum = crawl(&v, FavoriteChild::Size).await;
    assert_eq!(
        (sum.split_brain, sum.healed, sum.skipped),
        (0, 1, 0),
        "{sum:?}"
    );
    v.assert_healed_to("/size", g, &m, OLD_LONG).await;

    let (g, m) = v.split_data("/mtime", OLD_LONG, NEW_SHORT).await;
    let sum = crawl(&v, FavoriteChild::Mtime).await;
    assert_eq!((sum.split_brain, sum.healed), (0, 1), "{sum:?}");
    v.assert_healed_to("/mtime", g, &m, NEW_SHORT).await;

    let (g, m) = v.split_mode("/ctime", 0o600, 0o604).await;
    // size says nothing about metadata: left, with the reason.
    let sum = crawl(&v, FavoriteChild::Size).await;
    assert_eq!(sum.split_brain, 1, "{sum:?}");
    assert!(sum.errors[0].contains("size cannot resolve it"), "{sum:?}");
    let sum = crawl(&v, FavoriteChild::Ctime).await;
    assert_eq!((sum.split_brain, sum.healed), (0, 1), "{sum:?}");
    for &i in &m {
        assert_eq!(
            v.mode_on(i, g).await,
            0o604,
            "the later chmod, on brick {i}"
        );
    }
    v.assert_healed_to("/ctime", g, &m, b"same data everywhere")
        .await;
    // Majority has none in replica 2.
    let (g, m) = v.split_data("/majority", b"pair", b"lone").await;
    let sum = crawl(&v, FavoriteChild::Majority).await;
    assert_eq!(sum.split_brain, 1, "{sum:?}");
    resolve_path(&v, "/majority", Choice::SourceBrick(brick(m[0])))
        .await
        .unwrap();
    v.assert_healed_to("/majority", g, &m, b"lone").await;
    v.finish();

    let mut v = Vol::start("sb-majority", 1, 3).await;
    let (g, m) = v
        .split_data(
            "/f",
            b"the pair's, shorter",
            b"the lone copy's, longer and newer",
        )
        .await;
    let sum = crawl(&v, FavoriteChild::Majority).await;
    assert_eq!((sum.split_brain, sum.healed), (0, 1), "{sum:?}");
    v.assert_healed_to("/f", g, &m, b"the pair's, shorter")
        .await;
    v.finish();
}
