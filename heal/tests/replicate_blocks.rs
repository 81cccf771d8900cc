//! Replica 3 over real bricks on loopback, default options: data heal by
//! block checksums. A file changed in a few blocks while a brick was down
//! is healed by writing those blocks only; holes stay holes on the healed
//! copy; an empty copy, a copy longer than the good one and a good copy
//! that shrank (and grew again with a hole) all end byte-identical.
//!
//! The test hook is `counting::Counting` (`heal/tests/counting`): each
//! brick's child in the set is wrapped so the test counts the bytes heal
//! writes to it and the holes it punches, and can make a brick answer as
//! an older brick does (no `Rchecksum`) or as one whose filesystem cannot
//! punch holes.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

#[path = "../../client/tests/common/mod.rs"]
mod common;
mod counting;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use common::Bricks;
use counting::Counting;
use mortar_client::afr::Quorum;
use mortar_client::fop::{Child, Fop, Subvolume};
use mortar_client::replicate::Replicate;
use mortar_heal::replicate::heal_file;
use mortar_heal::HealOutcome;
use mortar_proto::brick::{self as bp, NewObject, HEAL_BLOCK_BYTES as B};
use mortar_proto::Gfid;

const MIB: u64 = 1 << 20;
/// The test file: 32 blocks of 128 KiB, data in blocks 0..16 and 24..32,
/// a 1 MiB hole (blocks 16..24) in the middle.
const SIZE: u64 = 4 * MIB;
const HOLE: std::ops::Range<u64> = 2 * MIB..3 * MIB;
/// Allocation beyond the data a file holds that the hole checks allow
/// (ext4 extent blocks, a partly written page).
const SLACK_BYTES: u64 = 64 << 10;

struct Set {
    b: Bricks,
    set: Replicate,
    counting: Vec<Arc<Counting>>,
    g: Gfid,
}

