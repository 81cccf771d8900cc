//! Fault scenarios as data: the swarm settings of a run, its fault plan
//! and its workload, each with a one-line text form that parses back, and
//! the fault atlas that decides which faults may be in force together.
//!
//! A [`Case`] is everything a run of the `cluster` scenario does besides
//! the simulator's own scheduling (which the seed fixes). Because it is
//! data, a failing case can be shrunk (proptest removes steps, ops and
//! clients and shrinks times) and replayed exactly from its text.
//!
//! Plans are *intents*: the runner asks [`admit`] before starting each
//! fault, and a fault the atlas refuses is skipped (and noted in the
//! trace). So every sub-plan a shrinker produces is as valid as the plan
//! it came from, and every plan keeps at least one good copy of every
//! acknowledged write: a checker failure is a bug, not a plan that asked
//! for the impossible.
//!
//! This module is pure (no simulator), so its rules have table tests in
//! the ordinary build.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Servers `s1`..`s3`; every layout spreads its bricks over all of them.
pub const SERVERS: u8 = 3;
/// Clients `c1`..`c4`.
pub const CLIENTS_MAX: u8 = 4;
/// Files each client owns, `/cK/f0`..`/cK/f5`.
pub const FILES_PER_CLIENT: u8 = 6;
/// Files every client shares, `/shared/sh0` and `/shared/sh1`. Each is
/// [`CLIENTS_MAX`] regions of [`SHARED_REGION_BYTES`], and client K
/// writes only region K: the clients contend for the same file's locks
/// and changelog while each region keeps one client's history, so the
/// model stays exact. Their size never changes.
pub const SHARED_FILES: u8 = 2;
/// One client's region of a shared file.
pub const SHARED_REGION_BYTES: u32 = 4096;
/// The largest file a workload makes (writes and truncates stay inside).
pub const FILE_BYTES_MAX: u32 = 16 * 1024;
/// The longest single write.
pub const WRITE_BYTES_MAX: u32 = 2048;
/// A plan's steps start in its first minute of simulated time...
pub const PLAN_START_MS_MAX: u32 = 60_000;
/// ...and each fault is held at most this long.
pub const HOLD_MS_MAX: u32 = 20_000;
/// Steps per plan and ops per client, at most (bounds a generated case).
pub const PLAN_STEPS_MAX: usize = 12;
pub const OPS_PER_CLIENT_MAX: usize = 60;

/// A brick: (server index 0..3, brick index on that server).
pub type Brick = (u8, u8);

/// The volume a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layout {
    Replica2,
    Replica3,
    Arbiter,
    /// Distributed-replicate 2 x 3: two replica-3 sets.
    DistRep2x3,
    /// Disperse 4 + 2, two fragments per server.
    Disperse4x2,
    /// Disperse 2 + 1, one fragment per server.
    Disperse2x1,
    /// Distributed-disperse 2 x (2 + 1): two disperse 2 + 1 sets.
    DistDisp2x3,
}

impl Layout {
    pub const ALL: [Layout; 7] = [
        Layout::Replica2,
        Layout::Replica3,
        Layout::Arbiter,
        Layout::DistRep2x3,
        Layout::Disperse4x2,
        Layout::Disperse2x1,
        Layout::DistDisp2x3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Replica2 => "replica2",
            Layout::Replica3 => "replica3",
            Layout::Arbiter => "arbiter",
            Layout::DistRep2x3 => "dist-replica2x3",
            Layout::Disperse4x2 => "disperse4+2",
            Layout::Disperse2x1 => "disperse2+1",
            Layout::DistDisp2x3 => "dist-disperse2x3",
        }
    }

    /// The `volume create` arguments (volume `vol`).
    pub fn create(self) -> &'static str {
        match self {
            Layout::Replica2 => "vol replica 2 s1:/b1 s2:/b1 force",
            Layout::Replica3 => "vol replica 3 s1:/b1 s2:/b1 s3:/b1",
            Layout::Arbiter => "vol replica 3 arbiter 1 s1:/b1 s2:/b1 s3:/b1",
            Layout::DistRep2x3 => "vol replica 3 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2",
            Layout::Disperse4x2 => {
                "vol disperse 6 redundancy 2 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2 force"
            }
            Layout::Disperse2x1 => "vol disperse 3 redundancy 1 s1:/b1 s2:/b1 s3:/b1",
            Layout::DistDisp2x3 => {
                "vol disperse 3 redundancy 1 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2"
            }
        }
    }

    /// The volume's sets, each its bricks in order.
    pub fn sets(self) -> Vec<Vec<Brick>> {
        let row = |b: u8| (0..SERVERS).map(|s| (s, b)).collect::<Vec<_>>();
        match self {
            Layout::Replica2 => vec![vec![(0, 0), (1, 0)]],
            Layout::Replica3 | Layout::Arbiter | Layout::Disperse2x1 => vec![row(0)],
            Layout::DistRep2x3 | Layout::DistDisp2x3 => vec![row(0), row(1)],
            Layout::Disperse4x2 => {
                let mut all = row(0);
                all.extend(row(1));
                vec![all]
            }
        }
    }

    pub fn bricks(self) -> Vec<Brick> {
        self.sets().into_iter().flatten().collect()
    }

    /// The bricks server `s` holds.
    pub fn bricks_on(self, s: u8) -> Vec<Brick> {
        self.bricks().into_iter().filter(|b| b.0 == s).collect()
    }

    /// Fragments a disperse set may lose; `None` for replica sets.
    pub fn redundancy(self) -> Option<usize> {
        match self {
            Layout::Disperse4x2 => Some(2),
            Layout::Disperse2x1 | Layout::DistDisp2x3 => Some(1),
            _ => None,
        }
    }

    /// A brick's directory on its server.
    pub fn brick_dir(b: Brick) -> String {
        format!("/b{}", b.1 + 1)
    }
}

/// `cluster.quorum-type` (and `cluster.quorum-count` for `fixed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    None,
    Auto,
    Fixed(u8),
}

impl Quorum {
    /// Whether a replica set of `n` bricks refuses writes that fewer than
    /// a majority reach, so no two sides of a split can both accept them.
    pub fn prevents_split_brain(self, n: usize) -> bool {
        match self {
            Quorum::None => false,
            Quorum::Auto => true,
            Quorum::Fixed(c) => 2 * c as usize > n,
        }
    }
}

/// The swarm settings of one case, printed at its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub layout: Layout,
    pub quorum: Quorum,
    pub ping_timeout_s: u16,
    pub heal_timeout_s: u32,
    pub shd_threads: u8,
    pub fsync_namespace: bool,
    pub clients: u8,
    /// Fault points in product code (`buggify!`) on for the run.
    pub buggify: bool,
}

impl Default for Settings {
    /// The volume's defaults on replica 3 with one client.
    fn default() -> Self {
        Settings {
            layout: Layout::Replica3,
            quorum: Quorum::Auto,
            ping_timeout_s: 42,
            heal_timeout_s: 600,
            shd_threads: 16,
            fsync_namespace: true,
            clients: 1,
            buggify: false,
        }
    }
}

impl Settings {
    /// Whether acknowledged writes may have been taken by one side of a
    /// split only (replicate without a majority quorum): then the atlas
    /// lets a set carry one fault at a time, healed before the next.
    pub fn quorum_guards(&self) -> bool {
        let n = self.layout.sets()[0].len();
        self.layout.redundancy().is_none() && self.quorum.prevents_split_brain(n)
    }
}

/// How a DNS fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsFault {
    /// The right address, after a delay.
    Slow(u32),
    NxDomain,
    ServFail,
    /// No answer at all (the caller's own deadline must end the wait).
    Hang,
}

