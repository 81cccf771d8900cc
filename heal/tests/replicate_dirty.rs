//! Replica 3 over real bricks on loopback: a write that started on every
//! copy and never reached its post-op (a client crash) leaves every copy
//! dirty and none blamed. Heal must still make the copies the same, from
//! the copy the documented rule picks (`mortar_heal::source`).
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::Bricks;
use mortar_client::afr::{dirty_delta, Kind, Quorum};
use mortar_client::fop::{Fop, FopOut, Subvolume};
use mortar_client::replicate::Replicate;
use mortar_heal::replicate::heal_file;
use mortar_heal::HealOutcome;
use mortar_proto::brick::{self as bp, NewObject};
use mortar_proto::Gfid;

const VOL: &str = "vol-dirty";

/// Regression (issue 11): "a write interrupted by a client crash leaves
/// every copy dirty and none blamed; the heal treats that as clean, so the
/// copies can differ for good". Fixed by picking a source by rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_copies_without_blame_end_the_same() {
    let b = Bricks::start(VOL, 3).await;
    let set = Replicate::new(
        &b.rt,
        &format!("{VOL}-replicate-0"),
        b.children(),
        Quorum::Auto,
        false,
    );
    let g = Gfid::from_u128(0xd1);
    let new = NewObject {
        gfid: g,
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let create = bp::Create {
        parent: Gfid::ROOT,
        name: "f".into(),
        new,
    };
    set.fop(Fop::Create(create)).await.unwrap();
    let w = |data: &'static [u8]| Fop::Write(bp::Write { gfid: g, offset: 0 }, Bytes::from(data));
    set.fop(w(b"old")).await.unwrap();
    // The interrupted transaction: pre-op on every copy, the write landed
    // on brick 1 only, no post-op anywhere.
    for c in &b.clients {
        let q = bp::Xattrop {
            gfid: g,
            deltas: vec![dirty_delta(Kind::Data, 1)],
            durable: true,
        };
        c.fop(Fop::Xattrop(q)).await.unwrap();
    }
    b.clients[1].fop(w(b"newer and longer")).await.unwrap();
    assert_ne!(b.read_on(0, g).await, b.read_on(1, g).await);

    match heal_file(&set, g).await {
        HealOutcome::Healed(sinks) => assert_eq!(
            sinks,
            vec![format!("{VOL}-client-0"), format!("{VOL}-client-2")],
            "the largest copy (brick 1) heals the others"
        ),
        other => panic!("expected a heal, got {other:?}"),
    }
    for i in 0..3 {
        assert_eq!(&b.read_on(i, g).await[..], b"newer and longer", "brick {i}");
        let idx = b.clients[i].pending_heal(100).await.unwrap();
        assert!(idx.is_empty(), "brick {i} index: {idx:?}");
    }
    assert_eq!(heal_file(&set, g).await, HealOutcome::Clean);
    let FopOut::Attr(a) = set.fop(Fop::Stat(bp::Stat { gfid: g })).await.unwrap() else {
        panic!("stat");
    };
    assert_eq!(a.size, 16);
}
