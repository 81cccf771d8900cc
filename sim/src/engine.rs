use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use mortar_net::resolve::{SimAnswer, SimDns};
use mortar_net::time::Instant;
use mortar_net::{DetRng, DnsName, Runtime, TraceSink};

/// Runs made while shrinking print neither their start line nor their
/// trace tail: only the final, shrunk failure is shown in full.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether later runs print their start line and, on failure, their
/// trace tail (they do unless made quiet).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every trace event is also printed as it happens (a replay with full
/// tracing turns this on).
static ECHO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_echo(echo: bool) {
    ECHO.store(echo, std::sync::atomic::Ordering::Relaxed);
}

/// How many recent trace events are kept to print when a run fails.
const TRACE_TAIL_EVENTS_MAX: usize = 200;

/// Hashes every event of a run, in order, with the simulated time it
/// happened at. Two runs of one seed must produce the same hash.
pub struct TraceLog {
    start: Instant,
    state: Mutex<TraceState>,
}

struct TraceState {
    hash: u64,
    events: u64,
    tail: VecDeque<String>,
    /// The test's own notes and workload events, without times: the
    /// compact trace snapshot tests compare (bounded).
    compact: Vec<String>,
}

/// Compact-trace lines kept per run.
const COMPACT_EVENTS_MAX: usize = 10_000;

use mortar_proto::hash::{fnv1a_64_extend as fnv1a, FNV1A_64_OFFSET as FNV_OFFSET};

impl TraceLog {
    fn new() -> Self {
        TraceLog {
            start: mortar_net::Clock::new().now(),
            state: Mutex::new(TraceState {
                hash: FNV_OFFSET,
                events: 0,
                tail: VecDeque::new(),
                compact: Vec::new(),
            }),
        }
    }

    pub fn record(&self, scope: &str, event: &str) {
        let t = mortar_net::Clock::new().now() - self.start;
        let line = format!("{:>12.6}s {scope}: {event}", t.as_secs_f64());
        if ECHO.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("trace {line}");
        }
        let mut st = self.state.lock().expect("trace lock");
        st.hash = fnv1a(st.hash, line.as_bytes());
        st.hash = fnv1a(st.hash, b"\n");
        st.events += 1;
        if st.tail.len() == TRACE_TAIL_EVENTS_MAX {
            st.tail.pop_front();
        }
        st.tail.push_back(line);
        let compact = scope == "test" || scope.ends_with("/workload");
        if compact && st.compact.len() < COMPACT_EVENTS_MAX {
            st.compact.push(format!("{scope}: {event}"));
        }
    }

    pub fn hash(&self) -> u64 {
        self.state.lock().expect("trace lock").hash
    }

    pub fn events(&self) -> u64 {
        self.state.lock().expect("trace lock").events
    }

    /// The test's notes and workload events so far, in order, without
    /// times (see [`TraceState::compact`]).
    pub fn compact(&self) -> Vec<String> {
        self.state.lock().expect("trace lock").compact.clone()
    }

    /// The most recent events, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("trace lock")
            .tail
            .iter()
            .cloned()
            .collect()
    }
}

impl TraceSink for TraceLog {
    fn event(&self, scope: &str, event: &str) {
        self.record(scope, event)
    }
}

type ProcFactory = Arc<dyn Fn(Runtime) -> mortar_net::BoxFuture<'static, ()> + Send + Sync>;

struct Proc {
    factory: ProcFactory,
    /// Started by `run_on`: not relaunched when the host restarts.
    one_shot: bool,
    /// The running instance, if any.
    rt: Option<Runtime>,
}

/// What the storage backend leaves in a host's disk slot: the disk itself
/// (any type; processes fetch it by type) and what a crash does to it.
#[derive(Clone)]
struct DiskSlot {
    disk: Arc<dyn Any + Send + Sync>,
    on_crash: Arc<dyn Fn(&mut DetRng) + Send + Sync>,
}

