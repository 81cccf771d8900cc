//! Name resolution with a deadline on every lookup and a cache in front.
//!
//! * Only a [`DnsName`] can be looked up; endpoints that are IP literals or
//!   Unix socket paths are answered without touching any backend.
//! * Every backend lookup runs under a deadline (default 2 s). A hung or
//!   slow DNS server costs a caller at most that long, never minutes.
//! * Answers are cached: positive for `positive_ttl`, NXDOMAIN for
//!   `negative_ttl`. When a refresh fails or times out, a recently expired
//!   positive answer is served (stale) rather than failing a daemon whose
//!   peers have not moved.
//! * Concurrent lookups of one name share one backend query, so a storm of
//!   callers during a DNS outage does not become a storm of hung threads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::addr::{Addr, DnsName, Endpoint, Host, HostPort};
use crate::sync::Watch;
use crate::time::{Clock, Instant};
use crate::BoxFuture;

/// Why a name did not resolve. Each message says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("host {0} does not exist (NXDOMAIN): check the spelling, or use an IP address")]
    NxDomain(DnsName),
    #[error("DNS server failed for {name} ({detail}): check /etc/resolv.conf and the DNS server, or use an IP address")]
    ServFail { name: DnsName, detail: String },
    #[error("resolving {name} took longer than {deadline:?}: DNS is slow or unreachable; check the DNS server or use an IP address")]
    Timeout { name: DnsName, deadline: Duration },
    #[error("host {0} resolved to no addresses: check its DNS records")]
    NoAddresses(DnsName),
}

/// A source of answers. Backends need not enforce deadlines; [`Resolver`]
/// does that for them.
pub trait ResolveBackend: Send + Sync + 'static {
    fn lookup<'a>(&'a self, name: &'a DnsName) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Longest a single lookup may take, including waiting for a shared
    /// in-flight query. Must be non-zero.
    pub deadline: Duration,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// How long after expiry a positive answer may still be served when a
    /// refresh fails.
    pub stale_grace: Duration,
    pub cache_entries_max: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            deadline: Duration::from_secs(2),
            positive_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            stale_grace: Duration::from_secs(600),
            cache_entries_max: 4096,
        }
    }
}

#[derive(Debug, Clone)]
struct CacheEntry {
    answer: Result<Vec<IpAddr>, ResolveError>,
    expires: Instant,
}

/// A shared in-flight lookup, as its followers see it.
#[derive(Debug, Clone)]
enum Flight {
    Pending,
    Done(Result<Vec<IpAddr>, ResolveError>),
    /// The leader was cancelled before answering.
    Abandoned,
}

type Shared = Watch<Flight>;

#[derive(Default)]
struct State {
    cache: BTreeMap<DnsName, CacheEntry>,
    in_flight: BTreeMap<DnsName, Shared>,
}

/// Counters for diagnosis and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    pub backend_lookups: u64,
    pub cache_hits: u64,
    pub stale_served: u64,
    pub timeouts: u64,
}

/// The resolver daemons use: a backend behind a deadline and a cache.
pub struct Resolver {
    backend: Arc<dyn ResolveBackend>,
    cfg: ResolverConfig,
    clock: Clock,
    state: Mutex<State>,
    stats: Mutex<ResolverStats>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("cfg", &self.cfg).finish()
    }
}

enum Role {
    Leader(Shared),
    Follower(Shared),
}

impl Resolver {
    pub fn new(backend: Arc<dyn ResolveBackend>, cfg: ResolverConfig, clock: Clock) -> Self {
        assert!(
            !cfg.deadline.is_zero(),
            "resolver deadline must be non-zero"
        );
        assert!(
            cfg.cache_entries_max > 0,
            "resolver cache must hold an entry"
        );
        Resolver {
            backend,
            cfg,
            clock,
            state: Mutex::new(State::default()),
            stats: Mutex::new(ResolverStats::default()),
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.cfg
    }

    pub fn stats(&self) -> ResolverStats {
        *self.stats.lock().expect("stats lock")
    }

    fn bump(&self, f: impl FnOnce(&mut ResolverStats)) {
        f(&mut self.stats.lock().expect("stats lock"))
    }

    /// Resolve an endpoint to addresses a transport can use. IP literals and
    /// Unix paths are returned as they are, without any lookup.
    pub async fn resolve(&self, ep: &Endpoint) -> Result<Vec<Addr>, ResolveError> {
        let hp: &HostPort = match ep {
            Endpoint::Unix(p) => return Ok(vec![Addr::Unix(p.clone())]),
            Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => hp,
        };
        let ips = match &hp.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => self.lookup(name).await?,
        };
        Ok(ips
            .into_iter()
            .map(|ip| Addr::Inet(SocketAddr::new(ip, hp.port)))
            .collect())
    }

