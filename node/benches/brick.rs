//! Brick benchmark: file operations through the messenger on loopback,
//! against the same operations done directly on the filesystem in the same
//! run, as a ratio. Prints figures; asserts nothing.
//!
//!     cargo bench -p mortar-node --bench brick
//!     BRICK_BENCH_SCALE=4 cargo bench -p mortar-node --bench brick
//!     BRICK_BENCH_CYCLES_ONLY=1 cargo bench -p mortar-node --bench brick
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // Wall time is what a benchmark measures.

use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mortar_client::remote::RemoteBrick;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::{Addr, Endpoint, Runtime};
use mortar_node::brick::BrickConfig;
use mortar_node::server::{start_brick, BrickServerConfig};
use mortar_node::service::AuthRules;
use mortar_proto::brick::xattr as xa;
use mortar_proto::brick::{self as bp, CounterDelta, NewObject, XattrFlags};
use mortar_proto::Gfid;
use mortar_storage::posix::PosixStorage;
use mortar_storage::{BrickPath, Storage};

const T: Duration = Duration::from_secs(60);
/// Requests a brick client keeps in flight.
fn in_flight() -> usize {
    std::env::var("BRICK_BENCH_INFLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mortar-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gfid(i: usize) -> Gfid {
    Gfid::from_u128(0x10_0000 + i as u128)
}

fn new_obj(i: usize) -> NewObject {
    NewObject {
        gfid: gfid(i),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

struct Figures {
    create: f64,
    write4k: f64,
    stat: f64,
    unlink: f64,
    mb_s: f64,
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Run `n` operations with `IN_FLIGHT` of them outstanding.
async fn parallel<F, Fut>(n: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let inflight = in_flight();
    for w in 0..inflight {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                op(i).await;
                i += inflight;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

async fn brick_case(fsync_namespace: bool, files: usize, writes: usize, mib: usize) -> Figures {
    let dir = scratch(if fsync_namespace {
        "brick-sync"
    } else {
        "brick"
    });
    let rt = Runtime::production("bench");
    let mut bc = BrickConfig::new("bench");
    bc.fsync_namespace = fsync_namespace;
    let cfg = BrickServerConfig {
        brick: bc,
        brick_path: dir.display().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mgmt: None,
        auth: AuthRules::default(),
        rpc: RpcConfig::default(),
    };
    let b = start_brick(&rt, PosixStorage::open(&dir).unwrap(), cfg)
        .await
        .unwrap();
    let Addr::Inet(sa) = b.local.clone() else {
        unreachable!()
    };
    let rpc = RpcClient::new(&rt, Endpoint::tcp(sa.ip(), sa.port()), RpcConfig::default());
    rpc.wait_connected(T).await.unwrap();
    let c = RemoteBrick::new(rpc);
    c.connect("bench", "", "bench", "bench", T).await.unwrap();
    let c = Arc::new(c);

    let cc = c.clone();
    let create = parallel(files, move |i| {
        let c = cc.clone();
        async move {
            let q = bp::Create {
                parent: Gfid::ROOT,
                name: format!("f{i}"),
                new: new_obj(i),
            };
            c.call(&q, T).await.unwrap();
        }
    })
    .await;
    let page = Bytes::from(vec![7u8; 4096]);
    let cc = c.clone();
    let write4k = parallel(writes, move |i| {
        let (c, page) = (cc.clone(), page.clone());
        async move {
            let q = bp::Write {
                gfid: gfid(i % files),
                offset: ((i / files) * 4096) as u64,
            };
            c.write(&q, page, T).await.unwrap();
        }
    })
    .await;
    let cc = c.clone();
    let stat = parallel(writes, move |i| {
        let c = cc.clone();
        async move {
            c.call(
                &bp::Stat {
                    gfid: gfid(i % files),
                },
                T,
            )
            .await
            .unwrap();
        }
    })
    .await;
    let big_obj = new_obj(9_999_999);
    let q = bp::Create {
        parent: Gfid::ROOT,
        name: "big".into(),
        new: big_obj,
    };
    c.call(&q, T).await.unwrap();
    let chunk = Bytes::from(vec![9u8; 1 << 20]);
    let cc = c.clone();
    let big = parallel(mib, move |i| {
        let (c, chunk) = (cc.clone(), chunk.clone());
        async move {
            let q = bp::Write {
                gfid: big_obj.gfid,
                offset: (i as u64) << 20,
            };
            c.write(&q, chunk, T).await.unwrap();
        }
    })
    .await;
    let cc = c.clone();
    let unlink = parallel(files, move |i| {
        let c = cc.clone();
        async move {
            let q = bp::Unlink {
                parent: Gfid::ROOT,
                name: format!("f{i}"),
            };
            c.call(&q, T).await.unwrap();
        }
    })
    .await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        create: rate(files, create),
        write4k: rate(writes, write4k),
        stat: rate(writes, stat),
        unlink: rate(files, unlink),
        mb_s: rate(mib, big) * 1.048576,
    }
}

/// The changelog a replicated 4 KiB write brings to one brick: a durable
/// pre-op (dirty +1, blame keys read), the write, a clean post-op (dirty
/// -1, data synced first). Each request waits for the one before, as the
/// client's transaction does; `files` files each take their own stream of
/// cycles, `IN_FLIGHT` at once.
fn pre_op(g: Gfid) -> bp::Xattrop {
    bp::Xattrop {
        gfid: g,
        deltas: vec![
            (xa::DIRTY.into(), CounterDelta::Add32(vec![1, 0, 0])),
            (
                xa::changelog_key("bench-client-1"),
                CounterDelta::Add32(vec![0; 3]),
            ),
            (
                xa::changelog_key("bench-client-2"),
                CounterDelta::Add32(vec![0; 3]),
            ),
        ],
        durable: true,
    }
}

fn post_op(g: Gfid) -> bp::Xattrop {
    bp::Xattrop {
        gfid: g,
        deltas: vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![-1, 0, 0]))],
        durable: false,
    }
}

async fn brick_cycles(cycles: usize) -> f64 {
    let dir = scratch("brick-cycles");
    let rt = Runtime::production("bench");
    let cfg = BrickServerConfig {
        brick: BrickConfig::new("bench"),
        brick_path: dir.display().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mgmt: None,
        auth: AuthRules::default(),
        rpc: RpcConfig::default(),
    };
    let b = start_brick(&rt, PosixStorage::open(&dir).unwrap(), cfg)
        .await
        .unwrap();
    let Addr::Inet(sa) = b.local.clone() else {
        unreachable!()
    };
    let rpc = RpcClient::new(&rt, Endpoint::tcp(sa.ip(), sa.port()), RpcConfig::default());
    rpc.wait_connected(T).await.unwrap();
    let c = RemoteBrick::new(rpc);
    c.connect("bench", "", "bench", "bench", T).await.unwrap();
    let c = Arc::new(c);
    let files = in_flight();
    for i in 0..files {
        let q = bp::Create {
            parent: Gfid::ROOT,
            name: format!("f{i}"),
            new: new_obj(i),
        };
        c.call(&q, T).await.unwrap();
    }
    let page = Bytes::from(vec![7u8; 4096]);
    let cc = c.clone();
    let took = parallel(cycles, move |i| {
        let (c, page) = (cc.clone(), page.clone());
        async move {
            let g = gfid(i % files);
            c.call(&pre_op(g), T).await.unwrap();
            let q = bp::Write {
                gfid: g,
                offset: ((i / files) * 4096) as u64,
            };
            c.write(&q, page, T).await.unwrap();
            c.call(&post_op(g), T).await.unwrap();
        }
    })
    .await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    rate(cycles, took)
}

/// The least a crash-safe changelog asks of the disk for the same cycle,
/// straight on the storage layer, one thread: the dirty mark written and
/// synced, the data written, the data synced, the mark cleared.
fn direct_cycles(cycles: usize) -> f64 {
    let dir = scratch("direct-cycles");
    let st = PosixStorage::open(&dir).unwrap();
    let files = in_flight();
    let paths: Vec<BrickPath> = (0..files)
        .map(|i| BrickPath::new(&format!("f{i}")).unwrap())
        .collect();
    for p in &paths {
        st.create(p, 0o644).unwrap();
    }
    let page = vec![7u8; 4096];
    let t0 = Instant::now();
    for i in 0..cycles {
        let p = &paths[i % files];
        st.setxattr(p, xa::DIRTY, &[0, 0, 0, 1], XattrFlags::Any)
            .unwrap();
        st.fsync(p, false).unwrap();
        st.write(p, ((i / files) * 4096) as u64, &page).unwrap();
        st.fsync(p, true).unwrap();
        st.setxattr(p, xa::DIRTY, &[0, 0, 0, 0], XattrFlags::Any)
            .unwrap();
    }
    let took = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    rate(cycles, took)
}

fn sync_dir(d: &Path) {
    std::fs::File::open(d).unwrap().sync_all().unwrap();
}

/// The same operations with plain syscalls on one thread.
fn direct_case(fsync_namespace: bool, files: usize, writes: usize, mib: usize) -> Figures {
    let dir = scratch(if fsync_namespace {
        "direct-sync"
    } else {
        "direct"
    });
    let t0 = Instant::now();
    for i in 0..files {
        std::fs::File::create_new(dir.join(format!("f{i}"))).unwrap();
        if fsync_namespace {
            sync_dir(&dir);
        }
    }
    let create = t0.elapsed();
    let handles: Vec<std::fs::File> = (0..files)
        .map(|i| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(format!("f{i}")))
                .unwrap()
        })
        .collect();
    let page = vec![7u8; 4096];
    let t0 = Instant::now();
    for i in 0..writes {
        handles[i % files]
            .write_all_at(&page, ((i / files) * 4096) as u64)
            .unwrap();
    }
    let write4k = t0.elapsed();
    drop(handles);
    let t0 = Instant::now();
    for i in 0..writes {
        std::fs::symlink_metadata(dir.join(format!("f{}", i % files))).unwrap();
    }
    let stat = t0.elapsed();
    let mut f = std::fs::File::create(dir.join("big")).unwrap();
    let chunk = vec![9u8; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
    let big = t0.elapsed();
    drop(f);
    let t0 = Instant::now();
    for i in 0..files {
        std::fs::remove_file(dir.join(format!("f{i}"))).unwrap();
        if fsync_namespace {
            sync_dir(&dir);
        }
    }
    let unlink = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        create: rate(files, create),
        write4k: rate(writes, write4k),
        stat: rate(writes, stat),
        unlink: rate(files, unlink),
        mb_s: rate(mib, big) * 1.048576,
    }
}

