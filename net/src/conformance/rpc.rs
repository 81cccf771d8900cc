//! Bodies through the messenger: what RPC servers and clients see of the
//! transport underneath.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{malformed_inputs, pattern, raw, recv, send_all, TransportUnderTest, PROMPT};
use crate::addr::Endpoint;
use crate::frame::FrameLimits;
use crate::rpc::echo::{EchoService, PROC_COUNT, PROC_ECHO, PROC_SLEEP, PROGRAM_ECHO};
use crate::rpc::{encode_body, RpcClient, RpcConfig, RpcError, RpcServer, ServerHandle};
use crate::Runtime;

/// Fast reconnects, so the restart bodies take milliseconds.
pub fn rpc_config() -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(2),
        ..RpcConfig::default()
    }
}

/// An echo server and where clients reach it.
pub struct Served {
    pub handle: ServerHandle,
    pub echo: Arc<EchoService>,
    pub dial: Endpoint,
}

/// Serve the echo program at `ep`.
pub async fn serve_echo(
    t: &impl TransportUnderTest,
    rt: &Runtime,
    ep: &Endpoint,
) -> io::Result<Served> {
    let echo = EchoService::new();
    let mut server = RpcServer::new(rt.clone(), rpc_config());
    server.register(PROGRAM_ECHO, Arc::new(echo.clone()));
    let handle = server.listen(ep).await?;
    let dial = t.dial_endpoint(handle.local_addr());
    Ok(Served { handle, echo, dial })
}

/// An echo server at a fresh endpoint and a client connected to it.
async fn served_and_connected(t: &impl TransportUnderTest) -> (Served, RpcClient, Runtime) {
    let server_rt = t.runtime("server");
    let served = serve_echo(t, &server_rt, &t.listen_endpoint())
        .await
        .unwrap_or_else(|e| panic!("{}: listen: {e}", t.name()));
    let rt = t.runtime("client");
    let c = RpcClient::new(&rt, served.dial.clone(), rpc_config());
    c.wait_connected(PROMPT)
        .await
        .unwrap_or_else(|e| panic!("{}: connect to {}: {e}", t.name(), served.dial));
    (served, c, rt)
}

async fn echo(c: &RpcClient, body: Bytes, payload: Bytes) -> Result<crate::rpc::Reply, RpcError> {
    c.call(PROGRAM_ECHO, PROC_ECHO, body, payload, PROMPT).await
}

async fn wait_down(name: &'static str, rt: &Runtime, c: &RpcClient) {
    let states = c.subscribe();
    rt.clock()
        .timeout(PROMPT, states.wait_for(|s| !s.up))
        .await
        .unwrap_or_else(|e| panic!("{name}: the client never saw the server go: {e}"));
}

/// Calls with payloads from 0 B to several MiB come back intact; the
/// messenger's own ping and the server's call count work too.
pub async fn calls_carry_payloads_of_every_size(t: &impl TransportUnderTest) {
    let name = t.name();
    let (served, c, _rt) = served_and_connected(t).await;
    let sizes = [0usize, 1, 4096, 70_000, (1 << 20) + 1, 4 << 20];
    for (i, size) in sizes.iter().enumerate() {
        let body = Bytes::from(format!("call {i}"));
        let payload = pattern(i as u64, *size);
        let r = echo(&c, body.clone(), payload.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: echo of {size} bytes: {e}"));
        assert_eq!(r.body, body, "{name}: reply body");
        assert!(
            r.payload == payload,
            "{name}: {size}-byte payload corrupted"
        );
    }
    let (n, _): (u64, _) = c
        .call_typed(PROGRAM_ECHO, PROC_COUNT, &(), Bytes::new(), PROMPT)
        .await
        .unwrap_or_else(|e| panic!("{name}: count: {e}"));
    assert_eq!(n, sizes.len() as u64 + 1, "{name}: calls the server ran");
    c.ping(PROMPT)
        .await
        .unwrap_or_else(|e| panic!("{name}: ping: {e}"));
    c.close();
    served.handle.shutdown().await;
}

/// Hundreds of calls in flight on one connection each get their own reply.
pub async fn many_concurrent_calls_share_one_connection(t: &impl TransportUnderTest) {
    const CALLS: u32 = 300;
    let name = t.name();
    let (served, c, rt) = served_and_connected(t).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let c = c.clone();
            rt.spawn(async move {
                let body = Bytes::from(i.to_le_bytes().to_vec());
                let payload = pattern(u64::from(i), (i as usize * 97) % 20_000);
                let r = echo(&c, body.clone(), payload.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{name}: call {i}: {e}"));
                assert!(
                    r.body == body && r.payload == payload,
                    "{name}: call {i} got another call's reply"
                );
            })
        })
        .collect();
    for call in calls {
        call.await.expect("call task").expect("scope alive");
    }
    assert_eq!(served.echo.calls(), u64::from(CALLS), "{name}: calls run");
    assert_eq!(served.handle.connections(), 1, "{name}: connections");
    assert_eq!(
        c.link_state().generation,
        1,
        "{name}: no reconnect expected"
    );
    c.close();
    served.handle.shutdown().await;
}

