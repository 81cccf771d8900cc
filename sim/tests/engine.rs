//! The simulator's own faults: process kill vs host crash, the disk slot,
//! one-way partitions, DNS faults and latency.
#![cfg(madsim)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::resolve::SimAnswer;
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{RpcClient, RpcConfig, RpcServer};
use mortar_net::{Clock, Endpoint, Host, HostPort};
use mortar_sim::{host_ip, Sim};

fn cfg() -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min: Duration::from_millis(50),
        reconnect_backoff_max: Duration::from_secs(1),
        ..RpcConfig::with_ping_timeout(Duration::from_secs(4))
    }
}

fn any(port: u16) -> Endpoint {
    Endpoint::Tcp(HostPort::new(
        Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        port,
    ))
}

fn echo_server(sim: &Sim, host: &str, process: &str, port: u16) {
    sim.start_process(host, process, move |rt| async move {
        let mut s = RpcServer::new(rt.clone(), cfg());
        s.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
        let _h = s.listen(&any(port)).await.expect("bind");
        std::future::pending::<()>().await;
    });
}

async fn client(sim: &Sim, host: &str, name: &str, ep: &str) -> RpcClient {
    let ep: Endpoint = ep.parse().unwrap();
    sim.run_on(host, name, move |rt| async move {
        RpcClient::new(&rt, ep, cfg())
    })
    .await
}

async fn echo(c: &RpcClient) -> Result<(), mortar_net::rpc::RpcError> {
    c.call(
        PROGRAM_ECHO,
        PROC_ECHO,
        Bytes::from_static(b"x"),
        Bytes::new(),
        Duration::from_secs(5),
    )
    .await
    .map(|_| ())
}

async fn up(c: &RpcClient, generation: u64) {
    Clock::new()
        .timeout(
            Duration::from_secs(30),
            c.subscribe()
                .wait_for(|s| s.up && s.generation >= generation),
        )
        .await
        .unwrap_or_else(|_| panic!("not up at generation {generation}: {:?}", c.link_state()));
}

async fn down(c: &RpcClient, within: Duration) {
    Clock::new()
        .timeout(within, c.subscribe().wait_for(|s| !s.up))
        .await
        .unwrap_or_else(|_| panic!("still up after {within:?}"));
}

#[madsim::test]
async fn killing_one_process_spares_the_host_and_its_other_processes() {
    let sim = Sim::new("killing_one_process_spares_the_host_and_its_other_processes");
    let _tail = mortar_sim::tail_on_panic(&sim);
    sim.add_host("a", host_ip(1));
    sim.add_host("b", host_ip(2));
    echo_server(&sim, "a", "one", 1000);
    echo_server(&sim, "a", "two", 2000);
    let c1 = client(&sim, "b", "c1", "a:1000").await;
    let c2 = client(&sim, "b", "c2", "a:2000").await;
    up(&c1, 1).await;
    up(&c2, 1).await;
    sim.kill_process("a", "one");
    assert!(!sim.process_running("a", "one"));
    assert!(sim.process_running("a", "two"));
    down(&c1, Duration::from_secs(1)).await;
    echo(&c2)
        .await
        .expect("the other process must be unaffected");
    assert_eq!(c2.link_state().generation, 1);
    // The port is free again: the restarted process binds it.
    sim.restart_process("a", "one");
    up(&c1, 2).await;
    echo(&c1).await.unwrap();
    sim.finish();
}

/// A toy disk: what a crash does to it is up to the storage backend; here
/// everything not synced is lost.
#[derive(Default)]
struct ToyDisk {
    synced: Mutex<Vec<u8>>,
    unsynced: Mutex<Vec<u8>>,
}

#[madsim::test]
async fn host_crash_loses_unsynced_data_and_restart_brings_processes_back() {
    let sim = Sim::new("host_crash_loses_unsynced_data_and_restart_brings_processes_back");
    let _tail = mortar_sim::tail_on_panic(&sim);
    sim.add_host("a", host_ip(1));
    sim.add_host("b", host_ip(2));
    sim.attach_disk("a", Arc::new(ToyDisk::default()), |d: &ToyDisk, _rng| {
        d.unsynced.lock().unwrap().clear();
    });
    echo_server(&sim, "a", "server", 1000);
    let c = client(&sim, "b", "c", "a:1000").await;
    up(&c, 1).await;

    let disk = sim.disk::<ToyDisk>("a").expect("disk attached");
    disk.synced.lock().unwrap().extend_from_slice(b"durable");
    disk.unsynced.lock().unwrap().extend_from_slice(b"volatile");
    // A process kill is not a crash: the page cache survives it.
    sim.kill_process("a", "server");
    assert_eq!(&*disk.unsynced.lock().unwrap(), b"volatile");
    sim.restart_process("a", "server");
    up(&c, 2).await;

    sim.crash_host("a");
    assert!(!sim.process_running("a", "server"));
    assert_eq!(&*disk.synced.lock().unwrap(), b"durable");
    assert!(
        disk.unsynced.lock().unwrap().is_empty(),
        "unsynced data survived a crash"
    );
    down(&c, Duration::from_secs(5)).await;
    assert!(echo(&c).await.is_err());
    sim.sleep(Duration::from_secs(3)).await;
    sim.restart_host("a");
    assert!(sim.process_running("a", "server"));
    up(&c, 3).await;
    echo(&c).await.unwrap();
    sim.finish();
}

