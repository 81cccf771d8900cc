//! The management daemon: keeps the cluster state, runs every change as a
//! transaction across the pool, serves the port map and the CLI, and
//! starts, watches and stops this server's bricks.
//!
//! Transactions (driven by the peer the CLI talked to):
//!
//! ```text
//! lock (all) -> pre-validate (all) -> brick-op (all) -> commit (all)
//!            -> post-validate (all) -> unlock (all)
//! ```
//!
//! A failure before commit unlocks and changes nothing anywhere. A change
//! needs a majority of the pool reachable; servers that cannot be reached
//! (or fail during commit) miss it and converge afterwards: every mgmtd
//! compares its state with each peer every few seconds and takes the newer
//! version of each object. Locks have a lease, so a crashed originator
//! cannot wedge a volume.
//!
//! ```text
//! mod.rs        Mgmtd, its configuration, start and shutdown
//! phase.rs      the phases and what follows each (pure)
//! service.rs    the port map, peer and CLI RPC programs
//! txn.rs        the originator's side of a transaction
//! peer_side.rs  every server's side: lock, stage, brick-op, commit, ...
//! peers.rs      probe, detach, the RPC clients to peers
//! sync.rs       state convergence between peers
//! supervise.rs  bricks and the self-heal daemon through Launcher/LocalFs
//! cli.rs        the CLI's requests, one function per command group
//! ```

mod cli;
mod heal;
mod peer_side;
mod peers;
mod phase;
mod service;
mod supervise;
mod sync;
mod txn;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::echo::{EchoService, PROGRAM_ECHO};
use mortar_net::rpc::{RpcClient, RpcConfig, RpcServer, ServerHandle};
use mortar_net::sync::Watch;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::portmap::PROGRAM_PORTMAP;
use mortar_storage::Storage;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::state::{ClusterState, Op, Peer};
use crate::store::Store;
use crate::txnlock::{TxnLocks, LEASE_SECS};
use crate::volume::{BrickSpec, Pool};

pub use phase::{has_majority, next_step, summarize, Next, Outcome, Phase, PhaseHook};
pub use supervise::{BrickLaunch, Launcher, LocalFs};

use service::{CliService, PeerService, PortmapService};
use supervise::RunningBrick;

/// How often peers compare state, unless configured otherwise.
pub const SYNC_INTERVAL_SECS: u64 = 3;
/// Deadline for one phase of a transaction on one peer, unless configured.
pub const PHASE_TIMEOUT_SECS: u64 = 20;
/// Peer connections are declared dead after this long without an answer.
pub const PEER_PING_TIMEOUT_SECS: u64 = 30;

// A lock must outlive every phase of the transaction holding it, and a
// crashed originator's lock must lapse only after at least one sync tick
// has had the chance to spread what it committed.
const _: () = assert!(LEASE_SECS > PHASE_TIMEOUT_SECS);
const _: () = assert!(LEASE_SECS > SYNC_INTERVAL_SECS);

#[derive(Clone)]
pub struct MgmtdConfig {
    /// Names and addresses this server is known by; the first is used in
    /// messages. Bricks are "here" when their host is one of these.
    pub hostnames: Vec<String>,
    /// The peer/port-map/CLI TCP endpoint (default port 24007).
    pub listen: Endpoint,
    /// The CLI's Unix socket, if any.
    pub cli_socket: Option<Endpoint>,
    pub rpc: RpcConfig,
    /// How often peers compare state.
    pub sync_interval: Duration,
    /// Deadline for one phase of a transaction on one peer.
    pub phase_timeout: Duration,
    pub phase_hook: Option<PhaseHook>,
}

impl std::fmt::Debug for MgmtdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MgmtdConfig")
            .field("hostnames", &self.hostnames)
            .field("listen", &self.listen)
            .field("cli_socket", &self.cli_socket)
            .field("sync_interval", &self.sync_interval)
            .field("phase_timeout", &self.phase_timeout)
            .finish()
    }
}

