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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::echo::{EchoService, PROGRAM_ECHO};
use mortar_net::rpc::{
    Fault, FaultCode, Reply, Request, RpcClient, RpcConfig, RpcServer, ServerHandle, Service,
};
use mortar_net::sync::Watch;
use mortar_net::{BoxFuture, Endpoint, Runtime};
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};
use mortar_storage::Storage;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::*;
use crate::options;
use crate::state::{reconcile, ClusterState, Op, Peer};
use crate::store::Store;
use crate::txnlock::{LockOwner, TxnLocks, LEASE};
use crate::volfile;
use crate::volume::{self, BrickSpec, Pool, Volume, VolumeStatus};

/// What mgmtd needs to start a brick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickLaunch {
    pub volume: String,
    pub volume_id: String,
    pub path: String,
    /// The local mgmtd the brick signs in with.
    pub mgmt: Endpoint,
    pub auth_allow: String,
    pub auth_reject: String,
    pub ping_timeout_secs: u64,
    pub fsync_namespace: bool,
    /// Serve clients over RDMA (`transport rdma`) instead of TCP.
    pub rdma: bool,
}

/// Starts and stops bricks: OS processes in production, tasks on the
/// simulated host in the simulator. mgmtd never spawns processes itself.
pub trait Launcher: Send + Sync + 'static {
    /// Start a brick; returns an id (the pid in production).
    fn start(&self, b: BrickLaunch) -> BoxFuture<'_, Result<u32, String>>;
    fn running(&self, id: u32) -> bool;
    /// Stop a brick (SIGTERM; with `force`, SIGKILL) and wait for it.
    fn stop(&self, id: u32, force: bool) -> BoxFuture<'_, Result<(), String>>;
    /// Can bricks started here serve RDMA? `Err` says why not and what to
    /// do; checked before a `transport rdma` volume starts.
    fn rdma_ready(&self) -> Result<(), String>;
    /// Start moving files off the volume's draining bricks
    /// (`remove-brick start`): a client of the volume that reports its
    /// progress to the mgmtd at `mgmt` with `CliRequest::MigrationReport`.
    fn start_migration(&self, volume: &str, mgmt: Endpoint) -> BoxFuture<'_, Result<(), String>>;
    /// Start this server's self-heal daemon; returns an id for `running`
    /// and `stop`. `hostnames` are this server's names (which bricks are
    /// local); `mgmt` is this mgmtd.
    fn start_shd(
        &self,
        hostnames: Vec<String>,
        mgmt: Endpoint,
    ) -> BoxFuture<'_, Result<u32, String>>;
}

/// Checks and preparation on this server's filesystem for its bricks.
pub trait LocalFs: Send + Sync + 'static {
    /// Can `path` hold a brick? (Refuses the root filesystem unless forced.)
    fn check_brick(&self, path: &str, force: bool) -> Result<(), String>;
    /// Create the brick directory (mkdir -p).
    fn prepare_brick(&self, path: &str) -> Result<(), String>;
}

/// A fault point: called by a transaction's originator at each phase
/// boundary with the phase about to run ("lock", "pre-validate",
/// "brick-op", "commit-local", "commit-peers", "post-validate", "unlock").
/// The simulator uses it to crash or partition servers exactly there;
/// production leaves it unset.
pub type PhaseHook = Arc<dyn Fn(&'static str) -> BoxFuture<'static, ()> + Send + Sync>;

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
            rpc: RpcConfig::with_ping_timeout(Duration::from_secs(30)),
            sync_interval: Duration::from_secs(3),
            phase_timeout: Duration::from_secs(20),
            phase_hook: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RunningBrick {
    id: u32,
}

struct Inner<S: Storage> {
    rt: Runtime,
    cfg: MgmtdConfig,
    me: Peer,
    store: Store<S>,
    state: Mutex<ClusterState>,
    locks: Mutex<TxnLocks>,
    peer_clients: Mutex<BTreeMap<String, RpcClient>>,
    divergence: Mutex<BTreeMap<String, Vec<String>>>,
    /// Brick path -> port, from sign-ins of this server's bricks.
    portmap: Mutex<BTreeMap<String, u16>>,
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
}

/// A running mgmtd.
pub struct Mgmtd<S: Storage> {
    inner: Arc<Inner<S>>,
    servers: Vec<ServerHandle>,
}

fn new_uuid(rt: &Runtime) -> String {
    let mut b = [0u8; 16];
    rt.with_rng(|r| r.fill(&mut b));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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
    ) -> Result<Mgmtd<S>, String> {
        if cfg.hostnames.is_empty() {
            return Err("mgmtd needs at least one hostname for this server".into());
        }
        let store = rt.blocking(move || Store::open(storage)).await?;
        let rt2 = rt.clone();
        let uuid = store.node_uuid(|| new_uuid(&rt2))?;
        let state = store.load()?;
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
            bricks: Mutex::new(BTreeMap::new()),
            launcher,
            fs,
            next_txn: AtomicU64::new(1),
            changes: Watch::new((0, false)),
            migrations: Mutex::new(BTreeMap::new()),
            shd: Mutex::new(None),
        });
        let mut servers = Vec::new();
        let mut tcp = RpcServer::new(rt.clone(), cfg.rpc);
        tcp.register(PROGRAM_PORTMAP, Arc::new(PortmapService(inner.clone())));
        tcp.register(PROGRAM_MGMT_PEER, Arc::new(PeerService(inner.clone())));
        tcp.register(PROGRAM_MGMT_CLI, Arc::new(CliService(inner.clone())));
        tcp.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
        servers.push(tcp.listen(&cfg.listen).await.map_err(|e| {
            format!(
                "mgmtd cannot listen on {}: {e} (is another mgmtd running?)",
                cfg.listen
            )
        })?);
        if let Some(sock) = &cfg.cli_socket {
            let mut cli = RpcServer::new(rt.clone(), cfg.rpc);
            cli.register(PROGRAM_MGMT_CLI, Arc::new(CliService(inner.clone())));
            cli.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
            servers.push(
                cli.listen(sock)
                    .await
                    .map_err(|e| format!("mgmtd cannot listen on {sock}: {e}"))?,
            );
        }
        tracing::info!(uuid = %inner.me.uuid, listen = %cfg.listen, "mgmtd ready");
        inner
            .rt
            .trace(|| format!("mgmtd {} ready", inner.me.hostnames[0]));
        inner.connect_peers();
        inner.converge_bricks(false).await;
        rt.spawn(sync_loop(inner.clone()));
        Ok(Mgmtd { inner, servers })
    }

    pub fn uuid(&self) -> &str {
        &self.inner.me.uuid
    }

    pub fn state(&self) -> ClusterState {
        self.inner.state.lock().expect("state").clone()
    }

    /// Run a CLI request here (tests and in-process callers).
    pub async fn cli(&self, req: CliRequest) -> Result<CliReply, String> {
        self.inner.cli(req).await
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

// ---- services ------------------------------------------------------------

struct PortmapService<S: Storage>(Arc<Inner<S>>);
struct PeerService<S: Storage>(Arc<Inner<S>>);
struct CliService<S: Storage>(Arc<Inner<S>>);

fn reply<T: Serialize>(v: &T) -> Result<Reply, Fault> {
    Reply::encode(v)
}

impl<S: Storage> Service for PortmapService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            match req.procedure {
                portmap::procs::SIGN_IN => {
                    let q: portmap::SignIn = req.decode()?;
                    tracing::info!(brick = %q.brick_path, port = q.port, "brick signed in");
                    inner
                        .rt
                        .trace(|| format!("brick {} signed in on {}", q.brick_path, q.port));
                    inner
                        .portmap
                        .lock()
                        .expect("portmap")
                        .insert(q.brick_path, q.port);
                    reply(&())
                }
                portmap::procs::SIGN_OUT => {
                    let q: portmap::SignOut = req.decode()?;
                    inner.portmap.lock().expect("portmap").remove(&q.brick_path);
                    reply(&())
                }
                portmap::procs::QUERY => {
                    let q: portmap::Query = req.decode()?;
                    reply(
                        &inner
                            .portmap
                            .lock()
                            .expect("portmap")
                            .get(&q.brick_path)
                            .copied(),
                    )
                }
                p => Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("port map has no procedure {p}"),
                )),
            }
        })
    }
}