struct HostEntry {
    name: String,
    ip: IpAddr,
    node: NodeHandle,
    procs: BTreeMap<String, Proc>,
    disk: Option<DiskSlot>,
    up: bool,
}

struct SimState {
    hosts: BTreeMap<String, HostEntry>,
    /// One-way clogged links, by host name.
    clogged: BTreeSet<(String, String)>,
    /// Each host's wall-clock offset (see [`Sim::jump_clock`]).
    wall_offsets: BTreeMap<String, Arc<std::sync::atomic::AtomicI64>>,
    rng: DetRng,
}

/// A simulated cluster. Create one inside a madsim runtime (a
/// `#[madsim::test]` or [`run`]); clone freely.
#[derive(Clone)]
pub struct Sim {
    name: String,
    seed: u64,
    trace: Arc<TraceLog>,
    dns: SimDns,
    state: Arc<Mutex<SimState>>,
}

/// Handy when a factory needs to build a runtime for a host by hand.
pub fn replay_command(test: &str, seed: u64) -> String {
    format!("scripts/sim-replay {seed} {test}")
}

impl Sim {
    /// Start a simulation in the current madsim runtime. Prints the seed and
    /// the command that replays it.
    pub fn new(test: &str) -> Sim {
        let seed = Handle::current().seed();
        if !quiet() {
            eprintln!(
                "sim: {test}: seed {seed}; replay: {}",
                replay_command(test, seed)
            );
        }
        let sim = Sim {
            name: test.to_string(),
            seed,
            trace: Arc::new(TraceLog::new()),
            dns: SimDns::new(),
            state: Arc::new(Mutex::new(SimState {
                hosts: BTreeMap::new(),
                clogged: BTreeSet::new(),
                wall_offsets: BTreeMap::new(),
                rng: DetRng::from_seed(seed ^ 0x5eed_5eed_5eed_5eed),
            })),
        };
        sim.trace
            .record("sim", &format!("start {test} seed {seed}"));
        sim
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    pub fn trace(&self) -> &Arc<TraceLog> {
        &self.trace
    }

    /// Record an event from the test itself (workload steps, checks).
    pub fn note(&self, event: impl AsRef<str>) {
        self.trace.record("test", event.as_ref());
    }

    /// The cluster's DNS server, for injecting faults.
    pub fn dns(&self) -> &SimDns {
        &self.dns
    }

    /// Draw from the simulation's own seeded generator (fault choices).
    pub fn with_rng<R>(&self, f: impl FnOnce(&mut DetRng) -> R) -> R {
        f(&mut self.state.lock().expect("sim lock").rng)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().expect("sim lock")
    }

    /// Add a host with a name (registered in DNS) and an address.
    pub fn add_host(&self, name: &str, ip: IpAddr) {
        let node = Handle::current()
            .create_node()
            .name(name)
            .ip(ip)
            // Processes are started by the simulation, not by the node's
            // init; the init only has to keep the node alive.
            .init(std::future::pending::<()>)
            .build();
        self.dns.set_addr(name, ip);
        let mut st = self.lock();
        assert!(!st.hosts.contains_key(name), "host {name} added twice");
        st.hosts.insert(
            name.to_string(),
            HostEntry {
                name: name.to_string(),
                ip,
                node,
                procs: BTreeMap::new(),
                disk: None,
                up: true,
            },
        );
        drop(st);
        self.trace.record("sim", &format!("add host {name} {ip}"));
    }

    pub fn host_ip(&self, host: &str) -> IpAddr {
        self.lock().hosts.get(host).expect("unknown host").ip
    }

    fn node_id(&self, host: &str) -> NodeId {
        self.lock()
            .hosts
            .get(host)
            .unwrap_or_else(|| panic!("unknown host {host}"))
            .node
            .id()
    }

    /// A runtime for code running on `host`: seeded from the simulation,
    /// resolving through the simulated DNS, tracing into the run's hash.
    pub fn runtime_for(&self, host: &str, process: &str) -> Runtime {
        let seed = self.with_rng(|r| r.next_u64());
        let offset = self.wall_offset(host);
        Runtime::builder(format!("{host}/{process}"))
            .seed(seed)
            .dns(Arc::new(self.dns.clone()))
            .trace(self.trace.clone())
            .clock(mortar_net::Clock::with_wall_offset(offset))
            .build()
    }

    /// Start a process on a host. `factory` is kept so the process can be
    /// restarted (by [`Sim::restart_process`] or when its host restarts).
    pub fn start_process<F, Fut>(&self, host: &str, process: &str, factory: F)
    where
        F: Fn(Runtime) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let factory: ProcFactory = Arc::new(move |rt| Box::pin(factory(rt)));
        {
            let mut st = self.lock();
            let h = st
                .hosts
                .get_mut(host)
                .unwrap_or_else(|| panic!("unknown host {host}"));
            assert!(
                h.procs.get(process).is_none_or(|p| p.rt.is_none()),
                "process {process} already running on {host}"
            );
            h.procs.insert(
                process.to_string(),
                Proc {
                    factory,
                    one_shot: false,
                    rt: None,
                },
            );
        }
        self.launch(host, process);
    }

