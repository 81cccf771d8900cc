//! Disperse 4 + 2 over six real bricks on loopback: data written at any
//! offset reads back (with one brick down too; with two down it is read
//! but changes are refused, nothing touched), fragments left behind are
//! never decoded with current ones and heal rebuilds them, and fragments
//! that disagree on their version give EIO, not a mix.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

mod common;

use bytes::Bytes;
use common::Bricks;
use mortar_client::disperse::{Disperse, FragInfo, EC_XATTR};
use mortar_client::fop::{Fop, FopOut, FopResult, HealOutcome, Subvolume};
use mortar_proto::brick::{self as bp, NewObject, XattrFlags};
use mortar_proto::{Attr, Errno, Gfid};

struct Cluster {
    b: Bricks,
    set: Disperse,
}

impl Cluster {
    async fn start(tag: &str) -> Cluster {
        Cluster::with(tag, 6, 2).await
    }

    async fn with(tag: &str, n: usize, m: usize) -> Cluster {
        let b = Bricks::start(&format!("vol-ec-{tag}"), n).await;
        let set = Disperse::new(&b.rt, &format!("{}-disperse-0", b.vol), b.children(), m).unwrap();
        Cluster { b, set }
    }

    async fn create(&self, name: &str, n: u128) -> Gfid {
        let new = NewObject {
            gfid: Gfid::from_u128(0xec00 + n),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        self.set
            .fop(Fop::Create(bp::Create {
                parent: Gfid::ROOT,
                name: name.into(),
                new,
            }))
            .await
            .unwrap();
        new.gfid
    }

    async fn write(&self, g: Gfid, off: u64, data: &[u8]) -> FopResult<FopOut> {
        self.set
            .fop(Fop::Write(
                bp::Write {
                    gfid: g,
                    offset: off,
                },
                Bytes::copy_from_slice(data),
            ))
            .await
    }

    async fn read_all(&self, g: Gfid) -> FopResult<Vec<u8>> {
        let a = self
            .set
            .fop(Fop::Stat(bp::Stat { gfid: g }))
            .await?
            .attr()?;
        let d = self
            .set
            .fop(Fop::Read(bp::Read {
                gfid: g,
                offset: 0,
                len: a.size + 4096,
            }))
            .await?
            .data()?;
        assert_eq!(
            d.len() as u64,
            a.size,
            "a read stops at the size stat reports"
        );
        Ok(d.to_vec())
    }

    /// Make brick `i`'s fragment claim `info` (as a failed update might).
    async fn stat(&self, gfid: Gfid) -> FopResult<Attr> {
        self.set.fop(Fop::Stat(bp::Stat { gfid })).await?.attr()
    }

    async fn lookup(&self, name: &str) -> FopResult<Attr> {
        let q = bp::Lookup {
            parent: Gfid::ROOT,
            name: name.into(),
        };
        self.set.fop(Fop::Lookup(q)).await?.attr()
    }

    async fn getxattr(&self, gfid: Gfid, name: &str) -> FopResult<FopOut> {
        let q = bp::Getxattr {
            gfid,
            name: name.into(),
        };
        self.set.fop(Fop::Getxattr(q)).await
    }

    async fn set_info_on(&self, i: usize, g: Gfid, info: FragInfo) {
        self.b.clients[i]
            .fop(Fop::Setxattr(bp::Setxattr {
                gfid: g,
                name: EC_XATTR.into(),
                value: info.encode(),
                flags: XattrFlags::Any,
            }))
            .await
            .unwrap();
    }

    /// The version and size brick `i`'s fragment carries.
    async fn info_on(&self, i: usize, g: Gfid) -> FragInfo {
        match self.b.clients[i]
            .fop(Fop::Getxattr(bp::Getxattr {
                gfid: g,
                name: EC_XATTR.into(),
            }))
            .await
        {
            Ok(FopOut::Value(v)) => FragInfo::parse(&v),
            other => panic!("{other:?}"),
        }
    }
}

/// A deterministic source of offsets and bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes (unaligned, across stripes, past the end leaving holes)
/// and truncates, each checked against a model of the file.
async fn churn(c: &Cluster, g: Gfid, model: &mut Vec<u8>, rng: &mut Rng, ops: usize) {
    for op in 0..ops {
        if rng.below(8) == 0 {
            let t = rng.below(24 * 1024) as usize;
            c.set
                .fop(Fop::Truncate(bp::Truncate {
                    gfid: g,
                    size: t as u64,
                }))
                .await
                .unwrap_or_else(|e| panic!("op {op}: truncate to {t}: {e}"));
            model.resize(t, 0);
        } else {
            let off = rng.below(20 * 1024) as usize;
            let len = 1 + rng.below(6000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let w = c
                .write(g, off as u64, &data)
                .await
                .unwrap_or_else(|e| panic!("op {op}: write {len} at {off}: {e}"));
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
            assert_eq!(
                w,
                FopOut::Written(bp::WriteReply {
                    written: len as u64,
                    size: model.len() as u64
                })
            );
        }
        let got = c.read_all(g).await.unwrap();
        assert!(
            got == *model,
            "op {op}: the file differs from the model ({} vs {} bytes)",
            got.len(),
            model.len()
        );
    }
}

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

    match c.set.heal_file(g).await {
        HealOutcome::Healed(b) => assert_eq!(b, vec![format!("{}-client-1", c.b.vol)]),
        other => panic!("{other:?}"),
    }
    for i in 0..6 {
        assert_eq!(c.info_on(i, g).await, current, "brick {i} after heal");
        let left = c.b.clients[i].pending_heal(100).await.unwrap();
        assert!(left.is_empty(), "brick {i} still lists {left:?}");
    }
    assert_eq!(c.set.heal_file(g).await, HealOutcome::Clean);
    // The rebuilt fragment is right: lose two others and read from a set
    // that needs brick 1.
    c.b.kill(0).await;
    c.b.kill(2).await;
    assert_eq!(c.read_all(g).await.unwrap(), model);
    let _ = std::fs::remove_dir_all(&c.b.dir);
}

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
    c.set
        .fop(Fop::Unlink(bp::Unlink {
            parent: Gfid::ROOT,
            name: "gone".into(),
        }))
        .await
        .unwrap();
    // And made again under another gfid.
    let again = c.create("again", 6).await;
    c.set
        .fop(Fop::Rename(bp::Rename {
            old_parent: Gfid::ROOT,
            old_name: "again".into(),
            new_parent: Gfid::ROOT,
            new_name: "gone".into(),
        }))
        .await
        .unwrap();
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
    assert!(matches!(c.set.heal_file(g).await, HealOutcome::Healed(_)));
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