impl<S: Storage> Service for PeerService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            match req.procedure {
                peer_procs::HELLO => {
                    let q: Hello = req.decode()?;
                    reply(&inner.hello(q))
                }
                peer_procs::LOCK => {
                    let q: LockReq = req.decode()?;
                    reply(&inner.lock(&q))
                }
                peer_procs::UNLOCK => {
                    let q: UnlockReq = req.decode()?;
                    inner
                        .locks
                        .lock()
                        .expect("locks")
                        .release(&q.key, &q.peer, q.txn_id);
                    reply(&PeerResult::Ok(()))
                }
                peer_procs::STAGE => {
                    let q: PhaseReq = req.decode()?;
                    reply(&inner.stage(&q))
                }
                peer_procs::BRICK_OP => {
                    let q: PhaseReq = req.decode()?;
                    reply(&inner.brick_op(&q).await)
                }
                peer_procs::COMMIT => {
                    let q: PhaseReq = req.decode()?;
                    reply(&inner.commit(&q).await)
                }
                peer_procs::POST_VALIDATE => {
                    let q: PhaseReq = req.decode()?;
                    reply(&inner.post_validate(&q).await)
                }
                peer_procs::GET_STATE => reply(&inner.state.lock().expect("state").clone()),
                peer_procs::JOIN => {
                    let q: JoinReq = req.decode()?;
                    reply(&inner.join(q).await)
                }
                peer_procs::LEAVE => {
                    let q: LeaveReq = req.decode()?;
                    reply(&inner.leave(q).await)
                }
                peer_procs::BRICK_STATUS => {
                    let name: String = req.decode()?;
                    reply(&inner.local_brick_status(&name))
                }
                peer_procs::SHD_STATUS => {
                    let _name: String = req.decode()?;
                    reply(&inner.shd_running())
                }
                peer_procs::MIGRATION_STATUS => {
                    let name: String = req.decode()?;
                    let m = inner
                        .migrations
                        .lock()
                        .expect("migrations")
                        .get(&name)
                        .cloned();
                    reply(&m)
                }
                p => Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("peer protocol has no procedure {p}"),
                )),
            }
        })
    }
}

impl<S: Storage> Service for CliService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            if req.procedure != PROC_CLI {
                return Err(Fault::new(
                    FaultCode::ProcUnavail,
                    "the CLI program has one procedure",
                ));
            }
            let q: CliRequest = req.decode()?;
            reply(&inner.cli(q).await)
        })
    }
}

// ---- the daemon's logic ----------------------------------------------------

