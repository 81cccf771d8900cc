//! Where the time of healing many small files goes: replica 3 over three
//! real bricks on loopback, one directory of `FILES` files of 4 KiB made
//! while the third brick was down, then one index crawl (default
//! `cluster.shd-max-threads`) over every brick's index, as one self-heal
//! daemon serving all three bricks would run it. Prints the crawl's time
//! and, per brick, the requests heal sent by kind and per file: the
//! figures to compare before and after a change to the heal path.
//! Asserts only that the crawl healed everything.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/main/target cargo run --release -p mortar-heal --example small_files_heal
//! ```
#![allow(clippy::disallowed_methods)] // Loopback bricks and wall time.
#![allow(clippy::print_stdout)] // A bench prints its figures.

#[path = "../../client/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::Bricks;
use mortar_client::afr::Quorum;
use mortar_client::fop::{Child, Fop, FopOut, FopResult, Subvolume};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::replicate::Replicate;
use mortar_heal::crawl::{heal_graph, CrawlLimits};
use mortar_net::{BoxFuture, Clock};
use mortar_proto::brick::{self as bp, NewObject};
use mortar_proto::{options, Gfid};

const FILES: u128 = 500;

/// A brick's child counting the requests sent to it, by kind.
struct Tally {
    inner: Child,
    sent: Mutex<BTreeMap<String, u64>>,
}

impl Subvolume for Tally {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_up(&self) -> bool {
        self.inner.is_up()
    }
    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
        // Debug of a write would print its data.
        let text = match &op {
            Fop::Write(..) => "Write".to_string(),
            Fop::CreateWhole(..) => "CreateWhole".to_string(),
            _ => format!("{op:?}"),
        };
        let mut kind = text
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("?")
            .to_string();
        if let Fop::Inodelk(q) = &op {
            kind = format!(
                "{kind}:{}:{:?}",
                q.domain.rsplit(':').next().unwrap_or(""),
                q.kind
            );
        }
        if let Fop::Getxattr(q) = &op {
            kind = format!("{kind}:{}", q.name);
        }
        *self.sent.lock().unwrap().entry(kind).or_default() += 1;
        self.inner.fop(op)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let vol = "vol-small-heal";
    let mut b = Bricks::start(vol, 3).await;
    let tallies: Vec<Arc<Tally>> = b
        .children()
        .into_iter()
        .map(|inner| {
            Arc::new(Tally {
                inner,
                sent: Mutex::default(),
            })
        })
        .collect();
    let children: Vec<Child> = tallies.iter().map(|t| t.clone() as Child).collect();
    let r = Arc::new(Replicate::new(
        &b.rt,
        &format!("{vol}-replicate-0"),
        children,
        Quorum::Auto,
        false,
    ));
    let new = |g: u128, mode: u32| NewObject {
        gfid: Gfid::from_u128(g),
        mode,
        uid: 0,
        gid: 0,
    };
    let d = bp::Mkdir {
        parent: Gfid::ROOT,
        name: "d".into(),
        new: new(0xd, 0o755),
    };
    r.fop(Fop::Mkdir(d)).await.unwrap();
    b.kill(2).await;
    let made = Clock::new().now();
    for i in 0..FILES {
        let g = 0x1000 + i;
        let c = bp::Create {
            parent: Gfid::from_u128(0xd),
            name: format!("f{i}"),
            new: new(g, 0o644),
        };
        r.fop(Fop::Create(c)).await.unwrap();
        let w = bp::Write {
            gfid: Gfid::from_u128(g),
            offset: 0,
        };
        r.fop(Fop::Write(w, Bytes::from(vec![i as u8 | 1; 4096])))
            .await
            .unwrap();
    }
    println!(
        "{FILES} files of 4 KiB made with brick 3 down in {:.2} s",
        made.elapsed().as_secs_f64()
    );
    b.revive(2).await;
    for t in &tallies {
        t.sent.lock().unwrap().clear();
    }
    let g = Arc::new(VolumeGraph {
        top: b.children()[0].clone(),
        clients: b.clients.clone(),
        distribute: None,
        heal_sets: vec![(SetLayer::Replicate(r.clone()), vec![0, 1, 2])],
    });
    let limits = CrawlLimits {
        files_max: 10_000,
        threads: options::get_u64(&Default::default(), options::SHD_MAX_THREADS) as usize,
        favorite_child: Default::default(),
        deferred_for: std::time::Duration::ZERO,
    };
    let (t, cpu) = (Clock::new().now(), cpu_s());
    let sum = heal_graph(&b.rt, &g, &|_| true, limits).await;
    let (took, cpu) = (t.elapsed(), cpu_s() - cpu);
    assert_eq!(
        (sum.skipped, sum.split_brain, sum.busy),
        (0, 0, 0),
        "{sum:?}"
    );
    println!(
        "one crawl healed {} index entries in {:.3} s, using {cpu:.2} s of CPU ({:.2} cores busy)",
        sum.healed,
        took.as_secs_f64(),
        cpu / took.as_secs_f64()
    );
    for (i, t) in tallies.iter().enumerate() {
        let sent = t.sent.lock().unwrap();
        let total: u64 = sent.values().sum();
        println!(
            "brick {}: {total} requests, {:.1} per file",
            i + 1,
            total as f64 / FILES as f64
        );
        for (k, n) in sent.iter() {
            println!("  {k:<14} {n:>6} ({:.2}/file)", *n as f64 / FILES as f64);
        }
    }
}

/// CPU time (user and system) this process has used so far, in seconds,
/// from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}
