//! Disperse 4 + 2 over six real bricks on loopback, healed: data
//! survives lost bricks, a brick back with old fragments is left out of
//! reads and heal rebuilds it, and heal brings back the metadata a brick
//! missed. The bricks and the set come from the client's test helpers.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use common::disperse::{churn, Cluster, Rng};
use mortar_client::fop::{Fop, FopOut, Subvolume};
use mortar_heal::disperse::heal_file;
use mortar_heal::HealOutcome;
use mortar_proto::brick::{self as bp, XattrFlags};
use mortar_proto::{Errno, Gfid};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_lost_bricks_and_heal_rebuilds_stale_fragments() {
    let mut c = Cluster::start("heal").await;
    let g = c.create("f", 1).await;
    let mut model = Vec::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    churn(&c, g, &mut model, &mut rng, 30).await;

    // A data brick down: reads rebuild from parity, writes go on (five
    // current fragments: k = 4 plus one spare).
    c.b.kill(1).await;
    churn(&c, g, &mut model, &mut rng, 30).await;
    // Two down: still readable, but a change would have no spare; it is
    // refused before anything is touched.
    c.b.kill(4).await;
    assert_eq!(c.read_all(g).await.unwrap(), model);
    let e = c.write(g, 0, b"not written").await.unwrap_err();
    assert_eq!(e.errno, Errno::EROFS, "{e}");
    assert!(e.detail.contains("needs 5"), "{e}");
    // Three down: not even readable.
    c.b.kill(5).await;
    let e = c.read_all(g).await.unwrap_err();
    assert_eq!(e.errno, Errno::ENOTCONN, "{e}");
    c.b.revive(5).await;
    c.b.revive(4).await;
    assert_eq!(c.read_all(g).await.unwrap(), model);

    // Back with old fragments: its version says so and reads leave it out.
    c.b.revive(1).await;
    let current = c.info_on(0, g).await;
    assert_eq!(current.size as usize, model.len());
    assert_ne!(c.info_on(1, g).await, current, "brick 1 missed writes");
    assert_eq!(c.read_all(g).await.unwrap(), model);
    // The file is in the pending-heal index (dirty on the current fragments).
    let pending = c.b.clients[0].pending_heal(100).await.unwrap();
    assert!(pending.contains(&g), "{pending:?}");

    match heal_file(&c.set, g).await {
        HealOutcome::Healed(b) => assert_eq!(b, vec![format!("{}-client-1", c.b.vol)]),
        other => panic!("{other:?}"),
    }
    for i in 0..6 {
        assert_eq!(c.info_on(i, g).await, current, "brick {i} after heal");
        let left = c.b.clients[i].pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    assert_eq!(heal_file(&c.set, g).await, HealOutcome::Clean);
    // The rebuilt fragment is right: lose two others and read from a set
    // that needs brick 1.
    c.b.kill(0).await;
    c.b.kill(2).await;
    assert_eq!(c.read_all(g).await.unwrap(), model);
    let _ = std::fs::remove_dir_all(&c.b.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_metadata_follow_the_bricks_that_took_them() {
    let mut c = Cluster::start("meta").await;
    let g = c.create("m", 3).await;
    c.write(g, 0, b"hello").await.unwrap();
    c.b.kill(0).await;
    let mode = bp::Setattr {
        gfid: g,
        mode: Some(0o600),
        uid: None,
        gid: None,
        atime: None,
        mtime: None,
    };
    let a = c.set.fop(Fop::Setattr(mode)).await.unwrap().attr().unwrap();
    assert_eq!((a.mode, a.size), (0o600, 5));
    c.set
        .fop(Fop::Setxattr(bp::Setxattr {
            gfid: g,
            name: "user.k".into(),
            value: b"v".to_vec(),
            flags: XattrFlags::Any,
        }))
        .await
        .unwrap();
    // Unlinked while brick 0 was down: it still has the name.
    let gone = c.create("gone", 4).await;
    let unlink = bp::Unlink {
        parent: Gfid::ROOT,
        name: "gone".into(),
    };
    c.set.fop(Fop::Unlink(unlink)).await.unwrap();
    // And made again under another gfid.
    let again = c.create("again", 6).await;
    let rename = bp::Rename {
        old_parent: Gfid::ROOT,
        old_name: "again".into(),
        new_parent: Gfid::ROOT,
        new_name: "gone".into(),
    };
    c.set.fop(Fop::Rename(rename)).await.unwrap();
    c.b.revive(0).await;
    // Brick 0 answers first but is behind: stat and getxattr come from
    // the current metadata generation.
    let a = c.stat(g).await.unwrap();
    assert_eq!((a.mode, a.size), (0o600, 5));
    let v = c.getxattr(g, "user.k").await.unwrap();
    assert_eq!(v, FopOut::Value(b"v".to_vec()));
    // Brick 0 still has "gone" with its old gfid: the name is the file
    // four bricks agree on, and the old file is gone.
    assert_eq!(c.lookup("gone").await.unwrap().gfid, again);
    let e = c.stat(gone).await.unwrap_err();
    assert!(matches!(e.errno, Errno::ENOENT | Errno::ESTALE), "{e}");
    // A name on fewer than 4 bricks does not exist.
    let e = c.lookup("again").await.unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    // Heal brings the metadata of 0 up to date.
    assert!(matches!(heal_file(&c.set, g).await, HealOutcome::Healed(_)));
    let on0 = c.b.clients[0]
        .fop(Fop::Stat(bp::Stat { gfid: g }))
        .await
        .unwrap()
        .attr()
        .unwrap();
    assert_eq!(on0.mode, 0o600);
    let q = bp::Getxattr {
        gfid: g,
        name: "user.k".into(),
    };
    let x = c.b.clients[0].fop(Fop::Getxattr(q)).await.unwrap();
    assert_eq!(x, FopOut::Value(b"v".to_vec()));
    assert_eq!(c.read_all(g).await.unwrap(), b"hello");
    let _ = std::fs::remove_dir_all(&c.b.dir);
}

/// A brick that missed one small write gets only the changed blocks of
/// its fragment rewritten (compared by checksum after re-encoding), not
/// the whole fragment, and the rebuilt fragment is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fragment_gets_only_its_changed_blocks() {
    let mut c = Cluster::start("blocks").await;
    let g = c.create("b", 5).await;
    let mut model: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    for (n, piece) in model.chunks(1 << 20).enumerate() {
        c.write(g, (n as u64) << 20, piece).await.unwrap();
    }
    c.b.kill(1).await;
    let at = (2usize << 20) + 300;
    let small = vec![0xab; 1000];
    c.write(g, at as u64, &small).await.unwrap();
    model[at..at + small.len()].copy_from_slice(&small);
    c.b.revive(1).await;
    let before = c.b.clients[1].bytes_written();
    match heal_file(&c.set, g).await {
        HealOutcome::Healed(b) => assert_eq!(b, vec![format!("{}-client-1", c.b.vol)]),
        other => panic!("{other:?}"),
    }
    let written = c.b.clients[1].bytes_written() - before;
    // Its fragment is 1 MiB; the change falls in one block of it.
    assert_eq!(written, bp::HEAL_BLOCK_BYTES, "bytes heal wrote to brick 1");
    c.b.kill(0).await;
    c.b.kill(2).await;
    assert_eq!(c.read_all(g).await.unwrap(), model, "read through brick 1");
    let _ = std::fs::remove_dir_all(&c.b.dir);
}
