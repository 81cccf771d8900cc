//! The RPC client under turmoil's network faults (partitions, held
//! messages), in the ordinary build. What every transport must do (sizes,
//! concurrency, a dying or restarted server) is the conformance suite's,
//! which runs on turmoil too (`transport_conformance.rs`); time inside
//! hosts is turmoil's simulated time, so the waits below cost nothing real.
#![cfg(not(madsim))]
// Inside turmoil hosts tokio's clock and spawn are turmoil's simulation.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{encode_body, RpcClient, RpcConfig, RpcError, RpcServer};
use mortar_net::{Endpoint, Host, HostPort};
use support::turmoil::runtime;

const PORT: u16 = 24007;

fn cfg() -> RpcConfig {
    RpcConfig {
        ping_timeout: Duration::from_secs(4),
        ping_interval: Duration::from_secs(1),
        reconnect_backoff_min: Duration::from_millis(50),
        reconnect_backoff_max: Duration::from_millis(500),
        ..RpcConfig::default()
    }
}

fn server_endpoint() -> Endpoint {
    Endpoint::Tcp(HostPort::new(Host::Name("server".parse().unwrap()), PORT))
}

/// Serve the echo program; `calls` counts its executions.
fn add_server(sim: &mut turmoil::Sim<'_>, calls: Arc<AtomicU64>) {
    sim.host("server", move || {
        let calls = calls.clone();
        async move {
            let rt = runtime("server", 7);
            let echo = EchoService::new();
            let mut s = RpcServer::new(rt.clone(), cfg());
            s.register(PROGRAM_ECHO, Arc::new(echo.clone()));
            let bind = Endpoint::Tcp(HostPort::new(
                Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                PORT,
            ));
            let _h = s.listen(&bind).await?;
            let mut seen = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let now = echo.calls();
                calls.fetch_add(now - seen, Ordering::SeqCst);
                seen = now;
            }
        }
    });
}

fn sim() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(42)
        .build()
}

fn sleep_body(ms: u64) -> Bytes {
    encode_body(&ms).unwrap()
}

#[test]
fn partition_mid_call_ends_in_a_deadline_error_then_recovers() {
    let mut sim = sim();
    add_server(&mut sim, Arc::new(AtomicU64::new(0)));
    sim.client("client", async {
        let rt = runtime("client", 1);
        let c = RpcClient::new(&rt, server_endpoint(), cfg());
        c.wait_connected(Duration::from_secs(10)).await?;
        c.call(
            PROGRAM_ECHO,
            PROC_ECHO,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await?;
        let call = {
            let c = c.clone();
            tokio::spawn(async move {
                c.call(
                    PROGRAM_ECHO,
                    PROC_SLEEP,
                    sleep_body(500),
                    Bytes::new(),
                    Duration::from_secs(3),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        turmoil::partition("client", "server");
        let t0 = tokio::time::Instant::now();
        let err = call.await?.unwrap_err();
        let waited = t0.elapsed();
        // Either the 3 s deadline or the 4 s ping timeout ends the call,
        // whichever the partition hits first; it never hangs.
        assert!(
            matches!(
                err,
                RpcError::Timeout { .. } | RpcError::NotConnected { .. }
            ),
            "{err}"
        );
        assert!(waited <= Duration::from_secs(4), "call hung for {waited:?}");
        turmoil::repair("client", "server");
        // The stalled connection is declared dead and replaced.
        let rx = c.subscribe();
        tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|s| s.up && s.generation >= 2),
        )
        .await?;
        c.call(
            PROGRAM_ECHO,
            PROC_ECHO,
            Bytes::from_static(b"after"),
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await?;
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn held_messages_released_later_complete_exactly_once() {
    let calls = Arc::new(AtomicU64::new(0));
    let mut sim = sim();
    add_server(&mut sim, calls.clone());
    let calls2 = calls.clone();
    sim.client("client", async move {
        let rt = runtime("client", 2);
        let c = RpcClient::new(&rt, server_endpoint(), cfg());
        c.wait_connected(Duration::from_secs(10)).await?;
        let base = calls2.load(Ordering::SeqCst);

        // Held for less than the deadline: the call completes, once.
        turmoil::hold("client", "server");
        let call = {
            let c = c.clone();
            tokio::spawn(async move {
                c.call(
                    PROGRAM_ECHO,
                    PROC_ECHO,
                    Bytes::from_static(b"one"),
                    Bytes::new(),
                    Duration::from_secs(3),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        turmoil::release("client", "server");
        let r = call.await??;
        assert_eq!(&r.body[..], b"one");

        // Held past the deadline: the call times out; the late reply that
        // arrives after release must not complete anything else.
        turmoil::hold("client", "server");
        let e = c
            .call(
                PROGRAM_ECHO,
                PROC_ECHO,
                Bytes::from_static(b"late"),
                Bytes::new(),
                Duration::from_millis(500),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, RpcError::Timeout { .. }), "{e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        turmoil::release("client", "server");
        let r = c
            .call(
                PROGRAM_ECHO,
                PROC_ECHO,
                Bytes::from_static(b"next"),
                Bytes::new(),
                Duration::from_secs(3),
            )
            .await?;
        assert_eq!(
            &r.body[..],
            b"next",
            "a stale reply was delivered to a new call"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // "one", "late" and "next": each executed exactly once.
        assert_eq!(calls2.load(Ordering::SeqCst) - base, 3);
        assert_eq!(
            c.link_state().generation,
            1,
            "hold must not break the connection"
        );
        Ok(())
    });
    sim.run().unwrap();
}