/// One fault. Servers and clients are numbered from 0 (`s1` is 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Kill a brick process (index taken modulo the server's bricks);
    /// `volume start force` restarts it when the hold ends.
    KillBrick { server: u8, brick: u8 },
    /// Power loss on a server: its mgmtd, bricks and self-heal daemon die
    /// and its disk loses or tears what was not synced. It boots again
    /// when the hold ends.
    CrashHost { server: u8 },
    /// Clients lose a server (both ways, or only client-to-server).
    CutClients { server: u8, oneway: bool },
    /// One server loses the other servers (mgmtd and heal traffic);
    /// clients still reach it.
    IsolateServer { server: u8 },
    /// Hosts split in two: bit `s` is server `s`, bit `3 + c` client `c`;
    /// set bits on one side, clear bits on the other.
    Split { side: u8 },
    /// Every message takes up to this long (default 1-10 ms).
    Latency { max_ms: u32 },
    /// Each message is lost with this probability, in thousandths.
    Loss { permille: u16 },
    /// Name lookups of a server misbehave.
    Dns { server: u8, answer: DnsFault },
    /// A server's disk fails reads and writes with EIO at this rate, in
    /// thousandths.
    DiskEio { server: u8, permille: u16 },
    /// A server's disk is full.
    DiskFull { server: u8 },
    /// Latent sector errors under one client file on every brick of a
    /// server: reads of it fail until it is rewritten.
    LatentErrors { server: u8, client: u8, file: u8 },
    /// A server's disk acknowledges but never makes durable its next
    /// `updates` xattr changes; when the hold ends the server loses power
    /// (so the lie bites) and boots again.
    LoseXattrs { server: u8, updates: u8 },
    /// Kill a server's self-heal daemon (mgmtd starts another).
    KillShd { server: u8 },
    /// A `volume set` from a server, whose mgmtd is killed that many ms
    /// into the transaction; it is restarted when the hold ends.
    MgmtdCrash { server: u8, after_ms: u32 },
    /// A server's wall clock steps by `secs` (forward or back), and steps
    /// back when the hold ends. Monotonic time does not jump.
    ClockJump { server: u8, secs: i32 },
    /// Every server loses power at the same instant (a rack or building
    /// outage): `into_write_ms` after client `client` (taken modulo the
    /// clients) next starts a write, or at once if it starts none within
    /// [`OUTAGE_WRITE_WAIT_MS`]. Every server boots when the hold ends.
    Outage { client: u8, into_write_ms: u16 },
}

/// How long an outage waits for its client's next write to start.
pub const OUTAGE_WRITE_WAIT_MS: u32 = 5_000;

/// A fault started at `at_ms` after the workload starts and undone
/// `hold_ms` later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at_ms: u32,
    pub hold_ms: u32,
    pub fault: Fault,
}

/// A fault plan: steps in any order (the runner sorts by time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

/// One workload op of one client, on its own files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `len` bytes at `off` (the bytes come from `fill`), then fsync.
    Write {
        file: u8,
        off: u32,
        len: u32,
        fill: u8,
    },
    Truncate {
        file: u8,
        size: u32,
    },
    Create {
        file: u8,
    },
    Rename {
        from: u8,
        to: u8,
    },
    Delete {
        file: u8,
    },
    Read {
        file: u8,
    },
    /// Write `len` bytes at `off` of this client's region of shared file
    /// `file` (the bytes come from `fill`), then fsync.
    SharedWrite {
        file: u8,
        off: u32,
        len: u32,
        fill: u8,
    },
    /// Read a whole shared file; this client's region is checked.
    SharedRead {
        file: u8,
    },
}

/// A whole case: settings, plan and each client's ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub settings: Settings,
    pub plan: Plan,
    pub workload: Vec<Vec<Op>>,
}

// ---------------------------------------------------------------------
// The fault atlas.

/// Whether a fault may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Once the set's stale bricks are healed (the runner waits for heal,
    /// bounded, then asks again).
    AfterHeal,
    /// Not together with what is in force: skipped.
    Never,
}

/// What a fault does to the data path: bricks that fail visibly (down,
/// unreachable, refusing) and bricks whose disk lies (says it kept what
/// it lost).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    pub out: BTreeSet<Brick>,
    pub lies: BTreeSet<Brick>,
}

/// The bricks a fault takes out or makes lie, on `layout` with
/// `clients` clients.
pub fn effect(layout: Layout, clients: u8, fault: &Fault) -> Effect {
    let on = |s: u8| layout.bricks_on(s).into_iter().collect::<BTreeSet<_>>();
    let mut e = Effect::default();
    match *fault {
        Fault::KillBrick { server, brick } => {
            let mine = layout.bricks_on(server);
            if !mine.is_empty() {
                e.out.insert(mine[brick as usize % mine.len()]);
            }
        }
        Fault::CrashHost { server }
        | Fault::CutClients { server, .. }
        | Fault::Dns { server, .. }
        | Fault::DiskEio { server, .. }
        | Fault::DiskFull { server } => e.out = on(server),
        Fault::Split { side } => {
            // Every server some client cannot reach is out.
            for c in 0..clients {
                let client_side = side >> (SERVERS + c) & 1;
                for s in 0..SERVERS {
                    if side >> s & 1 != client_side {
                        e.out.extend(on(s));
                    }
                }
            }
        }
        Fault::LatentErrors { server, .. } => e.lies = on(server),
        Fault::LoseXattrs { server, .. } => {
            e.lies = on(server);
            e.out = on(server);
        }
        Fault::Outage { .. } => e.out = layout.bricks().into_iter().collect(),
        Fault::IsolateServer { .. }
        | Fault::Latency { .. }
        | Fault::Loss { .. }
        | Fault::KillShd { .. }
        | Fault::MgmtdCrash { .. }
        | Fault::ClockJump { .. } => {}
    }
    e
}

/// The fault atlas: may `new` start while `active` are in force and
/// `stale` bricks (their faults ended) wait for heal?
///
/// Per set touched by `new`:
/// * a disperse set keeps at least its data fragments good: bricks out,
///   lying or stale together at most its redundancy, less one while the
///   network is slow or lossy (a write that then fails on one brick more
///   than the redundancy has overwritten the fragments it reached and
///   leaves neither version decodable: a limit of disperse, as of
///   GlusterFS's; cluster seed 69 found it);
/// * a lying disk is allowed only on a set with nothing else wrong, one
///   brick at a time: the other copies hold every acknowledged write;
/// * a replica set with a majority quorum takes any fail-stop faults
///   stacked (quorum refuses what it cannot keep safe; that is what is
///   tested);
/// * a replica set without one takes fail-stop faults only on a healed
///   set and keeps one brick in: a write taken by a lone stale brick is
///   a split-brain the volume was configured to allow.
///
/// A fault that would fit once the stale bricks are healed waits for
/// heal; one that would not fit even then is skipped.
///
/// Disperse sets once had two limits of their own here (no power loss
/// without `storage.fsync-namespace`, no lying disks): their entry
/// operations carried no durable pre-op mark. They do now
/// (`client/src/disperse/entry.rs` `entry_post_op`), and both faults are
/// planned on every layout.
pub fn admit(settings: &Settings, active: &[Fault], stale: &BTreeSet<Brick>, new: &Fault) -> Admit {
    if let Fault::Outage { .. } = new {
        return admit_outage(
            settings.layout.redundancy().is_some(),
            settings.fsync_namespace,
            active.is_empty(),
            stale.is_empty(),
        );
    }
    let (layout, clients) = (settings.layout, settings.clients);
    let mut now = Effect::default();
    for f in active {
        let e = effect(layout, clients, f);
        now.out.extend(e.out);
        now.lies.extend(e.lies);
    }
    let add = effect(layout, clients, new);
    let touched: BTreeSet<Brick> = add.out.union(&add.lies).copied().collect();
    now.out.extend(add.out);
    now.lies.extend(add.lies);
    // A slow or lossy network may push any one brick past its timeouts
    // mid-write: on a disperse set that uses a brick of the redundancy.
    let net = |f: &Fault| matches!(f, Fault::Latency { .. } | Fault::Loss { .. });
    let slow_net = usize::from(active.iter().any(net) || net(new));
    let mut verdict = Admit::Now;
    for set in layout.sets() {
        let net_here = net(new) && layout.redundancy().is_some();
        if !net_here && !set.iter().any(|b| touched.contains(b)) {
            continue;
        }
        let count = |with_stale: bool| {
            set.iter()
                .filter(|b| {
                    now.out.contains(b) || now.lies.contains(b) || (with_stale && stale.contains(b))
                })
                .count()
        };
        let lying = set.iter().any(|b| now.lies.contains(b));
        let limit = if let Some(r) = layout.redundancy() {
            Some(r.saturating_sub(slow_net))
        } else if lying {
            Some(1)
        } else if settings.quorum_guards() {
            None
        } else {
            Some(set.len() - 1)
        };
        let Some(limit) = limit else { continue };
        // Quorum-less replica sets also wait for heal before any new
        // fault, even one that fits beside the stale bricks.
        let strict = layout.redundancy().is_none() && !lying;
        let stale_here = set.iter().any(|b| stale.contains(b));
        if count(false) > limit {
            return Admit::Never;
        }
        if count(true) > limit || (strict && stale_here) {
            verdict = Admit::AfterHeal;
        }
    }
    verdict
}