/// When the server dies under a running call, the call fails with ENOTCONN
/// at once (not at its deadline), and calls fail fast while it is down.
pub async fn pending_calls_fail_with_enotconn_when_the_server_dies(t: &impl TransportUnderTest) {
    let name = t.name();
    let (served, c, rt) = served_and_connected(t).await;
    let long = {
        let c = c.clone();
        let body = encode_body(&60_000u64).expect("encode");
        rt.spawn(async move {
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
    // Kill only once the server runs the call.
    rt.clock()
        .timeout(PROMPT, async {
            while served.echo.calls() == 0 {
                rt.clock().sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: the call never reached the server: {e}"));
    served.handle.kill();
    let e = rt
        .clock()
        .timeout(PROMPT, long)
        .await
        .unwrap_or_else(|e| panic!("{name}: a dead server must fail pending calls promptly: {e}"))
        .expect("call task")
        .expect("scope alive")
        .expect_err("the server died under the call");
    assert!(matches!(e, RpcError::NotConnected { .. }), "{name}: {e}");
    assert_eq!(e.errno(), 107, "{name}: ENOTCONN");
    wait_down(name, &rt, &c).await;
    // Not a timeout: the call must not wait for its deadline.
    let e = echo(&c, Bytes::new(), Bytes::new())
        .await
        .expect_err("no server");
    assert!(
        matches!(e, RpcError::NotConnected { .. }),
        "{name}: fail fast while down: {e}"
    );
    c.close();
}

/// A server restarted at the same address is found again by the client
/// that lost it, with no help from the caller.
pub async fn the_client_reconnects_after_the_server_restarts(t: &impl TransportUnderTest) {
    let name = t.name();
    let (served, c, rt) = served_and_connected(t).await;
    served.handle.kill();
    wait_down(name, &rt, &c).await;
    // The killed listener is released when its task is dropped, which the
    // executor does in its own time: retry a refused bind for a while.
    let server_rt = t.runtime("server again");
    let mut again = None;
    for _ in 0..100 {
        match serve_echo(t, &server_rt, &served.dial).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                rt.clock().sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{name}: listen again at {}: {e}", served.dial),
        }
    }
    let again = again.unwrap_or_else(|| panic!("{name}: {} stayed in use", served.dial));
    let states = c.subscribe();
    rt.clock()
        .timeout(PROMPT, states.wait_for(|s| s.up && s.generation == 2))
        .await
        .unwrap_or_else(|e| panic!("{name}: no reconnect to the restarted server: {e}"));
    let payload = pattern(3, 1 << 20);
    let r = echo(&c, Bytes::from_static(b"again"), payload.clone())
        .await
        .unwrap_or_else(|e| panic!("{name}: call after the restart: {e}"));
    assert!(r.payload == payload, "{name}: payload after the restart");
    c.close();
    again.handle.shutdown().await;
}

/// Garbage on one connection makes the server close that connection
/// without a reply, and nobody else's.
pub async fn malformed_bytes_close_only_that_connection(t: &impl TransportUnderTest) {
    let name = t.name();
    let (served, good, rt) = served_and_connected(t).await;
    for m in malformed_inputs() {
        let mut bad = rt
            .connect(&served.dial, FrameLimits::default(), PROMPT)
            .await
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        send_all(name, &mut bad.sink, vec![raw(&m.bytes)]).await;
        if t.half_closes() {
            match recv(name, &rt, &mut bad.source).await {
                Ok(None) | Err(_) => {}
                Ok(Some(f)) => panic!("{name}: the server answered {}: {f:?}", m.what),
            }
        }
        // Gone from the server's side too (without half-close, only our
        // going away ends the cut-off frame).
        drop(bad);
        rt.clock()
            .timeout(PROMPT, async {
                while served.handle.connections() > 1 {
                    rt.clock().sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{name}: the server kept the connection that sent {}: {e}",
                    m.what
                )
            });
        echo(&good, Bytes::from_static(b"still here"), Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("{name}: after {}: {e}", m.what));
    }
    assert_eq!(
        good.link_state().generation,
        1,
        "{name}: the good client reconnected"
    );
    good.close();
    served.handle.shutdown().await;
}