    fn launch(&self, host: &str, process: &str) {
        let rt = self.runtime_for(host, process);
        let (node, factory) = {
            let mut st = self.lock();
            let h = st.hosts.get_mut(host).expect("host");
            if !h.up {
                // The process starts when the host comes back.
                return;
            }
            let p = h.procs.get_mut(process).expect("process");
            p.rt = Some(rt.clone());
            (h.node.clone(), p.factory.clone())
        };
        self.trace
            .record("sim", &format!("start process {host}/{process}"));
        // Spawned via the node so the process's own spawns land on it.
        // A process whose main returns exits, as an OS process does: its
        // other tasks stop and it no longer counts as running.
        let (trace, name) = (self.trace.clone(), format!("{host}/{process}"));
        node.spawn(async move {
            let body = factory(rt.clone());
            if matches!(rt.spawn(body).await, Ok(Some(()))) {
                trace.record("sim", &format!("process {name} exited"));
                rt.scope().kill();
            }
        });
    }

    /// Run `f` as a process named `process` on `host` and return its
    /// result. Tasks it spawned (an RPC client's connection, say) keep
    /// running on the host until the process is killed or the host crashes.
    pub async fn run_on<F, Fut, T>(&self, host: &str, process: &str, f: F) -> T
    where
        F: FnOnce(Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.try_run_on(host, process, f)
            .await
            .unwrap_or_else(|| panic!("{host}/{process} was killed before it finished"))
    }

    /// [`Sim::run_on`], returning `None` if the process (or its host) is
    /// killed before it finishes.
    pub async fn try_run_on<F, Fut, T>(&self, host: &str, process: &str, f: F) -> Option<T>
    where
        F: FnOnce(Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self.runtime_for(host, process);
        let node = {
            let mut st = self.lock();
            let h = st
                .hosts
                .get_mut(host)
                .unwrap_or_else(|| panic!("unknown host {host}"));
            assert!(h.up, "run_on {host}: host is down");
            let placeholder: ProcFactory = Arc::new(|_| Box::pin(async {}));
            // Registered so kill_process can stop it; not restarted with
            // the host, since it is a one-shot.
            h.procs.insert(
                process.to_string(),
                Proc {
                    factory: placeholder,
                    one_shot: true,
                    rt: Some(rt.clone()),
                },
            );
            h.node.clone()
        };
        self.trace.record("sim", &format!("run {host}/{process}"));
        let out = node
            .spawn(async move { rt.spawn(f(rt.clone())).await })
            .await;
        match out {
            Ok(Ok(Some(v))) => Some(v),
            _ => None,
        }
    }

