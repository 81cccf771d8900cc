//! The messenger's own rules over real TCP on loopback: faults on a live
//! connection, an unknown program, graceful shutdown, deadlines, the ping
//! timeout. What every transport must carry (payload sizes, concurrency,
//! a dying or restarted server, garbage) is the conformance suite's
//! (`transport_conformance.rs`).
//!
//! These run on real time, so every wait is bounded by a deadline and the
//! assertions are about outcomes, not durations (except upper bounds that
//! are orders of magnitude above what the operation needs).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // Raw sockets and real time are the point here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_net::conformance::rpc_config;
use mortar_net::frame::FrameLimits;
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{
    encode_body, FaultCode, RpcClient, RpcConfig, RpcError, RpcServer, ServerHandle,
};
use mortar_net::{Addr, Endpoint, Runtime};

const T: Duration = Duration::from_secs(10);

async fn serve(rt: &Runtime, ep: &str, cfg: RpcConfig) -> (ServerHandle, Arc<EchoService>) {
    let echo = EchoService::new();
    let mut s = RpcServer::new(rt.clone(), cfg);
    s.register(PROGRAM_ECHO, Arc::new(echo.clone()));
    let h = s.listen(&ep.parse().unwrap()).await.unwrap();
    (h, echo)
}

fn endpoint_of(h: &ServerHandle) -> Endpoint {
    match h.local_addr() {
        Addr::Inet(sa) => Endpoint::tcp(sa.ip(), sa.port()),
        Addr::Unix(p) => Endpoint::Unix(p.clone()),
    }
}

async fn connected(rt: &Runtime, h: &ServerHandle) -> RpcClient {
    let c = RpcClient::new(rt, endpoint_of(h), rpc_config());
    c.wait_connected(T).await.unwrap();
    c
}

#[tokio::test]
async fn unknown_procedure_and_handler_panic_are_faults_on_a_live_connection() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", rpc_config()).await;
    let c = connected(&rt, &h).await;
    let e = c
        .call(PROGRAM_ECHO, 99, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RpcError::Fault { fault, .. } if fault.code == FaultCode::ProcUnavail),
        "{e}"
    );
    let e = c
        .call(PROGRAM_ECHO, PROC_PANIC, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RpcError::Fault { fault, .. } if fault.code == FaultCode::SystemErr),
        "{e}"
    );
    let e = c
        .call(
            PROGRAM_ECHO,
            PROC_SLEEP,
            Bytes::from_static(b"\xff"),
            Bytes::new(),
            T,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RpcError::Fault { fault, .. } if fault.code == FaultCode::GarbageArgs),
        "{e}"
    );
    c.call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(c.link_state().generation, 1);
}

#[tokio::test]
async fn unknown_program_closes_the_connection_and_the_client_reconnects() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", rpc_config()).await;
    let c = connected(&rt, &h).await;
    let e = c
        .call(4242, 1, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::NotConnected { .. }), "{e}");
    let rx = c.subscribe();
    tokio::time::timeout(T, rx.wait_for(|s| s.up && s.generation >= 2))
        .await
        .unwrap();
    c.call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap();
}

#[tokio::test]
async fn graceful_shutdown_lets_running_calls_finish() {
    let rt = Runtime::production("test");
    let (h, echo) = serve(&rt, "127.0.0.1:0", rpc_config()).await;
    let c = connected(&rt, &h).await;
    let body = encode_body(&300u64).unwrap();
    let call = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(PROGRAM_ECHO, PROC_SLEEP, body, Bytes::new(), T)
                .await
        })
    };
    tokio::time::timeout(T, async {
        while echo.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    h.shutdown().await;
    call.await
        .unwrap()
        .expect("call running at shutdown must complete");
    assert_eq!(echo.disconnects(), 1);
}

#[tokio::test]
async fn deadline_and_oversized_requests_fail_cleanly() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", rpc_config()).await;
    let c = connected(&rt, &h).await;
    let body = encode_body(&5_000u64).unwrap();
    let e = c
        .call(
            PROGRAM_ECHO,
            PROC_SLEEP,
            body,
            Bytes::new(),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Timeout { .. }), "{e}");
    assert_eq!(e.errno(), 110);
    let too_big = Bytes::from(vec![
        0u8;
        (FrameLimits::default().payload_bytes_max + 1) as usize
    ]);
    let e = c
        .call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), too_big, T)
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Frame(_)), "{e}");
    // Neither failure touched the connection.
    c.call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(c.link_state().generation, 1);
}

#[tokio::test]
async fn silent_server_is_declared_dead_after_the_ping_timeout() {
    // A listener that accepts and then never says anything: the client's
    // pings go unanswered and the connection must be declared dead.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = l.accept().await.unwrap();
            held.push(s);
        }
    });
    let rt = Runtime::production("test");
    let cfg = RpcConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(400),
        reconnect_backoff_min: Duration::from_secs(30),
        reconnect_backoff_max: Duration::from_secs(30),
        ..RpcConfig::default()
    };
    let c = RpcClient::new(&rt, Endpoint::tcp(addr.ip(), addr.port()), cfg);
    c.wait_connected(T).await.unwrap();
    let rx = c.subscribe();
    tokio::time::timeout(T, rx.wait_for(|s| !s.up))
        .await
        .unwrap();
    let why = c.link_state().last_error.unwrap();
    assert!(why.contains("ping-timeout"), "{why}");
    hold.abort();
}