impl Set {
    /// Three bricks, and one file on all of them (empty).
    async fn start(vol: &str) -> Set {
        let b = Bricks::start(vol, 3).await;
        let counting = Counting::wrap(b.children());
        let children = counting.iter().map(|c| c.clone() as Child).collect();
        let set = Replicate::new(
            &b.rt,
            &format!("{vol}-replicate-0"),
            children,
            Quorum::Auto,
            false,
        );
        let g = Gfid::from_u128(0xb10c);
        let create = bp::Create {
            parent: Gfid::ROOT,
            name: "f".into(),
            new: NewObject {
                gfid: g,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        };
        set.fop(Fop::Create(create)).await.unwrap();
        Set {
            b,
            set,
            counting,
            g,
        }
    }

    async fn write(&self, offset: u64, data: Vec<u8>) {
        let w = bp::Write {
            gfid: self.g,
            offset,
        };
        self.set
            .fop(Fop::Write(w, Bytes::from(data)))
            .await
            .unwrap();
    }

    async fn truncate(&self, size: u64) {
        let t = bp::Truncate { gfid: self.g, size };
        self.set.fop(Fop::Truncate(t)).await.unwrap();
    }

    /// The 4 MiB test file: data around a 1 MiB hole.
    async fn write_file_with_a_hole(&self) {
        for off in (0..SIZE).step_by(MIB as usize) {
            if !HOLE.contains(&off) {
                self.write(off, pattern(off, MIB, 1)).await;
            }
        }
    }

    fn reset_counts(&self) {
        for c in &self.counting {
            c.written.store(0, Ordering::Relaxed);
            c.discarded.store(0, Ordering::Relaxed);
        }
    }

    fn written(&self, i: usize) -> u64 {
        self.counting[i].written.load(Ordering::Relaxed)
    }

    fn discarded(&self, i: usize) -> u64 {
        self.counting[i].discarded.load(Ordering::Relaxed)
    }

    /// Heal with brick `sink` the only stale copy; the counters count
    /// this heal only.
    async fn heal(&self, sink: usize) {
        self.reset_counts();
        match heal_file(&self.set, self.g).await {
            HealOutcome::Healed(s) => assert_eq!(s, vec![self.counting[sink].name().to_string()]),
            other => panic!("expected brick {sink} healed, got {other:?}"),
        }
        for i in 0..3 {
            if i != sink {
                assert_eq!(self.written(i), 0, "heal wrote to good copy {i}");
            }
        }
    }

    /// What brick `i` holds: its attributes and every byte.
    async fn on_brick(&self, i: usize) -> (mortar_proto::Attr, Vec<u8>) {
        let c = &self.b.clients[i];
        let a = c
            .fop(Fop::Stat(bp::Stat { gfid: self.g }))
            .await
            .unwrap()
            .attr()
            .unwrap();
        let mut all = Vec::with_capacity(a.size as usize);
        while (all.len() as u64) < a.size {
            let q = bp::Read {
                gfid: self.g,
                offset: all.len() as u64,
                len: MIB,
            };
            let d = c.fop(Fop::Read(q)).await.unwrap().data().unwrap();
            assert!(!d.is_empty(), "brick {i} read short of its size");
            all.extend_from_slice(&d);
        }
        (a, all)
    }

    /// Every brick holds `want`, and no index lists the file; another
    /// heal finds nothing to do. Returns brick `sink`'s allocated bytes.
    async fn check_healed(&self, sink: usize, want: &[u8]) -> u64 {
        let mut allocated = 0;
        for i in 0..3 {
            let (a, data) = self.on_brick(i).await;
            assert_eq!(a.size, want.len() as u64, "brick {i} size");
            assert!(data == want, "brick {i} is not byte-identical to the model");
            let idx = self.b.clients[i].pending_heal(100).await.unwrap();
            assert!(idx.is_empty(), "brick {i} index: {idx:?}");
            if i == sink {
                allocated = a.blocks * 512;
            }
        }
        assert_eq!(heal_file(&self.set, self.g).await, HealOutcome::Clean);
        allocated
    }
}

/// `len` bytes for the file at `off`, never zero, `salt` telling writes
/// apart.
fn pattern(off: u64, len: u64, salt: u8) -> Vec<u8> {
    (off..off + len)
        .map(|i| ((i / 7 + i % 251) as u8 ^ salt) | 1)
        .collect()
}

/// The test file's bytes as written by `write_file_with_a_hole`.
fn model() -> Vec<u8> {
    let mut m = pattern(0, SIZE, 1);
    m[HOLE.start as usize..HOLE.end as usize].fill(0);
    m
}

/// The case: two blocks changed while a brick was down. Heal
/// writes those two blocks (256 KiB, not 4 MiB), and the hole in the
/// middle is still a hole on the healed copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_changed_blocks_are_all_heal_writes() {
    let mut s = Set::start("vol-blocks-two").await;
    s.write_file_with_a_hole().await;
    s.b.kill(2).await;
    let mut want = model();
    // Block 3: a few bytes inside it; block 25: all of it.
    let small = pattern(3 * B + 500, 1000, 7);
    s.write(3 * B + 500, small.clone()).await;
    want[(3 * B + 500) as usize..(3 * B + 1500) as usize].copy_from_slice(&small);
    let whole = pattern(25 * B, B, 9);
    s.write(25 * B, whole.clone()).await;
    want[(25 * B) as usize..(26 * B) as usize].copy_from_slice(&whole);
    s.b.revive(2).await;

    s.heal(2).await;
    let allocated = s.check_healed(2, &want).await;
    assert_eq!(
        s.written(2),
        2 * B,
        "heal writes exactly the two changed blocks"
    );
    assert_eq!(s.discarded(2), 0);
    let data_bytes = SIZE - (HOLE.end - HOLE.start);
    assert!(
        allocated <= data_bytes + SLACK_BYTES,
        "the 1 MiB hole is still a hole on the healed copy: {allocated} bytes allocated for {data_bytes} of data"
    );
}