    /// Look a name up: from the cache if fresh, otherwise from the backend
    /// under the deadline.
    pub async fn lookup(&self, name: &DnsName) -> Result<Vec<IpAddr>, ResolveError> {
        let deadline = self.clock.now() + self.cfg.deadline;
        loop {
            let role = {
                let mut st = self.state.lock().expect("resolver lock");
                let now = self.clock.now();
                if let Some(e) = st.cache.get(name) {
                    if e.expires > now {
                        let answer = e.answer.clone();
                        drop(st);
                        self.bump(|s| s.cache_hits += 1);
                        return answer;
                    }
                }
                match st.in_flight.get(name) {
                    Some(rx) => Role::Follower(rx.clone()),
                    None => {
                        let flight = Watch::new(Flight::Pending);
                        st.in_flight.insert(name.clone(), flight.clone());
                        Role::Leader(flight)
                    }
                }
            };
            match role {
                Role::Leader(tx) => return self.lead(name, deadline, tx).await,
                Role::Follower(flight) => {
                    let waited = self
                        .clock
                        .timeout_at(deadline, flight.wait_for(|f| !matches!(f, Flight::Pending)))
                        .await;
                    match waited {
                        Ok(Flight::Done(answer)) => return answer,
                        // The leader was cancelled before answering; try
                        // again, possibly as the new leader.
                        Ok(_) => continue,
                        Err(_) => return self.on_failure(name, self.timeout_error(name)),
                    }
                }
            }
        }
    }

    async fn lead(
        &self,
        name: &DnsName,
        deadline: Instant,
        flight: Shared,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        // If this future is dropped mid-lookup, the in-flight marker must go
        // and followers must hear of it, so they retry instead of waiting
        // on a dead leader.
        struct Unmark<'a>(&'a Resolver, &'a DnsName, Shared);
        impl Drop for Unmark<'_> {
            fn drop(&mut self) {
                if let Ok(mut st) = self.0.state.lock() {
                    st.in_flight.remove(self.1);
                }
                self.2.modify(|f| {
                    if matches!(f, Flight::Pending) {
                        *f = Flight::Abandoned;
                    }
                });
            }
        }
        let _unmark = Unmark(self, name, flight.clone());
        self.bump(|s| s.backend_lookups += 1);
        let answer = match self
            .clock
            .timeout_at(deadline, self.backend.lookup(name))
            .await
        {
            Ok(Ok(ips)) if ips.is_empty() => Err(ResolveError::NoAddresses(name.clone())),
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(name)),
        };
        let answer = match answer {
            Ok(ips) => {
                self.store(name, Ok(ips.clone()), self.cfg.positive_ttl);
                Ok(ips)
            }
            Err(e @ ResolveError::NxDomain(_)) => {
                self.store(name, Err(e.clone()), self.cfg.negative_ttl);
                Err(e)
            }
            Err(e) => self.on_failure(name, e),
        };
        flight.set(Flight::Done(answer.clone()));
        answer
    }

    fn timeout_error(&self, name: &DnsName) -> ResolveError {
        self.bump(|s| s.timeouts += 1);
        crate::mark!(DNS_DEADLINE_HIT);
        ResolveError::Timeout {
            name: name.clone(),
            deadline: self.cfg.deadline,
        }
    }

    /// A refresh failed transiently: serve a recently expired positive
    /// answer if there is one, otherwise report the failure.
    fn on_failure(&self, name: &DnsName, err: ResolveError) -> Result<Vec<IpAddr>, ResolveError> {
        let st = self.state.lock().expect("resolver lock");
        let now = self.clock.now();
        if let Some(CacheEntry {
            answer: Ok(ips),
            expires,
        }) = st.cache.get(name)
        {
            if now.saturating_duration_since(*expires) <= self.cfg.stale_grace {
                let ips = ips.clone();
                drop(st);
                self.bump(|s| s.stale_served += 1);
                tracing::warn!(%name, error = %err, "serving stale DNS answer");
                return Ok(ips);
            }
        }
        Err(err)
    }

    fn store(&self, name: &DnsName, answer: Result<Vec<IpAddr>, ResolveError>, ttl: Duration) {
        let mut st = self.state.lock().expect("resolver lock");
        let now = self.clock.now();
        if !st.cache.contains_key(name) && st.cache.len() >= self.cfg.cache_entries_max {
            // Evict whichever entry expires first; a full scan is cheap at
            // this size and keeps the structure simple.
            if let Some(victim) = st
                .cache
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            {
                st.cache.remove(&victim);
            }
        }
        st.cache.insert(
            name.clone(),
            CacheEntry {
                answer,
                expires: now + ttl,
            },
        );
    }

    /// Forget everything cached (for `peer probe` after a DNS change).
    pub fn flush(&self) {
        self.state.lock().expect("resolver lock").cache.clear();
    }
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread).
/// Blocking lookups are capped so that hung DNS cannot exhaust the
/// blocking thread pool; waiting for a slot counts against the deadline.
#[cfg(not(madsim))]
pub struct SystemDns {
    slots: tokio::sync::Semaphore,
}

