//! How long replicate data heal takes for a 64 MiB file with 2 changed
//! blocks: the old way (stale copy emptied, whole file copied) against
//! block checksums (only the differing blocks written), in one run over
//! three real bricks on loopback, and the ratio. Prints figures; asserts
//! nothing about time.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/main/target cargo run --release -p mortar-heal --example heal_bench
//! ```
//!
//! The old way is the fallback heal takes for a brick that does not know
//! `Rchecksum`, forced here through the test hook (`heal/tests/counting`).
#![allow(clippy::disallowed_methods)] // Loopback bricks and wall time.
#![allow(clippy::print_stdout)] // A bench prints its figures.

#[path = "../../client/tests/common/mod.rs"]
mod common;
#[path = "../tests/counting/mod.rs"]
mod counting;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::Bricks;
use counting::Counting;
use mortar_client::afr::Quorum;
use mortar_client::fop::{Child, Fop, Subvolume};
use mortar_client::replicate::Replicate;
use mortar_heal::replicate::heal_file;
use mortar_heal::HealOutcome;
use mortar_proto::brick::{self as bp, NewObject, HEAL_BLOCK_BYTES};
use mortar_proto::Gfid;

const MIB: u64 = 1 << 20;
const FILE_BYTES: u64 = 64 * MIB;
/// Heals timed per way; the median is reported.
const ROUNDS: usize = 5;

async fn write(set: &Replicate, gfid: Gfid, offset: u64, data: Vec<u8>) {
    let w = bp::Write { gfid, offset };
    set.fop(Fop::Write(w, Bytes::from(data))).await.unwrap();
}

/// Kill the third brick, change two blocks, bring it back, heal it the
/// chosen way: the time the heal took and the bytes it wrote.
async fn one_heal(
    b: &mut Bricks,
    set: &Replicate,
    sinks: &[std::sync::Arc<Counting>],
    gfid: Gfid,
    (round, old_way): (usize, bool),
) -> (Duration, u64) {
    b.kill(2).await;
    for k in 0..2u64 {
        let block = (round as u64 * 7 + k * 211) % (FILE_BYTES / HEAL_BLOCK_BYTES);
        let salt = (round * 2 + k as usize) as u8;
        write(
            set,
            gfid,
            block * HEAL_BLOCK_BYTES + 100,
            vec![salt | 1; 4096],
        )
        .await;
    }
    b.revive(2).await;
    sinks[2].old_brick.store(old_way, Ordering::Relaxed);
    sinks[2].written.store(0, Ordering::Relaxed);
    let t = mortar_net::Clock::new().now();
    let outcome = heal_file(set, gfid).await;
    let took = t.elapsed();
    assert!(matches!(outcome, HealOutcome::Healed(_)), "{outcome:?}");
    (took, sinks[2].written.load(Ordering::Relaxed))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut b = Bricks::start("vol-heal-bench", 3).await;
    let sinks = Counting::wrap(b.children());
    let children: Vec<Child> = sinks.iter().map(|c| c.clone() as Child).collect();
    let set = Replicate::new(
        &b.rt,
        "vol-heal-bench-replicate-0",
        children,
        Quorum::Auto,
        false,
    );
    let gfid = Gfid::from_u128(0xbe7c);
    let new = NewObject {
        gfid,
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let create = bp::Create {
        parent: Gfid::ROOT,
        name: "big".into(),
        new,
    };
    set.fop(Fop::Create(create)).await.unwrap();
    for off in (0..FILE_BYTES).step_by(MIB as usize) {
        let chunk = (off..off + MIB).map(|i| (i % 251) as u8 | 1).collect();
        write(&set, gfid, off, chunk).await;
    }
    let (mut old, mut new) = (Vec::new(), Vec::new());
    let (mut old_bytes, mut new_bytes) = (0, 0);
    for round in 0..ROUNDS {
        let (t, w) = one_heal(&mut b, &set, &sinks, gfid, (2 * round, true)).await;
        old.push(t);
        old_bytes = w;
        let (t, w) = one_heal(&mut b, &set, &sinks, gfid, (2 * round + 1, false)).await;
        new.push(t);
        new_bytes = w;
    }
    let (old, new) = (median(old), median(new));
    println!(
        "heal of a {} MiB file with 2 changed blocks of {} KiB, median of {ROUNDS}:",
        FILE_BYTES / MIB,
        HEAL_BLOCK_BYTES >> 10
    );
    println!(
        "  full copy         {:>8.1} ms, {:>9} bytes written",
        old.as_secs_f64() * 1e3,
        old_bytes
    );
    println!(
        "  block checksums   {:>8.1} ms, {:>9} bytes written",
        new.as_secs_f64() * 1e3,
        new_bytes
    );
    println!(
        "  ratio (full / checksums): {:.1}x",
        old.as_secs_f64() / new.as_secs_f64()
    );
}
