//! The messenger under partitions (both ways and one way), a server process
//! kill in the middle of a call, message delay and loss, then recovery.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{encode_body, RpcClient, RpcConfig, RpcError, RpcServer};
use mortar_net::{Endpoint, Host, HostPort};
use mortar_sim::{host_ip, Sim};

pub const PORT: u16 = 24007;

/// Deliberate non-determinism, for proving the determinism check works.
/// Never used outside that test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    None,
    /// Real wall-clock time read on an OS thread, outside the simulator.
    RealTime,
    /// Bytes from the OS's random device, not from the seed.
    OsRandom,
}

fn planted_delay(plant: Plant) -> Duration {
    #[allow(clippy::disallowed_methods)] // The planted bug under test.
    let raw: u64 = match plant {
        Plant::None => return Duration::ZERO,
        Plant::RealTime => std::thread::spawn(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0)
        })
        .join()
        .unwrap_or(0),
        Plant::OsRandom => {
            use std::io::Read;
            let mut b = [0u8; 8];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut b))
                .expect("read /dev/urandom");
            u64::from_le_bytes(b)
        }
    };
    Duration::from_micros(raw % 1_000_000)
}

/// The randomised part of the scenario, drawn from the seed.
#[derive(Debug, Clone)]
pub struct RpcFaultsConfig {
    pub ping_timeout: Duration,
    pub latency_max: Duration,
    pub loss: f64,
    pub partition_for: Duration,
    pub calls_per_phase: usize,
}

impl RpcFaultsConfig {
    fn draw(sim: &Sim) -> Self {
        sim.with_rng(|r| RpcFaultsConfig {
            ping_timeout: Duration::from_secs(r.range_inclusive(4, 12)),
            latency_max: Duration::from_millis(r.range_inclusive(2, 50)),
            loss: r.below(5) as f64 / 100.0,
            partition_for: Duration::from_secs(r.range_inclusive(1, 20)),
            calls_per_phase: r.range_inclusive(5, 30) as usize,
        })
    }
}

async fn start_server(sim: &Sim) {
    sim.start_process("server", "echo", |rt| async move {
        let echo = EchoService::new();
        let mut s = RpcServer::new(rt.clone(), RpcConfig::default());
        s.register(PROGRAM_ECHO, Arc::new(echo));
        let any = Endpoint::Tcp(HostPort::new(
            Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            PORT,
        ));
        let _h = s.listen(&any).await.expect("server binds its port");
        std::future::pending::<()>().await;
    });
}

async fn echo_ok(sim: &Sim, c: &RpcClient, n: usize, tag: &str) {
    for i in 0..n {
        let size = sim.with_rng(|r| r.below(64 << 10) as usize);
        let payload = Bytes::from(vec![(i % 251) as u8; size]);
        let body = Bytes::from(format!("{tag}-{i}"));
        let r = c
            .call(
                PROGRAM_ECHO,
                PROC_ECHO,
                body.clone(),
                payload.clone(),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("{tag} call {i} failed: {e}"));
        assert_eq!(r.body, body, "{tag}: wrong reply body");
        assert_eq!(r.payload, payload, "{tag}: payload corrupted");
    }
    sim.note(format!("{tag}: {n} calls ok"));
}

async fn wait_generation(c: &RpcClient, at_least: u64, within: Duration) {
    let rx = c.subscribe();
    let clock = mortar_net::Clock::new();
    clock
        .timeout(within, rx.wait_for(|s| s.up && s.generation >= at_least))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "client did not reconnect (generation {at_least}) within {within:?}: {:?}",
                c.link_state()
            )
        });
}

async fn wait_down(c: &RpcClient, within: Duration) {
    let rx = c.subscribe();
    let clock = mortar_net::Clock::new();
    clock
        .timeout(within, rx.wait_for(|s| !s.up))
        .await
        .unwrap_or_else(|_| panic!("connection not declared dead within {within:?}"));
}

