//! The runtime handle: everything a daemon may take from the world.
//!
//! A daemon receives a [`Runtime`] and uses it for time, randomness,
//! spawning, name resolution and connections. Production builds one with
//! [`Runtime::production`]; the simulator builds one per simulated process
//! with its own seed, simulated DNS and a trace sink. Daemon code cannot
//! tell which it got, which is what lets one code base run in both.

use std::io;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::addr::{Addr, Endpoint};
use crate::frame::FrameLimits;
use crate::resolve::{ResolveBackend, Resolver, ResolverConfig};
use crate::rng::DetRng;
use crate::scope::Scope;
use crate::time::Clock;
use crate::transport::{Link, Listener, SocketTransport, Transport};

/// Blocking calls (disk I/O) that may run at once; more wait their turn,
/// so a slow disk cannot pile up hundreds of threads.
pub const BLOCKING_CALLS_MAX: usize = 32;

/// Receives trace events. The simulator hashes them (with simulated time)
/// into the run's trace hash, so any divergence between two runs of one
/// seed shows up as a different hash.
pub trait TraceSink: Send + Sync + 'static {
    fn event(&self, scope: &str, event: &str);
}

struct Shared {
    /// Bounds how many blocking calls (disk I/O) run at once. (Unused in
    /// the simulator, where blocking calls run inline.)
    #[cfg_attr(madsim, allow(dead_code))]
    blocking_slots: Arc<tokio::sync::Semaphore>,
    resolver: Arc<Resolver>,
    transport: Arc<dyn Transport>,
    /// For `rdma:` endpoints; `None` where RDMA is not built in.
    rdma: Option<Arc<dyn Transport>>,
    trace: Option<Arc<dyn TraceSink>>,
}

/// A daemon's world. Cheap to clone; clones share the scope and the rng.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    clock: Clock,
    scope: Scope,
    seed: u64,
    rng: Arc<Mutex<DetRng>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("scope", &self.scope.name())
            .field("seed", &self.seed)
            .finish()
    }
}

/// Builds a [`Runtime`].
pub struct RuntimeBuilder {
    name: String,
    seed: Option<u64>,
    dns: Option<Arc<dyn ResolveBackend>>,
    resolver_cfg: ResolverConfig,
    transport: Option<Arc<dyn Transport>>,
    rdma: Option<Arc<dyn Transport>>,
    trace: Option<Arc<dyn TraceSink>>,
    clock: Option<Clock>,
}

impl RuntimeBuilder {
    /// The clock (the simulator gives each host one whose wall time it can
    /// step). Production leaves it unset.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }
    /// Fix the seed (simulation, replay). Production leaves it unset.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn dns(mut self, dns: Arc<dyn ResolveBackend>) -> Self {
        self.dns = Some(dns);
        self
    }
    pub fn resolver_config(mut self, cfg: ResolverConfig) -> Self {
        self.resolver_cfg = cfg;
        self
    }
    pub fn transport(mut self, t: Arc<dyn Transport>) -> Self {
        self.transport = Some(t);
        self
    }
    pub fn trace(mut self, sink: Arc<dyn TraceSink>) -> Self {
        self.trace = Some(sink);
        self
    }
    /// The transport for `rdma:` endpoints. Without one they fail with a
    /// message saying this build has no RDMA.
    pub fn rdma(mut self, t: Arc<dyn Transport>) -> Self {
        self.rdma = Some(t);
        self
    }

    pub fn build(self) -> Runtime {
        let clock = self.clock.unwrap_or_default();
        let seed = self.seed.unwrap_or_else(|| entropy_seed(&clock));
        let dns = self.dns.unwrap_or_else(default_dns);
        let resolver = Arc::new(Resolver::new(dns, self.resolver_cfg, clock.clone()));
        Runtime {
            shared: Arc::new(Shared {
                blocking_slots: Arc::new(tokio::sync::Semaphore::new(BLOCKING_CALLS_MAX)),
                resolver,
                transport: self.transport.unwrap_or_else(SocketTransport::shared),
                rdma: self.rdma,
                trace: self.trace,
            }),
            clock,
            scope: Scope::new(self.name),
            seed,
            rng: Arc::new(Mutex::new(DetRng::from_seed(seed))),
        }
    }
}

#[cfg(not(madsim))]
fn default_dns() -> Arc<dyn ResolveBackend> {
    Arc::new(crate::resolve::SystemDns::new())
}

#[cfg(madsim)]
fn default_dns() -> Arc<dyn ResolveBackend> {
    // A simulated process that was not given a DNS table resolves nothing.
    Arc::new(crate::resolve::SimDns::new())
}