/// Whether a whole-cluster power outage may start. It takes every brick
/// at once, so the per-set counting of [`admit`] does not apply; what it
/// needs is that every acknowledged change is on disk, and that nothing
/// else is wrong to stack with it:
/// * not on disperse: a write in flight when every brick stops has
///   reached some fragments and not others, more than the redundancy,
///   and leaves neither version of its stripes decodable (the limit
///   [`admit`] keeps for a failure past the redundancy mid-write;
///   `power_outage` seed 9 met it as fragments of different lengths
///   under one version record);
/// * without `storage.fsync-namespace` an acknowledged create or rename
///   is not yet durable, and an outage takes it: what the volume was
///   configured to allow, so never;
/// * only on a quiet cluster (no fault in force: a lying disk or a server
///   already off would stack a second loss on a copy), and once the stale
///   bricks are healed.
pub fn admit_outage(disperse: bool, fsync_namespace: bool, quiet: bool, healed: bool) -> Admit {
    match (disperse, fsync_namespace, quiet, healed) {
        (true, ..) | (_, false, ..) | (_, _, false, _) => Admit::Never,
        (false, true, true, false) => Admit::AfterHeal,
        (false, true, true, true) => Admit::Now,
    }
}

// ---------------------------------------------------------------------
// Text forms. Each parses back to the same value (a property test checks).

/// Why a case's text did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(what: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(what.into()))
}

fn num<T: FromStr>(s: &str, what: &str) -> Result<T, ParseError> {
    s.parse()
        .map_err(|_| ParseError(format!("{what}: {s:?} is not a number in range")))
}

fn server(s: &str) -> Result<u8, ParseError> {
    match s.strip_prefix('s').map(|n| num::<u8>(n, "server")) {
        Some(Ok(n)) if (1..=SERVERS).contains(&n) => Ok(n - 1),
        _ => err(format!("{s:?} is not a server (s1 to s{SERVERS})")),
    }
}

fn client(s: &str) -> Result<u8, ParseError> {
    match s.strip_prefix('c').map(|n| num::<u8>(n, "client")) {
        Some(Ok(n)) if (1..=CLIENTS_MAX).contains(&n) => Ok(n - 1),
        _ => err(format!("{s:?} is not a client (c1 to c{CLIENTS_MAX})")),
    }
}

fn file(s: &str) -> Result<u8, ParseError> {
    match s.strip_prefix('f').map(|n| num::<u8>(n, "file")) {
        Some(Ok(n)) if n < FILES_PER_CLIENT => Ok(n),
        _ => err(format!(
            "{s:?} is not a file (f0 to f{})",
            FILES_PER_CLIENT - 1
        )),
    }
}

fn shared(s: &str) -> Result<u8, ParseError> {
    match s.strip_prefix("sh").map(|n| num::<u8>(n, "shared file")) {
        Some(Ok(n)) if n < SHARED_FILES => Ok(n),
        _ => err(format!(
            "{s:?} is not a shared file (sh0 to sh{})",
            SHARED_FILES - 1
        )),
    }
}

fn ms(s: &str) -> Result<u32, ParseError> {
    match s.strip_suffix("ms") {
        Some(n) => num(n, "milliseconds"),
        None => err(format!("{s:?}: a duration is written like 250ms")),
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Layout::ALL.iter().map(|l| l.name()).collect();
                ParseError(format!(
                    "unknown layout {s:?} (one of {})",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::None => f.write_str("none"),
            Quorum::Auto => f.write_str("auto"),
            Quorum::Fixed(c) => write!(f, "fixed:{c}"),
        }
    }
}

impl FromStr for Quorum {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "none" => Ok(Quorum::None),
            "auto" => Ok(Quorum::Auto),
            _ => match s.strip_prefix("fixed:") {
                Some(c) => match num::<u8>(c, "quorum count")? {
                    0 => err("quorum count must be at least 1"),
                    c => Ok(Quorum::Fixed(c)),
                },
                None => err(format!("unknown quorum {s:?} (none, auto or fixed:COUNT)")),
            },
        }
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layout={} quorum={} ping-timeout={}s heal-timeout={}s shd-threads={} fsync-namespace={} clients={} buggify={}",
            self.layout,
            self.quorum,
            self.ping_timeout_s,
            self.heal_timeout_s,
            self.shd_threads,
            if self.fsync_namespace { "on" } else { "off" },
            self.clients,
            if self.buggify { "on" } else { "off" },
        )
    }
}

impl FromStr for Settings {
    type Err = ParseError;
    /// `key=value` words; a key left out keeps its default.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut out = Settings::default();
        for word in s.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                return err(format!("setting {word:?} is not key=value"));
            };
            let secs = |v: &str| match v.strip_suffix('s') {
                Some(n) => num::<u32>(n, k),
                None => err(format!("{k}: {v:?} is written like 42s")),
            };
            match k {
                "layout" => out.layout = v.parse()?,
                "quorum" => out.quorum = v.parse()?,
                "ping-timeout" => {
                    out.ping_timeout_s = u16::try_from(secs(v)?)
                        .map_err(|_| ParseError(format!("ping-timeout {v} is too long")))?
                }
                "heal-timeout" => out.heal_timeout_s = secs(v)?,
                "shd-threads" => out.shd_threads = num(v, k)?,
                "fsync-namespace" | "buggify" => {
                    let on = match v {
                        "on" => true,
                        "off" => false,
                        _ => return err(format!("{k} is on or off, not {v:?}")),
                    };
                    if k == "buggify" {
                        out.buggify = on;
                    } else {
                        out.fsync_namespace = on;
                    }
                }
                "clients" => match num::<u8>(v, k)? {
                    c @ 1..=CLIENTS_MAX => out.clients = c,
                    c => return err(format!("clients={c}: 1 to {CLIENTS_MAX}")),
                },
                _ => return err(format!("unknown setting {k:?}")),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |n: &u8| format!("s{}", n + 1);
        match self {
            Fault::KillBrick { server, brick } => write!(f, "kill {}/{brick}", s(server)),
            Fault::CrashHost { server } => write!(f, "crash {}", s(server)),
            Fault::CutClients { server, oneway } => write!(
                f,
                "{} {}",
                if *oneway { "cut-oneway" } else { "cut" },
                s(server)
            ),
            Fault::IsolateServer { server } => write!(f, "isolate {}", s(server)),
            Fault::Split { side } => {
                let mut names = Vec::new();
                for b in 0..SERVERS + CLIENTS_MAX {
                    if side >> b & 1 == 1 {
                        names.push(if b < SERVERS {
                            format!("s{}", b + 1)
                        } else {
                            format!("c{}", b - SERVERS + 1)
                        });
                    }
                }
                write!(f, "split {}", names.join(","))
            }
            Fault::Latency { max_ms } => write!(f, "latency {max_ms}ms"),
            Fault::Loss { permille } => write!(f, "loss {permille}/1000"),
            Fault::Dns { server, answer } => match answer {
                DnsFault::Slow(d) => write!(f, "dns {} slow {d}ms", s(server)),
                DnsFault::NxDomain => write!(f, "dns {} nxdomain", s(server)),
                DnsFault::ServFail => write!(f, "dns {} servfail", s(server)),
                DnsFault::Hang => write!(f, "dns {} hang", s(server)),
            },
            Fault::DiskEio { server, permille } => write!(f, "eio {} {permille}/1000", s(server)),
            Fault::DiskFull { server } => write!(f, "full {}", s(server)),
            Fault::LatentErrors {
                server,
                client,
                file,
            } => write!(f, "latent {} c{}/f{file}", s(server), client + 1),
            Fault::LoseXattrs { server, updates } => {
                write!(f, "lose-xattrs {} {updates}", s(server))
            }
            Fault::KillShd { server } => write!(f, "kill-shd {}", s(server)),
            Fault::MgmtdCrash { server, after_ms } => {
                write!(f, "mgmtd-crash {} {after_ms}ms", s(server))
            }
            Fault::ClockJump { server, secs } => write!(f, "clock {} {secs:+}s", s(server)),
            Fault::Outage {
                client,
                into_write_ms,
            } => write!(f, "outage c{} {into_write_ms}ms", client + 1),
        }
    }
}

