//! The RPC server: accepts connections and dispatches requests to services.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::{
    encode_body, write_loop, Fault, FaultCode, Reply, Request, RpcConfig, Service, PROC_PING,
    PROGRAM_MESSENGER,
};
use crate::addr::{Addr, Endpoint};
use crate::frame::{self, flags, EncodedFrame, Frame, Header};
use crate::runtime::Runtime;
use crate::sync::Watch;
use crate::transport::{Link, Listener};

/// Who is on the other end of a server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique per server for its lifetime.
    pub id: u64,
    pub peer: Addr,
}

/// Serves registered programs on listeners.
pub struct RpcServer {
    rt: Runtime,
    cfg: RpcConfig,
    services: BTreeMap<u16, Arc<dyn Service>>,
}

struct ServerShared {
    rt: Runtime,
    cfg: RpcConfig,
    services: BTreeMap<u16, Arc<dyn Service>>,
    shutdown: Watch<bool>,
    next_conn_id: AtomicU64,
    live_conns: AtomicUsize,
    conns_done: tokio::sync::Notify,
}

/// A running server.
pub struct ServerHandle {
    local: Addr,
    shared: Arc<ServerShared>,
}

impl RpcServer {
    pub fn new(rt: Runtime, cfg: RpcConfig) -> Self {
        RpcServer {
            rt,
            cfg,
            services: BTreeMap::new(),
        }
    }

    /// Register a program. Program 0 belongs to the messenger.
    pub fn register(&mut self, program: u16, svc: Arc<dyn Service>) -> &mut Self {
        assert_ne!(
            program, PROGRAM_MESSENGER,
            "program 0 is the messenger's own"
        );
        let clash = self.services.insert(program, svc);
        assert!(clash.is_none(), "program {program} registered twice");
        self
    }

    /// Resolve, bind and serve.
    pub async fn listen(self, ep: &Endpoint) -> io::Result<ServerHandle> {
        let l = self.rt.bind(ep, self.cfg.limits).await?;
        Ok(self.serve(l))
    }

    /// [`RpcServer::listen`], trying again while the address's name does
    /// not resolve (a DNS outage as a daemon starts), every
    /// [`LISTEN_RESOLVE_RETRY_MS`], for at most `wait`; other errors (the
    /// port taken, no permission) end it at once.
    ///
    /// Regression (cluster scenario, `brick_gave_up_on_dns_at_start`): a
    /// brick restarted while its host's name did not resolve exited and
    /// stayed down; mgmtd did the same after a host restart.
    pub async fn listen_patiently(self, ep: &Endpoint, wait: Duration) -> io::Result<ServerHandle> {
        let deadline = self.rt.clock().now() + wait;
        loop {
            match self.rt.bind(ep, self.cfg.limits).await {
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound && self.rt.clock().now() < deadline =>
                {
                    tracing::warn!(listen = %ep, error = %e, "cannot resolve the listen address yet; retrying");
                    self.rt
                        .clock()
                        .sleep(Duration::from_millis(LISTEN_RESOLVE_RETRY_MS))
                        .await;
                }
                Err(e) => return Err(e),
                Ok(l) => return Ok(self.serve(l)),
            }
        }
    }