#[cfg(not(madsim))]
impl SystemDns {
    pub const LOOKUPS_IN_FLIGHT_MAX: usize = 16;
    pub fn new() -> Self {
        SystemDns {
            slots: tokio::sync::Semaphore::new(Self::LOOKUPS_IN_FLIGHT_MAX),
        }
    }
}

#[cfg(not(madsim))]
impl Default for SystemDns {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(madsim))]
impl ResolveBackend for SystemDns {
    fn lookup<'a>(&'a self, name: &'a DnsName) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| ResolveError::ServFail {
                    name: name.clone(),
                    detail: "resolver shut down".into(),
                })?;
            #[allow(clippy::disallowed_methods)] // The seam is the one door to real DNS.
            let found = tokio::net::lookup_host((name.as_str(), 0)).await;
            match found {
                Ok(addrs) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|sa| sa.ip()).collect();
                    ips.dedup();
                    Ok(ips)
                }
                Err(e) => {
                    // getaddrinfo reports "no such host" through a message,
                    // not a stable error kind.
                    let msg = e.to_string();
                    if msg.contains("not known") || msg.contains("No address") {
                        Err(ResolveError::NxDomain(name.clone()))
                    } else {
                        Err(ResolveError::ServFail {
                            name: name.clone(),
                            detail: msg,
                        })
                    }
                }
            }
        })
    }
}

/// What the simulated DNS does for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimAnswer {
    Addrs(Vec<IpAddr>),
    NxDomain,
    ServFail,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct SimRecord {
    answer: SimAnswer,
    latency: Duration,
}

/// A DNS server for tests and the simulator: per-name answers, latency,
/// NXDOMAIN, SERVFAIL and hangs, all in the clock's (simulated) time.
/// Unknown names are NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct SimDns {
    records: Arc<Mutex<BTreeMap<DnsName, SimRecord>>>,
    queries: Arc<Mutex<Vec<DnsName>>>,
}

impl SimDns {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, name: &DnsName, answer: SimAnswer, latency: Duration) {
        self.records
            .lock()
            .expect("sim dns lock")
            .insert(name.clone(), SimRecord { answer, latency });
    }

    pub fn set_addr(&self, name: &str, ip: IpAddr) {
        let name: DnsName = name.parse().expect("valid test host name");
        self.set(&name, SimAnswer::Addrs(vec![ip]), Duration::ZERO);
    }

    /// Change only the latency of a name, keeping its answer.
    pub fn set_latency(&self, name: &DnsName, latency: Duration) {
        if let Some(r) = self.records.lock().expect("sim dns lock").get_mut(name) {
            r.latency = latency;
        }
    }

    /// Every name the backend was asked for, in order.
    pub fn queries(&self) -> Vec<DnsName> {
        self.queries.lock().expect("sim dns lock").clone()
    }
}