fn permille(s: &str) -> Result<u16, ParseError> {
    match s.strip_suffix("/1000").map(|n| num::<u16>(n, "rate")) {
        Some(Ok(n)) if n <= 1000 => Ok(n),
        _ => err(format!("{s:?}: a rate is written like 25/1000")),
    }
}

impl FromStr for Fault {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let arg = |i: usize| {
            w.get(i)
                .copied()
                .ok_or_else(|| ParseError(format!("fault {s:?} is missing an argument")))
        };
        let fault = match arg(0)? {
            "kill" => {
                let (h, b) = arg(1)?
                    .split_once('/')
                    .ok_or_else(|| ParseError(format!("kill takes sN/BRICK, not {:?}", w[1])))?;
                Fault::KillBrick {
                    server: server(h)?,
                    brick: num(b, "brick")?,
                }
            }
            "crash" => Fault::CrashHost {
                server: server(arg(1)?)?,
            },
            "cut" | "cut-oneway" => Fault::CutClients {
                server: server(arg(1)?)?,
                oneway: w[0] == "cut-oneway",
            },
            "isolate" => Fault::IsolateServer {
                server: server(arg(1)?)?,
            },
            "split" => {
                let mut side = 0u8;
                for h in arg(1)?.split(',') {
                    side |= 1
                        << match h.starts_with('s') {
                            true => server(h)?,
                            false => SERVERS + client(h)?,
                        };
                }
                Fault::Split { side }
            }
            "latency" => Fault::Latency {
                max_ms: ms(arg(1)?)?,
            },
            "loss" => Fault::Loss {
                permille: permille(arg(1)?)?,
            },
            "dns" => Fault::Dns {
                server: server(arg(1)?)?,
                answer: match arg(2)? {
                    "slow" => DnsFault::Slow(ms(arg(3)?)?),
                    "nxdomain" => DnsFault::NxDomain,
                    "servfail" => DnsFault::ServFail,
                    "hang" => DnsFault::Hang,
                    other => return err(format!("unknown dns answer {other:?}")),
                },
            },
            "eio" => Fault::DiskEio {
                server: server(arg(1)?)?,
                permille: permille(arg(2)?)?,
            },
            "full" => Fault::DiskFull {
                server: server(arg(1)?)?,
            },
            "latent" => {
                let (c, fl) = arg(2)?
                    .split_once('/')
                    .ok_or_else(|| ParseError(format!("latent takes sN cK/fI, not {s:?}")))?;
                Fault::LatentErrors {
                    server: server(arg(1)?)?,
                    client: client(c)?,
                    file: file(fl)?,
                }
            }
            "lose-xattrs" => Fault::LoseXattrs {
                server: server(arg(1)?)?,
                updates: num(arg(2)?, "updates")?,
            },
            "kill-shd" => Fault::KillShd {
                server: server(arg(1)?)?,
            },
            "mgmtd-crash" => Fault::MgmtdCrash {
                server: server(arg(1)?)?,
                after_ms: ms(arg(2)?)?,
            },
            "clock" => {
                let v = arg(2)?;
                let Some(n) = v.strip_suffix('s') else {
                    return err(format!("clock takes sN +SECSs or -SECSs, not {v:?}"));
                };
                Fault::ClockJump {
                    server: server(arg(1)?)?,
                    secs: num(n.trim_start_matches('+'), "clock step")?,
                }
            }
            "outage" => Fault::Outage {
                client: client(arg(1)?)?,
                into_write_ms: u16::try_from(ms(arg(2)?)?).map_err(|_| {
                    ParseError(format!("outage {s:?}: at most 65535ms into the write"))
                })?,
            },
            other => return err(format!("unknown fault {other:?}")),
        };
        let used = match &fault {
            Fault::Dns {
                answer: DnsFault::Slow(_),
                ..
            } => 4,
            Fault::Dns { .. }
            | Fault::DiskEio { .. }
            | Fault::LatentErrors { .. }
            | Fault::LoseXattrs { .. }
            | Fault::MgmtdCrash { .. }
            | Fault::ClockJump { .. }
            | Fault::Outage { .. } => 3,
            _ => 2,
        };
        if w.len() > used {
            return err(format!("fault {s:?} has extra words"));
        }
        Ok(fault)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}+{} {}", self.at_ms, self.hold_ms, self.fault)
    }
}

impl FromStr for Step {
    type Err = ParseError;
    /// `@AT+HOLD FAULT`, times in ms.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let Some((when, fault)) = s.strip_prefix('@').and_then(|r| r.split_once(' ')) else {
            return err(format!("step {s:?} is not @AT+HOLD FAULT"));
        };
        let Some((at, hold)) = when.split_once('+') else {
            return err(format!("step {s:?}: the time is written @AT+HOLD (ms)"));
        };
        Ok(Step {
            at_ms: num(at, "step start")?,
            hold_ms: num(hold, "step hold")?,
            fault: fault.parse()?,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return f.write_str("none");
        }
        let steps: Vec<String> = self.steps.iter().map(|s| s.to_string()).collect();
        f.write_str(&steps.join("; "))
    }
}

impl FromStr for Plan {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s == "none" || s.is_empty() {
            return Ok(Plan::default());
        }
        let steps = s
            .split(';')
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if steps.len() > PLAN_STEPS_MAX * 4 {
            return err(format!("a plan has at most {} steps", PLAN_STEPS_MAX * 4));
        }
        Ok(Plan { steps })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write {
                file,
                off,
                len,
                fill,
            } => write!(f, "w f{file} {off}+{len}#{fill}"),
            Op::Truncate { file, size } => write!(f, "t f{file} {size}"),
            Op::Create { file } => write!(f, "c f{file}"),
            Op::Rename { from, to } => write!(f, "mv f{from} f{to}"),
            Op::Delete { file } => write!(f, "rm f{file}"),
            Op::Read { file } => write!(f, "r f{file}"),
            Op::SharedWrite {
                file,
                off,
                len,
                fill,
            } => write!(f, "w sh{file} {off}+{len}#{fill}"),
            Op::SharedRead { file } => write!(f, "r sh{file}"),
        }
    }
}

impl FromStr for Op {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let arg = |i: usize| {
            w.get(i)
                .copied()
                .ok_or_else(|| ParseError(format!("op {s:?} is missing an argument")))
        };
        let (op, used) = match arg(0)? {
            "w" if arg(1)?.starts_with("sh") => {
                let bad = || ParseError(format!("write {s:?} is not w shI OFF+LEN#FILL"));
                let (range, fill) = arg(2)?.split_once('#').ok_or_else(bad)?;
                let (off, len) = range.split_once('+').ok_or_else(bad)?;
                let (off, len): (u32, u32) = (num(off, "offset")?, num(len, "length")?);
                if len == 0 || off.checked_add(len).is_none_or(|e| e > SHARED_REGION_BYTES) {
                    return err(format!(
                        "write {s:?}: 1 to {SHARED_REGION_BYTES} bytes inside the client's region"
                    ));
                }
                let op = Op::SharedWrite {
                    file: shared(arg(1)?)?,
                    off,
                    len,
                    fill: num(fill, "fill")?,
                };
                (op, 3)
            }
            "r" if arg(1)?.starts_with("sh") => (
                Op::SharedRead {
                    file: shared(arg(1)?)?,
                },
                2,
            ),
            "w" => {
                let bad = || ParseError(format!("write {s:?} is not w fI OFF+LEN#FILL"));
                let (range, fill) = arg(2)?.split_once('#').ok_or_else(bad)?;
                let (off, len) = range.split_once('+').ok_or_else(bad)?;
                let (off, len): (u32, u32) = (num(off, "offset")?, num(len, "length")?);
                if len == 0 || len > WRITE_BYTES_MAX || off + len > FILE_BYTES_MAX {
                    return err(format!(
                        "write {s:?}: 1 to {WRITE_BYTES_MAX} bytes inside the first {FILE_BYTES_MAX}"
                    ));
                }
                let op = Op::Write {
                    file: file(arg(1)?)?,
                    off,
                    len,
                    fill: num(fill, "fill")?,
                };
                (op, 3)
            }
            "t" => {
                let size = num(arg(2)?, "size")?;
                if size > FILE_BYTES_MAX {
                    return err(format!("truncate {s:?}: at most {FILE_BYTES_MAX} bytes"));
                }
                (
                    Op::Truncate {
                        file: file(arg(1)?)?,
                        size,
                    },
                    3,
                )
            }
            "c" => (
                Op::Create {
                    file: file(arg(1)?)?,
                },
                2,
            ),
            "mv" => (
                Op::Rename {
                    from: file(arg(1)?)?,
                    to: file(arg(2)?)?,
                },
                3,
            ),
            "rm" => (
                Op::Delete {
                    file: file(arg(1)?)?,
                },
                2,
            ),
            "r" => (
                Op::Read {
                    file: file(arg(1)?)?,
                },
                2,
            ),
            other => return err(format!("unknown op {other:?}")),
        };
        if w.len() > used {
            return err(format!("op {s:?} has extra words"));
        }
        Ok(op)
    }
}

