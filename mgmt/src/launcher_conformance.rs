//! One conformance suite for every [`Launcher`]: the same test bodies run
//! on the production launcher (OS processes of the `mortar` binary, in
//! `cli/tests/launcher_conformance.rs`) and on the simulated one
//! (processes on simulated hosts, in
//! `scenarios/tests/launcher_conformance.rs`). mgmtd relies on this
//! behaviour from whichever launcher it is given, so both must show it.
//!
//! The contract the suite checks (mgmtd depends on each point):
//!
//! * `start` returns an id for which `running` is true, and the brick
//!   serves on a port it signs in with at the port map of `mgmt`.
//! * `stop(id, false)` returns `Ok`, and `running(id)` is false within
//!   [`STOPPED_WITHIN_SECS`]; the brick no longer answers.
//! * Stopping an id that is no longer running (stopped already, or died)
//!   is a no-op that returns `Ok`: mgmtd stops bricks it remembers without
//!   checking first whether they are still there.
//! * A brick that cannot start makes `start` fail with an error naming the
//!   brick's path, so an operator can tell which brick to fix.
//! * `start_shd` returns an id that `running` and `stop` accept like a
//!   brick's.
//!
//! Each check stands up its own stand-in for mgmtd's port map, so a
//! launcher is tested without a management daemon. Built only with the
//! `test-support` feature.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mortar_net::rpc::{Fault, FaultCode, Reply, Request, RpcClient, RpcConfig, RpcServer, Service};
use mortar_net::{Addr, BoxFuture, Endpoint, Runtime};
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};

use crate::daemon::{BrickLaunch, Launcher};

/// How long a started brick may take to sign in to the port map. The
/// production launcher waits up to 15 s for a brick to come up, and a
/// brick retries its sign-in every second.
pub const SIGN_IN_WITHIN_SECS: u64 = 30;
/// How long `running` may still say true after `stop` returned.
pub const STOPPED_WITHIN_SECS: u64 = 15;
/// How long the adoption check watches for a second brick's sign-in.
const SECOND_BRICK_SECS: u64 = 3;
/// How long one reachability check of a brick may take.
const PING_TIMEOUT_SECS: u64 = 5;
/// How long a stopped brick's port is given to refuse a new connection.
const GONE_CONNECT_SECS: u64 = 2;
const POLL_MS: u64 = 50;

const _: () = assert!(POLL_MS < SIGN_IN_WITHIN_SECS * 1000);
const _: () = assert!(POLL_MS < STOPPED_WITHIN_SECS * 1000);

/// What one launcher's test site gives the suite.
pub trait Site: Send + Sync + 'static {
    type L: Launcher;

    fn launcher(&self) -> &Self::L;
    /// The runtime the suite's own port map and checks run on.
    fn runtime(&self) -> &Runtime;
    /// Where the stand-in port map listens (port 0 picks one). Its host
    /// must be the one the launcher's bricks listen on, since the suite
    /// reaches a brick at that host and its signed-in port.
    fn mgmt_listen(&self) -> Endpoint;
    /// A path that can hold a brick named `name`. Created here if the
    /// launcher expects it to exist: mgmtd prepares brick directories
    /// (`LocalFs::prepare_brick`) before it starts bricks.
    fn brick_path(&self, name: &str) -> String;
    /// A brick path that cannot be used (created or served).
    fn unusable_brick_path(&self) -> String;
    /// This server's names, as mgmtd passes them to the self-heal daemon.
    fn hostnames(&self) -> Vec<String>;
    /// The launcher an mgmtd restarted on this server after a crash makes:
    /// it shares nothing in memory with [`Site::launcher`].
    fn restarted_launcher(&self) -> Self::L;
}

/// A stand-in for mgmtd's port map: records sign-ins, accepts sign-outs.
#[derive(Default)]
struct StandInPortmap {
    signed_in: Mutex<Vec<portmap::SignIn>>,
}

struct PortmapService(Arc<StandInPortmap>);

impl Service for PortmapService {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let pm = self.0.clone();
        Box::pin(async move {
            match req.procedure {
                portmap::procs::SIGN_IN => {
                    let q: portmap::SignIn = req.decode()?;
                    pm.signed_in.lock().expect("signed_in").push(q);
                    Reply::encode(&())
                }
                portmap::procs::SIGN_OUT => {
                    let _: portmap::SignOut = req.decode()?;
                    Reply::encode(&())
                }
                p => Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("the stand-in port map does not serve procedure {p}"),
                )),
            }
        })
    }
}