/// A seed for production runs, where replay is not the goal but the seed is
/// still logged so a run's random choices can be reasoned about.
fn entropy_seed(clock: &Clock) -> u64 {
    let nanos = clock
        .wall()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl Runtime {
    pub fn builder(name: impl Into<String>) -> RuntimeBuilder {
        RuntimeBuilder {
            name: name.into(),
            seed: None,
            dns: None,
            resolver_cfg: ResolverConfig::default(),
            transport: None,
            rdma: None,
            trace: None,
            clock: None,
        }
    }

    /// Real sockets, the system resolver, a seed from the clock.
    pub fn production(name: impl Into<String>) -> Runtime {
        let b = Self::builder(name);
        #[cfg(all(feature = "rdma", not(madsim)))]
        let b = b.rdma(crate::rdma::RdmaTransport::shared());
        b.build()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn name(&self) -> &str {
        self.scope.name()
    }

    /// Draw from this process's seeded generator.
    pub fn with_rng<R>(&self, f: impl FnOnce(&mut DetRng) -> R) -> R {
        f(&mut self.rng.lock().expect("rng lock"))
    }

    pub fn random_u64(&self) -> u64 {
        self.with_rng(|r| r.next_u64())
    }

    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.scope.spawn(fut)
    }

    /// The same world with a child scope (killable on its own, killed with
    /// this one) and an rng forked from this one.
    pub fn child(&self, name: impl Into<String>) -> Runtime {
        let seed = self.random_u64();
        Runtime {
            shared: self.shared.clone(),
            clock: self.clock.clone(),
            scope: self.scope.child(name),
            seed,
            rng: Arc::new(Mutex::new(DetRng::from_seed(seed))),
        }
    }

    /// Run a blocking call (disk I/O) off the async threads. In production
    /// it runs on tokio's blocking pool, at most [`BLOCKING_CALLS_MAX`] at
    /// once. In the simulator it runs inline: the simulated disk is memory,
    /// and running it in place keeps the schedule deterministic.
    pub async fn blocking<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        #[cfg(madsim)]
        {
            f()
        }
        #[cfg(not(madsim))]
        {
            let _slot = self
                .shared
                .blocking_slots
                .clone()
                .acquire_owned()
                .await
                .expect("the blocking semaphore is never closed");
            #[allow(clippy::disallowed_methods)] // The seam is the one door to blocking threads.
            let handle = tokio::task::spawn_blocking(f);
            match handle.await {
                Ok(v) => v,
                // A panic in the blocking call is a bug; surface it in the
                // caller rather than hiding it.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.shared.resolver
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// The transport that serves `ep`: RDMA for `rdma:` endpoints (an
    /// error naming the fix where this build or runtime has none), the
    /// socket transport otherwise.
    pub fn transport_for(&self, ep: &Endpoint) -> io::Result<&Arc<dyn Transport>> {
        match ep {
            Endpoint::Rdma(_) => self.shared.rdma.as_ref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{ep}: this build of mortar has no RDMA transport (build it with \
                         `--features rdma`), or use transport tcp"
                    ),
                )
            }),
            _ => Ok(&self.shared.transport),
        }
    }

    /// Record a trace event. The closure runs only when someone listens,
    /// so production pays one branch.
    pub fn trace(&self, event: impl FnOnce() -> String) {
        if let Some(sink) = &self.shared.trace {
            sink.event(self.scope.name(), &event());
        }
    }

    /// Resolve (with deadline) and connect to the first address that
    /// answers, each attempt bounded by `connect_timeout`.
    pub async fn connect(
        &self,
        ep: &Endpoint,
        limits: FrameLimits,
        connect_timeout: std::time::Duration,
    ) -> io::Result<Link> {
        let transport = self.transport_for(ep)?.clone();
        let addrs = self
            .resolver()
            .resolve(ep)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
        let mut last = None;
        for addr in &addrs {
            match self
                .clock
                .timeout(connect_timeout, transport.connect(addr, limits))
                .await
            {
                Ok(Ok(link)) => return Ok(link),
                Ok(Err(e)) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
                Err(_) => {
                    last = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{addr}: connect timed out after {connect_timeout:?}"),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{ep}: no addresses"))
        }))
    }

    /// Resolve and bind. A name must resolve to exactly the address to
    /// listen on; the first is used.
    pub async fn bind(&self, ep: &Endpoint, limits: FrameLimits) -> io::Result<Box<dyn Listener>> {
        let transport = self.transport_for(ep)?.clone();
        let addrs = self
            .resolver()
            .resolve(ep)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
        let addr: &Addr = addrs.first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{ep}: no addresses"))
        })?;
        transport
            .bind(addr, limits)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
    }
}
