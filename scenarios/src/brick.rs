//! A brick on a simulated disk, with clients that hold locks and die: by
//! process kill, by silent partition, by host crash. Whatever the way, a
//! waiting client must get the lock within the ping timeout. Then the
//! brick's own host crashes: fsynced data must come back after restart.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_client::remote::RemoteBrick;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::{Clock, Endpoint, Host, HostPort};
use mortar_node::brick::BrickConfig;
use mortar_node::server::{start_brick, BrickServerConfig};
use mortar_node::service::AuthRules;
use mortar_proto::brick::{self as bp, LockKind, NewObject};
use mortar_proto::{Errno, Gfid};
use mortar_sim::{host_ip, Sim};
use mortar_storage::sim::SimDisk;

const PORT: u16 = 49152;
const VOLUME: &str = "vol-sim";

fn rpc_config(ping: Duration) -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min: Duration::from_millis(50),
        reconnect_backoff_max: Duration::from_secs(1),
        ..RpcConfig::with_ping_timeout(ping)
    }
}

fn start_brick_process(sim: &Sim, disk: Arc<SimDisk>, ping: Duration) {
    sim.start_process("server", "brick", move |rt| {
        let disk = disk.clone();
        async move {
            let cfg = BrickServerConfig {
                brick: BrickConfig::new(VOLUME),
                brick_path: "/bricks/b1".into(),
                listen: Endpoint::Tcp(HostPort::new(
                    Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                    PORT,
                )),
                mgmt: None,
                auth: AuthRules::default(),
                rpc: rpc_config(ping),
            };
            let storage = disk
                .storage("bricks/b1")
                .expect("brick directory on the simulated disk");
            let _running = start_brick(&rt, storage, cfg).await.expect("brick starts");
            std::future::pending::<()>().await;
        }
    });
}

/// A connected, handshaken client running as a process on `host`.
async fn client(sim: &Sim, host: &str, process: &str, ping: Duration) -> RemoteBrick {
    let name = format!("{host}/{process}");
    let r = sim
        .run_on(host, process, move |rt| async move {
            let ep: Endpoint = format!("server:{PORT}").parse().expect("endpoint");
            RemoteBrick::new(RpcClient::new(&rt, ep, rpc_config(ping)))
        })
        .await;
    handshake(&r, &name).await;
    r
}