impl Case {
    /// Whether any client's ops touch the shared files (only then does the
    /// runner make them).
    pub fn uses_shared(&self) -> bool {
        self.workload
            .iter()
            .flatten()
            .any(|o| matches!(o, Op::SharedWrite { .. } | Op::SharedRead { .. }))
    }
}

impl fmt::Display for Case {
    /// One line: `SETTINGS | plan: PLAN | c1: OPS | c2: OPS ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} | plan: {}", self.settings, self.plan)?;
        for (c, ops) in self.workload.iter().enumerate() {
            let ops: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
            write!(f, " | c{}: {}", c + 1, ops.join(", "))?;
        }
        Ok(())
    }
}

impl FromStr for Case {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut parts = s.trim().split('|').map(str::trim);
        let settings: Settings = parts.next().unwrap_or_default().parse()?;
        let mut case = Case {
            settings,
            plan: Plan::default(),
            workload: Vec::new(),
        };
        for part in parts {
            let Some((head, body)) = part.split_once(':') else {
                return err(format!("case part {part:?} is not NAME: ..."));
            };
            let body = body.trim();
            if head == "plan" {
                case.plan = body.parse()?;
                continue;
            }
            let c = client(head)?;
            if c as usize != case.workload.len() {
                return err(format!(
                    "workloads come in client order; {head} is out of place"
                ));
            }
            let ops = if body.is_empty() {
                Vec::new()
            } else {
                body.split(',')
                    .map(|o| o.trim().parse())
                    .collect::<Result<Vec<_>, _>>()?
            };
            if ops.len() > OPS_PER_CLIENT_MAX * 4 {
                return err(format!("{head}: at most {} ops", OPS_PER_CLIENT_MAX * 4));
            }
            case.workload.push(ops);
        }
        if case.workload.len() != case.settings.clients as usize {
            return err(format!(
                "clients={} but {} workloads are given",
                case.settings.clients,
                case.workload.len()
            ));
        }
        Ok(case)
    }
}

// ---------------------------------------------------------------------
// Generators.

/// proptest strategies for cases: settings swarm over every layout and
/// option, plans over every fault kind, and ops over every op. They
/// shrink toward fewer steps, fewer ops, fewer clients, shorter holds and
/// earlier times.
pub mod strategy {
    use super::*;
    use proptest::prelude::*;

    pub fn settings() -> impl Strategy<Value = Settings> {
        (
            prop::sample::select(Layout::ALL.to_vec()),
            prop_oneof![
                3 => Just(Quorum::Auto),
                1 => Just(Quorum::None),
                1 => (1u8..=3).prop_map(Quorum::Fixed),
            ],
            prop::sample::select(vec![42u16, 2, 5, 10]),
            prop::sample::select(vec![600u32, 5, 10, 60]),
            prop::sample::select(vec![16u8, 1, 4]),
            prop::bool::weighted(0.8),
            1..=CLIENTS_MAX,
            any::<bool>(),
        )
            .prop_map(
                |(layout, quorum, ping, heal, shd, fsync_namespace, clients, buggify)| Settings {
                    layout,
                    quorum,
                    ping_timeout_s: ping,
                    heal_timeout_s: heal,
                    shd_threads: shd,
                    fsync_namespace,
                    clients,
                    buggify,
                },
            )
    }

    pub fn fault() -> impl Strategy<Value = Fault> {
        let s = 0..SERVERS;
        prop_oneof![
            4 => (s.clone(), 0u8..2).prop_map(|(server, brick)| Fault::KillBrick { server, brick }),
            2 => s.clone().prop_map(|server| Fault::CrashHost { server }),
            2 => (s.clone(), any::<bool>())
                .prop_map(|(server, oneway)| Fault::CutClients { server, oneway }),
            1 => s.clone().prop_map(|server| Fault::IsolateServer { server }),
            1 => (1u8..(1 << (SERVERS + CLIENTS_MAX)) - 1).prop_map(|side| Fault::Split { side }),
            1 => (20u32..2_000).prop_map(|max_ms| Fault::Latency { max_ms }),
            1 => (1u16..200).prop_map(|permille| Fault::Loss { permille }),
            1 => (
                s.clone(),
                prop_oneof![
                    (100u32..10_000).prop_map(DnsFault::Slow),
                    Just(DnsFault::NxDomain),
                    Just(DnsFault::ServFail),
                    Just(DnsFault::Hang),
                ]
            )
                .prop_map(|(server, answer)| Fault::Dns { server, answer }),
            1 => (s.clone(), 1u16..300)
                .prop_map(|(server, permille)| Fault::DiskEio { server, permille }),
            1 => s.clone().prop_map(|server| Fault::DiskFull { server }),
            1 => (s.clone(), 0..CLIENTS_MAX, 0..FILES_PER_CLIENT).prop_map(
                |(server, client, file)| Fault::LatentErrors {
                    server,
                    client,
                    file
                }
            ),
            1 => (s.clone(), 1u8..16)
                .prop_map(|(server, updates)| Fault::LoseXattrs { server, updates }),
            1 => s.clone().prop_map(|server| Fault::KillShd { server }),
            1 => (s.clone(), 0u32..200).prop_map(|(server, after_ms)| Fault::MgmtdCrash { server, after_ms }),
            1 => (s, prop_oneof![-3600i32..-1, 1i32..3600])
                .prop_map(|(server, secs)| Fault::ClockJump { server, secs }),
            1 => outage(),
        ]
    }

    /// A whole-cluster outage some way into a client's write: the window
    /// between its pre-op and post-op is a few network round trips, about
    /// 15 to 40 ms in on the default latency.
    pub fn outage() -> impl Strategy<Value = Fault> {
        (0..CLIENTS_MAX, 0u16..60).prop_map(|(client, into_write_ms)| Fault::Outage {
            client,
            into_write_ms,
        })
    }

    pub fn plan() -> impl Strategy<Value = Plan> {
        prop::collection::vec(
            (0..PLAN_START_MS_MAX, 100..HOLD_MS_MAX, fault()).prop_map(
                |(at_ms, hold_ms, fault)| Step {
                    at_ms,
                    hold_ms,
                    fault,
                },
            ),
            0..=PLAN_STEPS_MAX,
        )
        .prop_map(|steps| Plan { steps })
    }

    /// A write of 1 to [`WRITE_BYTES_MAX`] bytes inside the first
    /// [`FILE_BYTES_MAX`] of one of `files`.
    fn write(files: std::ops::Range<u8>) -> impl Strategy<Value = Op> {
        (files, 1..=WRITE_BYTES_MAX, any::<u8>(), 0.0f64..1.0).prop_map(|(file, len, fill, at)| {
            Op::Write {
                file,
                off: ((FILE_BYTES_MAX - len) as f64 * at) as u32,
                len,
                fill,
            }
        })
    }

    fn truncate(files: std::ops::Range<u8>) -> impl Strategy<Value = Op> {
        (files, 0..=FILE_BYTES_MAX).prop_map(|(file, size)| Op::Truncate { file, size })
    }

