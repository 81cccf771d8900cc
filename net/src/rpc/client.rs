//! The RPC client: one logical connection to one endpoint, kept up in the
//! background.
//!
//! * Calls fail fast with "transport endpoint is not connected" while the
//!   connection is down (the layer above decides what a down child means),
//!   and every call has a deadline.
//! * Pings go out every `ping_interval`; if nothing at all arrives for
//!   `ping_timeout`, the connection is declared dead, every pending call
//!   fails with ENOTCONN, and reconnection starts.
//! * Reconnection backs off exponentially from `reconnect_backoff_min` to
//!   `reconnect_backoff_max`, with jitter from the seeded rng so that a
//!   restarted server is not hit by every client at the same instant.
//! * Up/down transitions are published as [`LinkState`] with a generation
//!   number, so a watcher that missed a quick down-up still sees that the
//!   connection changed (and, e.g., that its locks on the server are gone).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    decode_body, encode_body, write_loop, Fault, Reply, RpcConfig, RpcError, PROC_PING,
    PROGRAM_MESSENGER,
};
use crate::addr::Endpoint;
use crate::frame::{self, EncodedFrame, Frame, Header};
use crate::runtime::Runtime;
use crate::sync::Watch;
use crate::time::Instant;
use crate::transport::FrameSource;

/// The connection as the layer above sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    /// Incremented on every successful connect.
    pub generation: u64,
    /// Why the connection last went down or failed to come up.
    pub last_error: Option<String>,
    /// Connect attempts that failed since the client was made (never
    /// falls: a watcher tells a new failure from an old one by it).
    pub connects_failed: u64,
}

struct Pending {
    generation: u64,
    tx: oneshot::Sender<Result<Frame, RpcError>>,
}

#[derive(Default)]
struct State {
    conn: Option<(u64, mpsc::Sender<EncodedFrame>)>,
    pending: BTreeMap<u64, Pending>,
    closed: bool,
}

struct Inner {
    rt: Runtime,
    cfg: RpcConfig,
    endpoint: Endpoint,
    name: String,
    state: Mutex<State>,
    link: Watch<LinkState>,
    next_id: AtomicU64,
    slots: Semaphore,
}

/// Kills the background tasks when the last client handle goes away.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shut("client dropped");
    }
}

/// A connection to one RPC endpoint. Clones share the connection.
#[derive(Clone)]
pub struct RpcClient {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &self.inner().name)
            .field("link", &self.inner().link.get())
            .finish()
    }
}

impl RpcClient {
    /// Start connecting to `endpoint` in the background.
    pub fn new(rt: &Runtime, endpoint: Endpoint, cfg: RpcConfig) -> RpcClient {
        cfg.validate().expect("invalid RpcConfig");
        let name = endpoint.to_string();
        let link = Watch::new(LinkState {
            up: false,
            generation: 0,
            last_error: Some("not yet connected".into()),
            connects_failed: 0,
        });
        let inner = Arc::new(Inner {
            rt: rt.child(format!("rpc-client {name}")),
            cfg,
            endpoint,
            name,
            state: Mutex::new(State::default()),
            link,
            next_id: AtomicU64::new(1),
            slots: Semaphore::new(cfg.client_calls_in_flight_max),
        });
        inner.rt.spawn(connection_manager(inner.clone()));
        RpcClient {
            owner: Arc::new(Owner(inner)),
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.owner.0
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner().endpoint
    }

    /// Follow connection state changes (child-up / child-down).
    pub fn subscribe(&self) -> Watch<LinkState> {
        self.inner().link.clone()
    }

    pub fn link_state(&self) -> LinkState {
        self.inner().link.get()
    }

    pub fn is_connected(&self) -> bool {
        self.inner().link.with(|s| s.up)
    }

    /// Wait until connected, at most `timeout`. Returns the generation.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, RpcError> {
        let inner = self.inner();
        let waited = inner
            .rt
            .clock()
            .timeout(timeout, inner.link.wait_for(|s| s.up))
            .await;
        match waited {
            Ok(s) => Ok(s.generation),
            Err(_) => Err(inner.not_connected(format!(
                "not connected within {timeout:?}: {}",
                inner
                    .link
                    .with(|s| s.last_error.clone())
                    .unwrap_or_else(|| "unknown".into())
            ))),
        }
    }

    /// Wait for the first connect attempt of a new client to end: the
    /// generation when it connected, or the error at once when it failed
    /// (a refused port is a definite answer; the background retries go
    /// on). For a caller that has a better next step than retrying the
    /// same address (a brick that restarted is on a new port).
    pub async fn wait_first_attempt(&self, timeout: Duration) -> Result<u64, RpcError> {
        let inner = self.inner();
        let waited = inner
            .rt
            .clock()
            .timeout(
                timeout,
                inner.link.wait_for(|s| s.up || s.connects_failed > 0),
            )
            .await;
        match waited {
            Ok(s) if s.up => Ok(s.generation),
            Ok(s) => Err(inner.not_connected(s.last_error.unwrap_or_default())),
            Err(_) => Err(inner.not_connected(format!("not connected within {timeout:?}"))),
        }
    }

