//! Replicate over three real bricks on loopback: writes reach every up
//! brick, a missing brick is blamed, reads come from a good copy, quorum
//! refuses writes that could split the brain, and copies that blame each
//! other are a split-brain (EIO).
#![allow(clippy::disallowed_methods)] // Loopback and real time.

mod common;

use bytes::Bytes;
use common::Bricks;
use mortar_client::afr::Quorum;
use mortar_client::fop::{Fop, FopOut, FopResult, Subvolume};
use mortar_client::replicate::Replicate;
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, NewObject};
use mortar_proto::{Errno, Gfid};

const VOL: &str = "vol-r3";

struct Cluster {
    b: Bricks,
    set: Replicate,
}

impl std::ops::Deref for Cluster {
    type Target = Bricks;
    fn deref(&self) -> &Bricks {
        &self.b
    }
}

impl Cluster {
    async fn start(quorum: Quorum) -> Cluster {
        Cluster::start_as("", quorum).await
    }

    /// A cluster whose brick directories carry `tag` too (tests in one
    /// binary run at once and must not share bricks).
    async fn start_as(tag: &str, quorum: Quorum) -> Cluster {
        let b = Bricks::start(&format!("{VOL}{tag}-{quorum:?}"), 3).await;
        let set = Replicate::new(
            &b.rt,
            &format!("{VOL}-replicate-0"),
            b.children(),
            quorum,
            false,
        );
        Cluster { b, set }
    }

    async fn kill(&mut self, i: usize) {
        self.b.kill(i).await
    }

    async fn revive(&mut self, i: usize) {
        self.b.revive(i).await
    }

    async fn blame(&self, on: usize, of: usize, g: Gfid) -> i32 {
        let name = format!("{}{}-client-{of}", xa::CHANGELOG_PREFIX, self.vol);
        match self.clients[on]
            .fop(Fop::Getxattr(bp::Getxattr { gfid: g, name }))
            .await
        {
            Ok(FopOut::Value(v)) => i32::from_be_bytes(v[0..4].try_into().unwrap()),
            _ => 0,
        }
    }
}

