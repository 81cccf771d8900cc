//! Disperse 4 + 2 over six real bricks on loopback: data written at any
//! offset reads back, fragments that disagree on their version give EIO,
//! not a mix, and large writes on any stripe size land whole. (Lost and
//! stale bricks healed: `mortar-heal`'s tests/disperse.rs.)
#![allow(clippy::disallowed_methods)] // Loopback and real time.

mod common;

use common::disperse::{Cluster, Rng};
use mortar_client::fop::{Fop, Subvolume};
use mortar_proto::brick as bp;
use mortar_proto::Errno;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_of_different_versions_are_never_decoded_together() {
    let c = Cluster::start("versions").await;
    let g = c.create("v", 2).await;
    c.write(g, 0, &[7u8; 10_000]).await.unwrap();
    // Half the fragments claim another generation (as if a write had
    // reached only them): no version has 4 fragments.
    let mut other = c.info_on(0, g).await;
    other.data += 1;
    for i in 0..3 {
        c.set_info_on(i, g, other).await;
    }
    let e = c
        .set
        .fop(Fop::Read(bp::Read {
            gfid: g,
            offset: 0,
            len: 100,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO);
    assert!(e.detail.contains("disagree"), "{e}");
    let e = c.write(g, 5, b"x").await.unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(e.detail.contains("disagree"), "{e}");
    // Four of one version again: readable, and the odd ones left out.
    c.set_info_on(2, g, c.info_on(3, g).await).await;
    assert_eq!(c.read_all(g).await.unwrap(), vec![7u8; 10_000]);
    let _ = std::fs::remove_dir_all(&c.b.dir);
}

/// 3 + 1: a stripe is 1536 bytes, which does not divide the 1 MiB pieces
/// a large write is cut into; every piece must still start where the
/// last ended (no stripe encoded twice from different halves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unaligned_writes_on_a_stripe_that_does_not_divide_a_mebibyte() {
    let c = Cluster::with("k3", 4, 1).await;
    let g = c.create("big", 5).await;
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let first: Vec<u8> = (0..(5 << 19) + 777).map(|_| rng.next() as u8).collect();
    c.write(g, 1000, &first).await.unwrap();
    let mut model = vec![0u8; 1000];
    model.extend_from_slice(&first);
    assert!(c.read_all(g).await.unwrap() == model, "first write");
    let more: Vec<u8> = (0..(3 << 19) + 5).map(|_| rng.next() as u8).collect();
    let end = model.len() as u64;
    c.write(g, end, &more).await.unwrap();
    model.extend_from_slice(&more);
    assert!(c.read_all(g).await.unwrap() == model, "append");
    let _ = std::fs::remove_dir_all(&c.b.dir);
}