    /// Round trip to the server's messenger.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, RpcError> {
        let t0 = self.inner().rt.clock().now();
        self.call(
            PROGRAM_MESSENGER,
            PROC_PING,
            Bytes::new(),
            Bytes::new(),
            timeout,
        )
        .await?;
        Ok(self.inner().rt.clock().now() - t0)
    }

    /// One call with raw body and payload, bounded by `timeout`.
    pub async fn call(
        &self,
        program: u16,
        procedure: u16,
        body: Bytes,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        self.inner()
            .call(program, procedure, body, payload, timeout)
            .await
    }

    /// One call with a serde request and response, plus raw payloads.
    pub async fn call_typed<Q: Serialize, A: DeserializeOwned>(
        &self,
        program: u16,
        procedure: u16,
        req: &Q,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(A, Bytes), RpcError> {
        let body = encode_body(req).map_err(RpcError::Codec)?;
        let reply = self
            .call(program, procedure, body, payload, timeout)
            .await?;
        let value = decode_body(&reply.body).map_err(RpcError::Codec)?;
        Ok((value, reply.payload))
    }

    /// Fail every pending call and stop reconnecting.
    pub fn close(&self) {
        self.inner().shut("client closed");
    }
}

/// Removes a call's pending entry however the call ends (reply, deadline,
/// or the caller dropping the future), so the table never leaks.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut st) = self.inner.state.lock() {
            st.pending.remove(&self.id);
        }
    }
}

impl Inner {
    fn not_connected(&self, detail: impl Into<String>) -> RpcError {
        RpcError::NotConnected {
            endpoint: self.name.clone(),
            detail: detail.into(),
        }
    }

    fn shut(&self, why: &str) {
        let pending = {
            let mut st = self.state.lock().expect("client lock");
            st.closed = true;
            st.conn = None;
            std::mem::take(&mut st.pending)
        };
        for (_, p) in pending {
            let _ = p.tx.send(Err(RpcError::Closed(self.name.clone())));
        }
        self.link.modify(|s| {
            s.up = false;
            s.last_error = Some(why.into());
        });
        self.rt.scope().kill();
    }

    async fn call(
        &self,
        program: u16,
        procedure: u16,
        body: Bytes,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        let clock = self.rt.clock();
        let deadline = clock.now() + timeout;
        let timed_out = || RpcError::Timeout {
            endpoint: self.name.clone(),
            program,
            procedure,
            after: timeout,
        };
        let _slot = clock
            .timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| RpcError::Closed(self.name.clone()))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let header = Header {
            flags: 0,
            program,
            procedure,
            request_id: id,
        };
        let frame =
            frame::encode(&header, &body, payload, &self.cfg.limits).map_err(RpcError::Frame)?;
        let (otx, orx) = oneshot::channel();
        let tx = {
            let mut st = self.state.lock().expect("client lock");
            if st.closed {
                return Err(RpcError::Closed(self.name.clone()));
            }
            let Some((generation, tx)) = st.conn.clone() else {
                drop(st);
                return Err(self.not_connected(
                    self.link
                        .with(|s| s.last_error.clone())
                        .unwrap_or_else(|| "connection down".into()),
                ));
            };
            st.pending.insert(
                id,
                Pending {
                    generation,
                    tx: otx,
                },
            );
            tx
        };
        let _guard = PendingGuard { inner: self, id };
        match clock.timeout_at(deadline, tx.send(frame)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(self.not_connected("connection closed while sending")),
            Ok(Ok(())) => {}
        }
        let frame = match clock.timeout_at(deadline, orx).await {
            Err(_) => {
                self.rt
                    .trace(|| format!("call {program}/{procedure} id {id} timed out"));
                return Err(timed_out());
            }
            Ok(Err(_)) => return Err(self.not_connected("connection lost before the reply")),
            Ok(Ok(r)) => r?,
        };
        self.rt.trace(|| {
            format!(
                "call {program}/{procedure} id {id} replied ({} + {} bytes{})",
                frame.body.len(),
                frame.payload.len(),
                if frame.header.is_error() {
                    ", error"
                } else {
                    ""
                }
            )
        });
        if frame.header.is_error() {
            let fault: Fault = decode_body(&frame.body).map_err(RpcError::Codec)?;
            return Err(RpcError::Fault {
                endpoint: self.name.clone(),
                program,
                procedure,
                fault,
            });
        }
        Ok(Reply {
            body: frame.body,
            payload: frame.payload,
        })
    }

    /// A reply arrived: hand it to its caller, if the caller still waits.
    fn complete(&self, frame: Frame) {
        let id = frame.header.request_id;
        let waiting = self.state.lock().expect("client lock").pending.remove(&id);
        match waiting {
            Some(p) => {
                let _ = p.tx.send(Ok(frame));
            }
            None if frame.header.program == PROGRAM_MESSENGER => {}
            None => {
                tracing::debug!(endpoint = %self.name, id, "reply for a call that already gave up")
            }
        }
    }

    /// The connection of `generation` is gone: fail its calls.
    fn connection_lost(&self, generation: u64, reason: &str) {
        let failed: Vec<Pending> = {
            let mut st = self.state.lock().expect("client lock");
            if matches!(st.conn, Some((g, _)) if g == generation) {
                st.conn = None;
            }
            let ids: Vec<u64> = st
                .pending
                .iter()
                .filter(|(_, p)| p.generation == generation)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| st.pending.remove(id)).collect()
        };
        for p in failed {
            let _ = p.tx.send(Err(self.not_connected(reason.to_string())));
        }
        self.link.modify(|s| {
            s.up = false;
            s.last_error = Some(reason.into());
        });
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let min = self.cfg.reconnect_backoff_min.as_nanos() as u64;
        let max = self.cfg.reconnect_backoff_max.as_nanos() as u64;
        let exp = min.saturating_mul(1u64 << attempt.min(30)).min(max).max(1);
        // Half fixed, half random: spreads clients out without ever
        // retrying immediately.
        let jitter = self.rt.with_rng(|r| r.below(exp / 2 + 1));
        Duration::from_nanos(exp / 2 + jitter)
    }
}