fn obj(n: u128) -> NewObject {
    NewObject {
        gfid: Gfid::from_u128(0xa000 + n),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

async fn create(set: &Replicate, name: &str, n: u128) -> FopResult<FopOut> {
    let q = bp::Create {
        parent: Gfid::ROOT,
        name: name.into(),
        new: obj(n),
    };
    set.fop(Fop::Create(q)).await
}

async fn read(set: &Replicate, gfid: Gfid, len: u64) -> FopResult<FopOut> {
    let q = bp::Read {
        gfid,
        offset: 0,
        len,
    };
    set.fop(Fop::Read(q)).await
}

async fn write(set: &Replicate, g: Gfid, data: &[u8]) -> FopResult<FopOut> {
    set.fop(Fop::Write(
        bp::Write { gfid: g, offset: 0 },
        Bytes::copy_from_slice(data),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_blame_missing_bricks_and_reads_avoid_stale_copies() {
    let mut c = Cluster::start(Quorum::Auto).await;
    let g = obj(1).gfid;
    create(&c.set, "f", 1).await.unwrap();
    write(&c.set, g, &[1u8; 65536]).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            c.read_on(i, g).await,
            Bytes::from(vec![1u8; 65536]),
            "brick {i}"
        );
    }
    // Brick 2 goes away; the write still succeeds (2 of 3) and 2 is blamed.
    c.kill(2).await;
    write(&c.set, g, &[2u8; 65536]).await.unwrap();
    assert_eq!(c.blame(0, 2, g).await, 1);
    assert_eq!(c.blame(1, 2, g).await, 1);
    assert_eq!(c.blame(0, 1, g).await, 0);
    // The survivors list the file as needing heal.
    match c.clients[0]
        .fop(Fop::Xattrop(bp::Xattrop {
            gfid: g,
            deltas: vec![("trusted.mortar.probe".into(), CounterDelta::Add32(vec![0]))],
            durable: false,
        }))
        .await
    {
        Ok(_) => {}
        Err(e) => panic!("{e}"),
    }
    // Brick 2 returns with stale data: reads must come from a good copy.
    c.revive(2).await;
    assert_eq!(
        c.read_on(2, g).await,
        Bytes::from(vec![1u8; 65536]),
        "brick 2 is stale until healed"
    );
    for _ in 0..10 {
        let d = read(&c.set, g, 1 << 20).await.unwrap();
        assert_eq!(
            d,
            FopOut::Data(Bytes::from(vec![2u8; 65536])),
            "read served from a stale copy"
        );
    }
    // Two bricks down: quorum refuses, and nothing is written anywhere.
    c.kill(1).await;
    c.kill(2).await;
    let e = write(&c.set, g, &[3u8; 65536]).await.unwrap_err();
    assert_eq!(e.errno, Errno::EROFS, "{e}");
    assert!(e.detail.contains("quorum not met: 1 of 3"), "{e}");
    assert_eq!(
        c.read_on(0, g).await,
        Bytes::from(vec![2u8; 65536]),
        "a refused write left data behind"
    );
    let e = create(&c.set, "g", 2).await.unwrap_err();
    assert_eq!(e.errno, Errno::EROFS);
    // Reads are refused too: a lone copy cannot tell whether a write it
    // missed was acknowledged elsewhere (here it happens to be good, but
    // the stale brick alone would say the same).
    let e = read(&c.set, g, 10).await.unwrap_err();
    assert_eq!(e.errno, Errno::ENOTCONN, "{e}");
    assert!(e.detail.contains("may be stale"), "{e}");
    // With a quorum back, the good copy serves it.
    c.revive(1).await;
    assert_eq!(
        read(&c.set, g, 10).await.unwrap(),
        FopOut::Data(Bytes::from(vec![2u8; 10]))
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_blame_each_other_are_a_split_brain() {
    let c = Cluster::start(Quorum::None).await;
    let g = obj(3).gfid;
    c.set
        .fop(Fop::Create(bp::Create {
            parent: Gfid::ROOT,
            name: "sb".into(),
            new: obj(3),
        }))
        .await
        .unwrap();
    write(&c.set, g, b"same").await.unwrap();
    // Every copy is blamed by another (as partitioned writers without
    // quorum leave them): no copy can be trusted. (Had 0 and 1 only blamed
    // each other, the unblamed copy on 2 would be the good one.)
    for (on, of) in [(0usize, 1usize), (1, 2), (2, 0)] {
        let key = format!("{}{}-client-{of}", xa::CHANGELOG_PREFIX, c.vol);
        c.clients[on]
            .fop(Fop::Xattrop(bp::Xattrop {
                gfid: g,
                deltas: vec![(key, CounterDelta::Add32(vec![1, 0, 0]))],
                durable: true,
            }))
            .await
            .unwrap();
    }
    let e = c
        .set
        .fop(Fop::Read(bp::Read {
            gfid: g,
            offset: 0,
            len: 10,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert!(e.detail.contains("split-brain"), "{e}");
    let e = write(&c.set, g, b"new").await.unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "{e}");
    // Metadata is not affected by data blame.
    c.set
        .fop(Fop::Getxattr(bp::Getxattr {
            gfid: g,
            name: xa::GFID.into(),
        }))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// A readdir-plus page from `set`: (name, size, vouched for) per entry.
async fn listing_plus(set: &Replicate) -> Vec<(String, u64, bool)> {
    let q = bp::Readdir {
        dir: Gfid::ROOT,
        after: None,
        max_entries: 64,
    };
    match set.fop(Fop::ReaddirPlus(q)).await.unwrap() {
        FopOut::DirPlus(page, good) => {
            assert_eq!(page.entries.len(), good.len());
            page.entries
                .into_iter()
                .zip(good)
                .map(|(e, g)| (e.name, e.attr.size, g))
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_vouches_only_for_attributes_from_a_good_copy() {
    let mut c = Cluster::start_as("-plus", Quorum::Auto).await;
    let (f, h) = (obj(1).gfid, obj(2).gfid);
    create(&c.set, "f", 1).await.unwrap();
    create(&c.set, "h", 2).await.unwrap();
    write(&c.set, f, &[1u8; 100]).await.unwrap();
    write(&c.set, h, &[1u8; 100]).await.unwrap();
    let all_clean = listing_plus(&c.set).await;
    assert_eq!(
        all_clean,
        vec![("f".to_string(), 100, true), ("h".to_string(), 100, true)]
    );
    // Brick 0 misses f's growth; back up, unhealed, it still lists the
    // directory (entries unchanged) but its copy of f is stale.
    c.kill(0).await;
    write(&c.set, f, &[2u8; 300]).await.unwrap();
    c.revive(0).await;
    let stat = match c.set.fop(Fop::Stat(bp::Stat { gfid: f })).await.unwrap() {
        FopOut::Attr(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(stat.size, 300, "a stat reads a good copy");
    let listed = listing_plus(&c.set).await;
    for (name, size, good) in &listed {
        if *good {
            let want = if name == "f" { 300 } else { 100 };
            assert_eq!(
                *size, want,
                "{name}: vouched for a stale copy's size: {listed:?}"
            );
        }
    }
    assert!(listed.iter().any(|(n, _, g)| n == "h" && *g), "{listed:?}");
    // The listing came from brick 0 (the first good copy of the
    // directory), so the stale f is the one left to a lookup.
    assert!(
        listed.iter().any(|(n, s, g)| n == "f" && *s == 100 && !*g),
        "{listed:?}"
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}