    /// Serve on an already bound listener, in a child scope of the runtime.
    pub fn serve(self, listener: Box<dyn Listener>) -> ServerHandle {
        self.cfg.validate().expect("invalid RpcConfig");
        let local = listener.local_addr();
        let shutdown = Watch::new(false);
        let shared = Arc::new(ServerShared {
            rt: self.rt.child(format!("rpc-server {local}")),
            cfg: self.cfg,
            services: self.services,
            shutdown,
            next_conn_id: AtomicU64::new(1),
            live_conns: AtomicUsize::new(0),
            conns_done: tokio::sync::Notify::new(),
        });
        shared.rt.trace(|| format!("listen {local}"));
        shared.rt.spawn(accept_loop(shared.clone(), listener));
        ServerHandle { local, shared }
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> &Addr {
        &self.local
    }

    pub fn connections(&self) -> usize {
        self.shared.live_conns.load(Ordering::Acquire)
    }

    /// Stop accepting, let running requests finish (within the configured
    /// grace), send their replies, then close every connection.
    pub async fn shutdown(self) {
        self.shared.shutdown.set(true);
        let clock = self.shared.rt.clock().clone();
        // Connection tasks bound their own drain by the grace period; the
        // extra margin covers closing the sockets.
        let deadline = self.shared.cfg.shutdown_grace * 2;
        let _ = clock
            .timeout(deadline, async {
                loop {
                    let notified = self.shared.conns_done.notified();
                    if self.shared.live_conns.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    notified.await;
                }
            })
            .await;
        self.shared.rt.scope().kill();
    }

    /// Stop at once, as if the process died.
    pub fn kill(&self) {
        self.shared.rt.scope().kill();
    }
}

async fn accept_loop(shared: Arc<ServerShared>, mut listener: Box<dyn Listener>) {
    let slots = Arc::new(Semaphore::new(shared.cfg.server_connections_max));
    let stop = shared.shutdown.clone();
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(link) => {
                let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
                let info = ConnInfo {
                    id,
                    peer: link.peer.clone(),
                };
                shared.live_conns.fetch_add(1, Ordering::AcqRel);
                let conn_rt = shared.rt.child(format!("conn {id} {}", info.peer));
                let shared2 = shared.clone();
                conn_rt.clone().spawn(async move {
                    serve_conn(&shared2, conn_rt, link, info).await;
                    drop(permit);
                    shared2.live_conns.fetch_sub(1, Ordering::AcqRel);
                    shared2.conns_done.notify_waiters();
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %listener.local_addr(), error = %e, "accept failed; retrying in 100ms");
                shared
                    .rt
                    .clock()
                    .sleep(std::time::Duration::from_millis(100))
                    .await;
            }
        }
    }
    shared.rt.trace(|| "accept loop stopped".to_string());
}

fn reply_frame(req: &Header, result: Result<Reply, Fault>, cfg: &RpcConfig) -> EncodedFrame {
    let mut header = Header {
        flags: flags::REPLY,
        ..*req
    };
    let (body, payload) = match result {
        Ok(r) => (r.body, r.payload),
        Err(fault) => {
            header.flags |= flags::ERROR;
            (encode_body(&fault).unwrap_or_default(), Bytes::new())
        }
    };
    match frame::encode(&header, &body, payload, &cfg.limits) {
        Ok(f) => f,
        Err(e) => {
            // The handler produced a reply larger than the limits: tell the
            // caller instead of sending something its decoder must reject.
            let fault = Fault::new(FaultCode::SystemErr, format!("reply not sent: {e}"));
            header.flags = flags::REPLY | flags::ERROR;
            frame::encode(
                &header,
                &encode_body(&fault).unwrap_or_default(),
                Bytes::new(),
                &cfg.limits,
            )
            .expect("a small fault reply always fits")
        }
    }
}

/// Why a connection ended; `Malformed` reasons are logged as warnings.
enum EndReason {
    Normal(String),
    Malformed(String),
}

/// How often [`RpcServer::listen_patiently`] tries a name again.
pub const LISTEN_RESOLVE_RETRY_MS: u64 = 1_000;
/// How long a daemon (brick, mgmtd) keeps trying to resolve its listen
/// address as it starts: a DNS outage then delays it rather than ends it.
pub const LISTEN_RESOLVE_WAIT_MS_MAX: u64 = 30_000;

/// The longest a fault point delays a request's handling.
const BUGGIFY_REPLY_DELAY_MS_MAX: u64 = 2_000;