impl MgmtdConfig {
    pub fn new(hostnames: Vec<String>, listen: Endpoint) -> Self {
        MgmtdConfig {
            hostnames,
            listen,
            cli_socket: None,
            rpc: RpcConfig::with_ping_timeout(Duration::from_secs(PEER_PING_TIMEOUT_SECS)),
            sync_interval: Duration::from_secs(SYNC_INTERVAL_SECS),
            phase_timeout: Duration::from_secs(PHASE_TIMEOUT_SECS),
            phase_hook: None,
        }
    }
}

struct Inner<S: Storage> {
    rt: Runtime,
    cfg: MgmtdConfig,
    me: Peer,
    store: Store<S>,
    state: Mutex<ClusterState>,
    locks: Mutex<TxnLocks>,
    peer_clients: Mutex<BTreeMap<String, RpcClient>>,
    /// Peer uuid -> unresolved divergences, as shown by `peer status`.
    divergence: Mutex<BTreeMap<String, Vec<String>>>,
    /// Brick path -> port, from sign-ins of this server's bricks.
    portmap: Mutex<BTreeMap<String, u16>>,
    /// Brick path -> sign-ins so far (only grows), which port-map waits
    /// watch.
    sign_ins: Watch<BTreeMap<String, u64>>,
    /// (volume, path) -> running brick on this server.
    bricks: Mutex<BTreeMap<(String, String), RunningBrick>>,
    launcher: Arc<dyn Launcher>,
    fs: Arc<dyn LocalFs>,
    next_txn: AtomicU64,
    /// Bumped whenever the cluster state is replaced; `.1` is set when
    /// mgmtd stops, so volfile watches end at once.
    changes: Watch<(u64, bool)>,
    /// Migrations (`remove-brick start`) run from this server, by volume.
    migrations: Mutex<BTreeMap<String, MigrationView>>,
    /// This server's self-heal daemon, when one runs.
    shd: Mutex<Option<u32>>,
    /// Volume -> `volume heal` requests seen here (asked by the self-heal
    /// daemon; in memory: a restarted mgmtd starts again from zero, and
    /// the daemon takes any change as a request).
    heal_requests: Mutex<BTreeMap<String, HealCounts>>,
    /// What this server's self-heal daemon last reported, per (volume,
    /// brick); in memory (a restarted daemon starts from zero).
    heal_stats: Mutex<BTreeMap<(String, String), HealStatsView>>,
}

/// A running mgmtd.
pub struct Mgmtd<S: Storage> {
    inner: Arc<Inner<S>>,
    servers: Vec<ServerHandle>,
}

fn new_uuid(rt: &Runtime) -> String {
    let mut b = [0u8; 16];
    rt.with_rng(|r| r.fill(&mut b));
    mortar_proto::Gfid::random_v4(b).to_string()
}

fn endpoint_port(ep: &Endpoint) -> u16 {
    match ep {
        Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => hp.port,
        Endpoint::Unix(_) => 0,
    }
}

impl<S: Storage> Pool for Inner<S> {
    fn identify(&self, host: &str) -> Option<String> {
        let h = host.to_ascii_lowercase();
        if self.me.hostnames.iter().any(|n| n.eq_ignore_ascii_case(&h)) {
            return Some(self.me.uuid.clone());
        }
        let st = self.state.lock().expect("state");
        let found = st
            .live_peers()
            .find(|p| p.hostnames.iter().any(|n| n.eq_ignore_ascii_case(&h)))
            .map(|p| p.uuid.clone());
        found
    }
}

impl<S: Storage> Mgmtd<S> {
    /// Load the store, serve, start this server's bricks of started
    /// volumes, and begin syncing with peers.
    pub async fn start(
        rt: &Runtime,
        storage: S,
        cfg: MgmtdConfig,
        launcher: Arc<dyn Launcher>,
        fs: Arc<dyn LocalFs>,
    ) -> std::result::Result<Mgmtd<S>, String> {
        Self::start_typed(rt, storage, cfg, launcher, fs)
            .await
            .map_err(|e| e.to_string())
    }