async fn handshake(r: &RemoteBrick, name: &str) {
    r.rpc
        .wait_connected(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot reach the brick: {e}"));
    r.connect(VOLUME, "", name, name, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{name}: connect refused: {e}"));
}

fn lock(kind: LockKind, wait_ms: Option<u64>) -> bp::Inodelk {
    bp::Inodelk {
        gfid: Gfid::ROOT,
        domain: "afr".into(),
        kind,
        start: 0,
        len: 0,
        owner: 7,
        wait_ms,
    }
}

const T: Duration = Duration::from_secs(10);

/// `c1` holds the lock, `c2` waits for it while `kill` makes `c1` vanish;
/// returns how long after the kill `c2` got the lock.
async fn lock_outlives_owner_by(
    sim: &Sim,
    c1: &RemoteBrick,
    c2: &RemoteBrick,
    how: &str,
    kill: impl FnOnce(),
) -> Duration {
    c1.call(&lock(LockKind::Write, None), T)
        .await
        .expect("c1 takes the lock");
    let e = c2
        .call(&lock(LockKind::Write, None), T)
        .await
        .expect_err("c2 must not get a held lock");
    assert_eq!(e.errno, Errno::EAGAIN, "{e}");
    let waiter = {
        let c2 = c2.clone();
        tokio::spawn(async move {
            c2.call(
                &lock(LockKind::Write, Some(300_000)),
                Duration::from_secs(310),
            )
            .await
        })
    };
    sim.sleep(Duration::from_millis(500)).await;
    let t0 = Clock::new().now();
    kill();
    waiter
        .await
        .expect("waiter task")
        .unwrap_or_else(|e| panic!("{how}: c2 never got the lock: {e}"));
    let waited = t0.elapsed();
    sim.note(format!(
        "{how}: lock released {waited:?} after the owner vanished"
    ));
    eprintln!("sim: brick_locks: {how}: lock released {waited:?} after its owner vanished");
    c2.call(&lock(LockKind::Unlock, None), T)
        .await
        .expect("c2 unlocks");
    waited
}

pub async fn brick_locks(sim: Sim) {
    let ping = Duration::from_secs(sim.with_rng(|r| r.range_inclusive(4, 20)));
    eprintln!("sim: brick_locks config: ping-timeout {ping:?}");
    sim.note(format!("ping-timeout {ping:?}"));
    for (i, h) in ["server", "c1", "c2"].iter().enumerate() {
        sim.add_host(h, host_ip(i as u8 + 1));
    }
    let disk = SimDisk::new(sim.seed());
    sim.attach_disk("server", disk.clone(), |d: &SimDisk, rng| d.crash(rng));
    start_brick_process(&sim, disk, ping);
    let c2 = client(&sim, "c2", "waiter", ping).await;

    // A killed client process: its sockets close, the lock goes at once.
    let c1 = client(&sim, "c1", "holder-1", ping).await;
    let s = sim.clone();
    let waited = lock_outlives_owner_by(&sim, &c1, &c2, "process kill", || {
        s.kill_process("c1", "holder-1")
    })
    .await;
    assert!(
        waited < Duration::from_secs(1),
        "process kill: lock held {waited:?}"
    );

    // A silent client (partitioned away): nothing closes; the brick must
    // declare it dead by the ping timeout and drop its lock.
    let c1 = client(&sim, "c1", "holder-2", ping).await;
    let s = sim.clone();
    let waited = lock_outlives_owner_by(&sim, &c1, &c2, "partition", || {
        s.partition(&["c1"], &["server"])
    })
    .await;
    assert!(
        waited <= ping + Duration::from_secs(1),
        "partition: lock outlived its owner by {waited:?} (ping-timeout {ping:?})"
    );
    assert!(
        waited >= ping * 3 / 4 - Duration::from_secs(1),
        "partition: released after {waited:?}, before the ping timeout could have fired"
    );
    sim.repair();
    c1.rpc.close();

    // A crashed client host.
    let c1 = client(&sim, "c1", "holder-3", ping).await;
    let s = sim.clone();
    let waited = lock_outlives_owner_by(&sim, &c1, &c2, "host crash", || s.crash_host("c1")).await;
    assert!(
        waited <= ping + Duration::from_secs(1),
        "host crash: lock outlived its owner by {waited:?}"
    );
    sim.restart_host("c1");

    // The brick's host crashes: fsynced data survives, the brick comes
    // back on restart, and old locks are gone.
    let g = Gfid::from_u128(0xfeed);
    c2.call(
        &bp::Create {
            parent: Gfid::ROOT,
            name: "durable".into(),
            new: NewObject {
                gfid: g,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        },
        T,
    )
    .await
    .expect("create");
    let data = Bytes::from(vec![0x5a; 100_000]);
    c2.write(&bp::Write { gfid: g, offset: 0 }, data.clone(), T)
        .await
        .expect("write");
    c2.call(
        &bp::Fsync {
            gfid: g,
            datasync: false,
        },
        T,
    )
    .await
    .expect("fsync");
    c2.call(&lock(LockKind::Write, None), T)
        .await
        .expect("lock before crash");
    let generation = c2.rpc.link_state().generation;
    sim.crash_host("server");
    sim.sleep(Duration::from_secs(2)).await;
    sim.restart_host("server");
    let rx = c2.rpc.subscribe();
    Clock::new()
        .timeout(
            Duration::from_secs(60),
            rx.wait_for(|s| s.up && s.generation > generation),
        )
        .await
        .expect("c2 reconnects to the restarted brick");
    handshake(&c2, "c2/waiter").await;
    let back = c2
        .read(
            &bp::Read {
                gfid: g,
                offset: 0,
                len: 200_000,
            },
            T,
        )
        .await
        .expect("read after crash");
    assert_eq!(back, data, "fsynced data changed across a host crash");
    assert!(
        c2.call(&bp::LockDump {}, T).await.expect("dump").is_empty(),
        "locks survived a brick restart"
    );
    sim.note("brick host crash: fsynced data intact, locks cleared");
    c2.rpc.close();
}