#[madsim::test]
async fn one_way_partition_starves_the_client_of_replies() {
    let sim = Sim::new("one_way_partition_starves_the_client_of_replies");
    let _tail = mortar_sim::tail_on_panic(&sim);
    sim.add_host("a", host_ip(1));
    sim.add_host("b", host_ip(2));
    echo_server(&sim, "a", "server", 1000);
    let c = client(&sim, "b", "c", "a:1000").await;
    up(&c, 1).await;
    // Server -> client cut: requests arrive, replies and pongs do not.
    sim.partition_oneway(&["a"], &["b"]);
    let t0 = Clock::new().now();
    assert!(echo(&c).await.is_err());
    down(&c, Duration::from_secs(5)).await;
    assert!(t0.elapsed() <= Duration::from_secs(5));
    sim.repair();
    up(&c, 2).await;
    echo(&c).await.unwrap();
    sim.finish();
}

#[madsim::test]
async fn dns_faults_cost_at_most_the_resolver_deadline() {
    let sim = Sim::new("dns_faults_cost_at_most_the_resolver_deadline");
    let _tail = mortar_sim::tail_on_panic(&sim);
    sim.add_host("a", host_ip(1));
    sim.add_host("b", host_ip(2));
    echo_server(&sim, "a", "server", 1000);
    // DNS for "a" hangs before the client ever resolves it.
    sim.dns_fault("a", SimAnswer::Hang, Duration::ZERO);
    let by_name = client(&sim, "b", "by-name", "a:1000").await;
    let by_ip = client(&sim, "b", "by-ip", "10.0.0.1:1000").await;
    // The IP literal never touches DNS and connects at once.
    up(&by_ip, 1).await;
    echo(&by_ip).await.unwrap();
    // The name keeps failing, each attempt bounded by the 2 s deadline.
    sim.sleep(Duration::from_secs(5)).await;
    let st = by_name.link_state();
    assert!(!st.up);
    let why = st.last_error.unwrap();
    assert!(why.contains("longer than 2s"), "{why}");
    // SERVFAIL and NXDOMAIN are reported as such.
    sim.dns_fault("a", SimAnswer::ServFail, Duration::from_millis(10));
    sim.sleep(Duration::from_secs(4)).await;
    let why = by_name.link_state().last_error.unwrap();
    assert!(why.contains("DNS server failed"), "{why}");
    sim.dns_fault("a", SimAnswer::NxDomain, Duration::ZERO);
    sim.sleep(Duration::from_secs(4)).await;
    let why = by_name.link_state().last_error.unwrap();
    assert!(why.contains("does not exist"), "{why}");
    // DNS recovers (slowly, but within the deadline): the client connects.
    sim.dns_fault(
        "a",
        SimAnswer::Addrs(vec![sim.host_ip("a")]),
        Duration::from_millis(1500),
    );
    up(&by_name, 1).await;
    echo(&by_name).await.unwrap();
    sim.finish();
}

#[madsim::test]
async fn latency_shows_in_round_trips() {
    let sim = Sim::new("latency_shows_in_round_trips");
    let _tail = mortar_sim::tail_on_panic(&sim);
    sim.add_host("a", host_ip(1));
    sim.add_host("b", host_ip(2));
    echo_server(&sim, "a", "server", 1000);
    let c = client(&sim, "b", "c", "a:1000").await;
    up(&c, 1).await;
    sim.set_latency(Duration::from_millis(100), Duration::from_millis(200));
    let rtt = c.ping(Duration::from_secs(5)).await.unwrap();
    assert!(
        rtt >= Duration::from_millis(200) && rtt < Duration::from_millis(500),
        "{rtt:?}"
    );
    sim.finish();
}