/// Partitions, a process kill mid-call and a one-way partition; after each
/// fault the client must fail calls cleanly (deadline or ENOTCONN, never a
/// hang) and then reconnect and succeed once the fault is repaired.
pub async fn rpc_faults(sim: Sim, plant: Plant) {
    let cfg = RpcFaultsConfig::draw(&sim);
    eprintln!("sim: rpc_faults config: {cfg:?}");
    sim.note(format!("config {cfg:?}"));
    sim.add_host("server", host_ip(1));
    sim.add_host("client", host_ip(2));
    sim.set_latency(Duration::from_millis(1), cfg.latency_max);
    sim.set_loss(cfg.loss);
    start_server(&sim).await;

    let rpc_cfg = RpcConfig {
        reconnect_backoff_min: Duration::from_millis(50),
        reconnect_backoff_max: Duration::from_secs(2),
        ..RpcConfig::with_ping_timeout(cfg.ping_timeout)
    };
    let server: Endpoint = format!("server:{PORT}").parse().expect("endpoint");
    let c = sim
        .run_on("client", "rpc-client", move |rt| async move {
            RpcClient::new(&rt, server, rpc_cfg)
        })
        .await;
    c.wait_connected(Duration::from_secs(30))
        .await
        .expect("initial connect");
    echo_ok(&sim, &c, cfg.calls_per_phase, "healthy").await;

    let extra = planted_delay(plant);
    if !extra.is_zero() {
        sim.sleep(extra).await;
    }

    // Phase 1: symmetric partition. A call must end by its deadline or by
    // the ping timeout, whichever first; then the link is declared dead.
    sim.partition(&["client"], &["server"]);
    let t0 = mortar_net::Clock::new().now();
    let e = c
        .call(
            PROGRAM_ECHO,
            PROC_ECHO,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(3),
        )
        .await
        .expect_err("call across a partition must fail");
    assert!(
        matches!(e, RpcError::Timeout { .. } | RpcError::NotConnected { .. }),
        "{e}"
    );
    assert!(t0.elapsed() <= Duration::from_secs(3) + Duration::from_millis(1));
    wait_down(&c, cfg.ping_timeout + Duration::from_secs(1)).await;
    sim.note(format!(
        "partition: call failed with {e}; link declared dead"
    ));
    let e = c
        .call(
            PROGRAM_ECHO,
            PROC_ECHO,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(30),
        )
        .await
        .expect_err("no connection");
    assert!(
        matches!(e, RpcError::NotConnected { .. }),
        "fail fast while down: {e}"
    );
    sim.sleep(cfg.partition_for).await;
    sim.repair();
    wait_generation(&c, 2, Duration::from_secs(30)).await;
    echo_ok(&sim, &c, cfg.calls_per_phase, "after-partition").await;

    // Phase 2: the server process dies while a call runs on it.
    let long = {
        let c = c.clone();
        let body = encode_body(&30_000u64).expect("encode");
        tokio::spawn(async move {
            c.call(
                PROGRAM_ECHO,
                PROC_SLEEP,
                body,
                Bytes::new(),
                Duration::from_secs(60),
            )
            .await
        })
    };
    sim.sleep(Duration::from_secs(1)).await;
    sim.kill_process("server", "echo");
    let t0 = mortar_net::Clock::new().now();
    let e = long
        .await
        .expect("task")
        .expect_err("call on a killed server must fail");
    assert!(matches!(e, RpcError::NotConnected { .. }), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "ENOTCONN took {:?}",
        t0.elapsed()
    );
    sim.note(format!("server killed: pending call failed with {e}"));
    sim.restart_process("server", "echo");
    wait_generation(&c, 3, Duration::from_secs(30)).await;
    echo_ok(&sim, &c, cfg.calls_per_phase, "after-restart").await;

    // Phase 3: one-way partition client -> server. Replies could flow but
    // requests and pings cannot: both sides must give up on the connection
    // within the ping timeout, and recover after repair.
    sim.partition_oneway(&["client"], &["server"]);
    wait_down(&c, cfg.ping_timeout + Duration::from_secs(1)).await;
    sim.note("one-way partition: link declared dead");
    sim.repair();
    wait_generation(&c, 4, Duration::from_secs(30)).await;
    echo_ok(&sim, &c, cfg.calls_per_phase, "after-oneway").await;
    c.close();
}
