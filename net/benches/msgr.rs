//! Messenger benchmark in the spirit of Ceph's perf_msgr: N connections with
//! M requests in flight each, 4 KiB and 1 MiB messages, over loopback TCP.
//! Every case is also run over plain TCP sockets (same sizes, same
//! connection and in-flight shape, an 8-byte ack per message) and the ratio
//! printed. Prints figures; asserts nothing.
//!
//!     cargo bench -p mortar-net --bench msgr
//!     MSGR_BENCH_SECS=5 cargo bench -p mortar-net --bench msgr
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::print_stdout
)] // Raw sockets and wall time are what a benchmark measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{RpcClient, RpcConfig, RpcServer};
use mortar_net::{Addr, Endpoint, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    conns: usize,
    in_flight: usize,
    size: usize,
}

/// Process CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th,
    // stime the 13th (1-based fields 14 and 15 of the whole line).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports these in USER_HZ, which is 100 on every mainstream build.
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Default)]
struct Result_ {
    ops: u64,
    secs: f64,
    cpu: f64,
    lat_ns: Vec<u64>,
    size: usize,
}

impl Result_ {
    fn ops_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn mb_s(&self) -> f64 {
        self.ops as f64 * self.size as f64 / self.secs / 1e6
    }
    fn cpu_us_per_op(&self) -> f64 {
        self.cpu * 1e6 / self.ops.max(1) as f64
    }
    fn pct(&mut self, p: f64) -> Duration {
        if self.lat_ns.is_empty() {
            return Duration::ZERO;
        }
        self.lat_ns.sort_unstable();
        let i = ((self.lat_ns.len() - 1) as f64 * p).round() as usize;
        Duration::from_nanos(self.lat_ns[i])
    }
}

/// Latency samples kept per worker (bounded memory).
const SAMPLES_PER_WORKER_MAX: usize = 200_000;

async fn mortar_case(c: Case, secs: f64) -> Result_ {
    let rt = Runtime::production("bench");
    let cfg = RpcConfig::default();
    let mut s = RpcServer::new(rt.clone(), cfg);
    s.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
    let h = s.listen(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
    let Addr::Inet(sa) = h.local_addr().clone() else {
        unreachable!()
    };
    let payload = Bytes::from(vec![0xa5u8; c.size]);
    let mut workers = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    for _ in 0..c.conns {
        let client = RpcClient::new(&rt, Endpoint::tcp(sa.ip(), sa.port()), cfg);
        client.wait_connected(Duration::from_secs(5)).await.unwrap();
        for _ in 0..c.in_flight {
            let (client, payload) = (client.clone(), payload.clone());
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut ops = 0u64;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    client
                        .call(
                            PROGRAM_ECHO,
                            PROC_SINK,
                            Bytes::new(),
                            payload.clone(),
                            Duration::from_secs(30),
                        )
                        .await
                        .unwrap();
                    if lat.len() < SAMPLES_PER_WORKER_MAX {
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    ops += 1;
                }
                (ops, lat, client)
            }));
        }
    }
    let mut r = Result_ {
        size: c.size,
        ..Default::default()
    };
    for w in workers {
        let (ops, lat, _client) = w.await.unwrap();
        r.ops += ops;
        r.lat_ns.extend(lat);
    }
    r.secs = start.elapsed().as_secs_f64();
    h.shutdown().await;
    r
}

/// Plain TCP: each message is `size` bytes; the server reads it whole and
/// answers with an 8-byte ack. Each in-flight slot is its own pipelined
/// message on the connection, like the messenger's.
/// One connection, one message at a time: write, wait for the ack, repeat.
/// Run on the same single-threaded runtime as the messenger's round-trip
/// case, so both pay the same scheduling and kernel costs and the ratio
/// isolates what the messenger adds.
async fn raw_ping_pong(c: Case, secs: f64) -> Result_ {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sa = l.local_addr().unwrap();
    let size = c.size;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&[0u8; 8]).await.is_err() {
                return;
            }
        }
    });
    let mut s = TcpStream::connect(sa).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = vec![0xa5u8; size];
    let mut ack = [0u8; 8];
    let mut r = Result_ {
        size,
        ..Default::default()
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t0 = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut ack).await.unwrap();
        if r.lat_ns.len() < SAMPLES_PER_WORKER_MAX {
            r.lat_ns.push(t0.elapsed().as_nanos() as u64);
        }
        r.ops += 1;
    }
    r.secs = start.elapsed().as_secs_f64();
    drop(s);
    let _ = server.await;
    r
}