/// A copy made while it was down is empty: everything but the hole is
/// written, and the hole stays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_copy_gets_the_data_and_keeps_the_hole() {
    let mut s = Set::start("vol-blocks-empty").await;
    s.b.kill(2).await;
    s.write_file_with_a_hole().await;
    s.b.revive(2).await;

    s.heal(2).await;
    let data_bytes = SIZE - (HOLE.end - HOLE.start);
    let allocated = s.check_healed(2, &model()).await;
    assert_eq!(s.written(2), data_bytes);
    assert!(
        allocated <= data_bytes + SLACK_BYTES,
        "{allocated} allocated"
    );
}

/// The good copy shrank while the stale one was down, and a block near
/// its start changed: the stale copy is longer. Only that block is
/// written (up to the new end the copies agree, the new short last block
/// included, since both bricks checksum the same range), then the stale
/// copy is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_copy_is_cut_to_a_good_copy_that_shrank() {
    let mut s = Set::start("vol-blocks-shrank").await;
    s.write_file_with_a_hole().await;
    s.b.kill(2).await;
    let new_size = 25 * B + 100;
    s.truncate(new_size).await;
    let changed = pattern(2 * B, 10, 3);
    s.write(2 * B, changed.clone()).await;
    s.b.revive(2).await;

    s.heal(2).await;
    let mut want = model();
    want.truncate(new_size as usize);
    want[(2 * B) as usize..(2 * B + 10) as usize].copy_from_slice(&changed);
    s.check_healed(2, &want).await;
    assert_eq!(s.written(2), B);
}

/// The good copy was cut short and grown again while the stale copy was
/// down: where the stale copy has data the good one has a hole. Heal
/// punches holes there rather than write zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_on_the_good_copy_become_holes_on_the_stale_one() {
    let mut s = Set::start("vol-blocks-regrown").await;
    s.write_file_with_a_hole().await;
    s.b.kill(2).await;
    s.truncate(MIB).await;
    s.truncate(SIZE).await;
    s.b.revive(2).await;

    s.heal(2).await;
    let mut want = model();
    want[MIB as usize..].fill(0);
    let allocated = s.check_healed(2, &want).await;
    assert_eq!(s.written(2), 0, "nothing to write, only holes to punch");
    // Blocks 8..16 and 24..32 held data on the stale copy.
    assert_eq!(s.discarded(2), 16 * B);
    assert!(
        allocated <= MIB + SLACK_BYTES,
        "{allocated} allocated for 1 MiB of data"
    );
}

/// Where the stale copy's brick cannot punch holes, heal writes zeros
/// instead: the same bytes, allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeros_are_written_where_holes_cannot_be_punched() {
    let mut s = Set::start("vol-blocks-noholes").await;
    s.write_file_with_a_hole().await;
    s.b.kill(2).await;
    s.truncate(MIB).await;
    s.truncate(SIZE).await;
    s.b.revive(2).await;
    s.counting[2].no_holes.store(true, Ordering::Relaxed);

    s.heal(2).await;
    let mut want = model();
    want[MIB as usize..].fill(0);
    let allocated = s.check_healed(2, &want).await;
    assert_eq!(
        s.written(2),
        16 * B,
        "zeros written over the blocks that held data"
    );
    // The check of the hole checks: written zeros are allocated.
    assert!(allocated >= 3 * MIB, "{allocated} allocated");
}

/// A brick that does not know `Rchecksum` (an older brick) gets the old
/// heal: emptied and copied whole, holes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_brick_gets_the_whole_file_copied() {
    let mut s = Set::start("vol-blocks-old").await;
    s.write_file_with_a_hole().await;
    s.b.kill(2).await;
    let changed = pattern(5 * B, 10, 5);
    s.write(5 * B, changed.clone()).await;
    s.b.revive(2).await;
    s.counting[2].old_brick.store(true, Ordering::Relaxed);

    s.heal(2).await;
    let data_bytes = SIZE - (HOLE.end - HOLE.start);
    let mut want = model();
    want[(5 * B) as usize..(5 * B + 10) as usize].copy_from_slice(&changed);
    let allocated = s.check_healed(2, &want).await;
    assert_eq!(
        s.written(2),
        data_bytes,
        "the full copy writes every data chunk"
    );
    assert!(
        allocated <= data_bytes + SLACK_BYTES,
        "{allocated} allocated"
    );
}