/// A running stand-in port map and the endpoint bricks sign in at.
struct Mgmt {
    pm: Arc<StandInPortmap>,
    /// The host bricks listen on too (each launcher binds bricks to the
    /// host of their mgmtd).
    ip: IpAddr,
    endpoint: Endpoint,
    server: mortar_net::rpc::ServerHandle,
}

async fn stand_in_mgmt<S: Site>(site: &S) -> Mgmt {
    let pm = Arc::new(StandInPortmap::default());
    let mut s = RpcServer::new(site.runtime().clone(), RpcConfig::default());
    s.register(PROGRAM_PORTMAP, Arc::new(PortmapService(pm.clone())));
    let server = s
        .listen(&site.mgmt_listen())
        .await
        .expect("the stand-in port map listens");
    let Addr::Inet(sa) = server.local_addr().clone() else {
        panic!(
            "the stand-in port map needs an inet address, got {}",
            server.local_addr()
        );
    };
    Mgmt {
        pm,
        ip: sa.ip(),
        endpoint: Endpoint::tcp(sa.ip(), sa.port()),
        server,
    }
}

impl Mgmt {
    /// Wait for the brick at `path` to sign in; returns where it serves.
    async fn brick_endpoint(&self, rt: &Runtime, path: &str) -> Endpoint {
        let deadline = rt.clock().now() + Duration::from_secs(SIGN_IN_WITHIN_SECS);
        loop {
            let port = self
                .pm
                .signed_in
                .lock()
                .expect("signed_in")
                .iter()
                .find(|s| s.brick_path == path)
                .map(|s| s.port);
            if let Some(port) = port {
                assert_ne!(port, 0, "brick {path} signed in with port 0");
                return Endpoint::tcp(self.ip, port);
            }
            assert!(
                rt.clock().now() < deadline,
                "brick {path} did not sign in within {SIGN_IN_WITHIN_SECS} s"
            );
            rt.clock().sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

fn launch(path: &str, mgmt: &Endpoint) -> BrickLaunch {
    BrickLaunch {
        volume: "conformance".into(),
        volume_id: "conformance-volume-id".into(),
        path: path.into(),
        mgmt: mgmt.clone(),
        auth_allow: String::new(),
        auth_reject: String::new(),
        ping_timeout_secs: 42,
        fsync_namespace: true,
        rdma: false,
    }
}

/// Does something answer the messenger's ping at `ep`?
async fn answers(rt: &Runtime, ep: &Endpoint, connect: Duration) -> bool {
    let c = RpcClient::new(rt, ep.clone(), RpcConfig::default());
    let ok = c.wait_connected(connect).await.is_ok()
        && c.ping(Duration::from_secs(PING_TIMEOUT_SECS)).await.is_ok();
    c.close();
    ok
}

/// Wait until `running(id)` is false, at most [`STOPPED_WITHIN_SECS`].
async fn assert_stops<S: Site>(site: &S, id: u32, what: &str) {
    let rt = site.runtime();
    let deadline = rt.clock().now() + Duration::from_secs(STOPPED_WITHIN_SECS);
    while site.launcher().running(id) {
        assert!(
            rt.clock().now() < deadline,
            "{what} (id {id}) still running {STOPPED_WITHIN_SECS} s after stop"
        );
        rt.clock().sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// A started brick runs and answers on the port it signed in with; after
/// `stop` it is not running and no longer answers.
pub async fn started_brick_runs_answers_and_stops<S: Site>(site: &S) {
    let rt = site.runtime();
    let mgmt = stand_in_mgmt(site).await;
    let path = site.brick_path("serving");
    let id = site
        .launcher()
        .start(launch(&path, &mgmt.endpoint))
        .await
        .unwrap_or_else(|e| panic!("brick {path} does not start: {e}"));
    assert!(
        site.launcher().running(id),
        "brick {path} (id {id}) not running after start"
    );
    let ep = mgmt.brick_endpoint(rt, &path).await;
    assert!(
        answers(rt, &ep, Duration::from_secs(PING_TIMEOUT_SECS)).await,
        "brick {path} does not answer at {ep}"
    );
    site.launcher()
        .stop(id, false)
        .await
        .unwrap_or_else(|e| panic!("brick {path} does not stop: {e}"));
    assert_stops(site, id, &path).await;
    assert!(
        !answers(rt, &ep, Duration::from_secs(GONE_CONNECT_SECS)).await,
        "brick {path} still answers at {ep} after stop"
    );
    mgmt.server.shutdown().await;
}

/// Stopping a brick that is already stopped succeeds and changes nothing.
pub async fn stopping_a_stopped_brick_is_a_no_op<S: Site>(site: &S) {
    let mgmt = stand_in_mgmt(site).await;
    let path = site.brick_path("stopped-twice");
    let id = site
        .launcher()
        .start(launch(&path, &mgmt.endpoint))
        .await
        .unwrap_or_else(|e| panic!("brick {path} does not start: {e}"));
    site.launcher().stop(id, false).await.expect("first stop");
    assert_stops(site, id, &path).await;
    site.launcher()
        .stop(id, false)
        .await
        .unwrap_or_else(|e| panic!("stopping brick {path} (id {id}) again: {e}"));
    site.launcher()
        .stop(id, true)
        .await
        .unwrap_or_else(|e| panic!("force-stopping brick {path} (id {id}) again: {e}"));
    assert!(!site.launcher().running(id));
    mgmt.server.shutdown().await;
}

/// A brick that cannot start fails `start` with its path in the error.
pub async fn start_failure_names_the_brick<S: Site>(site: &S) {
    let mgmt = stand_in_mgmt(site).await;
    let path = site.unusable_brick_path();
    match site.launcher().start(launch(&path, &mgmt.endpoint)).await {
        Ok(id) => panic!("brick {path} started (id {id}) on an unusable path"),
        Err(e) => assert!(e.contains(&path), "error {e:?} does not name brick {path}"),
    }
    mgmt.server.shutdown().await;
}

/// The self-heal daemon starts with an id that `running` and `stop` take.
pub async fn shd_starts_and_stops<S: Site>(site: &S) {
    let mgmt = stand_in_mgmt(site).await;
    let id = site
        .launcher()
        .start_shd(site.hostnames(), mgmt.endpoint.clone())
        .await
        .unwrap_or_else(|e| panic!("the self-heal daemon does not start: {e}"));
    assert!(
        site.launcher().running(id),
        "shd (id {id}) not running after start"
    );
    site.launcher()
        .stop(id, false)
        .await
        .unwrap_or_else(|e| panic!("the self-heal daemon does not stop: {e}"));
    assert_stops(site, id, "the self-heal daemon").await;
    mgmt.server.shutdown().await;
}

/// A brick a crashed mgmtd left running is adopted by the launcher of the
/// mgmtd restarted after it: `start` gives an id for the same brick (no
/// second brick on the directory: no second sign-in on another port), and
/// that id stops it.
pub async fn a_restarted_mgmtd_adopts_a_running_brick<S: Site>(site: &S) {
    let rt = site.runtime();
    let mgmt = stand_in_mgmt(site).await;
    let path = site.brick_path("adopted");
    site.launcher()
        .start(launch(&path, &mgmt.endpoint))
        .await
        .unwrap_or_else(|e| panic!("brick {path} does not start: {e}"));
    let ep = mgmt.brick_endpoint(rt, &path).await;
    let again = site.restarted_launcher();
    let id = again
        .start(launch(&path, &mgmt.endpoint))
        .await
        .unwrap_or_else(|e| panic!("brick {path} is not adopted: {e}"));
    assert!(
        again.running(id),
        "adopted brick {path} (id {id}) not running"
    );
    // A second brick would sign in within this wait, on another port
    // (a brick signs in well within a second of starting).
    rt.clock()
        .sleep(Duration::from_secs(SECOND_BRICK_SECS))
        .await;
    let ports: Vec<u16> = mgmt
        .pm
        .signed_in
        .lock()
        .expect("signed_in")
        .iter()
        .filter(|s| s.brick_path == path)
        .map(|s| s.port)
        .collect();
    assert!(
        ports.iter().all(|p| Endpoint::tcp(mgmt.ip, *p) == ep),
        "a second brick on {path}: sign-ins on ports {ports:?}, the first at {ep}"
    );
    assert!(
        answers(rt, &ep, Duration::from_secs(PING_TIMEOUT_SECS)).await,
        "adopted brick {path} does not answer at {ep}"
    );
    again
        .stop(id, false)
        .await
        .unwrap_or_else(|e| panic!("adopted brick {path} does not stop: {e}"));
    let deadline = rt.clock().now() + Duration::from_secs(STOPPED_WITHIN_SECS);
    while again.running(id) {
        assert!(
            rt.clock().now() < deadline,
            "adopted brick {path} still running {STOPPED_WITHIN_SECS} s after stop"
        );
        rt.clock().sleep(Duration::from_millis(POLL_MS)).await;
    }
    assert!(
        !answers(rt, &ep, Duration::from_secs(GONE_CONNECT_SECS)).await,
        "adopted brick {path} still answers at {ep} after stop"
    );
    mgmt.server.shutdown().await;
}
