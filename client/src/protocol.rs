//! The protocol client: one brick, as a child of replicate or disperse.
//!
//! It finds the brick's port in the port map of the brick host's mgmtd,
//! connects, and identifies itself (`Connect`). Up and down transitions are
//! published with a generation number: a child that went down and came back
//! lost its locks on the brick, and the layer above must know. When the
//! connection drops it starts over from the port lookup, since a restarted
//! brick may listen on another port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::sync::Watch;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::brick as bp;
use mortar_proto::brick::BrickRequest;
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};
use mortar_proto::volume::Transport;
use mortar_proto::xlator::ClientLayer;
use mortar_proto::{Errno, FopError, Gfid};

use crate::fop::FopResult;
use crate::remote::RemoteBrick;

/// A child's connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildState {
    pub up: bool,
    /// Incremented on every successful connect and handshake.
    pub generation: u64,
    /// Why it is down (or last went down).
    pub last_error: Option<String>,
    /// Attempts to connect that ended (either way) so far.
    pub attempts: u64,
}

/// Where a protocol client connects, from its volfile node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickAddress {
    pub name: String,
    pub host: String,
    pub brick_path: String,
    pub volume_id: String,
    pub ping_timeout: Duration,
    /// `transport-type rdma`: connect to the brick over RDMA (the port
    /// lookup still goes to mgmtd over TCP).
    pub rdma: bool,
}

impl BrickAddress {
    /// The address a `protocol/client` layer named `name` describes.
    pub fn from_layer(name: &str, l: &ClientLayer) -> BrickAddress {
        BrickAddress {
            name: name.to_string(),
            host: l.remote_host.clone(),
            brick_path: l.remote_subvolume.clone(),
            volume_id: l.volume_id.clone(),
            ping_timeout: Duration::from_secs(l.ping_timeout_secs.max(1)),
            rdma: l.transport == Transport::Rdma,
        }
    }
}

struct Inner {
    rt: Runtime,
    addr: BrickAddress,
    mgmt_port: u16,
    client_id: String,
    state: Watch<ChildState>,
    remote: Mutex<Option<RemoteBrick>>,
    /// Data bytes of the writes this client made that the brick took
    /// (never falls): what the self-heal daemon, whose clients write only
    /// to heal, reports as bytes healed onto the brick.
    bytes_written: std::sync::atomic::AtomicU64,
    /// The port the brick was last reached on (0: never).
    last_port: std::sync::atomic::AtomicU32,
}

/// One brick's client. Cheap to clone.
#[derive(Clone)]
pub struct ProtocolClient {
    inner: Arc<Inner>,
}