    /// Start `f` as a process named `process` on `host` without waiting
    /// for it. Like [`Sim::run_on`] it is a one-shot: not restarted with
    /// its host (a daemon that starts it again after a reboot does that).
    pub fn start_oneshot<F, Fut>(&self, host: &str, process: &str, f: F)
    where
        F: FnOnce(Runtime) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let rt = self.runtime_for(host, process);
        let node = {
            let mut st = self.lock();
            let h = st
                .hosts
                .get_mut(host)
                .unwrap_or_else(|| panic!("unknown host {host}"));
            let placeholder: ProcFactory = Arc::new(|_| Box::pin(async {}));
            h.procs.insert(
                process.to_string(),
                Proc {
                    factory: placeholder,
                    one_shot: true,
                    rt: Some(rt.clone()),
                },
            );
            h.node.clone()
        };
        self.trace.record("sim", &format!("start {host}/{process}"));
        let (trace, name) = (self.trace.clone(), format!("{host}/{process}"));
        node.spawn(async move {
            // Returning from its main is exiting (see `launch`).
            if matches!(rt.spawn(f(rt.clone())).await, Ok(Some(()))) {
                trace.record("sim", &format!("process {name} exited"));
                rt.scope().kill();
            }
        });
    }

    /// Kill one process; its host and other processes run on. Its sockets
    /// close as the OS would close a dead process's sockets.
    pub fn kill_process(&self, host: &str, process: &str) {
        let rt = {
            let mut st = self.lock();
            let h = st.hosts.get_mut(host).expect("unknown host");
            h.procs
                .get_mut(process)
                .unwrap_or_else(|| panic!("no process {process} on {host}"))
                .rt
                .take()
        };
        if let Some(rt) = rt {
            rt.scope().kill();
            self.trace
                .record("sim", &format!("kill process {host}/{process}"));
        }
    }

    pub fn restart_process(&self, host: &str, process: &str) {
        self.kill_process(host, process);
        self.launch(host, process);
    }

    /// Names of the processes running on `host` now, in name order.
    pub fn running_processes(&self, host: &str) -> Vec<String> {
        self.lock()
            .hosts
            .get(host)
            .map(|h| {
                h.procs
                    .iter()
                    .filter(|(_, p)| p.rt.as_ref().is_some_and(|rt| !rt.scope().is_killed()))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn process_running(&self, host: &str, process: &str) -> bool {
        self.lock()
            .hosts
            .get(host)
            .and_then(|h| h.procs.get(process))
            .is_some_and(|p| p.rt.as_ref().is_some_and(|rt| !rt.scope().is_killed()))
    }

    /// Put a disk in the host's slot. It survives process kills; on a host
    /// crash `on_crash` runs with the simulation's rng (drop unsynced data).
    pub fn attach_disk<D: Any + Send + Sync>(
        &self,
        host: &str,
        disk: Arc<D>,
        on_crash: impl Fn(&D, &mut DetRng) + Send + Sync + 'static,
    ) {
        let d2 = disk.clone();
        let slot = DiskSlot {
            disk,
            on_crash: Arc::new(move |rng| on_crash(&d2, rng)),
        };
        self.lock().hosts.get_mut(host).expect("unknown host").disk = Some(slot);
    }

    /// The disk in a host's slot, if it is of type `D`.
    pub fn disk<D: Any + Send + Sync>(&self, host: &str) -> Option<Arc<D>> {
        let slot = self.lock().hosts.get(host)?.disk.clone()?;
        slot.disk.downcast::<D>().ok()
    }

    /// The wall-clock offset of `host`'s processes, in ms (shared by them
    /// all, kept across restarts: a host's clock is its own).
    fn wall_offset(&self, host: &str) -> Arc<std::sync::atomic::AtomicI64> {
        self.lock()
            .wall_offsets
            .entry(host.to_string())
            .or_default()
            .clone()
    }

    /// Step `host`'s wall clock by `delta_ms` (negative: back), as NTP
    /// steps a clock that drifted. Monotonic time is not affected.
    pub fn jump_clock(&self, host: &str, delta_ms: i64) {
        let offset = self.wall_offset(host);
        let now = offset.fetch_add(delta_ms, std::sync::atomic::Ordering::Relaxed) + delta_ms;
        self.trace.record(
            "sim",
            &format!("clock of {host} jumps {delta_ms} ms (now {now} ms off)"),
        );
    }

    /// Whether a host is running (not crashed).
    pub fn host_up(&self, host: &str) -> bool {
        self.lock().hosts.get(host).is_some_and(|h| h.up)
    }

    /// Crash a whole host: every process dies at once, nothing is flushed,
    /// and the disk loses what was not synced.
    pub fn crash_host(&self, host: &str) {
        let (id, slot, rts) = {
            let mut st = self.lock();
            let h = st.hosts.get_mut(host).expect("unknown host");
            h.up = false;
            let rts: Vec<Runtime> = h.procs.values_mut().filter_map(|p| p.rt.take()).collect();
            (h.node.id(), h.disk.clone(), rts)
        };
        for rt in rts {
            rt.scope().kill();
        }
        Handle::current().kill(id);
        if let Some(slot) = slot {
            let mut rng = self.with_rng(|r| r.fork());
            (slot.on_crash)(&mut rng);
        }
        self.trace.record("sim", &format!("crash host {host}"));
    }

    /// Boot a crashed host again and start the processes it ran.
    pub fn restart_host(&self, host: &str) {
        let (id, procs) = {
            let mut st = self.lock();
            let h = st.hosts.get_mut(host).expect("unknown host");
            h.up = true;
            let services = h
                .procs
                .iter()
                .filter(|(_, p)| !p.one_shot)
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>();
            (h.node.id(), services)
        };
        Handle::current().restart(id);
        // A restarted node has a fresh task context; spawning through the
        // handle taken before the crash would land on the dead one.
        let fresh = Handle::current()
            .get_node(id)
            .expect("restarted node exists");
        self.lock().hosts.get_mut(host).expect("host").node = fresh;
        self.trace.record("sim", &format!("restart host {host}"));
        for p in procs {
            self.launch(host, &p);
        }
    }

    fn clog(&self, from: &str, to: &str) {
        let (a, b) = (self.node_id(from), self.node_id(to));
        NetSim::current().clog_link(a, b);
        self.lock()
            .clogged
            .insert((from.to_string(), to.to_string()));
    }

    /// Cut traffic both ways between every host of `a` and every host of `b`.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                self.clog(x, y);
                self.clog(y, x);
            }
        }
        self.trace
            .record("sim", &format!("partition {a:?} <-> {b:?}"));
    }

    /// Cut traffic from `from` to `to` only: replies still flow back.
    pub fn partition_oneway(&self, from: &[&str], to: &[&str]) {
        for x in from {
            for y in to {
                self.clog(x, y);
            }
        }
        self.trace
            .record("sim", &format!("partition {from:?} -> {to:?}"));
    }

    /// Heal every partition.
    pub fn repair(&self) {
        let clogged = std::mem::take(&mut self.lock().clogged);
        for (from, to) in clogged {
            let (a, b) = (self.node_id(&from), self.node_id(&to));
            NetSim::current().unclog_link(a, b);
        }
        self.trace.record("sim", "repair all partitions");
    }

    /// Every message takes between `min` and `max` (madsim's default is
    /// 1-10 ms).
    pub fn set_latency(&self, min: Duration, max: Duration) {
        assert!(min < max, "latency range must not be empty");
        NetSim::current().update_config(|c| c.send_latency = min..max);
        self.trace
            .record("sim", &format!("latency {min:?}..{max:?}"));
    }

    /// Each message is lost with probability `p` (TCP retransmits, so on
    /// streams this is delay; connection attempts fail).
    pub fn set_loss(&self, p: f64) {
        NetSim::current().update_config(|c| c.packet_loss_rate = p);
        self.trace.record("sim", &format!("loss {p}"));
    }

    /// DNS for `name` answers only after `latency` (or never).
    pub fn dns_fault(&self, name: &str, answer: SimAnswer, latency: Duration) {
        let n: DnsName = name.parse().expect("valid host name");
        self.trace.record(
            "sim",
            &format!("dns {name} -> {answer:?} after {latency:?}"),
        );
        self.dns.set(&n, answer, latency);
    }

    /// Sleep in simulated time.
    pub async fn sleep(&self, d: Duration) {
        mortar_net::Clock::new().sleep(d).await
    }

    /// Wait until `cond` holds, checking every `step`, at most `limit` of
    /// simulated time. Panics with `what` if it never does.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        step: Duration,
        cond: impl Fn() -> bool,
    ) {
        let clock = mortar_net::Clock::new();
        let deadline = clock.now() + limit;
        while !cond() {
            assert!(
                clock.now() < deadline,
                "{}: {what} did not happen within {limit:?}",
                self.name
            );
            clock.sleep(step).await;
        }
    }

    /// Print the end-of-run line: seed, event count and trace hash.
    pub fn finish(&self) -> u64 {
        let h = self.trace.hash();
        if quiet() {
            return h;
        }
        eprintln!(
            "sim: {}: seed {} done: {} events, trace hash {h:016x}",
            self.name,
            self.seed,
            self.trace.events()
        );
        h
    }

    pub fn host_names(&self) -> Vec<String> {
        self.lock().hosts.values().map(|h| h.name.clone()).collect()
    }
}

