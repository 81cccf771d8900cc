//! The messenger over real TCP and Unix sockets on loopback.
//!
//! These run on real time, so every wait is bounded by a deadline and the
//! assertions are about outcomes, not durations (except upper bounds that
//! are orders of magnitude above what the operation needs).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // Raw sockets and real time are the point here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_net::frame::{self, flags, FrameLimits, Header};
use mortar_net::rpc::echo::*;
use mortar_net::rpc::{
    encode_body, FaultCode, RpcClient, RpcConfig, RpcError, RpcServer, ServerHandle,
};
use mortar_net::{Addr, Endpoint, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

fn cfg() -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(2),
        ..RpcConfig::default()
    }
}

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

fn unix_path(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mortar-net-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{tag}.sock")).display().to_string()
}

async fn connected(rt: &Runtime, h: &ServerHandle) -> RpcClient {
    let c = RpcClient::new(rt, endpoint_of(h), cfg());
    c.wait_connected(T).await.unwrap();
    c
}

#[tokio::test]
async fn echo_with_large_payload_over_tcp_and_unix() {
    let rt = Runtime::production("test");
    for ep in [
        "127.0.0.1:0".to_string(),
        format!("unix:{}", unix_path("echo")),
    ] {
        let (h, echo) = serve(&rt, &ep, cfg()).await;
        let c = connected(&rt, &h).await;
        let payload: Bytes = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
        let r = c
            .call(
                PROGRAM_ECHO,
                PROC_ECHO,
                Bytes::from_static(b"hdr"),
                payload.clone(),
                T,
            )
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"hdr");
        assert_eq!(r.payload, payload, "payload corrupted over {ep}");
        let (n, _): (u64, _) = c
            .call_typed(PROGRAM_ECHO, PROC_COUNT, &(), Bytes::new(), T)
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(echo.calls(), 2);
        c.ping(T).await.unwrap();
        h.shutdown().await;
    }
}

#[tokio::test]
async fn many_concurrent_calls_each_get_their_own_reply() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
    let c = connected(&rt, &h).await;
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(i.to_le_bytes().to_vec());
            let r = c
                .call(PROGRAM_ECHO, PROC_ECHO, body.clone(), Bytes::new(), T)
                .await
                .unwrap();
            assert_eq!(r.body, body);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.link_state().generation, 1, "no reconnect expected");
}

#[tokio::test]
async fn unknown_procedure_and_handler_panic_are_faults_on_a_live_connection() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
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
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
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

/// Send raw bytes to the server and expect it to close the connection
/// without replying, while a well-behaved client keeps working.
async fn expect_closed_after(bytes: Vec<u8>, h: &ServerHandle, good: &RpcClient) {
    let Addr::Inet(sa) = h.local_addr() else {
        unreachable!()
    };
    let mut s = tokio::net::TcpStream::connect(sa).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let n = tokio::time::timeout(T, s.read_to_end(&mut sink))
        .await
        .expect("server must close a connection that sent garbage")
        .unwrap_or(0);
    assert_eq!(n, 0, "server replied to garbage: {:?}", &sink[..n.min(64)]);
    good.call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap();
}

#[tokio::test]
async fn malformed_frames_close_only_that_connection() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
    let good = connected(&rt, &h).await;
    let lim = FrameLimits::default();
    let hdr = Header {
        flags: 0,
        program: PROGRAM_ECHO,
        procedure: PROC_ECHO,
        request_id: 1,
    };
    let valid = frame::encode(&hdr, b"x", Bytes::from_static(b"yz"), &lim)
        .unwrap()
        .to_vec();

    // Not our protocol at all.
    expect_closed_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &h, &good).await;
    // Corrupted payload byte.
    let mut bad_crc = valid.clone();
    let n = bad_crc.len();
    bad_crc[n - 5] ^= 1;
    expect_closed_after(bad_crc, &h, &good).await;
    // A header announcing a 4 GiB payload (valid header checksum).
    let mut huge = valid.clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = frame::header_crc(&huge[..28]);
    huge[28..32].copy_from_slice(&crc.to_le_bytes());
    expect_closed_after(huge, &h, &good).await;
    // Cut off mid-frame.
    expect_closed_after(valid[..valid.len() - 3].to_vec(), &h, &good).await;
    // A reply frame where only requests are allowed.
    let reply = frame::encode(
        &Header {
            flags: flags::REPLY,
            ..hdr
        },
        b"",
        Bytes::new(),
        &lim,
    )
    .unwrap()
    .to_vec();
    expect_closed_after(reply, &h, &good).await;
    assert_eq!(good.link_state().generation, 1);
}

#[tokio::test]
async fn pending_calls_fail_with_enotconn_when_the_server_dies() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
    let c = connected(&rt, &h).await;
    let body = encode_body(&60_000u64).unwrap();
    let call = {
        let c = c.clone();
        tokio::spawn(async move {
            c.call(
                PROGRAM_ECHO,
                PROC_SLEEP,
                body,
                Bytes::new(),
                Duration::from_secs(120),
            )
            .await
        })
    };
    // Wait until the server is actually running the call.
    let rx = c.subscribe();
    tokio::time::timeout(T, async {
        while h.connections() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.kill();
    let e = tokio::time::timeout(T, call)
        .await
        .expect("a dead server must fail pending calls promptly")
        .unwrap()
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("transport endpoint is not connected"),
        "{e}"
    );
    assert_eq!(e.errno(), 107);
    tokio::time::timeout(T, rx.wait_for(|s| !s.up))
        .await
        .unwrap();
    // While down, calls fail fast instead of waiting for their deadline.
    let e = c
        .call(
            PROGRAM_ECHO,
            PROC_ECHO,
            Bytes::new(),
            Bytes::new(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::NotConnected { .. }), "{e}");
}

#[tokio::test]
async fn graceful_shutdown_lets_running_calls_finish() {
    let rt = Runtime::production("test");
    let (h, echo) = serve(&rt, "127.0.0.1:0", cfg()).await;
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
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
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
async fn client_reconnects_to_a_restarted_server_on_the_same_port() {
    let rt = Runtime::production("test");
    let (h, _) = serve(&rt, "127.0.0.1:0", cfg()).await;
    let ep = endpoint_of(&h);
    let c = connected(&rt, &h).await;
    h.kill();
    let rx = c.subscribe();
    tokio::time::timeout(T, rx.wait_for(|s| !s.up))
        .await
        .unwrap();
    let (h2, _) = serve(&rt, &ep.to_string(), cfg()).await;
    tokio::time::timeout(T, rx.wait_for(|s| s.up && s.generation == 2))
        .await
        .unwrap();
    c.call(PROGRAM_ECHO, PROC_ECHO, Bytes::new(), Bytes::new(), T)
        .await
        .unwrap();
    h2.shutdown().await;
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