/// Deadline for the port lookup and the handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for reaching the brick at the port the map gave: short, since
/// a brick that just died may still be in the map with its old port, and
/// its restarted self listens on a new one (found by the next lookup).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl ProtocolClient {
    /// Start connecting in the background (in a child scope of `rt`).
    pub fn start(
        rt: &Runtime,
        addr: BrickAddress,
        mgmt_port: u16,
        client_id: &str,
    ) -> ProtocolClient {
        let inner = Arc::new(Inner {
            rt: rt.child(format!("client {}", addr.name)),
            addr,
            mgmt_port,
            client_id: client_id.to_string(),
            state: Watch::new(ChildState {
                up: false,
                generation: 0,
                last_error: Some("not yet connected".into()),
                attempts: 0,
            }),
            remote: Mutex::new(None),
            bytes_written: std::sync::atomic::AtomicU64::new(0),
            last_port: std::sync::atomic::AtomicU32::new(0),
        });
        inner.rt.spawn(keep_connected(inner.clone()));
        ProtocolClient { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.addr.name
    }

    pub fn address(&self) -> &BrickAddress {
        &self.inner.addr
    }

    /// Child-up / child-down.
    pub fn state(&self) -> Watch<ChildState> {
        self.inner.state.clone()
    }

    pub fn is_up(&self) -> bool {
        self.inner.state.with(|s| s.up)
    }

    /// Wait until up, at most `timeout`.
    pub async fn wait_up(&self, timeout: Duration) -> FopResult<u64> {
        self.inner
            .rt
            .clock()
            .timeout(timeout, self.inner.state.wait_for(|s| s.up))
            .await
            .map(|s| s.generation)
            .map_err(|_| self.down_error())
    }

    /// Wait (bounded) for the first attempt to connect to end: `Ok` when
    /// the brick is up, the reason at once when that attempt failed (the
    /// brick is not running, refused, unreachable), where
    /// [`ProtocolClient::wait_up`] would wait out the whole timeout.
    pub async fn wait_first_attempt(&self, timeout: Duration) -> FopResult<u64> {
        let settled = self
            .inner
            .rt
            .clock()
            .timeout(
                timeout,
                self.inner.state.wait_for(|s| s.up || s.attempts > 0),
            )
            .await;
        match settled {
            Ok(s) if s.up => Ok(s.generation),
            _ => Err(self.down_error()),
        }
    }

    fn down_error(&self) -> FopError {
        let why = self
            .inner
            .state
            .with(|s| s.last_error.clone())
            .unwrap_or_else(|| "down".into());
        FopError::new(
            Errno::ENOTCONN,
            format!("{} is not connected: {why}", self.inner.addr.name),
        )
    }

    /// Send one request to the brick; ENOTCONN while down.
    pub async fn call<Q: BrickRequest>(
        &self,
        q: &Q,
        payload: Bytes,
        timeout: Duration,
    ) -> FopResult<(Q::Reply, Bytes)> {
        let remote = self.inner.remote.lock().expect("remote").clone();
        match remote {
            Some(r) => r.call_with(q, payload, timeout).await,
            None => Err(self.down_error()),
        }
    }

    /// Data bytes of the writes through this client the brick took.
    pub fn bytes_written(&self) -> u64 {
        self.inner
            .bytes_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn note_written(&self, n: u64) {
        self.inner
            .bytes_written
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The brick's pending-heal index: every gfid with non-zero counters
    /// (paged internally, at most `limit`).
    pub async fn pending_heal(&self, limit: usize) -> FopResult<Vec<Gfid>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, _) = self
                .call(
                    &bp::IndexList {
                        after,
                        // The brick reads its whole index for every page:
                        // the biggest page it gives keeps a listing of
                        // 20,000 entries at 5 reads, not 40.
                        max_entries: bp::READDIR_ENTRIES_MAX,
                    },
                    Bytes::new(),
                    Duration::from_secs(30),
                )
                .await?;
            out.extend(page.gfids.iter().copied());
            after = page.gfids.last().copied();
            if page.eof || after.is_none() || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }

    /// Stop reconnecting and close.
    pub fn close(&self) {
        if let Some(r) = self.inner.remote.lock().expect("remote").take() {
            r.rpc.close();
        }
        self.inner.rt.scope().kill();
    }
}

fn set_down(inner: &Inner, why: String) {
    inner.state.modify(|s| {
        s.up = false;
        s.last_error = Some(why);
        s.attempts += 1;
    });
}