impl<S: Storage> Inner<S> {
    fn name(&self) -> &str {
        &self.me.hostnames[0]
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

    /// Keep an RPC client to every peer in the state.
    fn connect_peers(&self) {
        let peers: Vec<Peer> = self
            .state
            .lock()
            .expect("state")
            .live_peers()
            .cloned()
            .collect();
        let mut clients = self.peer_clients.lock().expect("peer clients");
        clients.retain(|uuid, c| {
            let keep = peers.iter().any(|p| &p.uuid == uuid);
            if !keep {
                c.close();
            }
            keep
        });
        for p in peers {
            if p.uuid == self.me.uuid || clients.contains_key(&p.uuid) {
                continue;
            }
            let host = p.hostnames.first().cloned().unwrap_or_default();
            match format!("{host}:{}", p.port).parse::<Endpoint>() {
                Ok(ep) => {
                    clients.insert(p.uuid.clone(), RpcClient::new(&self.rt, ep, self.cfg.rpc));
                }
                Err(e) => tracing::warn!(peer = %p.uuid, error = %e, "peer has no usable address"),
            }
        }
    }

    async fn call_peer<Q: Serialize, A: DeserializeOwned>(
        &self,
        client: &RpcClient,
        procedure: u16,
        q: &Q,
    ) -> Result<A, String> {
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

    fn hello(&self, q: Hello) -> HelloReply {
        let st = self.state.lock().expect("state");
        HelloReply {
            me: self.me.clone(),
            pool_size: st.live_peers().filter(|p| p.uuid != q.from.uuid).count(),
            volumes: st.live_volumes().len(),
        }
    }

    fn lock(&self, q: &LockReq) -> PeerResult<()> {
        let now = self.rt.clock().now();
        self.locks.lock().expect("locks").acquire(
            &q.key,
            q.owner.clone(),
            now,
            Duration::from_millis(q.lease_ms),
        )
    }

    fn holds(&self, q: &PhaseReq) -> PeerResult<()> {
        let now = self.rt.clock().now();
        if self
            .locks
            .lock()
            .expect("locks")
            .holds(&q.key, &q.peer, q.txn_id, now)
        {
            Ok(())
        } else {
            Err(format!(
                "{}: the transaction's lock on {} is not held here (lease expired or lost); retry",
                self.name(),
                q.key
            ))
        }
    }

    /// Pre-validate: would the op apply here, and can this server do its part?
    fn stage(&self, q: &PhaseReq) -> PeerResult<()> {
        self.holds(q)?;
        let mut trial = self.state.lock().expect("state").clone();
        let before = trial.clone();
        trial
            .apply(&q.op)
            .map_err(|e| format!("{}: {e}", self.name()))?;
        match &q.op {
            Op::CreateVolume(v) => {
                for b in v.bricks.iter().filter(|b| self.is_local(b)) {
                    self.fs
                        .check_brick(&b.path, q.force)
                        .map_err(|e| format!("{}: {e}", self.name()))?;
                }
            }
            Op::AddBricks { bricks, .. } => {
                for b in bricks.iter().filter(|b| self.is_local(b)) {
                    self.fs
                        .check_brick(&b.path, q.force)
                        .map_err(|e| format!("{}: {e}", self.name()))?;
                }
            }
            Op::ReplaceBrick { new, .. } if self.is_local(new) => {
                self.fs
                    .check_brick(&new.path, true)
                    .map_err(|e| format!("{}: {e}", self.name()))?;
            }
            Op::SetStatus {
                name,
                status: VolumeStatus::Started,
            } if before.volume(name).is_some_and(|v| {
                v.transport == volume::Transport::Rdma && v.bricks.iter().any(|b| self.is_local(b))
            }) && before.volume(name).map(|v| v.status) != Some(VolumeStatus::Started) =>
            {
                self.launcher.rdma_ready().map_err(|e| {
                    format!(
                        "{}: volume {name} uses transport rdma, but {e}",
                        self.name()
                    )
                })?;
            }
            Op::SetStatus { name, status } => {
                let cur = before.volume(name).map(|v| v.status);
                if cur == Some(*status) && !q.force {
                    return Err(format!(
                        "volume {name} is already {}{}",
                        status.as_str().to_ascii_lowercase(),
                        if *status == VolumeStatus::Started {
                            " (use 'start force' to restart dead bricks)"
                        } else {
                            ""
                        }
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Brick-op: this server's part (create brick directories, start or
    /// stop its bricks).
    async fn brick_op(&self, q: &PhaseReq) -> PeerResult<()> {
        self.holds(q)?;
        let name = self.name().to_string();
        match &q.op {
            Op::CreateVolume(v) => {
                for b in v.bricks.iter().filter(|b| self.is_local(b)) {
                    self.fs
                        .prepare_brick(&b.path)
                        .map_err(|e| format!("{name}: {e}"))?;
                }
            }
            Op::AddBricks { bricks, .. } => {
                for b in bricks.iter().filter(|b| self.is_local(b)) {
                    self.fs
                        .prepare_brick(&b.path)
                        .map_err(|e| format!("{name}: {e}"))?;
                }
            }
            Op::SetStatus {
                name: vol,
                status: VolumeStatus::Started,
            } => {
                let v = self.state.lock().expect("state").volume(vol).cloned();
                if let Some(mut v) = v {
                    v.status = VolumeStatus::Started;
                    self.start_local_bricks(&v)
                        .await
                        .map_err(|e| format!("{name}: {e}"))?;
                }
            }
            Op::SetStatus {
                name: vol,
                status: VolumeStatus::Stopped,
            } => {
                self.stop_local_bricks(vol, q.force).await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn commit(&self, q: &PhaseReq) -> PeerResult<()> {
        self.holds(q)?;
        self.apply_and_persist(&q.op)
            .map_err(|e| format!("{}: commit failed: {e}", self.name()))?;
        if matches!(q.op, Op::AddPeer(_) | Op::RemovePeer { .. }) {
            self.connect_peers();
        }
        // Bricks added to a started volume (or swapped in) start now, as
        // the volume's others run (a failure is logged; `start force`
        // retries).
        if let Op::AddBricks { name, .. } | Op::ReplaceBrick { name, .. } = &q.op {
            let v = self.state.lock().expect("state").volume(name).cloned();
            if let Some(v) = v.filter(|v| v.status == VolumeStatus::Started) {
                if let Err(e) = self.start_local_bricks(&v).await {
                    tracing::warn!(volume = %v.name, error = %e, "cannot start the added bricks");
                }
            }
        }
        // A volume started or stopped: this server's self-heal daemon
        // follows at once (the sync tick would within 3 s).
        if matches!(
            q.op,
            Op::SetStatus { .. } | Op::AddBricks { .. } | Op::RemoveBricks { .. }
        ) {
            self.converge_shd().await;
        }
        Ok(())
    }

    async fn post_validate(&self, q: &PhaseReq) -> PeerResult<()> {
        if let Op::SetStatus {
            name,
            status: VolumeStatus::Started,
        } = &q.op
        {
            let down: Vec<String> = self
                .local_brick_status(name)
                .into_iter()
                .filter(|b| !b.online)
                .map(|b| b.brick.to_string())
                .collect();
            if !down.is_empty() {
                return Err(format!(
                    "{}: bricks not running: {}",
                    self.name(),
                    down.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn apply_and_persist(&self, op: &Op) -> Result<(), String> {
        let mut st = self.state.lock().expect("state");
        let mut next = st.clone();
        next.apply(op)?;
        self.store.save_all(&next)?;
        *st = next;
        self.changed();
        Ok(())
    }

    /// Wake volfile watchers: the cluster state was replaced.
    fn changed(&self) {
        self.changes.modify(|c| c.0 += 1);
    }

    async fn join(&self, q: JoinReq) -> PeerResult<()> {
        {
            let st = self.state.lock().expect("state");
            if st.live_peers().count() > 0 || !st.live_volumes().is_empty() {
                return Err(format!(
                    "{} is already part of a pool with peers or volumes",
                    self.name()
                ));
            }
        }
        {
            let mut st = self.state.lock().expect("state");
            self.store.save_all(&q.state)?;
            *st = q.state;
        }
        self.changed();
        tracing::info!("joined a pool");
        self.connect_peers();
        self.converge_bricks(false).await;
        Ok(())
    }

    async fn leave(&self, q: LeaveReq) -> PeerResult<()> {
        tracing::info!(by = %q.from, "detached from the pool");
        let mut st = self.state.lock().expect("state");
        let mut next = ClusterState::default();
        // Keep tombstones of everything so a later probe starts clean.
        for (k, s) in &st.peers {
            let mut s = s.clone();
            s.version += 1;
            s.peer = None;
            next.peers.insert(k.clone(), s);
        }
        self.store.save_all(&next)?;
        *st = next;
        drop(st);
        self.changed();
        self.connect_peers();
        Ok(())
    }

    // ---- bricks ----

    fn launch_spec(&self, v: &Volume, b: &BrickSpec) -> BrickLaunch {
        let opt = |k| options::get(&v.options, k).unwrap_or_default();
        BrickLaunch {
            volume: v.name.clone(),
            volume_id: v.id.clone(),
            path: b.path.clone(),
            mgmt: self.cfg.listen.clone(),
            auth_allow: opt("auth.allow"),
            auth_reject: opt("auth.reject"),
            ping_timeout_secs: opt("network.ping-timeout").parse().unwrap_or(42),
            fsync_namespace: opt("storage.fsync-namespace") == "on",
            rdma: v.transport == volume::Transport::Rdma,
        }
    }

    /// Start every local brick of `v` that is not running.
    async fn start_local_bricks(&self, v: &Volume) -> Result<(), String> {
        for b in v.bricks.iter().filter(|b| self.is_local(b)) {
            let key = (v.name.clone(), b.path.clone());
            let running = self.bricks.lock().expect("bricks").get(&key).copied();
            if running.is_some_and(|r| self.launcher.running(r.id)) {
                continue;
            }
            let id = self.launcher.start(self.launch_spec(v, b)).await?;
            tracing::info!(brick = %b, id, "brick started");
            self.rt
                .trace(|| format!("{} started brick {b}", self.name()));
            self.bricks
                .lock()
                .expect("bricks")
                .insert(key, RunningBrick { id });
        }
        Ok(())
    }

    async fn stop_local_bricks(&self, vol: &str, force: bool) {
        let stopping: Vec<((String, String), RunningBrick)> = {
            let mut m = self.bricks.lock().expect("bricks");
            let keys: Vec<_> = m.keys().filter(|(v, _)| v == vol).cloned().collect();
            keys.into_iter()
                .filter_map(|k| m.remove(&k).map(|r| (k, r)))
                .collect()
        };
        for ((_, path), r) in stopping {
            if let Err(e) = self.launcher.stop(r.id, force).await {
                tracing::warn!(brick = %path, error = %e, "stopping brick failed");
            }
            self.portmap.lock().expect("portmap").remove(&path);
        }
    }

    /// Make this server's bricks match the state: started volumes' bricks
    /// run, others do not. `restart_dead` also brings back bricks that
    /// died (what `start force` does); at startup and after a sync only
    /// missing bricks are started.
    async fn converge_bricks(&self, restart_dead: bool) {
        let vols = self.state.lock().expect("state").live_volumes();
        for v in vols.values() {
            if v.status == VolumeStatus::Started {
                let has_any = self
                    .bricks
                    .lock()
                    .expect("bricks")
                    .keys()
                    .any(|(n, _)| *n == v.name);
                if !has_any || restart_dead {
                    if let Err(e) = self.start_local_bricks(v).await {
                        tracing::warn!(volume = %v.name, error = %e, "cannot start bricks");
                    }
                }
            }
        }
        let running: Vec<String> = self
            .bricks
            .lock()
            .expect("bricks")
            .keys()
            .map(|(n, _)| n.clone())
            .collect();
        for n in running {
            if vols
                .get(&n)
                .is_none_or(|v| v.status != VolumeStatus::Started)
            {
                self.stop_local_bricks(&n, false).await;
            }
        }
    }

    /// Does this server need a self-heal daemon? (A started replicated or
    /// dispersed volume with a brick here.)
    fn wants_shd(&self) -> bool {
        // Copy first: `shd_serves` looks hosts up in the state (its lock
        // is not reentrant).
        let vols = self.state.lock().expect("state").live_volumes();
        vols.values().any(|v| self.shd_serves(v))
    }

    fn shd_serves(&self, v: &Volume) -> bool {
        v.wants_shd() && v.bricks.iter().any(|b| self.is_local(b))
    }

    fn shd_running(&self) -> bool {
        let id = *self.shd.lock().expect("shd");
        id.is_some_and(|id| self.launcher.running(id))
    }

    async fn converge_shd(&self) {
        let want = self.wants_shd();
        let running = self.shd_running();
        if want && !running {
            match self
                .launcher
                .start_shd(self.me.hostnames.clone(), self.cfg.listen.clone())
                .await
            {
                Ok(id) => {
                    tracing::info!(id, "self-heal daemon started");
                    *self.shd.lock().expect("shd") = Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "cannot start the self-heal daemon"),
            }
        } else if !want {
            let id = self.shd.lock().expect("shd").take();
            if let Some(id) = id {
                if let Err(e) = self.launcher.stop(id, false).await {
                    tracing::warn!(error = %e, "cannot stop the self-heal daemon");
                } else {
                    tracing::info!("self-heal daemon stopped (no volume needs it)");
                }
            }
        }
    }

    fn local_brick_status(&self, vol: &str) -> Vec<BrickStatus> {
        let Some(v) = self.state.lock().expect("state").volume(vol).cloned() else {
            return Vec::new();
        };
        let bricks = self.bricks.lock().expect("bricks").clone();
        let ports = self.portmap.lock().expect("portmap").clone();
        v.bricks
            .iter()
            .filter(|b| self.is_local(b))
            .map(|b| {
                let r = bricks.get(&(vol.to_string(), b.path.clone()));
                let online = r.is_some_and(|r| self.launcher.running(r.id));
                BrickStatus {
                    brick: b.clone(),
                    port: if online {
                        ports.get(&b.path).copied()
                    } else {
                        None
                    },
                    pid: r.filter(|_| online).map(|r| r.id),
                    online,
                }
            })
            .collect()
    }

    // ---- transactions ----

    /// Run `op` across the pool.
    async fn transact(&self, command: &str, op: Op, force: bool) -> Result<String, String> {
        let key = op.lock_key();
        let txn_id = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let owner = LockOwner {
            peer: self.me.uuid.clone(),
            peer_name: self.name().to_string(),
            txn_id,
            command: command.to_string(),
            since: self.rt.clock().unix_secs(),
        };
        let clients: Vec<(String, RpcClient)> = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .iter()
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect();
        let total = clients.len() + 1;
        let reachable: Vec<(String, RpcClient)> = clients
            .into_iter()
            .filter(|(_, c)| c.is_connected())
            .collect();
        if (reachable.len() + 1) * 2 <= total {
            return Err(format!(
                "only {} of the {total} servers in the pool are reachable; changes need a majority (check 'mortar peer status')",
                reachable.len() + 1
            ));
        }
        self.rt.trace(|| {
            format!(
                "txn {txn_id} {command}: begin with {} peers",
                reachable.len()
            )
        });
        self.at("lock").await;
        let lreq = LockReq {
            key: key.clone(),
            owner: owner.clone(),
            lease_ms: LEASE.as_millis() as u64,
        };
        // Every originator locks the servers in one global order (by
        // uuid): of transactions racing for one volume, whoever wins the
        // first server's lock proceeds; the others fail there at once,
        // holding nothing. Locking ourselves first instead would let every
        // racer hold its own lock and all of them fail.
        let mut order: Vec<(String, Option<RpcClient>)> = reachable
            .iter()
            .map(|(u, c)| (u.clone(), Some(c.clone())))
            .collect();
        order.push((self.me.uuid.clone(), None));
        order.sort_by(|a, b| a.0.cmp(&b.0));
        let mut locked: Vec<(String, RpcClient)> = Vec::new();
        let mut locked_self = false;
        for (u, c) in &order {
            let r = match c {
                None => self.lock(&lreq),
                Some(c) => match self
                    .call_peer::<_, PeerResult<()>>(c, peer_procs::LOCK, &lreq)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => Err(format!("{}: {e}", self.peer_name(u))),
                },
            };
            match (r, c) {
                (Ok(()), None) => locked_self = true,
                (Ok(()), Some(c)) => locked.push((u.clone(), c.clone())),
                (Err(e), _) => {
                    if locked_self {
                        self.locks
                            .lock()
                            .expect("locks")
                            .release(&key, &self.me.uuid, txn_id);
                    }
                    self.unlock_all(&key, txn_id, &locked).await;
                    return Err(e);
                }
            }
        }
        let phase = PhaseReq {
            key: key.clone(),
            peer: self.me.uuid.clone(),
            txn_id,
            op,
            force,
        };
        // Pre-validate, then brick-op: any failure aborts before commit.
        for (proc_, name) in [
            (peer_procs::STAGE, "pre-validate"),
            (peer_procs::BRICK_OP, "brick-op"),
        ] {
            self.at(name).await;
            let local = if proc_ == peer_procs::STAGE {
                self.stage(&phase)
            } else {
                self.brick_op(&phase).await
            };
            let mut errors: Vec<String> = local.err().into_iter().collect();
            for (u, c) in &locked {
                match self.call_peer::<_, PeerResult<()>>(c, proc_, &phase).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(format!("{}: {e}", self.peer_name(u))),
                }
            }
            if !errors.is_empty() {
                self.rt
                    .trace(|| format!("txn {txn_id} {command}: {name} failed"));
                self.unlock_all(&key, txn_id, &locked).await;
                return Err(format!(
                    "{command} failed in {name}: {}",
                    summarize(&errors)
                ));
            }
        }
        // Commit: from here the change is made; a server that misses it
        // converges by sync.
        self.at("commit-local").await;
        self.commit(&phase).await?;
        self.at("commit-peers").await;
        let mut warnings = Vec::new();
        for (u, c) in &locked {
            match self
                .call_peer::<_, PeerResult<()>>(c, peer_procs::COMMIT, &phase)
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warnings.push(e),
                Err(e) => warnings.push(format!(
                    "{} did not confirm the commit ({e}); it will catch up when reachable",
                    self.peer_name(u)
                )),
            }
        }
        self.at("post-validate").await;
        if let Err(e) = self.post_validate(&phase).await {
            warnings.push(e);
        }
        for (_, c) in &locked {
            if let Ok(Err(e)) = self
                .call_peer::<_, PeerResult<()>>(c, peer_procs::POST_VALIDATE, &phase)
                .await
            {
                warnings.push(e);
            }
        }
        self.at("unlock").await;
        self.unlock_all(&key, txn_id, &locked).await;
        self.rt
            .trace(|| format!("txn {txn_id} {command}: committed"));
        let mut msg = format!("{command}: success");
        if !warnings.is_empty() {
            msg.push_str(&format!(" (warnings: {})", warnings.join("; ")));
        }
        Ok(msg)
    }

    async fn at(&self, phase: &'static str) {
        if let Some(hook) = &self.cfg.phase_hook {
            hook(phase).await;
        }
    }

    async fn unlock_all(&self, key: &str, txn_id: u64, locked: &[(String, RpcClient)]) {
        self.locks
            .lock()
            .expect("locks")
            .release(key, &self.me.uuid, txn_id);
        let req = UnlockReq {
            key: key.to_string(),
            peer: self.me.uuid.clone(),
            txn_id,
        };
        for (_, c) in locked {
            // A peer that misses the unlock has its lock lapse with the lease.
            let _ = self
                .call_peer::<_, PeerResult<()>>(c, peer_procs::UNLOCK, &req)
                .await;
        }
    }

    // ---- peers ----

    async fn probe(&self, host: &str) -> Result<String, String> {
        let host = host.to_ascii_lowercase();
        if self.me.hostnames.contains(&host) {
            return Ok(format!("peer probe: {host} is this server"));
        }
        if self.identify(&host).is_some() {
            return Ok(format!("peer probe: {host} is already in the pool"));
        }
        let port = endpoint_port(&self.cfg.listen);
        let ep: Endpoint = format!("{host}:{port}")
            .parse()
            .map_err(|e: mortar_net::addr::AddrError| e.to_string())?;
        let client = RpcClient::new(&self.rt, ep.clone(), self.cfg.rpc);
        let reached = client.wait_connected(self.cfg.phase_timeout).await;
        let hello = match reached {
            Ok(_) => {
                self.call_peer::<_, HelloReply>(
                    &client,
                    peer_procs::HELLO,
                    &Hello {
                        from: self.me.clone(),
                    },
                )
                .await
            }
            Err(e) => Err(e.to_string()),
        };
        client.close();
        let hello = hello.map_err(|e| format!("peer probe: cannot reach mgmtd on {host}: {e}"))?;
        if hello.pool_size > 0 || hello.volumes > 0 {
            return Err(format!(
                "peer probe: {host} is already part of another pool (it has {} peers and {} volumes)",
                hello.pool_size, hello.volumes
            ));
        }
        let mut peer = hello.me;
        if !peer.hostnames.contains(&host) {
            peer.hostnames.insert(0, host.clone());
        }
        let msg = self
            .transact(
                &format!("peer probe {host}"),
                Op::AddPeer(peer.clone()),
                false,
            )
            .await?;
        // The new peer takes the whole state, which now includes itself.
        let mut state = self.state.lock().expect("state").clone();
        state.apply(&Op::AddPeer(self.me.clone()))?;
        let client = RpcClient::new(&self.rt, ep, self.cfg.rpc);
        let joined = match client.wait_connected(self.cfg.phase_timeout).await {
            Ok(_) => self
                .call_peer::<_, PeerResult<()>>(&client, peer_procs::JOIN, &JoinReq { state })
                .await
                .and_then(|r| r),
            Err(e) => Err(e.to_string()),
        };
        client.close();
        joined.map_err(|e| {
            format!(
                "peer probe: {host} was added but did not join: {e}; run 'mortar peer sync' on it"
            )
        })?;
        // Everyone else learns of this server through the commit; make sure
        // we are a peer in everyone's state too.
        Ok(msg.replace(": success", ": success (peer joined)"))
    }

    async fn detach(&self, host: &str, force: bool) -> Result<String, String> {
        let uuid = self
            .identify(host)
            .ok_or_else(|| format!("peer detach: {host} is not in the pool"))?;
        if uuid == self.me.uuid {
            return Err(
                "peer detach: cannot detach this server from itself; run it on another server"
                    .into(),
            );
        }
        let hosting: Vec<String> = self
            .state
            .lock()
            .expect("state")
            .live_volumes()
            .values()
            .filter(|v| {
                v.bricks
                    .iter()
                    .any(|b| self.identify(&b.host).as_deref() == Some(uuid.as_str()))
            })
            .map(|v| v.name.clone())
            .collect();
        if !hosting.is_empty() && !force {
            return Err(format!(
                "peer detach: {host} has bricks of {}: remove or replace them first (or use 'force')",
                hosting.join(", ")
            ));
        }
        let msg = self
            .transact(
                &format!("peer detach {host}"),
                Op::RemovePeer { uuid: uuid.clone() },
                force,
            )
            .await?;
        let client = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .get(&uuid)
            .cloned();
        if let Some(c) = client {
            let _ = self
                .call_peer::<_, PeerResult<()>>(
                    &c,
                    peer_procs::LEAVE,
                    &LeaveReq {
                        from: self.me.uuid.clone(),
                    },
                )
                .await;
        }
        self.connect_peers();
        Ok(msg)
    }

    fn peer_views(&self) -> Vec<PeerView> {
        let st = self.state.lock().expect("state").clone();
        let clients = self.peer_clients.lock().expect("peer clients").clone();
        let div = self.divergence.lock().expect("divergence").clone();
        st.live_peers()
            .filter(|p| p.uuid != self.me.uuid)
            .map(|p| PeerView {
                uuid: p.uuid.clone(),
                hostname: p.hostnames.first().cloned().unwrap_or_default(),
                other_names: p.hostnames.iter().skip(1).cloned().collect(),
                connected: clients.get(&p.uuid).is_some_and(|c| c.is_connected()),
                divergence: div.get(&p.uuid).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Compare with every reachable peer and take what is newer there.
    ///
    /// Two servers holding one object at the same version with different
    /// contents means a transaction's commit was cut short (its originator
    /// crashed after committing on some servers) and another transaction
    /// committed since. Changes need a majority, so the variant a strict
    /// majority of the pool holds is the acknowledged one: it is adopted,
    /// and the unacknowledged partial commit dropped. Without a majority
    /// the conflict is reported for an operator (`peer sync`).
    async fn sync_once(&self) {
        let clients: Vec<(String, RpcClient)> = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .iter()
            .filter(|(_, c)| c.is_connected())
            .map(|(u, c)| (u.clone(), c.clone()))
            .collect();
        let pool_size = self.peer_clients.lock().expect("peer clients").len() + 1;
        let mut views: Vec<(String, ClusterState)> = Vec::new();
        for (uuid, c) in &clients {
            if let Ok(s) = self
                .call_peer::<_, ClusterState>(c, peer_procs::GET_STATE, &())
                .await
            {
                views.push((uuid.clone(), s));
            }
        }
        let mut changed = false;
        for (uuid, theirs) in &views {
            let mut st = self.state.lock().expect("state");
            let r = reconcile(&st, theirs);
            let mut next = st.clone();
            let mut adopted = r.take_volumes.len() + r.take_peers.len();
            r.adopt(&mut next);
            let mut unresolved = Vec::new();
            for line in &r.conflicts {
                let Some(name) = line
                    .strip_prefix("volume ")
                    .and_then(|l| l.split(':').next())
                else {
                    unresolved.push(line.clone());
                    continue;
                };
                let Some(variant) = theirs.volumes.get(name) else {
                    continue;
                };
                let holders = 1 + views
                    .iter()
                    .filter(|(u, v)| u != uuid && v.volumes.get(name) == Some(variant))
                    .count();
                if holders * 2 > pool_size {
                    tracing::warn!(volume = name, "discarding an unacknowledged partial commit: a majority holds another version");
                    self.rt.trace(|| {
                        format!(
                            "{} dropped a partial commit of {name}",
                            self.me.hostnames[0]
                        )
                    });
                    next.volumes.insert(name.to_string(), variant.clone());
                    adopted += 1;
                } else {
                    unresolved.push(line.clone());
                }
            }
            if adopted > 0 {
                match self.store.save_all(&next) {
                    Ok(()) => {
                        tracing::info!(peer = %uuid, adopted, "caught up from peer");
                        self.rt
                            .trace(|| format!("{} caught up from {uuid}", self.me.hostnames[0]));
                        *st = next;
                        self.changed();
                        changed = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot persist state taken from a peer"),
                }
            }
            drop(st);
            let mut div = self.divergence.lock().expect("divergence");
            if unresolved.is_empty() {
                div.remove(uuid);
            } else {
                unresolved.push(format!(
                    "repair: run 'mortar peer sync {}' on the server whose view is wrong",
                    self.name()
                ));
                div.insert(uuid.clone(), unresolved);
            }
        }
        if changed {
            self.connect_peers();
            self.converge_bricks(false).await;
        }
    }

    async fn peer_sync(&self, host: &str) -> Result<String, String> {
        let uuid = self
            .identify(host)
            .filter(|u| *u != self.me.uuid)
            .ok_or_else(|| format!("peer sync: {host} is not a peer"))?;
        let c = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .get(&uuid)
            .cloned()
            .ok_or_else(|| format!("peer sync: no connection to {host}"))?;
        let theirs: ClusterState = self.call_peer(&c, peer_procs::GET_STATE, &()).await?;
        let mut next = self.state.lock().expect("state").clone();
        let r = reconcile(&next, &theirs);
        r.adopt(&mut next);
        // Conflicting objects: take theirs, as the operator asked.
        for line in &r.conflicts {
            if let Some(name) = line
                .strip_prefix("volume ")
                .and_then(|l| l.split(':').next())
            {
                if let Some(s) = theirs.volumes.get(name) {
                    next.volumes.insert(name.to_string(), s.clone());
                }
            }
        }
        self.store.save_all(&next)?;
        *self.state.lock().expect("state") = next;
        self.changed();
        self.divergence.lock().expect("divergence").remove(&uuid);
        self.connect_peers();
        self.converge_bricks(false).await;
        Ok(format!(
            "peer sync: took {} objects from {host} ({} were in conflict)",
            r.take_volumes.len() + r.take_peers.len() + r.conflicts.len(),
            r.conflicts.len()
        ))
    }

    // ---- the CLI ----

    fn volume_or_err(&self, name: &str) -> Result<Volume, String> {
        self.state
            .lock()
            .expect("state")
            .volume(name)
            .cloned()
            .ok_or_else(|| format!("volume {name} does not exist"))
    }

    async fn cli(&self, req: CliRequest) -> Result<CliReply, String> {
        use CliRequest as R;
        Ok(match req {
            R::PeerProbe { host } => CliReply::Done(self.probe(&host).await?),
            R::PeerDetach { host, force } => CliReply::Done(self.detach(&host, force).await?),
            R::PeerSync { host } => CliReply::Done(self.peer_sync(&host).await?),
            R::PeerStatus => CliReply::Peers(self.peer_views()),
            R::PoolList => {
                let mut v = self.peer_views();
                v.insert(
                    0,
                    PeerView {
                        uuid: self.me.uuid.clone(),
                        hostname: "localhost".into(),
                        other_names: self.me.hostnames.clone(),
                        connected: true,
                        divergence: Vec::new(),
                    },
                );
                CliReply::Peers(v)
            }
            R::VolumeCreate(c) => {
                let vols = self.state.lock().expect("state").live_volumes();
                let layout = volume::plan_create(&c, &vols, self)?;
                let v = Volume {
                    name: c.name.clone(),
                    id: new_uuid(&self.rt),
                    layout,
                    transport: c.transport,
                    bricks: c.bricks.clone(),
                    status: VolumeStatus::Created,
                    options: BTreeMap::new(),
                    version: 0,
                    removing: Vec::new(),
                };
                let msg = self
                    .transact(
                        &format!("volume create {}", c.name),
                        Op::CreateVolume(v),
                        c.force,
                    )
                    .await?;
                CliReply::Done(format!("{msg}: start the volume to access data"))
            }
            R::VolumeStart { name, force } => {
                self.volume_or_err(&name)?;
                let op = Op::SetStatus {
                    name: name.clone(),
                    status: VolumeStatus::Started,
                };
                CliReply::Done(
                    self.transact(&format!("volume start {name}"), op, force)
                        .await?,
                )
            }
            R::VolumeStop { name, force } => {
                self.volume_or_err(&name)?;
                let op = Op::SetStatus {
                    name: name.clone(),
                    status: VolumeStatus::Stopped,
                };
                CliReply::Done(
                    self.transact(&format!("volume stop {name}"), op, force)
                        .await?,
                )
            }
            R::VolumeDelete { name } => {
                self.volume_or_err(&name)?;
                let op = Op::DeleteVolume { name: name.clone() };
                CliReply::Done(
                    self.transact(&format!("volume delete {name}"), op, false)
                        .await?,
                )
            }
            R::VolumeInfo { name } => {
                let vols = self.state.lock().expect("state").live_volumes();
                match name {
                    Some(n) if n != "all" => CliReply::Volumes(vec![vols
                        .get(&n)
                        .cloned()
                        .ok_or_else(|| format!("volume {n} does not exist"))?]),
                    _ => CliReply::Volumes(vols.into_values().collect()),
                }
            }
            R::VolumeStatus { name } => {
                let vols = self.state.lock().expect("state").live_volumes();
                let names: Vec<String> = match name {
                    Some(n) if n != "all" => {
                        if !vols.contains_key(&n) {
                            return Err(format!("volume {n} does not exist"));
                        }
                        vec![n]
                    }
                    _ => vols.keys().cloned().collect(),
                };
                let mut out = Vec::new();
                for n in names {
                    out.push(self.volume_status(&vols[&n]).await);
                }
                CliReply::Status(out)
            }
            R::VolumeSet { name, key, value } => {
                self.volume_or_err(&name)?;
                let value = options::validate(&key, &value)?;
                let op = Op::SetOption {
                    name: name.clone(),
                    key: key.clone(),
                    value,
                };
                CliReply::Done(
                    self.transact(&format!("volume set {name} {key}"), op, false)
                        .await?,
                )
            }
            R::VolumeGet { name, key } => {
                let v = self.volume_or_err(&name)?;
                let all = options::effective(&v.options);
                let rows: Vec<OptionView> = all
                    .into_iter()
                    .filter(|(k, _, _)| {
                        key.as_deref()
                            .is_none_or(|want| want == "all" || want == *k)
                    })
                    .map(|(k, value, set)| OptionView {
                        key: k.to_string(),
                        value,
                        set,
                    })
                    .collect();
                if rows.is_empty() {
                    return Err(format!(
                        "unknown option {:?}: see 'mortar volume get {name} all'",
                        key.unwrap_or_default()
                    ));
                }
                CliReply::Options(rows)
            }
            R::VolumeReset { name, key } => {
                self.volume_or_err(&name)?;
                let op = Op::ResetOption {
                    name: name.clone(),
                    key,
                };
                CliReply::Done(
                    self.transact(&format!("volume reset {name}"), op, false)
                        .await?,
                )
            }
            R::VolumeList => CliReply::Names(
                self.state
                    .lock()
                    .expect("state")
                    .live_volumes()
                    .into_keys()
                    .collect(),
            ),
            R::AddBrick {
                name,
                replica,
                bricks,
                force,
            } => {
                let v = self.volume_or_err(&name)?;
                let layout = match (v.layout, replica) {
                    (l, None) => l,
                    (volume::Layout::Replicate { replica: r, arbiter }, Some(n)) if n == r => {
                        volume::Layout::Replicate { replica: r, arbiter }
                    }
                    (_, Some(n)) => {
                        return Err(format!(
                            "add-brick: changing the replica count to {n} is not supported; add bricks in sets of {}",
                            v.layout.set_size()
                        ))
                    }
                };
                let vols = self.state.lock().expect("state").live_volumes();
                volume::check_bricks(&name, layout, &bricks, force, &vols, self)?;
                let op = Op::AddBricks {
                    name: name.clone(),
                    bricks,
                    layout,
                };
                CliReply::Done(
                    self.transact(&format!("volume add-brick {name}"), op, force)
                        .await?,
                )
            }
            R::RemoveBrick {
                name,
                bricks,
                action,
            } => {
                let v = self.volume_or_err(&name)?;
                let set = v.layout.set_size() as usize;
                if bricks.len() % set != 0 {
                    return Err(format!(
                        "remove-brick: remove whole sets ({set} bricks each)"
                    ));
                }
                match action {
                    RemoveBrickAction::Force => {
                        let op = Op::RemoveBricks {
                            name: name.clone(),
                            bricks,
                        };
                        CliReply::Done(
                            self.transact(&format!("volume remove-brick {name}"), op, true)
                                .await?,
                        )
                    }
                    RemoveBrickAction::Commit => {
                        let mut sorted = bricks.clone();
                        sorted.sort();
                        let mut removing = v.removing.clone();
                        removing.sort();
                        if removing != sorted {
                            return Err(format!(
                                "remove-brick commit: run 'volume remove-brick {name} {} start' first and wait for 'completed' in 'status' (or use 'force' to drop the bricks with their files still on them)",
                                bricks.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" ")
                            ));
                        }
                        let views = self.migration_views(&name).await;
                        if !views.iter().any(|m| m.status == MigrationView::COMPLETED) {
                            let now = views
                                .first()
                                .map(|m| {
                                    format!(
                                        "{} ({} files moved, {} failures)",
                                        m.status, m.files, m.failures
                                    )
                                })
                                .unwrap_or_else(|| {
                                    "not running (its server may have restarted: run 'start' again)"
                                        .into()
                                });
                            return Err(format!(
                                "remove-brick commit: the migration off these bricks is {now}; commit when 'volume remove-brick {name} ... status' says completed, or use 'force'"
                            ));
                        }
                        let op = Op::RemoveBricks {
                            name: name.clone(),
                            bricks,
                        };
                        let msg = self
                            .transact(&format!("volume remove-brick {name}"), op, true)
                            .await?;
                        self.migrations.lock().expect("migrations").remove(&name);
                        CliReply::Done(msg)
                    }
                    RemoveBrickAction::Start => {
                        if v.status != VolumeStatus::Started {
                            return Err(format!("remove-brick start: volume {name} is not started; start it so its files can move"));
                        }
                        let mut trial = v.clone();
                        trial.removing = bricks.clone();
                        let drained = trial.decommissioned_sets();
                        if drained.len() * set != bricks.len() {
                            return Err(format!(
                                "remove-brick start: the bricks must make up whole sets of {set} (bricks listed together in 'volume info')"
                            ));
                        }
                        if drained.len() * set >= v.bricks.len() {
                            return Err("remove-brick start: that would remove every set; at least one must stay to take the files".into());
                        }
                        if let Some(m) = self.migrations.lock().expect("migrations").get(&name) {
                            if m.status == MigrationView::IN_PROGRESS {
                                return Err(format!("remove-brick start: a migration of {name} is already in progress on this server"));
                            }
                        }
                        let op = Op::DrainBricks {
                            name: name.clone(),
                            bricks: bricks.clone(),
                        };
                        self.transact(&format!("volume remove-brick {name} start"), op, true)
                            .await?;
                        self.migrations.lock().expect("migrations").insert(
                            name.clone(),
                            MigrationView {
                                volume: name.clone(),
                                node: self.name().to_string(),
                                status: MigrationView::IN_PROGRESS.into(),
                                dirs: 0,
                                files: 0,
                                bytes: 0,
                                failures: 0,
                                last_error: None,
                                bricks: bricks.clone(),
                            },
                        );
                        if let Err(e) = self
                            .launcher
                            .start_migration(&name, self.cfg.listen.clone())
                            .await
                        {
                            if let Some(m) =
                                self.migrations.lock().expect("migrations").get_mut(&name)
                            {
                                m.status = MigrationView::FAILED.into();
                                m.last_error = Some(e.clone());
                            }
                            return Err(format!(
                                "remove-brick start: cannot start the migration: {e}"
                            ));
                        }
                        CliReply::Done(format!(
                            "volume remove-brick start: success\nMigration of {name}'s files off {} started on {}; see 'volume remove-brick {name} {} status'",
                            bricks.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "),
                            self.name(),
                            bricks.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "),
                        ))
                    }
                    RemoveBrickAction::Status => {
                        let views = self.migration_views(&name).await;
                        if views.is_empty() {
                            return Err(format!("remove-brick status: no migration of {name} is known (run 'start' first)"));
                        }
                        CliReply::Migration(views)
                    }
                }
            }
            R::MigrationReport(m) => {
                let mut all = self.migrations.lock().expect("migrations");
                match all.get_mut(&m.volume) {
                    Some(cur) => {
                        let bricks = cur.bricks.clone();
                        *cur = MigrationView {
                            bricks,
                            node: cur.node.clone(),
                            ..m
                        };
                    }
                    None => {
                        return Err(format!("no migration of {} was started here", m.volume));
                    }
                }
                CliReply::Done("noted".into())
            }
            R::ReplaceBrick { name, old, new } => {
                let v = self.volume_or_err(&name)?;
                if !v.bricks.contains(&old) {
                    return Err(format!("replace-brick: {old} is not a brick of {name}"));
                }
                let vols = self.state.lock().expect("state").live_volumes();
                volume::check_bricks(
                    &name,
                    volume::Layout::Distribute,
                    std::slice::from_ref(&new),
                    true,
                    &vols,
                    self,
                )?;
                let op = Op::ReplaceBrick {
                    name: name.clone(),
                    old,
                    new,
                };
                CliReply::Done(
                    self.transact(&format!("volume replace-brick {name}"), op, true)
                        .await?,
                )
            }
            R::GetVolfile { name, brick } => {
                let v = self.volume_or_err(&name)?;
                let g = match brick {
                    Some(b) => volfile::brick_graph(&v, &b),
                    None => volfile::client_graph(&v),
                };
                CliReply::Volfile(g.render())
            }
            R::WatchVolfile {
                name,
                known,
                wait_ms,
            } => {
                let wait = Duration::from_millis(wait_ms).min(VOLFILE_WATCH_MAX);
                let deadline = self.rt.clock().now() + wait;
                loop {
                    let seen = self.changes.get();
                    let text = volfile::client_graph(&self.volume_or_err(&name)?).render();
                    if volfile_hash(&text) != known {
                        return Ok(CliReply::Volfile(text));
                    }
                    let now = self.rt.clock().now();
                    if seen.1 || now >= deadline {
                        return Ok(CliReply::VolfileUnchanged);
                    }
                    let _ = self
                        .rt
                        .clock()
                        .timeout(
                            deadline - now,
                            self.changes.wait_for(|c| c.0 != seen.0 || c.1),
                        )
                        .await;
                }
            }
        })
    }

    /// Migrations of `name` known here and on every reachable peer.
    async fn migration_views(&self, name: &str) -> Vec<MigrationView> {
        let mut out: Vec<MigrationView> = self
            .migrations
            .lock()
            .expect("migrations")
            .get(name)
            .cloned()
            .into_iter()
            .collect();
        let clients = self.peer_clients.lock().expect("peer clients").clone();
        for (_, c) in clients {
            if let Ok(Some(m)) = self
                .call_peer::<_, Option<MigrationView>>(
                    &c,
                    peer_procs::MIGRATION_STATUS,
                    &name.to_string(),
                )
                .await
            {
                out.push(m);
            }
        }
        out
    }

    async fn volume_status(&self, v: &Volume) -> VolumeStatusView {
        let mut bricks = self.local_brick_status(&v.name);
        let clients = self.peer_clients.lock().expect("peer clients").clone();
        for (uuid, c) in clients {
            if !v
                .bricks
                .iter()
                .any(|b| self.identify(&b.host).as_deref() == Some(uuid.as_str()))
            {
                continue;
            }
            match self
                .call_peer::<_, Vec<BrickStatus>>(&c, peer_procs::BRICK_STATUS, &v.name)
                .await
            {
                Ok(mut s) => bricks.append(&mut s),
                Err(_) => {
                    for b in v
                        .bricks
                        .iter()
                        .filter(|b| self.identify(&b.host).as_deref() == Some(uuid.as_str()))
                    {
                        bricks.push(BrickStatus {
                            brick: b.clone(),
                            port: None,
                            pid: None,
                            online: false,
                        });
                    }
                }
            }
        }
        bricks.sort_by_key(|b| v.bricks.iter().position(|x| *x == b.brick));
        // Self-heal daemons of the servers with bricks here (replicated
        // volumes only).
        let mut shd = Vec::new();
        if v.wants_shd() {
            if v.bricks.iter().any(|b| self.is_local(b)) {
                shd.push((self.name().to_string(), self.shd_running()));
            }
            let clients = self.peer_clients.lock().expect("peer clients").clone();
            for (uuid, c) in clients {
                let Some(b) = v
                    .bricks
                    .iter()
                    .find(|b| self.identify(&b.host).as_deref() == Some(uuid.as_str()))
                else {
                    continue;
                };
                let up = self
                    .call_peer::<_, bool>(&c, peer_procs::SHD_STATUS, &v.name)
                    .await
                    .unwrap_or(false);
                shd.push((b.host.clone(), up));
            }
        }
        VolumeStatusView {
            name: v.name.clone(),
            status: v.status.as_str().to_string(),
            bricks,
            shd,
        }
    }
}

/// One line per distinct problem: when every server reports the same
/// thing, say it once.
fn summarize(errors: &[String]) -> String {
    let strip = |e: &String| -> String {
        match e.split_once(": ") {
            Some((host, rest)) if !host.contains(' ') => rest.to_string(),
            _ => e.clone(),
        }
    };
    let distinct: std::collections::BTreeSet<String> = errors.iter().map(strip).collect();
    if distinct.len() == 1 {
        let only = distinct.into_iter().next().expect("one element");
        if errors.len() > 1 {
            return format!("{only} (on all {} servers)", errors.len());
        }
        return only;
    }
    errors.join("; ")
}

async fn sync_loop<S: Storage>(inner: Arc<Inner<S>>) {
    let mut tick = inner.rt.clock().interval(inner.cfg.sync_interval);
    loop {
        tick.tick().await;
        inner.sync_once().await;
        // Also the self-heal daemon's watchdog: started when a volume
        // needs it, restarted if it died, stopped when none does.
        inner.converge_shd().await;
    }
}
