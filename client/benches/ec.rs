//! Erasure-coding speed: encode and decode (with `m` fragments missing) in
//! GB/s of file data on one core, for 4 + 2 and 8 + 4, beside a plain copy
//! of the same bytes in the same run (the ratio). Prints figures; asserts
//! nothing.
//!
//!   cargo bench -p mortar-client --bench ec
//!   EC_BENCH_MIB=256 cargo bench -p mortar-client --bench ec
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // Wall time is what a benchmark measures.

use std::hint::black_box;
use std::time::Instant;

use mortar_client::ec::Codec;

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn main() {
    let mib: usize = std::env::var("EC_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rounds = 3;
    println!("ec: {mib} MiB per round, best of {rounds} rounds, one thread");
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "code", "copy GB/s", "encode GB/s", "decode GB/s", "enc/copy", "dec/copy"
    );
    for (k, m) in [(4usize, 2usize), (8, 4)] {
        let c = Codec::new(k, m).expect("codec");
        let len = (mib << 20) / c.stripe() * c.stripe();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (mut copy, mut enc, mut dec) = (f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let t = Instant::now();
            let dup = black_box(data.clone());
            copy = copy.min(t.elapsed().as_secs_f64());
            drop(dup);

            let t = Instant::now();
            let frags = black_box(c.encode(&data).expect("encode"));
            enc = enc.min(t.elapsed().as_secs_f64());

            // Lose m data fragments: the worst case, all rebuilt.
            let avail: Vec<Option<Vec<u8>>> = frags
                .into_iter()
                .enumerate()
                .map(|(i, f)| (i >= m).then_some(f))
                .collect();
            let t = Instant::now();
            let back = black_box(c.decode(&avail).expect("decode"));
            dec = dec.min(t.elapsed().as_secs_f64());
            assert!(back == data, "decode returned other bytes");
        }
        println!(
            "{:<8} {:>12.2} {:>12.2} {:>12.2} {:>10.3} {:>10.3}",
            format!("{k}+{m}"),
            gbps(len, copy),
            gbps(len, enc),
            gbps(len, dec),
            copy / enc,
            copy / dec
        );
    }
    raw_codec();
}

/// The Reed-Solomon kernel alone: preallocated 64 KiB shards encoded and
/// rebuilt over and over (no allocation, no layout copies), so the figure
/// is the codec's own speed per core, in GB/s of data.
fn raw_codec() {
    use reed_solomon_erasure::galois_8::ReedSolomon;
    const SHARD: usize = 64 << 10;
    const ITERS: usize = 400;
    println!("raw codec: {SHARD}-byte shards, {ITERS} iterations");
    for (k, m) in [(4usize, 2usize), (8, 4)] {
        let rs = ReedSolomon::new(k, m).expect("codec");
        let mut shards: Vec<Vec<u8>> = (0..k + m)
            .map(|i| (0..SHARD).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let t = Instant::now();
        for _ in 0..ITERS {
            rs.encode(black_box(&mut shards)).expect("encode");
        }
        let enc = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..ITERS {
            let mut lost: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
            for s in lost.iter_mut().take(m) {
                *s = None;
            }
            rs.reconstruct_data(black_box(&mut lost)).expect("rebuild");
        }
        let dec = t.elapsed().as_secs_f64();
        let data = k * SHARD * ITERS;
        // The alternative: reed-solomon-simd, same shards, reused encoder.
        let mut other = reed_solomon_simd::ReedSolomonEncoder::new(k, m, SHARD).expect("encoder");
        let t = Instant::now();
        for _ in 0..ITERS {
            for s in shards.iter().take(k) {
                other.add_original_shard(s).expect("shard");
            }
            let r = other.encode().expect("encode");
            black_box(r.recovery(0));
        }
        let alt = t.elapsed().as_secs_f64();
        println!(
            "{:<8} encode {:>6.2} GB/s (reed-solomon-simd {:>6.2} GB/s; its time / ours {:.2})   rebuild {m} lost {:>6.2} GB/s (includes cloning the shards)",
            format!("{k}+{m}"),
            gbps(data, enc),
            gbps(data, alt),
            alt / enc,
            gbps(data, dec)
        );
    }
}