async fn connection_manager(inner: Arc<Inner>) {
    let clock = inner.rt.clock().clone();
    let mut attempt: u32 = 0;
    let mut generation: u64 = 0;
    loop {
        match inner
            .rt
            .connect(&inner.endpoint, inner.cfg.limits, inner.cfg.connect_timeout)
            .await
        {
            Ok(link) => {
                attempt = 0;
                generation += 1;
                let (tx, rx) = mpsc::channel(inner.cfg.send_queue_frames_max);
                let conn_rt = inner.rt.child(format!("gen {generation}"));
                let writer = conn_rt.spawn(write_loop(link.sink, rx));
                {
                    let mut st = inner.state.lock().expect("client lock");
                    if st.closed {
                        return;
                    }
                    st.conn = Some((generation, tx.clone()));
                }
                inner.link.modify(|s| {
                    s.up = true;
                    s.generation = generation;
                    s.last_error = None;
                });
                inner
                    .rt
                    .trace(|| format!("connected to {} gen {generation}", inner.name));
                tracing::debug!(endpoint = %inner.name, generation, "connected");
                let reason = read_replies(&inner, link.source, writer, tx).await;
                conn_rt.scope().kill();
                inner.connection_lost(generation, &reason);
                inner.rt.trace(|| {
                    format!(
                        "disconnected from {} gen {generation}: {reason}",
                        inner.name
                    )
                });
                tracing::warn!(endpoint = %inner.name, %reason, "disconnected; reconnecting");
            }
            Err(e) => {
                let msg = e.to_string();
                if attempt == 0 {
                    tracing::warn!(endpoint = %inner.name, error = %msg, "connect failed; retrying with backoff");
                }
                inner
                    .rt
                    .trace(|| format!("connect to {} failed: {msg}", inner.name));
                inner.link.modify(|s| {
                    s.last_error = Some(msg);
                    s.connects_failed += 1;
                });
            }
        }
        let pause = inner.backoff(attempt);
        attempt = attempt.saturating_add(1);
        clock.sleep(pause).await;
    }
}

/// Read replies until the connection fails; returns why it ended. Sends a
/// ping every interval regardless of traffic, so the server's own idle
/// timeout never fires on a client that is merely waiting on a long call.
async fn read_replies(
    inner: &Inner,
    mut source: Box<dyn FrameSource>,
    mut writer: tokio::task::JoinHandle<Option<std::io::Result<()>>>,
    tx: mpsc::Sender<EncodedFrame>,
) -> String {
    let clock = inner.rt.clock().clone();
    let mut ping = clock.interval(inner.cfg.ping_interval);
    ping.tick().await; // The first tick is immediate; the link is fresh.
    let mut last_rx: Instant = clock.now();
    loop {
        tokio::select! {
            biased;
            w = &mut writer => return match w {
                Ok(Some(Err(e))) => format!("send failed: {e}"),
                _ => "sender stopped".into(),
            },
            _ = clock.sleep_until(last_rx + inner.cfg.ping_timeout) => {
                return format!(
                    "nothing received for {:?} (ping-timeout): server declared dead",
                    inner.cfg.ping_timeout
                );
            }
            _ = ping.tick() => {
                let header = Header {
                    flags: 0,
                    program: PROGRAM_MESSENGER,
                    procedure: PROC_PING,
                    request_id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                };
                let f = frame::encode(&header, &[], Bytes::new(), &inner.cfg.limits)
                    .expect("an empty ping fits any limits");
                // A full queue means traffic is flowing; skip this ping.
                let _ = tx.try_send(f);
            }
            f = source.recv() => match f {
                Ok(Some(frame)) => {
                    last_rx = clock.now();
                    if !frame.header.is_reply() {
                        return format!(
                            "server sent a request frame (program {}); closing",
                            frame.header.program
                        );
                    }
                    inner.complete(frame);
                }
                Ok(None) => return "server closed the connection".into(),
                Err(e) => {
                    tracing::warn!(endpoint = %inner.name, error = %e, "closing connection");
                    return e.to_string();
                }
            },
        }
    }
}