    /// A write of 1 to [`WRITE_BYTES_MAX`] bytes inside the client's
    /// region of a shared file.
    fn shared_write() -> impl Strategy<Value = Op> {
        (
            0..SHARED_FILES,
            1..=WRITE_BYTES_MAX,
            any::<u8>(),
            0.0f64..1.0,
        )
            .prop_map(|(file, len, fill, at)| Op::SharedWrite {
                file,
                off: ((SHARED_REGION_BYTES - len) as f64 * at) as u32,
                len,
                fill,
            })
    }

    pub fn op() -> impl Strategy<Value = Op> {
        let f = 0..FILES_PER_CLIENT;
        prop_oneof![
            6 => write(f.clone()),
            1 => truncate(f.clone()),
            2 => f.clone().prop_map(|file| Op::Create { file }),
            1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
            1 => f.clone().prop_map(|file| Op::Delete { file }),
            2 => f.prop_map(|file| Op::Read { file }),
            3 => shared_write(),
            1 => (0..SHARED_FILES).prop_map(|file| Op::SharedRead { file }),
        ]
    }

    /// Cases aimed at power loss mid-write: every replicated layout at its
    /// defaults, one or two clients writing (now and then truncating,
    /// reading, creating) four of their files, and one to four
    /// whole-cluster outages, each some way into a write, a few seconds
    /// apart. What they test is the order of durable steps on a brick: an outage in
    /// the middle of a write leaves every copy with what reached its disk,
    /// and the marks on disk must say which copies may differ.
    pub fn outage_case() -> impl Strategy<Value = Case> {
        const FILES: u8 = 4;
        let op = prop_oneof![
            8 => write(0..FILES),
            1 => truncate(0..FILES),
            1 => (0..FILES).prop_map(|file| Op::Read { file }),
            1 => (0..FILES).prop_map(|file| Op::Create { file }),
        ];
        let ops = prop::collection::vec(op, 30..=OPS_PER_CLIENT_MAX);
        let steps = prop::collection::vec((0u32..4_000, 500u32..5_000, outage()), 1..=4);
        (
            steps,
            prop::collection::vec(ops, 2),
            // Replicated layouts only: disperse never takes an outage
            // ([`admit_outage`]). Replica 2 twice: with fewer copies an
            // outage more often leaves every one without an unsynced mark.
            prop::sample::select(vec![
                Layout::Replica2,
                Layout::Replica2,
                Layout::Replica3,
                Layout::Arbiter,
                Layout::DistRep2x3,
            ]),
            1u8..=2,
        )
            .prop_map(|(steps, mut workload, layout, clients)| {
                workload.truncate(clients as usize);
                let steps = steps
                    .into_iter()
                    .enumerate()
                    .map(|(k, (dt, hold_ms, fault))| Step {
                        at_ms: 1_000 + 8_000 * k as u32 + dt,
                        hold_ms,
                        fault,
                    })
                    .collect();
                Case {
                    settings: Settings {
                        layout,
                        clients,
                        ..Settings::default()
                    },
                    plan: Plan { steps },
                    workload,
                }
            })
    }

    /// Every client's ops are drawn whatever the number of clients, and
    /// the case keeps those of the clients it has: so the parts shrink
    /// independently (a flat map would draw new ops whenever the settings
    /// shrink, and lose the failure).
    pub fn case() -> impl Strategy<Value = Case> {
        let ops = prop::collection::vec(op(), 1..=OPS_PER_CLIENT_MAX);
        // Shrinking takes the parts in this order: the plan first (the
        // faults are the story), then the ops, then the settings.
        (
            plan(),
            prop::collection::vec(ops, CLIENTS_MAX as usize),
            settings(),
        )
            .prop_map(|(plan, mut workload, settings)| {
                workload.truncate(settings.clients as usize);
                Case {
                    settings,
                    plan,
                    workload,
                }
            })
    }
}

/// The case seed `seed` stands for: the case strategy driven by a ChaCha
/// generator seeded with it. It is independent of the simulator's own
/// randomness, so a seed names the same case in every build.
pub fn case_for_seed(seed: u64) -> Case {
    drawn(seed, strategy::case())
}

/// The case of the `power_outage` scenario that `seed` stands for, drawn
/// as [`case_for_seed`] draws.
pub fn outage_case_for_seed(seed: u64) -> Case {
    drawn(seed, strategy::outage_case())
}

fn drawn(seed: u64, s: impl proptest::strategy::Strategy<Value = Case>) -> Case {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    s.new_tree(&mut runner)
        .expect("the case strategies have no filters, so they always yield")
        .current()
}

/// Shrink the failing case of `seed`, keeping each simpler case that
/// still `fails`, for at most `runs_max` runs. Returns the simplest
/// failing case found and the runs spent.
///
/// The steps, in rounds until a round changes nothing: drop plan steps
/// and ops by delta debugging ([`ddmin`]: halves, then quarters, ...,
/// then single items), drop whole clients, put each setting back to its
/// default, and halve each step's start and hold. A case costs a whole
/// cluster run, so the big cuts come first (proptest's own tree walk
/// removes one element per run, and spent its budget on 4 x 60 ops).
pub fn shrink(start: Case, mut fails: impl FnMut(&Case) -> bool, runs_max: usize) -> (Case, usize) {
    let mut best = start;
    let mut runs = 0usize;
    let mut attempt = |c: &Case, runs: &mut usize| -> bool {
        if *runs >= runs_max {
            return false;
        }
        *runs += 1;
        fails(c)
    };
    loop {
        let round = best.clone();
        // Plan steps.
        let steps = ddmin(best.plan.steps.clone(), |steps| {
            let mut c = best.clone();
            c.plan.steps = steps.to_vec();
            attempt(&c, &mut runs)
        });
        best.plan.steps = steps;
        // Whole clients, last first (the others keep their names).
        let mut k = best.settings.clients as usize;
        while k > 1 {
            k -= 1;
            let mut c = best.clone();
            c.workload.remove(k);
            c.settings.clients -= 1;
            // Faults naming clients keep their meaning only below k.
            if attempt(&c, &mut runs) {
                best = c;
            }
        }
        // Each client's ops (at least one stays).
        for k in 0..best.workload.len() {
            let ops = ddmin(best.workload[k].clone(), |ops| {
                if ops.is_empty() {
                    return false;
                }
                let mut c = best.clone();
                c.workload[k] = ops.to_vec();
                attempt(&c, &mut runs)
            });
            best.workload[k] = ops;
        }
        // Settings back to their defaults, one at a time.
        let d = Settings::default();
        for field in 0..7 {
            let mut s = best.settings.clone();
            match field {
                0 => s.layout = d.layout,
                1 => s.quorum = d.quorum,
                2 => s.ping_timeout_s = d.ping_timeout_s,
                3 => s.heal_timeout_s = d.heal_timeout_s,
                4 => s.shd_threads = d.shd_threads,
                5 => s.fsync_namespace = d.fsync_namespace,
                _ => s.buggify = d.buggify,
            }
            if s == best.settings {
                continue;
            }
            let c = Case {
                settings: s,
                ..best.clone()
            };
            if attempt(&c, &mut runs) {
                best = c;
            }
        }
        // Earlier and shorter faults.
        for i in 0..best.plan.steps.len() {
            for hold in [false, true] {
                let mut c = best.clone();
                let step = &mut c.plan.steps[i];
                let v = if hold {
                    &mut step.hold_ms
                } else {
                    &mut step.at_ms
                };
                if *v < 200 {
                    continue;
                }
                *v /= 2;
                if attempt(&c, &mut runs) {
                    best = c;
                }
            }
        }
        if best == round || runs >= runs_max {
            return (best, runs);
        }
    }
}