async fn lookup_port(inner: &Inner) -> Result<u16, String> {
    let ep: Endpoint = format!("{}:{}", inner.addr.host, inner.mgmt_port)
        .parse()
        .map_err(|e: mortar_net::addr::AddrError| e.to_string())?;
    let pm = RpcClient::new(&inner.rt, ep.clone(), RpcConfig::default());
    let r = async {
        pm.wait_connected(SETUP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let q = portmap::Query {
            brick_path: inner.addr.brick_path.clone(),
        };
        let (port, _): (Option<u16>, Bytes) = pm
            .call_typed(
                PROGRAM_PORTMAP,
                portmap::procs::QUERY,
                &q,
                Bytes::new(),
                SETUP_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        port.ok_or_else(|| {
            format!(
                "brick {} is not running (not in the port map of {ep})",
                inner.addr.brick_path
            )
        })
    }
    .await;
    pm.close();
    r
}

/// How long one port-map wait for a brick's sign-in lasts (then the
/// client tries the brick again anyway).
const SIGN_IN_WAIT_MS: u64 = 3_000;

/// Wait until the brick signs in again after `seen` sign-ins (or
/// [`SIGN_IN_WAIT_MS`] passed): its sign-in count now. `Err` when the
/// port map cannot be asked or does not know the wait.
async fn wait_sign_in(inner: &Inner, seen: u64) -> Result<u64, String> {
    let ep: Endpoint = format!("{}:{}", inner.addr.host, inner.mgmt_port)
        .parse()
        .map_err(|e: mortar_net::addr::AddrError| e.to_string())?;
    let pm = RpcClient::new(&inner.rt, ep, RpcConfig::default());
    let r = async {
        pm.wait_connected(SETUP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let q = portmap::Wait {
            brick_path: inner.addr.brick_path.clone(),
            seen,
            wait_ms: SIGN_IN_WAIT_MS,
        };
        let deadline = SETUP_TIMEOUT + Duration::from_millis(SIGN_IN_WAIT_MS);
        let (signed, _): (portmap::Signed, Bytes) = pm
            .call_typed(
                PROGRAM_PORTMAP,
                portmap::procs::WAIT,
                &q,
                Bytes::new(),
                deadline,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(signed.sign_ins)
    }
    .await;
    pm.close();
    r
}

/// One attempt to reach the brick: its port from the portmap, the
/// connection, and the handshake.
async fn connect_once(inner: &Inner, cfg: RpcConfig) -> Result<RemoteBrick, String> {
    let port = lookup_port(inner).await?;
    let scheme = if inner.addr.rdma { "rdma:" } else { "" };
    let ep: Endpoint = format!("{scheme}{}:{port}", inner.addr.host)
        .parse()
        .map_err(|e: mortar_net::addr::AddrError| e.to_string())?;
    let rpc = RpcClient::new(&inner.rt, ep, cfg);
    // A refused connect ends this attempt at once: the brick may have
    // restarted on another port, which the port map (asked again, or
    // waited on) gives.
    if let Err(e) = rpc.wait_first_attempt(CONNECT_TIMEOUT).await {
        rpc.close();
        return Err(e.to_string());
    }
    let remote = RemoteBrick::new(rpc);
    match remote
        .connect(
            &inner.addr.volume_id,
            &inner.addr.brick_path,
            &inner.client_id,
            &inner.addr.name,
            SETUP_TIMEOUT,
        )
        .await
    {
        Ok(_) => {
            let before = inner
                .last_port
                .swap(u32::from(port), std::sync::atomic::Ordering::Relaxed);
            if before != 0 && before != u32::from(port) {
                mortar_net::mark!(STALE_PORT_AFTER_RESTART);
            }
            Ok(remote)
        }
        Err(e) => {
            remote.rpc.close();
            Err(e.to_string())
        }
    }
}

async fn keep_connected(inner: Arc<Inner>) {
    let clock = inner.rt.clock().clone();
    let mut pause = Duration::from_millis(100);
    let cfg = RpcConfig {
        reconnect_backoff_min: Duration::from_millis(100),
        reconnect_backoff_max: Duration::from_secs(2),
        ..RpcConfig::with_ping_timeout(inner.addr.ping_timeout)
    };
    let mut generation = 0;
    // The brick's sign-ins as last seen in its port map: a wait returns
    // when that changes (the brick restarted), so the reconnect follows
    // at once instead of at the next poll.
    let mut sign_ins = 0;
    loop {
        let setup = connect_once(&inner, cfg).await;
        match setup {
            Ok(remote) => {
                pause = Duration::from_millis(100);
                generation += 1;
                let link = remote.rpc.subscribe();
                let link_gen = remote.rpc.link_state().generation;
                *inner.remote.lock().expect("remote") = Some(remote.clone());
                inner.state.modify(|s| {
                    s.up = true;
                    s.generation = generation;
                    s.last_error = None;
                    s.attempts += 1;
                });
                inner
                    .rt
                    .trace(|| format!("{} up (generation {generation})", inner.addr.name));
                // Down as soon as the link drops (a reconnect of the
                // underlying RPC client would lack the handshake).
                let st = link.wait_for(|s| !s.up || s.generation != link_gen).await;
                inner.remote.lock().expect("remote").take();
                remote.rpc.close();
                let why = st.last_error.unwrap_or_else(|| "connection lost".into());
                inner
                    .rt
                    .trace(|| format!("{} down: {why}", inner.addr.name));
                tracing::warn!(child = %inner.addr.name, reason = %why, "brick connection lost");
                set_down(&inner, why);
            }
            Err(why) => {
                set_down(&inner, why);
                match wait_sign_in(&inner, sign_ins).await {
                    Ok(n) => sign_ins = n,
                    Err(_) => {
                        // A port map without waits (or unreachable): poll.
                        clock.sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(SIGN_IN_WAIT_MS));
                    }
                }
            }
        }
    }
}