/// Write and delete `mib` MiB once before measuring. On this machine (a
/// VM) the first page-cache pages a process dirties cost ~15x more than
/// reused ones (measured: 437 MB/s for the first 256 MiB, then ~6000 MB/s),
/// so whichever case ran first would pay for it.
fn warm_page_cache(mib: usize) {
    let dir = scratch("warm");
    let f = std::fs::File::create(dir.join("w")).unwrap();
    let chunk = vec![1u8; 1 << 20];
    for i in 0..mib {
        f.write_all_at(&chunk, (i as u64) << 20).unwrap();
    }
    drop(f);
    let _ = std::fs::remove_dir_all(&dir);
}

fn row(label: &str, f: &Figures) {
    println!(
        "{label:<36} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
        f.create, f.write4k, f.stat, f.unlink, f.mb_s
    );
}

fn ratio(label: &str, a: &Figures, b: &Figures) {
    println!(
        "{label:<36} {:>9.2}x {:>9.2}x {:>9.2}x {:>9.2}x {:>9.2}x",
        a.create / b.create,
        a.write4k / b.write4k,
        a.stat / b.stat,
        a.unlink / b.unlink,
        a.mb_s / b.mb_s
    );
}

fn main() {
    let scale: usize = std::env::var("BRICK_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (files, writes, mib) = (1000 * scale, 10_000 * scale, 256 * scale);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("brick benchmark: {files} files, {writes} 4 KiB writes and stats, {mib} MiB in 1 MiB writes");
    println!("brick = messenger on loopback + POSIX brick, {} requests in flight; direct = syscalls on one thread", in_flight());
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "create/s", "write4k/s", "stat/s", "unlink/s", "1MiB MB/s"
    );
    // Durable namespace changes cost a directory fsync each, so that
    // comparison uses fewer files.
    warm_page_cache(2 * mib);
    if std::env::var_os("BRICK_BENCH_BIG_ONLY").is_some() {
        let f = rt.block_on(brick_case(false, 1, 1, mib));
        println!("brick 1 MiB writes only: {:.0} MB/s", f.mb_s);
        return;
    }
    let cycles = 2000 * scale;
    let cycle_row = || {
        let brick = rt.block_on(brick_cycles(cycles));
        let direct = direct_cycles(cycles);
        println!(
            "replicated 4 KiB write on one brick (pre-op, write, post-op), {cycles} cycles: \
             brick {brick:.0}/s, storage floor {direct:.0}/s, ratio {:.2}x",
            brick / direct
        );
    };
    if std::env::var_os("BRICK_BENCH_CYCLES_ONLY").is_some() {
        cycle_row();
        return;
    }
    let quick = (files / 4).max(100);
    let brick_sync = rt.block_on(brick_case(true, quick, writes, mib));
    let direct_sync = direct_case(true, quick, writes, mib);
    let brick_plain = rt.block_on(brick_case(false, files, writes, mib));
    let direct_plain = direct_case(false, files, writes, mib);
    row("brick, namespace fsync (default)", &brick_sync);
    row("direct, fsync dir after create/rm", &direct_sync);
    ratio("ratio brick/direct (durable)", &brick_sync, &direct_sync);
    row("brick, --no-fsync-namespace", &brick_plain);
    row("direct, no fsync", &direct_plain);
    ratio("ratio brick/direct (no fsync)", &brick_plain, &direct_plain);
    cycle_row();
}