impl ResolveBackend for SimDns {
    fn lookup<'a>(&'a self, name: &'a DnsName) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            self.queries
                .lock()
                .expect("sim dns lock")
                .push(name.clone());
            let rec = self
                .records
                .lock()
                .expect("sim dns lock")
                .get(name)
                .cloned();
            let Some(rec) = rec else {
                return Err(ResolveError::NxDomain(name.clone()));
            };
            let clock = Clock::new();
            clock.sleep(rec.latency).await;
            match rec.answer {
                SimAnswer::Addrs(a) => Ok(a),
                SimAnswer::NxDomain => Err(ResolveError::NxDomain(name.clone())),
                SimAnswer::ServFail => Err(ResolveError::ServFail {
                    name: name.clone(),
                    detail: "simulated SERVFAIL".into(),
                }),
                SimAnswer::Hang => std::future::pending().await,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Unit tests run on tokio's paused clock; the ban guards daemon code.
mod tests {
    use super::*;

    fn name(s: &str) -> DnsName {
        s.parse().unwrap()
    }

    fn setup(cfg: ResolverConfig) -> (SimDns, Arc<Resolver>) {
        let dns = SimDns::new();
        let r = Arc::new(Resolver::new(Arc::new(dns.clone()), cfg, Clock::new()));
        (dns, r)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[tokio::test(start_paused = true)]
    async fn hung_dns_costs_at_most_the_deadline() {
        let (dns, r) = setup(ResolverConfig::default());
        dns.set(&name("slow"), SimAnswer::Hang, Duration::ZERO);
        let t0 = Instant::now();
        let err = r.lookup(&name("slow")).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert!(matches!(err, ResolveError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("use an IP address"));
    }

    #[tokio::test(start_paused = true)]
    async fn paths_and_ip_literals_never_reach_the_backend() {
        let (dns, r) = setup(ResolverConfig::default());
        dns.set(&name("everything"), SimAnswer::Hang, Duration::ZERO);
        let t0 = Instant::now();
        for ep in [
            "/var/run/mortar/mgmtd.sock",
            "unix:/x.sock",
            "127.0.0.1:24007",
            "[::1]:1",
        ] {
            let ep: Endpoint = ep.parse().unwrap();
            let got = r.resolve(&ep).await.unwrap();
            assert_eq!(got.len(), 1);
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(dns.queries().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn positive_and_negative_caching_with_ttl() {
        let cfg = ResolverConfig::default();
        let (dns, r) = setup(cfg);
        dns.set(
            &name("a"),
            SimAnswer::Addrs(vec![IP]),
            Duration::from_millis(300),
        );
        assert_eq!(r.lookup(&name("a")).await.unwrap(), vec![IP]);
        let t0 = Instant::now();
        assert_eq!(r.lookup(&name("a")).await.unwrap(), vec![IP]);
        assert_eq!(t0.elapsed(), Duration::ZERO, "cache hit must not wait");
        assert!(r.lookup(&name("missing")).await.is_err());
        assert!(r.lookup(&name("missing")).await.is_err());
        assert_eq!(dns.queries().len(), 2, "{:?}", dns.queries());
        // The name appears: the negative entry expires after its TTL.
        dns.set(&name("missing"), SimAnswer::Addrs(vec![IP]), Duration::ZERO);
        assert!(r.lookup(&name("missing")).await.is_err());
        tokio::time::sleep(cfg.negative_ttl).await;
        assert_eq!(r.lookup(&name("missing")).await.unwrap(), vec![IP]);
        // The positive entry expires after its TTL and is fetched again.
        tokio::time::sleep(cfg.positive_ttl).await;
        r.lookup(&name("a")).await.unwrap();
        assert_eq!(
            dns.queries().iter().filter(|q| q.as_str() == "a").count(),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_answer_served_when_dns_goes_down() {
        let cfg = ResolverConfig::default();
        let (dns, r) = setup(cfg);
        dns.set(&name("peer"), SimAnswer::Addrs(vec![IP]), Duration::ZERO);
        r.lookup(&name("peer")).await.unwrap();
        tokio::time::sleep(cfg.positive_ttl + Duration::from_secs(1)).await;
        dns.set(&name("peer"), SimAnswer::Hang, Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(r.lookup(&name("peer")).await.unwrap(), vec![IP]);
        assert_eq!(t0.elapsed(), cfg.deadline);
        assert_eq!(r.stats().stale_served, 1);
        // Past the grace period the failure is reported.
        tokio::time::sleep(cfg.stale_grace).await;
        assert!(r.lookup(&name("peer")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_query() {
        let (dns, r) = setup(ResolverConfig::default());
        dns.set(
            &name("busy"),
            SimAnswer::Addrs(vec![IP]),
            Duration::from_millis(500),
        );
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move { r.lookup(&name("busy")).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), vec![IP]);
        }
        assert_eq!(dns.queries().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn servfail_and_empty_answers_are_errors() {
        let (dns, r) = setup(ResolverConfig::default());
        dns.set(&name("sf"), SimAnswer::ServFail, Duration::ZERO);
        dns.set(&name("empty"), SimAnswer::Addrs(vec![]), Duration::ZERO);
        assert!(matches!(
            r.lookup(&name("sf")).await,
            Err(ResolveError::ServFail { .. })
        ));
        assert!(matches!(
            r.lookup(&name("empty")).await,
            Err(ResolveError::NoAddresses(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn cache_is_bounded() {
        let cfg = ResolverConfig {
            cache_entries_max: 4,
            ..ResolverConfig::default()
        };
        let (dns, r) = setup(cfg);
        for i in 0..10 {
            let n = name(&format!("h{i}"));
            dns.set(&n, SimAnswer::Addrs(vec![IP]), Duration::ZERO);
            r.lookup(&n).await.unwrap();
        }
        assert!(r.state.lock().unwrap().cache.len() <= 4);
    }
}
