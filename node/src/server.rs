//! Starting and stopping a brick: open the storage, serve the brick
//! program, sign in to the management daemon's port map.

use std::sync::Arc;
use std::time::Duration;

use mortar_net::rpc::echo::{EchoService, PROGRAM_ECHO};
use mortar_net::rpc::{RpcClient, RpcConfig, RpcServer, ServerHandle};
use mortar_net::{Addr, Endpoint, Runtime};
use mortar_proto::brick::PROGRAM_BRICK;
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};
use mortar_storage::Storage;

use crate::brick::{Brick, BrickConfig};
use crate::service::{AuthRules, BrickService};
use crate::NodeError;

#[derive(Debug, Clone)]
pub struct BrickServerConfig {
    pub brick: BrickConfig,
    /// The brick directory as operators name it (for logs and the port map).
    pub brick_path: String,
    /// Where to listen; port 0 picks a free port.
    pub listen: Endpoint,
    /// The management daemon to sign in with, if any.
    pub mgmt: Option<Endpoint>,
    pub auth: AuthRules,
    pub rpc: RpcConfig,
}

/// A serving brick.
pub struct RunningBrick<S: Storage> {
    pub local: Addr,
    pub service: BrickService<S>,
    server: ServerHandle,
    rt: Runtime,
    cfg: BrickServerConfig,
}

/// How long a clean stop waits for the port map to hear about it.
const SIGN_OUT_TIMEOUT_SECS: u64 = 2;
/// How long one sign-in call may take before it is retried.
const SIGN_IN_TIMEOUT_SECS: u64 = 5;
/// The pause between failed sign-in attempts.
const SIGN_IN_RETRY_SECS: u64 = 1;

/// Open `storage` as a brick and serve it. The error is a
/// [`NodeError`]'s message (callers report it as text).
pub async fn start_brick<S: Storage>(
    rt: &Runtime,
    storage: S,
    cfg: BrickServerConfig,
) -> Result<RunningBrick<S>, String> {
    let bcfg = cfg.brick.clone();
    let brick = rt
        .blocking(move || Brick::init(storage, bcfg))
        .await
        .map_err(|e| e.to_string())?;
    let service = BrickService::new(
        rt.clone(),
        Arc::new(brick),
        cfg.auth.clone(),
        cfg.brick_path.clone(),
    );
    let mut server = RpcServer::new(rt.clone(), cfg.rpc);
    server.register(PROGRAM_BRICK, Arc::new(service.clone()));
    server.register(PROGRAM_ECHO, Arc::new(EchoService::new()));
    let wait = Duration::from_millis(mortar_net::rpc::LISTEN_RESOLVE_WAIT_MS_MAX);
    let handle = server
        .listen_patiently(&cfg.listen, wait)
        .await
        .map_err(|e| {
            NodeError::Listen {
                brick: cfg.brick_path.clone(),
                error: e.to_string(),
            }
            .to_string()
        })?;
    let local = handle.local_addr().clone();
    tracing::info!(brick = %cfg.brick_path, listen = %local, "brick ready");
    rt.trace(|| format!("brick {} listening on {local}", cfg.brick_path));
    if let (Some(mgmt), Addr::Inet(sa)) = (cfg.mgmt.clone(), &local) {
        rt.spawn(sign_in(rt.clone(), mgmt, cfg.clone(), sa.port()));
    }
    Ok(RunningBrick {
        local,
        service,
        server: handle,
        rt: rt.clone(),
        cfg,
    })
}

/// Register with the port map, and again whenever the connection to mgmtd
/// comes back (a restarted mgmtd starts with an empty port map, while its
/// bricks keep running).
async fn sign_in(rt: Runtime, mgmt: Endpoint, cfg: BrickServerConfig, port: u16) {
    let client = RpcClient::new(&rt, mgmt.clone(), cfg.rpc);
    let req = portmap::SignIn {
        volume_id: cfg.brick.volume_id.clone(),
        brick_path: cfg.brick_path.clone(),
        port,
        pid: std::process::id(),
    };
    let link = client.subscribe();
    let mut signed_in_generation = 0;
    let mut warned = false;
    loop {
        let generation = link
            .wait_for(|s| s.up && s.generation != signed_in_generation)
            .await
            .generation;
        let r: Result<((), _), _> = client
            .call_typed(
                PROGRAM_PORTMAP,
                portmap::procs::SIGN_IN,
                &req,
                bytes::Bytes::new(),
                Duration::from_secs(SIGN_IN_TIMEOUT_SECS),
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(mgmt = %mgmt, port, "signed in to the port map");
                rt.trace(|| format!("brick {} signed in on port {port}", cfg.brick_path));
                signed_in_generation = generation;
                warned = false;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(mgmt = %mgmt, error = %e, "cannot sign in to the port map yet; retrying");
                    warned = true;
                }
                rt.clock()
                    .sleep(Duration::from_secs(SIGN_IN_RETRY_SECS))
                    .await;
            }
        }
    }
}

impl<S: Storage> RunningBrick<S> {
    /// Sign out (best effort) and stop serving, letting running requests
    /// finish.
    pub async fn shutdown(self) {
        if let Some(mgmt) = &self.cfg.mgmt {
            let client = RpcClient::new(&self.rt, mgmt.clone(), self.cfg.rpc);
            let req = portmap::SignOut {
                volume_id: self.cfg.brick.volume_id.clone(),
                brick_path: self.cfg.brick_path.clone(),
            };
            if client
                .wait_connected(Duration::from_secs(SIGN_OUT_TIMEOUT_SECS))
                .await
                .is_ok()
            {
                let _: Result<((), _), _> = client
                    .call_typed(
                        PROGRAM_PORTMAP,
                        portmap::procs::SIGN_OUT,
                        &req,
                        bytes::Bytes::new(),
                        Duration::from_secs(SIGN_OUT_TIMEOUT_SECS),
                    )
                    .await;
            }
            client.close();
        }
        self.server.shutdown().await;
        tracing::info!(brick = %self.cfg.brick_path, "brick stopped");
    }

    /// Stop at once (tests: a process that dies).
    pub fn kill(&self) {
        self.server.kill();
    }
}