/// What kind of failure a panic message reports, for shrinking: the
/// words before the first `:` and before the first word with a digit (a
/// leading count, `Some(N)` or `None`, is skipped), so "safety: c3: a
/// read of f5 ..." and "safety: c1: ..." match, and "the bricks differ
/// after heal: ..." does not match "Some(3) entries still wait for heal".
pub fn failure_kind(message: &str) -> String {
    let head = message.split(':').next().unwrap_or_default();
    let mut words = head.split_whitespace().peekable();
    if words
        .peek()
        .is_some_and(|w| *w == "None" || w.chars().any(|c| c.is_ascii_digit()))
    {
        words.next();
    }
    words
        .take_while(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Delta debugging: a smallest sublist of `items` (in order) for which
/// `fails` holds, found by trying to drop halves, then quarters, and so on
/// down to single items. `fails(items)` is assumed; the result is 1-minimal
/// when the budget lasts (dropping any one item makes it pass).
pub fn ddmin<T: Clone>(mut items: Vec<T>, mut fails: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut chunks = 2usize;
    while !items.is_empty() {
        let size = items.len().div_ceil(chunks);
        let mut dropped = false;
        let mut start = 0;
        while start < items.len() {
            let end = (start + size).min(items.len());
            let rest: Vec<T> = items[..start]
                .iter()
                .chain(&items[end..])
                .cloned()
                .collect();
            if fails(&rest) {
                items = rest;
                dropped = true;
                // The same start now names the next chunk.
            } else {
                start = end;
            }
        }
        if dropped {
            chunks = chunks.saturating_sub(1).max(2);
        } else if size == 1 {
            break;
        } else {
            chunks = (chunks * 2).min(items.len());
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(layout: Layout, quorum: Quorum) -> Settings {
        Settings {
            layout,
            quorum,
            clients: 2,
            ..Settings::default()
        }
    }

    fn kill(server: u8, brick: u8) -> Fault {
        Fault::KillBrick { server, brick }
    }

    #[test]
    fn the_atlas_keeps_a_good_copy() {
        use Admit::*;
        use Layout::*;
        let none = BTreeSet::new();
        let stale = |b: &[Brick]| b.iter().copied().collect::<BTreeSet<_>>();
        let lose = |server| Fault::LoseXattrs { server, updates: 3 };
        let outage = Fault::Outage {
            client: 0,
            into_write_ms: 20,
        };
        type Row = (
            &'static str,
            Settings,
            Vec<Fault>,
            BTreeSet<Brick>,
            Fault,
            Admit,
        );
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            ("one kill on replica 3", settings(Replica3, Quorum::Auto), vec![], none.clone(), kill(0, 0), Now),
            ("quorum guards stacked kills", settings(Replica3, Quorum::Auto), vec![kill(0, 0), kill(1, 0)], none.clone(), kill(2, 0), Now),
            ("quorum guards kills beside stale bricks", settings(Replica3, Quorum::Auto), vec![], stale(&[(0, 0)]), kill(1, 0), Now),
            ("no quorum: one brick stays in", settings(Replica3, Quorum::None), vec![kill(0, 0), kill(1, 0)], none.clone(), kill(2, 0), Never),
            ("no quorum: a second kill on a healed set", settings(Replica3, Quorum::None), vec![kill(0, 0)], none.clone(), kill(1, 0), Now),
            ("no quorum: heal the stale brick first", settings(Replica3, Quorum::None), vec![], stale(&[(0, 0)]), kill(1, 0), AfterHeal),
            ("fixed 1 is no quorum", settings(Replica3, Quorum::Fixed(1)), vec![], stale(&[(2, 0)]), kill(0, 0), AfterHeal),
            ("fixed 2 of 3 is a quorum", settings(Replica3, Quorum::Fixed(2)), vec![], stale(&[(2, 0)]), kill(0, 0), Now),
            ("replica 2 auto: only the first brick's side writes", settings(Replica2, Quorum::Auto), vec![kill(0, 0)], none.clone(), kill(1, 0), Now),
            ("replica 2 without quorum keeps one brick in", settings(Replica2, Quorum::None), vec![kill(0, 0)], none.clone(), kill(1, 0), Never),
            ("a brick-less server's crash touches nothing", settings(Replica2, Quorum::None), vec![kill(0, 0)], none.clone(), Fault::CrashHost { server: 2 }, Now),
            ("disperse 4+2 takes two out", settings(Disperse4x2, Quorum::Auto), vec![kill(0, 0)], none.clone(), kill(1, 1), Now),
            ("disperse 4+2 not three", settings(Disperse4x2, Quorum::Auto), vec![kill(0, 0), kill(1, 1)], none.clone(), kill(2, 0), Never),
            ("disperse: a crash is two fragments", settings(Disperse4x2, Quorum::Auto), vec![kill(0, 0)], none.clone(), Fault::CrashHost { server: 1 }, Never),
            ("disperse: stale fragments count until healed", settings(Disperse4x2, Quorum::Auto), vec![kill(0, 0)], stale(&[(1, 0)]), kill(2, 1), AfterHeal),
            ("disperse 2+1 one at a time", settings(Disperse2x1, Quorum::Auto), vec![], stale(&[(0, 0)]), kill(1, 0), AfterHeal),
            ("a lying disk alone", settings(Replica3, Quorum::Auto), vec![], none.clone(), lose(1), Now),
            ("a lying disk not beside a kill", settings(Replica3, Quorum::Auto), vec![kill(0, 0)], none.clone(), lose(1), Never),
            ("a kill not beside a lying disk", settings(Replica3, Quorum::Auto), vec![lose(1)], none.clone(), kill(0, 0), Never),
            ("a lying disk waits for heal", settings(Replica3, Quorum::Auto), vec![], stale(&[(0, 0)]), lose(1), AfterHeal),
            ("the other set of 2x3 is free", settings(DistRep2x3, Quorum::None), vec![kill(0, 0), kill(1, 0)], none.clone(), kill(0, 1), Now),
            ("heal traffic faults touch no brick", settings(Disperse2x1, Quorum::Auto), vec![kill(0, 0)], none.clone(), Fault::IsolateServer { server: 1 }, Now),
            ("power loss on disperse without namespace fsync", Settings { fsync_namespace: false, ..settings(Disperse4x2, Quorum::Auto) }, vec![], none.clone(), Fault::CrashHost { server: 0 }, Now),
            ("a kill is fine there", Settings { fsync_namespace: false, ..settings(Disperse4x2, Quorum::Auto) }, vec![], none.clone(), kill(0, 0), Now),
            ("power loss on replicate without namespace fsync", Settings { fsync_namespace: false, ..settings(Replica3, Quorum::Auto) }, vec![], none.clone(), Fault::CrashHost { server: 0 }, Now),
            ("disperse: a slow network uses a fragment", settings(Disperse4x2, Quorum::Auto), vec![Fault::CrashHost { server: 2 }], none.clone(), Fault::Latency { max_ms: 1608 }, Never),
            ("disperse: a lossy network beside one out", settings(Disperse4x2, Quorum::Auto), vec![Fault::Loss { permille: 100 }], none.clone(), kill(0, 0), Now),
            ("disperse 2+1: nothing out while the network is slow", settings(Disperse2x1, Quorum::Auto), vec![Fault::Latency { max_ms: 100 }], none.clone(), kill(0, 0), Never),
            ("replicate: a slow network changes nothing", settings(Replica3, Quorum::None), vec![Fault::Latency { max_ms: 100 }], none.clone(), kill(0, 0), Now),
            ("dist-disperse: one fragment per set", settings(DistDisp2x3, Quorum::Auto), vec![kill(0, 0)], none.clone(), kill(1, 1), Now),
            ("dist-disperse: not two of one set", settings(DistDisp2x3, Quorum::Auto), vec![kill(0, 0)], none.clone(), kill(1, 0), Never),
            ("a lying disk on disperse", settings(Disperse2x1, Quorum::Auto), vec![], none.clone(), Fault::LoseXattrs { server: 0, updates: 3, }, Now),
            ("an outage on a quiet volume", settings(Replica3, Quorum::Auto), vec![], none.clone(), outage.clone(), Now),
            ("no outage on disperse: the write hole", settings(Disperse2x1, Quorum::Auto), vec![], none.clone(), outage.clone(), Never),
            ("an outage is not counted per set", settings(Replica3, Quorum::None), vec![], none.clone(), outage.clone(), Now),
            ("an outage waits for heal", settings(Replica2, Quorum::Auto), vec![], stale(&[(1, 0)]), outage.clone(), AfterHeal),
            ("no outage beside a lying disk", settings(Replica3, Quorum::Auto), vec![lose(1)], none.clone(), outage.clone(), Never),
            ("no outage beside anything", settings(Replica3, Quorum::Auto), vec![Fault::Latency { max_ms: 100 }], none.clone(), outage.clone(), Never),
            ("no outage without namespace fsync", Settings { fsync_namespace: false, ..settings(Replica3, Quorum::Auto) }, vec![], none.clone(), outage.clone(), Never),
            ("no second loss during an outage", settings(Replica3, Quorum::None), vec![outage.clone()], none.clone(), kill(0, 0), Never),
        ];
        for (what, s, active, stale, new, want) in cases {
            assert_eq!(admit(&s, &active, &stale, &new), want, "{what}");
        }
    }

    #[test]
    fn a_split_takes_out_what_a_client_cannot_reach() {
        // s1 and c1 on one side, s2, s3 and c2 on the other: each client
        // loses the servers across, so every brick is out for someone.
        let side = 1 | 1 << SERVERS;
        let e = effect(Layout::Replica3, 2, &Fault::Split { side });
        assert_eq!(e.out.len(), 3);
        // With one client only, just the servers across from it.
        let e = effect(Layout::Replica3, 1, &Fault::Split { side });
        assert_eq!(e.out, [(1, 0), (2, 0)].into_iter().collect());
    }

    #[test]
    fn every_layout_has_its_bricks_once() {
        for l in Layout::ALL {
            let all = l.bricks();
            let unique: BTreeSet<_> = all.iter().collect();
            assert_eq!(all.len(), unique.len(), "{l}");
            let listed = l
                .create()
                .split_whitespace()
                .filter(|w| w.contains(":/"))
                .count();
            assert_eq!(listed, all.len(), "{l}: create names every brick");
        }
    }

    #[test]
    fn bad_text_gets_a_reason() {
        for (text, why) in [
            ("layout=replica9", "unknown layout"),
            ("clients=9", "1 to 4"),
            ("layout=replica3 | plan: @5 kill s1/0", "@AT+HOLD"),
            ("layout=replica3 | plan: @5+10 kill s7/0", "not a server"),
            ("layout=replica3 | plan: @5+10 dance s1", "unknown fault"),
            (
                "layout=replica3 | plan: none | c1: w f0 0+99999#1",
                "bytes inside",
            ),
            (
                "layout=replica3 clients=2 | plan: none | c1: r f0",
                "2 but 1 workloads",
            ),
            ("layout=replica3 | plan: none | c1: r f9", "not a file"),
            (
                "layout=replica3 | plan: none | c1: r sh2",
                "not a shared file",
            ),
            (
                "layout=replica3 | plan: none | c1: w sh0 4000+200#1",
                "inside the client's region",
            ),
            (
                "layout=replica3 | plan: none | c1: w sh0 4294967295+2#1",
                "inside the client's region",
            ),
            ("layout=replica3 | plan: @1+1 crash s1 now", "extra words"),
            ("layout=replica3 | plan: @1+1 outage s1 5ms", "not a client"),
            (
                "layout=replica3 | plan: @1+1 outage c1 70000ms",
                "at most 65535ms",
            ),
        ] {
            let e = text.parse::<Case>().expect_err(text);
            assert!(e.0.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn only_cases_with_shared_ops_use_the_shared_files() {
        for (text, uses) in [
            ("layout=replica3 | plan: none | c1: r f0, w f1 0+1#1", false),
            ("layout=replica3 | plan: none | c1: r f0, r sh1", true),
            (
                "layout=replica3 clients=2 | plan: none | c1: r f0 | c2: w sh0 5+5#5",
                true,
            ),
        ] {
            let case: Case = text.parse().expect(text);
            assert_eq!(case.uses_shared(), uses, "{text}");
        }
    }

    #[test]
    fn a_seed_names_one_case() {
        assert_eq!(case_for_seed(7), case_for_seed(7));
        assert_ne!(case_for_seed(7), case_for_seed(8));
    }

    #[test]
    fn failures_are_told_apart_by_kind() {
        let k = failure_kind;
        assert_eq!(
            k("safety: c3: a read of f5"),
            k("safety: c1: create of f0 succeeded")
        );
        assert_eq!(
            k("Some(1) entries still wait for heal 720 s"),
            k("None entries still wait for heal 130 s")
        );
        assert_ne!(
            k("the bricks differ after heal: [..]"),
            k("Some(1) entries still wait for heal")
        );
        assert_ne!(k("safety: c3"), k("the bricks differ after heal: x"));
        assert_eq!(k(""), "");
    }

    #[test]
    fn ddmin_finds_the_items_a_failure_needs() {
        for (what, needs, n) in [
            ("one item", vec![7], 20),
            ("two far apart", vec![0, 19], 20),
            ("three in a row", vec![5, 6, 7], 16),
            ("every item", vec![0, 1, 2], 3),
            ("nothing", vec![], 10),
        ] {
            let mut runs = 0;
            let got = ddmin((0..n).collect::<Vec<u32>>(), |xs| {
                runs += 1;
                needs.iter().all(|x| xs.contains(x))
            });
            assert_eq!(got, needs, "{what}");
            assert!(runs <= 4 * n as usize, "{what}: {runs} runs");
        }
    }

    #[test]
    fn the_speed_figure_case_file_parses() {
        let text = include_str!("../cases/replica3-60-ops.case");
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .expect("a case line");
        let case: Case = line.parse().expect("the speed case parses");
        assert_eq!(case.settings.layout, Layout::Replica3);
        assert!(case.plan.steps.is_empty(), "the speed case has no faults");
        assert_eq!(case.workload[0].len(), OPS_PER_CLIENT_MAX);
    }

    #[test]
    fn a_failure_shrinks_to_the_step_that_causes_it() {
        // A "bug" that needs a crash of s2 and a write: the shrunk case
        // keeps one crash step, one client and one write.
        let bug = |c: &Case| {
            c.plan
                .steps
                .iter()
                .any(|s| s.fault == Fault::CrashHost { server: 1 })
                && c.workload
                    .iter()
                    .flatten()
                    .any(|o| matches!(o, Op::Write { .. }))
        };
        let seed = (0..10_000)
            .find(|s| bug(&case_for_seed(*s)) && case_for_seed(*s).plan.steps.len() > 3)
            .expect("some seed has the bug");
        let (small, runs) = shrink(case_for_seed(seed), bug, 2_000);
        assert!(bug(&small), "the shrunk case still fails");
        assert_eq!(small.plan.steps.len(), 1, "{small}");
        assert!(small.plan.steps[0].at_ms < 200, "{small}");
        assert_eq!(small.settings, Settings::default(), "{small}");
        assert_eq!(small.settings.clients, 1, "{small}");
        assert_eq!(small.workload[0].len(), 1, "{small}");
        assert!(runs > 0);
    }

    proptest! {
        #[test]
        fn a_case_reads_back_from_its_text(case in strategy::case()) {
            let text = case.to_string();
            let back: Case = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, case);
        }

        #[test]
        fn an_outage_case_reads_back_and_is_outages_only(case in strategy::outage_case()) {
            let text = case.to_string();
            let back: Case = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&back, &case);
            prop_assert!(case.settings.fsync_namespace);
            prop_assert_eq!(case.workload.len(), case.settings.clients as usize);
            prop_assert!(!case.plan.steps.is_empty());
            for (k, step) in case.plan.steps.iter().enumerate() {
                prop_assert!(matches!(step.fault, Fault::Outage { .. }), "{}", step);
                if k > 0 {
                    // Apart enough for the cluster to come back between.
                    prop_assert!(step.at_ms >= case.plan.steps[k - 1].at_ms + 4_000);
                }
            }
        }

        #[test]
        fn a_generated_case_is_within_its_bounds(case in strategy::case()) {
            prop_assert!(case.plan.steps.len() <= PLAN_STEPS_MAX);
            prop_assert_eq!(case.workload.len(), case.settings.clients as usize);
            for op in case.workload.iter().flatten() {
                match op {
                    Op::Write { off, len, .. } => {
                        prop_assert!(*len >= 1 && off + len <= FILE_BYTES_MAX);
                    }
                    Op::SharedWrite { file, off, len, .. } => {
                        prop_assert!(*file < SHARED_FILES);
                        prop_assert!(*len >= 1 && off + len <= SHARED_REGION_BYTES);
                    }
                    _ => {}
                }
            }
        }
    }
}