    async fn start_typed(
        rt: &Runtime,
        storage: S,
        cfg: MgmtdConfig,
        launcher: Arc<dyn Launcher>,
        fs: Arc<dyn LocalFs>,
    ) -> Result<Mgmtd<S>> {
        if cfg.hostnames.is_empty() {
            return Err(MgmtError::NoHostname);
        }
        let store = rt
            .blocking(move || Store::open(storage))
            .await
            .map_err(MgmtError::Store)?;
        let rt2 = rt.clone();
        let uuid = store
            .node_uuid(|| new_uuid(&rt2))
            .map_err(MgmtError::Store)?;
        let state = store.load().map_err(MgmtError::Store)?;
        let me = Peer {
            uuid,
            hostnames: cfg
                .hostnames
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            port: endpoint_port(&cfg.listen),
        };
        let inner = Arc::new(Inner {
            rt: rt.clone(),
            cfg: cfg.clone(),
            me,
            store,
            state: Mutex::new(state),
            locks: Mutex::new(TxnLocks::default()),
            peer_clients: Mutex::new(BTreeMap::new()),
            divergence: Mutex::new(BTreeMap::new()),
            portmap: Mutex::new(BTreeMap::new()),
            sign_ins: Watch::new(BTreeMap::new()),
            bricks: Mutex::new(BTreeMap::new()),
            launcher,
            fs,
            next_txn: AtomicU64::new(1),
            changes: Watch::new((0, false)),
            migrations: Mutex::new(BTreeMap::new()),
            shd: Mutex::new(None),
            heal_requests: Mutex::new(BTreeMap::new()),
            heal_stats: Mutex::new(BTreeMap::new()),
        });
        let servers = serve(&inner).await?;
        tracing::info!(uuid = %inner.me.uuid, listen = %cfg.listen, "mgmtd ready");
        inner
            .rt
            .trace(|| format!("mgmtd {} ready", inner.me.hostnames[0]));
        inner.connect_peers();
        inner.converge_bricks(false).await;
        rt.spawn(sync::sync_loop(inner.clone()));
        Ok(Mgmtd { inner, servers })
    }

    pub fn uuid(&self) -> &str {
        &self.inner.me.uuid
    }

    pub fn state(&self) -> ClusterState {
        self.inner.state.lock().expect("state").clone()
    }

    /// Run a CLI request here (tests and in-process callers).
    pub async fn cli(&self, req: CliRequest) -> std::result::Result<CliReply, String> {
        self.inner.cli(req).await.map_err(|e| e.to_string())
    }

    /// Stop serving. Bricks keep running (as the original's bricks outlive
    /// a glusterd restart); the next mgmtd adopts or restarts them.
    pub async fn shutdown(self) {
        self.inner.changes.modify(|c| c.1 = true);
        for s in self.servers {
            s.shutdown().await;
        }
        self.inner.rt.scope().kill();
    }
}

/// Listen on the peer/port-map/CLI endpoint and on the CLI socket.
async fn serve<S: Storage>(inner: &Arc<Inner<S>>) -> Result<Vec<ServerHandle>> {
    let (rt, cfg) = (&inner.rt, &inner.cfg);
    let mut servers = Vec::new();
    let mut tcp = RpcServer::new(rt.clone(), cfg.rpc);
    tcp.register(PROGRAM_PORTMAP, Arc::new(PortmapService(inner.clone())));
    tcp.register(PROGRAM_MGMT_PEER, Arc::new(PeerService(inner.clone())));
    tcp.register(PROGRAM_MGMT_CLI, Arc::new(CliService(inner.clone())));
    tcp.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
    servers.push(
        tcp.listen_patiently(
            &cfg.listen,
            Duration::from_millis(mortar_net::rpc::LISTEN_RESOLVE_WAIT_MS_MAX),
        )
        .await
        .map_err(|e| MgmtError::ListenPeers {
            endpoint: cfg.listen.to_string(),
            error: e.to_string(),
        })?,
    );
    if let Some(sock) = &cfg.cli_socket {
        let mut cli = RpcServer::new(rt.clone(), cfg.rpc);
        cli.register(PROGRAM_MGMT_CLI, Arc::new(CliService(inner.clone())));
        cli.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
        servers.push(cli.listen(sock).await.map_err(|e| MgmtError::ListenCli {
            endpoint: sock.to_string(),
            error: e.to_string(),
        })?);
    }
    Ok(servers)
}