async fn raw_case(c: Case, secs: f64) -> Result_ {
    if c.conns == 1 && c.in_flight == 1 {
        return raw_ping_pong(c, secs).await;
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sa = l.local_addr().unwrap();
    let size = c.size;
    let server = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut buf = vec![0u8; size];
                while r.read_exact(&mut buf).await.is_ok() {
                    if w.write_all(&[0u8; 8]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for _ in 0..c.conns {
        let s = TcpStream::connect(sa).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        let in_flight = c.in_flight;
        // Sender keeps `in_flight` messages outstanding; receiver counts
        // acks and measures each message's round trip.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(in_flight);
        let sender = tokio::spawn(async move {
            let msg = vec![0xa5u8; size];
            while Instant::now() < end {
                let permit = tx.reserve().await.unwrap();
                permit.send(Instant::now());
                if w.write_all(&msg).await.is_err() {
                    break;
                }
            }
            drop(tx);
            w
        });
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ops = 0u64;
            let mut ack = [0u8; 8];
            while let Some(t0) = rx.recv().await {
                r.read_exact(&mut ack).await.unwrap();
                if lat.len() < SAMPLES_PER_WORKER_MAX {
                    lat.push(t0.elapsed().as_nanos() as u64);
                }
                ops += 1;
            }
            let _w = sender.await.unwrap();
            (ops, lat)
        }));
    }
    let mut r = Result_ {
        size: c.size,
        ..Default::default()
    };
    for w in workers {
        let (ops, lat) = w.await.unwrap();
        r.ops += ops;
        r.lat_ns.extend(lat);
    }
    r.secs = start.elapsed().as_secs_f64();
    server.abort();
    r
}

fn row(label: &str, c: &Case, r: &mut Result_) {
    println!(
        "{:<8} {:<22} {:>5} {:>8} {:>8} {:>11.0} {:>9.1} {:>10.1?} {:>10.1?} {:>9.1}",
        label,
        c.name,
        c.conns,
        c.in_flight,
        c.size,
        r.ops_s(),
        r.mb_s(),
        r.pct(0.5),
        r.pct(0.99),
        r.cpu_us_per_op()
    );
}

fn main() {
    let secs: f64 = std::env::var("MSGR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    // Throughput cases use both cores; the round-trip case runs client and
    // server on one thread for both contenders (see raw_ping_pong).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = [
        Case {
            name: "4KiB round trip",
            conns: 1,
            in_flight: 1,
            size: 4 << 10,
        },
        Case {
            name: "4KiB 4 conns x 16",
            conns: 4,
            in_flight: 16,
            size: 4 << 10,
        },
        Case {
            name: "1MiB 1 conn x 4",
            conns: 1,
            in_flight: 4,
            size: 1 << 20,
        },
        Case {
            name: "1MiB 4 conns x 4",
            conns: 4,
            in_flight: 4,
            size: 1 << 20,
        },
    ];
    println!("messenger benchmark: loopback TCP, {secs}s per case; round trip on 1 runtime thread, throughput on 2");
    println!(
        "{:<8} {:<22} {:>5} {:>8} {:>8} {:>11} {:>9} {:>10} {:>10} {:>9}",
        "", "case", "conns", "inflight", "size", "ops/s", "MB/s", "p50", "p99", "cpu us/op"
    );
    let mut summary = Vec::new();
    let only = std::env::var("MSGR_BENCH_ONLY").unwrap_or_default();
    for c in cases.into_iter().filter(|c| c.name.contains(only.as_str())) {
        let rt = if c.conns == 1 && c.in_flight == 1 {
            &single
        } else {
            &multi
        };
        let cpu0 = cpu_secs();
        let mut m = rt.block_on(mortar_case(c, secs));
        let cpu1 = cpu_secs();
        if std::env::var_os("MSGR_BENCH_MORTAR_ONLY").is_some() {
            row("mortar", &c, &mut m);
            continue;
        }
        let mut r = rt.block_on(raw_case(c, secs));
        m.cpu = cpu1 - cpu0;
        r.cpu = cpu_secs() - cpu1;
        row("mortar", &c, &mut m);
        row("raw-tcp", &c, &mut r);
        let thr = m.mb_s() / r.mb_s();
        let p50 = m.pct(0.5).as_secs_f64() / r.pct(0.5).as_secs_f64();
        println!(
            "{:<8} {:<22} throughput {:.2}x of raw, p50 latency {:.2}x of raw, cpu per op {:.2}x of raw",
            "ratio",
            c.name,
            thr,
            p50,
            m.cpu_us_per_op() / r.cpu_us_per_op()
        );
        summary.push((c.name, thr, p50));
    }
    println!();
    for (name, thr, p50) in summary {
        println!(
            "summary: {name}: throughput {:.0}% of raw TCP, p50 round trip {p50:.2}x raw",
            thr * 100.0
        );
    }
}