/// The outcome of one seed run by [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub seed: u64,
    pub trace_hash: u64,
    pub events: u64,
    /// Simulated time the run took.
    pub simulated: Duration,
}

/// Run `scenario` once under a fresh madsim runtime with `seed`. A panic in
/// the scenario propagates (after the trace tail is printed).
///
/// Each run gets a fresh OS thread, as `#[madsim::test]` does: std's
/// HashMap keys are per thread and advance with every map created, so a
/// second simulation on the same thread would see different hash orders
/// inside madsim and diverge from the first.
pub fn run<F, Fut>(test: &str, seed: u64, scenario: F) -> RunOutcome
where
    F: FnOnce(Sim) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let test = test.to_string();
    #[allow(clippy::disallowed_methods)] // The simulator's own thread, outside any simulation.
    let worker = std::thread::Builder::new()
        .name(format!("sim {test} seed {seed}"))
        .spawn(move || run_here(&test, seed, scenario))
        .expect("spawn simulation thread");
    match worker.join() {
        Ok(outcome) => outcome,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_here<F, Fut>(test: &str, seed: u64, scenario: F) -> RunOutcome
where
    F: FnOnce(Sim) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_allow_system_thread(true);
    let test = test.to_string();
    rt.block_on(async move {
        let sim = Sim::new(&test);
        let began = mortar_net::Clock::new().now();
        let guard = TailOnPanic(sim.trace.clone());
        scenario(sim.clone()).await;
        std::mem::forget(guard);
        let trace_hash = sim.finish();
        RunOutcome {
            seed,
            trace_hash,
            events: sim.trace.events(),
            simulated: mortar_net::Clock::new().now() - began,
        }
    })
}

/// Prints the last trace events if the scenario panics, so a failing seed
/// shows what led up to the failure.
struct TailOnPanic(Arc<TraceLog>);

impl Drop for TailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() && !quiet() {
            eprintln!(
                "sim: last {} events before the failure:",
                TRACE_TAIL_EVENTS_MAX
            );
            for line in self.0.tail() {
                eprintln!("  {line}");
            }
        }
    }
}

/// Use inside `#[madsim::test]`: prints the trace tail if the test panics.
pub fn tail_on_panic(sim: &Sim) -> impl Drop {
    TailOnPanic(sim.trace.clone())
}

/// An address in the simulation's private range for host number `n`.
pub fn host_ip(n: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n))
}