/// Small helpers every part of the daemon uses.
impl<S: Storage> Inner<S> {
    fn name(&self) -> &str {
        &self.me.hostnames[0]
    }

    /// The port map's `WAIT`: answer when the brick's sign-in count is
    /// not `q.seen` any more, or after the (capped) wait.
    async fn wait_sign_in(&self, q: mortar_proto::portmap::Wait) -> mortar_proto::portmap::Signed {
        let wait = Duration::from_millis(q.wait_ms.min(mortar_proto::portmap::WAIT_MAX_MS));
        let path = q.brick_path.clone();
        let changed = self
            .sign_ins
            .wait_for(move |m| m.get(&path).copied().unwrap_or(0) != q.seen);
        let _ = self.rt.clock().timeout(wait, changed).await;
        let sign_ins = self
            .sign_ins
            .with(|m| m.get(&q.brick_path).copied().unwrap_or(0));
        let port = self
            .portmap
            .lock()
            .expect("portmap")
            .get(&q.brick_path)
            .copied();
        mortar_proto::portmap::Signed { port, sign_ins }
    }

    fn peer_name(&self, uuid: &str) -> String {
        if uuid == self.me.uuid {
            return self.name().to_string();
        }
        let st = self.state.lock().expect("state");
        st.peers
            .get(uuid)
            .and_then(|s| s.peer.as_ref())
            .and_then(|p| p.hostnames.first().cloned())
            .unwrap_or_else(|| uuid.to_string())
    }

    fn is_local(&self, b: &BrickSpec) -> bool {
        self.identify(&b.host).as_deref() == Some(self.me.uuid.as_str())
    }

    /// Call a peer's procedure; `Err` is the RPC layer's message (no
    /// answer), a peer's refusal travels inside `A`.
    async fn call_peer<Q: Serialize, A: DeserializeOwned>(
        &self,
        client: &RpcClient,
        procedure: u16,
        q: &Q,
    ) -> std::result::Result<A, String> {
        let (a, _): (A, Bytes) = client
            .call_typed(
                PROGRAM_MGMT_PEER,
                procedure,
                q,
                Bytes::new(),
                self.cfg.phase_timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(a)
    }

    /// The RPC clients of every peer, as they are now.
    fn clients(&self) -> Vec<(String, RpcClient)> {
        self.peer_clients
            .lock()
            .expect("peer clients")
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect()
    }

    fn apply_and_persist(&self, op: &Op) -> std::result::Result<(), String> {
        let mut st = self.state.lock().expect("state");
        let mut next = st.clone();
        next.apply(op)?;
        self.store.save_all(&next)?;
        *st = next;
        self.changed();
        Ok(())
    }

    /// Replace the state with `next`, persisted first.
    fn replace_state(&self, next: ClusterState) -> Result<()> {
        let mut st = self.state.lock().expect("state");
        self.store.save_all(&next).map_err(MgmtError::Store)?;
        *st = next;
        drop(st);
        self.changed();
        Ok(())
    }

    /// Wake volfile watchers: the cluster state was replaced.
    fn changed(&self) {
        self.changes.modify(|c| c.0 += 1);
    }
}