async fn serve_conn(shared: &Arc<ServerShared>, rt: Runtime, link: Link, info: ConnInfo) {
    let cfg = shared.cfg;
    let Link {
        mut source, sink, ..
    } = link;
    rt.trace(|| format!("accepted conn {} from {}", info.id, info.peer));
    let (tx, rx) = mpsc::channel::<EncodedFrame>(cfg.send_queue_frames_max);
    let mut writer = rt.spawn(write_loop(sink, rx));
    let in_flight = Arc::new(Semaphore::new(cfg.server_calls_in_flight_max));
    let stop = shared.shutdown.clone();
    let clock = rt.clock().clone();

    let reason = loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break EndReason::Normal("server shutting down".into()),
            w = &mut writer => break EndReason::Normal(match w {
                Ok(Some(Err(e))) => format!("send failed: {e}"),
                _ => "sender stopped".into(),
            }),
            f = clock.timeout(cfg.ping_timeout, source.recv()) => f,
        };
        let frame = match next {
            Err(_) => {
                break EndReason::Normal(format!(
                    "nothing received for {:?} (ping-timeout): peer declared dead",
                    cfg.ping_timeout
                ))
            }
            Ok(Err(e)) => break EndReason::Malformed(e.to_string()),
            Ok(Ok(None)) => break EndReason::Normal("peer closed the connection".into()),
            Ok(Ok(Some(f))) => f,
        };
        let Frame {
            header,
            body,
            payload,
        } = frame;
        if header.is_reply() {
            break EndReason::Malformed(format!(
                "client sent a reply frame (request id {}); clients only send requests",
                header.request_id
            ));
        }
        if header.program == PROGRAM_MESSENGER {
            let result = if header.procedure == PROC_PING {
                Ok(Reply::default())
            } else {
                Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("messenger has no procedure {}", header.procedure),
                ))
            };
            if tx.send(reply_frame(&header, result, &cfg)).await.is_err() {
                break EndReason::Normal("sender stopped".into());
            }
            continue;
        }
        let Some(svc) = shared.services.get(&header.program).cloned() else {
            break EndReason::Malformed(format!(
                "unknown program {} (procedure {}): the peer is not speaking to the service it expects",
                header.program, header.procedure
            ));
        };
        // Back-pressure: with the limit reached, stop reading until a
        // request finishes. Handlers have deadlines, so this ends.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break EndReason::Normal("connection closing".into());
        };
        let req = Request {
            procedure: header.procedure,
            body,
            payload,
            conn: info.clone(),
        };
        let tx = tx.clone();
        let handler_rt = rt.clone();
        rt.spawn(async move {
            if crate::buggify!() {
                // Fault point: a slow handler, whose reply overtakes none
                // and is overtaken by later ones.
                let ms = handler_rt.with_rng(|r| r.below(BUGGIFY_REPLY_DELAY_MS_MAX));
                handler_rt.clock().sleep(Duration::from_millis(ms)).await;
            }
            let result = match CatchUnwind(svc.call(req)).await {
                Ok(r) => r,
                Err(()) => {
                    tracing::error!(
                        program = header.program,
                        procedure = header.procedure,
                        "request handler panicked; replying with an error"
                    );
                    Err(Fault::new(
                        FaultCode::SystemErr,
                        "the server hit an internal error handling this request (see its log)",
                    ))
                }
            };
            let _ = tx.send(reply_frame(&header, result, &cfg)).await;
            drop(permit);
        });
    };

    match &reason {
        EndReason::Normal(r) => {
            tracing::debug!(conn = info.id, peer = %info.peer, reason = %r, "connection closed")
        }
        EndReason::Malformed(r) => {
            tracing::warn!(conn = info.id, peer = %info.peer, reason = %r, "closing connection")
        }
    }
    rt.trace(|| {
        format!(
            "conn {} closed: {}",
            info.id,
            match &reason {
                EndReason::Normal(r) | EndReason::Malformed(r) => r,
            }
        )
    });
    drop(source);
    // Let requests already running finish and their replies go out.
    let all = u32::try_from(cfg.server_calls_in_flight_max).unwrap_or(u32::MAX);
    let _ = clock
        .timeout(cfg.shutdown_grace, in_flight.acquire_many(all))
        .await;
    drop(tx);
    let _ = clock.timeout(cfg.shutdown_grace, &mut writer).await;
    for svc in shared.services.values() {
        svc.disconnected(&info);
    }
    rt.scope().kill();
}

/// Turns a panic inside a handler into an error reply instead of a dead
/// connection task and a caller waiting for its deadline.
struct CatchUnwind<F>(F);

impl<F: std::future::Future + Unpin> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(inner).poll(cx)
        })) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}
