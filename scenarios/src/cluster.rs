//! The whole cluster under a generated [`Case`]: three servers (mgmtd,
//! bricks, self-heal daemon each), one to four clients running their
//! workloads against a model namespace, and a fault plan run through the
//! fault atlas. Every case is judged by the same checkers:
//!
//! * **safety**, during the run: every successful read returns bytes the
//!   model allows (acknowledged writes exactly; in-flight ones old or new);
//!   with a majority quorum, a create never succeeds over a name that
//!   exists;
//! * **liveness**, once the faults stop: every brick online within
//!   [`ONLINE_AFTER_FAULTS_MAX_S`]; every pending-heal index empty within
//!   the volume's heal timeout plus [`HEALED_AFTER_ONLINE_MAX_S`]; every set's
//!   bricks identical by the brick comparator (names, gfids, types, modes,
//!   owners, data, counters zero); `heal info` reports nothing pending and
//!   no split-brain on any brick;
//! * **safety**, at the end: every name reads back as the model says
//!   (present with its bytes, or absent), and every client's region of
//!   each shared file holds what that client wrote there;
//! * **management**: every mgmtd reports the same volume state, options
//!   and version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_client::api::Client;
use mortar_client::fop::{Fop, FopOut};
use mortar_client::graph::SetLayer;
use mortar_heal::compare::Difference;
use mortar_mgmt::api::CliRequest;
use mortar_net::resolve::SimAnswer;
use mortar_net::sync::Watch;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::brick as bp;
use mortar_proto::{options, Errno, Gfid};
use mortar_sim::{host_ip, Sim};
use mortar_storage::sim::{SimDisk, SimFaults};

use crate::heal::{bricks_online_from, differences};
use crate::mgmt::{create_request, start_request, Pool, HOSTS};
use crate::plan::{admit, effect, Admit, Brick, Case, DnsFault, Fault, Layout, Op, Quorum, Step};
use crate::plan::{
    CLIENTS_MAX, FILES_PER_CLIENT, OUTAGE_WRITE_WAIT_MS, SERVERS, SHARED_FILES, SHARED_REGION_BYTES,
};

/// After the last fault is undone, every brick is online within this.
pub const ONLINE_AFTER_FAULTS_MAX_S: u64 = 90;
/// Once every brick is online, heal empties every index within the
/// volume's `cluster.heal-timeout` plus this (a crawl starts at once when
/// a brick reconnects, else at the next timeout).
pub const HEALED_AFTER_ONLINE_MAX_S: u64 = 120;
/// A heal barrier the atlas asks for waits at most this long; a fault
/// still not admitted then is skipped.
const HEAL_BARRIER_MAX_S: u64 = 60;
/// After the last fault, how long the operator waits for `peer status` to
/// show the pool whole before the final `volume start force`.
const POOL_WHOLE_MAX_S: u64 = 60;
/// A client's workload starts (mount, find its directory) within this,
/// faults or not.
const START_MAX_S: u64 = 120;
/// Pause between a client's ops.
const OP_PAUSE_MS: u64 = 300;

fn server_name(s: u8) -> String {
    format!("s{}", s + 1)
}

fn client_name(c: u8) -> String {
    format!("c{}", c + 1)
}

/// The probe host: heal barriers and the end checks run here, and no
/// fault of a plan touches it.
const PROBE: &str = "p1";

fn mgmt_of(server: &str) -> Endpoint {
    format!("{server}:24007").parse().expect("endpoint")
}

// ---------------------------------------------------------------------
// The model.

/// What a client knows of one of its names.
#[derive(Clone, Debug)]
enum Name {
    Absent,
    /// Present; each byte may hold any of the listed values.
    Present(Vec<Vec<u8>>),
    /// An op on it failed in a way that leaves it open; the next op on it
    /// deletes it to know again.
    Unknown,
}

impl Name {
    fn check(&self, got: &[u8]) -> Result<(), String> {
        let Name::Present(allowed) = self else {
            return Ok(());
        };
        if got.len() != allowed.len() {
            return Err(format!(
                "is {} bytes, the model says {}",
                got.len(),
                allowed.len()
            ));
        }
        check_bytes(allowed, got, 0)
    }
}

/// Every byte of `got` is one `allowed` says may be there; `base` is the
/// offset of `got`'s first byte, for the message.
fn check_bytes(allowed: &[Vec<u8>], got: &[u8], base: usize) -> Result<(), String> {
    for (i, (b, a)) in got.iter().zip(allowed).enumerate() {
        if !a.contains(b) {
            return Err(format!(
                "byte {} is {b:#04x}; only {a:02x?} were written there",
                base + i
            ));
        }
    }
    Ok(())
}

/// The size of every shared file, for its whole life.
const SHARED_BYTES: u32 = CLIENTS_MAX as u32 * SHARED_REGION_BYTES;

/// What client `client`'s region of shared file `file` holds before the
/// faults.
fn shared_initial(client: u8, file: u8) -> Vec<u8> {
    fill_bytes(0x80 | (file << 3) | client, 0, SHARED_REGION_BYTES)
}

/// Check the whole of shared file `file` as read (`got`): its size, and
/// each region against the model of the client that owns it (`None`: a
/// client the case does not have, whose region keeps its first bytes).
fn check_shared(file: u8, got: &[u8], regions: &[Option<&[Vec<u8>]>]) -> Result<(), String> {
    if got.len() != SHARED_BYTES as usize {
        return Err(format!(
            "sh{file} is {} bytes; shared files are always {SHARED_BYTES}",
            got.len()
        ));
    }
    for (k, region) in regions.iter().enumerate() {
        let base = k * SHARED_REGION_BYTES as usize;
        let part = &got[base..base + SHARED_REGION_BYTES as usize];
        let first: Vec<Vec<u8>>;
        let allowed = match region {
            Some(r) => *r,
            None => {
                first = shared_initial(k as u8, file)
                    .into_iter()
                    .map(|b| vec![b])
                    .collect();
                &first
            }
        };
        check_bytes(allowed, part, base)
            .map_err(|e| format!("sh{file} (c{}'s region) {e}", k + 1))?;
    }
    Ok(())
}

/// What each client file holds before the faults: 4 KiB, its own bytes.
const INITIAL_BYTES: u32 = 4096;

fn initial(client: u8, file: u8) -> Vec<u8> {
    fill_bytes(client.wrapping_mul(16).wrapping_add(file), 0, INITIAL_BYTES)
}

fn fill_bytes(fill: u8, off: u32, len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((off + i) as u8).wrapping_mul(31) | 1)
        .collect()
}

/// One client's model and what it saw.
struct Model {
    names: Vec<Name>,
    /// Per shared file, what each byte of this client's region may hold.
    shared: Vec<Vec<Vec<u8>>>,
    violations: Vec<String>,
    acknowledged: u32,
    failed: u32,
    /// Writes this client has started (an outage waits for the next).
    writes_started: Watch<u64>,
}

impl Model {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }
}

async fn resolve_file(c: &Client, dir: Gfid, f: u8) -> Result<Gfid, Errno> {
    c.lookup(dir, &format!("f{f}"))
        .await
        .map(|a| a.gfid)
        .map_err(|e| e.errno)
}

async fn read_all(c: &Client, dir: Gfid, f: u8) -> Result<Vec<u8>, Errno> {
    let g = resolve_file(c, dir, f).await?;
    read_gfid(c, g).await
}

async fn resolve_shared(c: &Client, dir: Gfid, f: u8) -> Result<Gfid, Errno> {
    c.lookup(dir, &format!("sh{f}"))
        .await
        .map(|a| a.gfid)
        .map_err(|e| e.errno)
}

async fn read_gfid(c: &Client, g: Gfid) -> Result<Vec<u8>, Errno> {
    let attr = c.stat(g).await.map_err(|e| e.errno)?;
    let data = c.read(g, 0, attr.size).await.map_err(|e| e.errno)?;
    Ok(data.to_vec())
}

/// A client's workload: its ops, in order, against its directory.
async fn workload(
    rt: Runtime,
    me: u8,
    ops: Vec<Op>,
    guards: bool,
    mgmt: Endpoint,
    writes_started: Watch<u64>,
    shared: bool,
) -> Model {
    let mut m = Model {
        names: (0..FILES_PER_CLIENT)
            .map(|f| Name::Present(initial(me, f).into_iter().map(|b| vec![b]).collect()))
            .collect(),
        shared: (0..SHARED_FILES)
            .map(|f| shared_initial(me, f).into_iter().map(|b| vec![b]).collect())
            .collect(),
        violations: Vec::new(),
        acknowledged: 0,
        failed: 0,
        writes_started,
    };
    // Faults may already be in force: mount and find the directory,
    // trying again for a while (bounded).
    let clock = rt.clock().clone();
    let deadline = clock.now() + Duration::from_secs(START_MAX_S);
    let (c, dirs) = loop {
        let tried = match Client::mount(&rt, &mgmt, "vol").await {
            Ok(c) => match (
                c.resolve(&format!("/{}", client_name(me))).await,
                match shared {
                    true => c.resolve(SHARED_DIR).await.map(|a| Some(a.gfid)),
                    false => Ok(None),
                },
            ) {
                (Ok(own), Ok(shared)) => Ok((
                    c,
                    Dirs {
                        own: own.gfid,
                        shared,
                    },
                )),
                (Err(e), _) | (_, Err(e)) => {
                    c.unmount();
                    Err(e.to_string())
                }
            },
            Err(e) => Err(e.to_string()),
        };
        match tried {
            Ok(found) => break found,
            Err(e) if clock.now() > deadline => {
                panic!(
                    "{} could not start its workload in {START_MAX_S} s: {e}",
                    client_name(me)
                )
            }
            Err(_) => clock.sleep(Duration::from_secs(1)).await,
        }
    };
    for op in ops {
        rt.clock().sleep(Duration::from_millis(OP_PAUSE_MS)).await;
        // An unknown name is first deleted, to be known again.
        for f in op_files(&op) {
            if matches!(m.names[f as usize], Name::Unknown) {
                match c.unlink(dirs.own, &format!("f{f}")).await {
                    Ok(()) => m.names[f as usize] = Name::Absent,
                    Err(e) if e.errno == Errno::ENOENT => m.names[f as usize] = Name::Absent,
                    Err(_) => {}
                }
            }
        }
        one_op(&c, dirs, me, &op, guards, &mut m).await;
        rt.trace(|| {
            let after: Vec<String> = op_files(&op)
                .iter()
                .map(|&f| match &m.names[f as usize] {
                    Name::Absent => format!("f{f} absent"),
                    Name::Unknown => format!("f{f} unknown"),
                    Name::Present(b) => format!("f{f} {} bytes", b.len()),
                })
                .collect();
            format!("op {op}: {}", after.join(", "))
        });
    }
    c.unmount();
    m
}

/// What every brick holds under a name, for a failure message: per
/// brick its gfid, size, first byte and the names of its xattrs.
async fn copies_of(c: &Client, dir: Gfid, file: u8) -> String {
    let g = c.graph();
    let mut out = Vec::new();
    for (set, _) in &g.heal_sets {
        let children = match set {
            SetLayer::Replicate(r) => r.children(),
            SetLayer::Disperse(d) => d.children(),
        };
        for (i, ch) in children.iter().enumerate() {
            let name = format!("f{file}");
            let Ok(FopOut::Attr(a)) = ch.fop(Fop::Lookup(bp::Lookup { parent: dir, name })).await
            else {
                out.push(format!("#{i} no such name"));
                continue;
            };
            let first = match ch
                .fop(Fop::Read(bp::Read {
                    gfid: a.gfid,
                    offset: 0,
                    len: 1,
                }))
                .await
            {
                Ok(FopOut::Data(d)) => format!("{:02x?}", d.first()),
                other => format!("{other:?}"),
            };
            let counters = ch
                .fop(Fop::Listxattr(bp::Listxattr { gfid: a.gfid }))
                .await
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|e| e.to_string());
            out.push(format!(
                "#{i} {} {} bytes, byte 0 {first}, xattrs {counters}",
                a.gfid, a.size
            ));
        }
    }
    out.join("; ")
}

/// An acknowledged write of `data` at `off`: those bytes hold it now.
fn acknowledge(allowed: &mut [Vec<u8>], off: u32, data: &[u8]) {
    for (a, b) in allowed[off as usize..].iter_mut().zip(data) {
        *a = vec![*b];
    }
}

/// A write of `data` at `off` that failed in flight: each byte may hold
/// it, or what it held before.
fn may_have_landed(allowed: &mut [Vec<u8>], off: u32, data: &[u8]) {
    for (a, b) in allowed[off as usize..].iter_mut().zip(data) {
        if !a.contains(b) {
            a.push(*b);
        }
    }
}

/// Where every client's shared files are.
const SHARED_DIR: &str = "/shared";

/// The directories a client's ops work in.
#[derive(Clone, Copy)]
struct Dirs {
    /// Its own, `/cK`.
    own: Gfid,
    /// [`SHARED_DIR`], when the case has shared-file ops
    /// ([`Case::uses_shared`]).
    shared: Option<Gfid>,
}

/// The names of its own directory an op touches.
fn op_files(op: &Op) -> Vec<u8> {
    match *op {
        Op::SharedWrite { .. } | Op::SharedRead { .. } => vec![],
        Op::Rename { from, to } => vec![from, to],
        Op::Write { file, .. }
        | Op::Truncate { file, .. }
        | Op::Create { file }
        | Op::Delete { file }
        | Op::Read { file } => vec![file],
    }
}

async fn one_op(c: &Client, dirs: Dirs, me: u8, op: &Op, guards: bool, m: &mut Model) {
    let name = |f: u8| format!("f{f}");
    let dir = dirs.own;
    match *op {
        Op::SharedWrite {
            file,
            off,
            len,
            fill,
        } => {
            let data = fill_bytes(fill, off, len);
            let at = u64::from(me) * u64::from(SHARED_REGION_BYTES) + u64::from(off);
            let r = match resolve_shared(c, dirs.shared.expect("made for shared ops"), file).await {
                Ok(g) => {
                    m.writes_started.modify(|n| *n += 1);
                    match c.write(g, at, Bytes::from(data.clone())).await {
                        Ok(_) => c.fsync(g, false).await.map_err(|e| e.errno),
                        Err(e) => Err(e.errno),
                    }
                }
                Err(e) => Err(e),
            };
            let region = &mut m.shared[file as usize];
            match r {
                Ok(()) => {
                    acknowledge(region, off, &data);
                    m.acknowledged += 1;
                }
                // Refused before anything was touched.
                Err(Errno::EROFS) => m.failed += 1,
                // In flight: it may land, whole or in part.
                Err(_) => {
                    may_have_landed(region, off, &data);
                    m.failed += 1;
                }
            }
        }
        Op::SharedRead { file } => {
            let got = match resolve_shared(c, dirs.shared.expect("made for shared ops"), file).await
            {
                Ok(g) => read_gfid(c, g).await,
                Err(e) => Err(e),
            };
            if let Ok(got) = got {
                // Only this client's region is known here; the others are
                // someone else's, and checked at the end.
                let mine = &m.shared[file as usize];
                let base = me as usize * SHARED_REGION_BYTES as usize;
                let checked = if got.len() != SHARED_BYTES as usize {
                    Err(format!(
                        "sh{file} is {} bytes; shared files are always {SHARED_BYTES}",
                        got.len()
                    ))
                } else {
                    check_bytes(mine, &got[base..base + SHARED_REGION_BYTES as usize], base)
                };
                if let Err(e) = checked {
                    m.violation(format!("a read of sh{file} during the run: {e}"));
                }
            }
        }
        Op::Write {
            file,
            off,
            len,
            fill,
        } => {
            // A write to a missing name creates it first (O_CREAT).
            if matches!(m.names[file as usize], Name::Absent) {
                Box::pin(one_op(c, dirs, me, &Op::Create { file }, guards, m)).await;
            }
            let Name::Present(_) = m.names[file as usize] else {
                return;
            };
            let data = fill_bytes(fill, off, len);
            let write = |g: Gfid| {
                m.writes_started.modify(|n| *n += 1);
                c.write(g, off as u64, Bytes::from(data.clone()))
            };
            let r = match resolve_file(c, dir, file).await {
                Ok(g) => match write(g).await {
                    Ok(_) => c.fsync(g, false).await.map_err(|e| e.errno),
                    Err(e) => Err(e.errno),
                },
                Err(e) => Err(e),
            };
            let Name::Present(bytes) = &mut m.names[file as usize] else {
                unreachable!("checked above")
            };
            let end = (off + len) as usize;
            match r {
                Ok(()) => {
                    if bytes.len() < end {
                        bytes.resize(end, vec![0]);
                    }
                    acknowledge(bytes, off, &data);
                    m.acknowledged += 1;
                }
                // Refused before anything was touched.
                Err(Errno::EROFS) => m.failed += 1,
                Err(_) if end > bytes.len() => {
                    m.names[file as usize] = Name::Unknown;
                    m.failed += 1;
                }
                Err(_) => {
                    may_have_landed(bytes, off, &data);
                    m.failed += 1;
                }
            }
        }
        Op::Truncate { file, size } => {
            let Name::Present(_) = m.names[file as usize] else {
                return;
            };
            let r = match resolve_file(c, dir, file).await {
                Ok(g) => match c.truncate(g, size as u64).await {
                    Ok(_) => c.fsync(g, false).await.map_err(|e| e.errno),
                    Err(e) => Err(e.errno),
                },
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    if let Name::Present(bytes) = &mut m.names[file as usize] {
                        bytes.resize(size as usize, vec![0]);
                    }
                    m.acknowledged += 1;
                }
                Err(Errno::EROFS) => m.failed += 1,
                Err(_) => {
                    m.names[file as usize] = Name::Unknown;
                    m.failed += 1;
                }
            }
        }
        Op::Create { file } => {
            let r = c.create(dir, &name(file), 0o644, 0, 0).await;
            match (&m.names[file as usize], r) {
                (Name::Absent, Ok(_)) => {
                    m.names[file as usize] = Name::Present(Vec::new());
                    m.acknowledged += 1;
                }
                (Name::Present(_), Ok(_)) if guards => m.violation(format!(
                    "create of f{file} succeeded though the name exists (quorum is on)"
                )),
                (Name::Present(_), Err(e)) if e.errno == Errno::EEXIST => {}
                (_, Err(e)) if e.errno == Errno::EROFS => m.failed += 1,
                _ => {
                    m.names[file as usize] = Name::Unknown;
                    m.failed += 1;
                }
            }
        }
        Op::Rename { from, to } => {
            if from == to || !matches!(m.names[from as usize], Name::Present(_)) {
                return;
            }
            match c.rename(dir, &name(from), dir, &name(to)).await {
                Ok(()) => {
                    m.names[to as usize] =
                        std::mem::replace(&mut m.names[from as usize], Name::Absent);
                    m.acknowledged += 1;
                }
                Err(e) if e.errno == Errno::EROFS => m.failed += 1,
                Err(_) => {
                    m.names[from as usize] = Name::Unknown;
                    m.names[to as usize] = Name::Unknown;
                    m.failed += 1;
                }
            }
        }
        Op::Delete { file } => {
            if !matches!(m.names[file as usize], Name::Present(_)) {
                return;
            }
            match c.unlink(dir, &name(file)).await {
                Ok(()) => {
                    m.names[file as usize] = Name::Absent;
                    m.acknowledged += 1;
                }
                Err(e) if e.errno == Errno::EROFS => m.failed += 1,
                Err(_) => {
                    m.names[file as usize] = Name::Unknown;
                    m.failed += 1;
                }
            }
        }
        Op::Read { file } => {
            if let (Name::Present(_), Ok(got)) =
                (&m.names[file as usize], read_all(c, dir, file).await)
            {
                if let Err(e) = m.names[file as usize].check(&got) {
                    let copies = copies_of(c, dir, file).await;
                    m.violation(format!(
                        "a read of f{file} during the run: {e}; the copies: {copies}"
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------
// Faults.

/// What the fault runner keeps: the faults in force and the bricks
/// waiting for heal.
struct Faults {
    sim: Sim,
    pool: Pool,
    case: Case,
    active: BTreeMap<usize, Fault>,
    stale: BTreeSet<Brick>,
    skipped: u32,
    started: u32,
    /// A disk lied (dropped xattr updates) at some point of the run.
    lied: bool,
    /// Servers whose power a fault in force holds (crashed, or to crash
    /// when a lying disk's hold ends): no second power fault on them.
    powered: BTreeSet<u8>,
    /// Each client's count of writes started.
    writes_started: Vec<Watch<u64>>,
}

impl Faults {
    fn servers_up(&self) -> Vec<String> {
        (0..SERVERS)
            .map(server_name)
            .filter(|s| self.sim.process_running(s, "mgmtd"))
            .collect()
    }

    fn clients(&self) -> Vec<String> {
        (0..self.case.settings.clients).map(client_name).collect()
    }

    fn disk(&self, s: u8) -> Arc<SimDisk> {
        self.sim
            .disk::<SimDisk>(&server_name(s))
            .expect("every server has a disk")
    }

    /// Re-apply the partitions of every fault in force.
    fn partitions(&self) {
        self.sim.repair();
        let clients = self.clients();
        let cl: Vec<&str> = clients.iter().map(String::as_str).collect();
        for f in self.active.values() {
            match *f {
                Fault::CutClients { server, oneway } => {
                    let s = server_name(server);
                    if oneway {
                        self.sim.partition_oneway(&cl, &[&s]);
                    } else {
                        self.sim.partition(&cl, &[&s]);
                    }
                }
                Fault::IsolateServer { server } => {
                    let s = server_name(server);
                    let others: Vec<String> = (0..SERVERS)
                        .filter(|o| *o != server)
                        .map(server_name)
                        .collect();
                    let o: Vec<&str> = others.iter().map(String::as_str).collect();
                    self.sim.partition(&[&s], &o);
                }
                Fault::Split { side } => {
                    let mut hosts: Vec<(String, bool)> = (0..SERVERS)
                        .map(|s| (server_name(s), side >> s & 1 == 1))
                        .collect();
                    for c in 0..self.case.settings.clients {
                        hosts.push((client_name(c), side >> (SERVERS + c) & 1 == 1));
                    }
                    let a: Vec<&str> = hosts.iter().filter(|h| h.1).map(|h| h.0.as_str()).collect();
                    let b: Vec<&str> = hosts
                        .iter()
                        .filter(|h| !h.1)
                        .map(|h| h.0.as_str())
                        .collect();
                    if !a.is_empty() && !b.is_empty() {
                        self.sim.partition(&a, &b);
                    }
                }
                _ => {}
            }
        }
    }

    /// Network latency and loss: the worst of those in force.
    fn network(&self) {
        let mut max_ms = 10;
        let mut loss = 0;
        for f in self.active.values() {
            match *f {
                Fault::Latency { max_ms: m } => max_ms = max_ms.max(m),
                Fault::Loss { permille } => loss = loss.max(permille),
                _ => {}
            }
        }
        self.sim.set_latency(
            Duration::from_millis(1),
            Duration::from_millis(max_ms as u64),
        );
        self.sim.set_loss(loss as f64 / 1000.0);
    }

    /// Every server's disk faults: those in force.
    fn disks(&self) {
        for s in 0..SERVERS {
            let disk = self.disk(s);
            let mut want = SimFaults {
                lose_xattr_updates: disk.faults().lose_xattr_updates,
                ..SimFaults::default()
            };
            for f in self.active.values() {
                match *f {
                    Fault::DiskEio { server, permille } if server == s => {
                        want.read_eio = permille as f64 / 1000.0;
                        want.write_eio = permille as f64 / 1000.0;
                    }
                    Fault::DiskFull { server } if server == s => {
                        want.capacity_bytes = Some(disk.stats().data_bytes);
                    }
                    _ => {}
                }
            }
            disk.set_faults(want);
        }
    }

    /// `volume start force` from any server that answers; whether one
    /// took it.
    async fn start_force(&self) -> bool {
        for s in self.servers_up() {
            match self.pool.cli(&s, start_request(true)).await {
                Ok(_) => return true,
                Err(e) => self.sim.note(format!("fault: start force from {s}: {e}")),
            }
        }
        false
    }

    /// Wait, bounded, until every brick is online and no index holds an
    /// entry; then nothing is stale.
    async fn heal_barrier(&mut self) -> bool {
        let bricks = self.case.settings.layout.bricks().len();
        let clock = mortar_net::Clock::new();
        let deadline = clock.now() + Duration::from_secs(HEAL_BARRIER_MAX_S);
        let _ = self.start_force().await;
        while clock.now() < deadline {
            if bricks_online_from(&self.pool, &self.servers_up()).await == bricks
                && pending(&self.sim, &self.servers_up()).await == Some(0)
            {
                self.stale.clear();
                self.sim.note("fault: heal barrier passed");
                return true;
            }
            self.sim.sleep(Duration::from_secs(1)).await;
        }
        self.sim.note("fault: heal barrier timed out");
        false
    }

    async fn begin(&mut self, i: usize, step: &Step) {
        let active: Vec<Fault> = self.active.values().cloned().collect();
        let mut verdict = admit(&self.case.settings, &active, &self.stale, &step.fault);
        if verdict == Admit::AfterHeal && self.heal_barrier().await {
            let active: Vec<Fault> = self.active.values().cloned().collect();
            verdict = admit(&self.case.settings, &active, &self.stale, &step.fault);
        }
        // A server already powered off cannot lose power again.
        let powers_off = match step.fault {
            Fault::CrashHost { server } | Fault::LoseXattrs { server, .. } => Some(server),
            _ => None,
        };
        if powers_off.is_some_and(|s| self.powered.contains(&s)) {
            verdict = Admit::Never;
        }
        if verdict != Admit::Now {
            self.sim
                .note(format!("fault: skip {} ({verdict:?})", step.fault));
            self.skipped += 1;
            return;
        }
        self.sim.note(format!("fault: begin {step}"));
        self.started += 1;
        let layout = self.case.settings.layout;
        match step.fault.clone() {
            Fault::KillBrick { server, brick } => {
                let mine = layout.bricks_on(server);
                let Some(b) = mine.get(brick as usize % mine.len().max(1)) else {
                    return;
                };
                let prefix = format!("brick{}-", Layout::brick_dir(*b).replace('/', "-"));
                let host = server_name(server);
                for p in self.sim.running_processes(&host) {
                    if p.starts_with(&prefix) {
                        self.sim.kill_process(&host, &p);
                    }
                }
            }
            Fault::CrashHost { server } => {
                self.powered.insert(server);
                self.sim.crash_host(&server_name(server));
            }
            Fault::Dns { server, answer } => {
                let (answer, latency) = match answer {
                    DnsFault::Slow(ms) => (
                        SimAnswer::Addrs(vec![self.sim.host_ip(&server_name(server))]),
                        Duration::from_millis(ms as u64),
                    ),
                    DnsFault::NxDomain => (SimAnswer::NxDomain, Duration::ZERO),
                    DnsFault::ServFail => (SimAnswer::ServFail, Duration::ZERO),
                    DnsFault::Hang => (SimAnswer::Hang, Duration::ZERO),
                };
                self.sim.dns_fault(&server_name(server), answer, latency);
            }
            Fault::LatentErrors {
                server,
                client,
                file,
            } => {
                let disk = self.disk(server);
                for b in layout.bricks_on(server) {
                    let path = format!(
                        "{}/{}/f{file}",
                        Layout::brick_dir(b).trim_start_matches('/'),
                        client_name(client)
                    );
                    if let Err(e) = disk.add_latent_error(&path, 0, 1 << 20) {
                        self.sim
                            .note(format!("fault: no latent error on {path}: {e}"));
                    }
                }
            }
            Fault::LoseXattrs { server, updates } => {
                // It powers the server off when it ends.
                self.powered.insert(server);
                self.lied = true;
                let disk = self.disk(server);
                disk.set_faults(SimFaults {
                    lose_xattr_updates: updates as u32,
                    ..disk.faults()
                });
            }
            Fault::KillShd { server } => {
                let host = server_name(server);
                for p in self.sim.running_processes(&host) {
                    if p.starts_with("shd") {
                        self.sim.kill_process(&host, &p);
                    }
                }
            }
            Fault::MgmtdCrash { server, after_ms } => {
                let host = server_name(server);
                if self.sim.process_running(&host, "mgmtd") {
                    let (pool, h) = (self.pool.clone(), host.clone());
                    #[allow(clippy::disallowed_methods)] // the scenario's own task
                    tokio::spawn(async move {
                        let r = pool
                            .cli(
                                &h,
                                CliRequest::VolumeSet {
                                    name: "vol".into(),
                                    key: options::SERVER_EVENT_THREADS.into(),
                                    value: "2".into(),
                                },
                            )
                            .await;
                        pool.sim
                            .note(format!("fault: the set on {h} answered {r:?}"));
                    });
                    self.sim.sleep(Duration::from_millis(after_ms as u64)).await;
                    self.sim.kill_process(&host, "mgmtd");
                }
            }
            Fault::ClockJump { server, secs } => {
                self.sim
                    .jump_clock(&server_name(server), i64::from(secs) * 1000);
            }
            Fault::Outage {
                client,
                into_write_ms,
            } => {
                let k = client as usize % self.writes_started.len().max(1);
                if let Some(w) = self.writes_started.get(k) {
                    let seen = w.get();
                    let wait = Duration::from_millis(OUTAGE_WRITE_WAIT_MS as u64);
                    let clock = mortar_net::Clock::new();
                    let into = match clock.timeout(wait, w.wait_for(move |n| *n != seen)).await {
                        Ok(_) => format!(
                            "{into_write_ms} ms into a write of {}",
                            client_name(k as u8)
                        ),
                        Err(_) => format!(
                            "{} started no write in {} ms",
                            client_name(k as u8),
                            wait.as_millis()
                        ),
                    };
                    self.sim
                        .sleep(Duration::from_millis(into_write_ms as u64))
                        .await;
                    self.sim.note(format!("fault: outage {into}"));
                }
                for s in 0..SERVERS {
                    self.powered.insert(s);
                    self.sim.crash_host(&server_name(s));
                }
            }
            Fault::CutClients { .. }
            | Fault::IsolateServer { .. }
            | Fault::Split { .. }
            | Fault::Latency { .. }
            | Fault::Loss { .. }
            | Fault::DiskEio { .. }
            | Fault::DiskFull { .. } => {}
        }
        self.active.insert(i, step.fault.clone());
        self.partitions();
        self.network();
        self.disks();
    }

    async fn end(&mut self, i: usize) {
        let Some(fault) = self.active.remove(&i) else {
            return;
        };
        self.sim.note(format!("fault: end {fault}"));
        let e = effect(
            self.case.settings.layout,
            self.case.settings.clients,
            &fault,
        );
        self.stale.extend(e.out);
        self.stale.extend(e.lies);
        match fault {
            Fault::KillBrick { .. } => {
                let _ = self.start_force().await;
            }
            Fault::CrashHost { server } => {
                self.powered.remove(&server);
                self.sim.restart_host(&server_name(server));
            }
            Fault::Outage { .. } => {
                for s in 0..SERVERS {
                    self.powered.remove(&s);
                    self.sim.restart_host(&server_name(s));
                }
            }
            Fault::LoseXattrs { server, .. } => {
                self.powered.remove(&server);
                let host = server_name(server);
                self.sim.crash_host(&host);
                let disk = self.disk(server);
                disk.set_faults(SimFaults {
                    lose_xattr_updates: 0,
                    ..disk.faults()
                });
                self.sim.restart_host(&host);
            }
            Fault::Dns { server, .. } => {
                let host = server_name(server);
                self.sim.dns().set_addr(&host, self.sim.host_ip(&host));
            }
            Fault::LatentErrors { server, .. } => self.disk(server).clear_latent_errors(),
            Fault::ClockJump { server, secs } => {
                self.sim
                    .jump_clock(&server_name(server), -i64::from(secs) * 1000);
            }
            Fault::MgmtdCrash { server, .. } => {
                let host = server_name(server);
                // A powered-off server starts its mgmtd when it boots.
                if self.sim.host_up(&host) && !self.sim.process_running(&host, "mgmtd") {
                    self.sim.restart_process(&host, "mgmtd");
                }
            }
            _ => {}
        }
        self.partitions();
        self.network();
        self.disks();
    }

    /// Undo everything still in force, then, as an operator would once
    /// `peer status` shows the pool whole again (bounded), run `volume
    /// start force` until it is taken (bounded).
    async fn end_all(&mut self) {
        let open: Vec<usize> = self.active.keys().copied().collect();
        for i in open {
            self.end(i).await;
        }
        self.sim.repair();
        let clock = mortar_net::Clock::new();
        let deadline = clock.now() + Duration::from_secs(POOL_WHOLE_MAX_S);
        while !self.pool_whole().await && clock.now() < deadline {
            self.sim.sleep(Duration::from_secs(1)).await;
        }
        // Refused while a dead originator's transaction lock runs out its
        // lease ("retry when it finishes"): retried, as the message asks.
        while !self.start_force().await && clock.now() < deadline {
            self.sim.sleep(Duration::from_secs(2)).await;
        }
        // After a disk that dropped updates, the operator sweeps the
        // volume: the marks it lost, or kept without their index entry,
        // are what the indices cannot show.
        if self.lied {
            let full = CliRequest::HealNow {
                name: "vol".into(),
                full: true,
            };
            while clock.now() < deadline {
                match self.pool.cli("s1", full.clone()).await {
                    Ok(_) => break,
                    Err(e) => {
                        self.sim.note(format!("fault: heal full: {e}"));
                        self.sim.sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        }
    }

    /// Every mgmtd answers and sees both its peers connected.
    async fn pool_whole(&self) -> bool {
        for h in HOSTS {
            match self.pool.cli(h, CliRequest::PeerStatus).await {
                Ok(mortar_mgmt::api::CliReply::Peers(p))
                    if p.len() == 2 && p.iter().all(|x| x.connected) => {}
                _ => return false,
            }
        }
        true
    }
}

/// Run the plan: each step begins at its time (from the workload's
/// start) and ends `hold` later.
async fn run_plan(f: &mut Faults) {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, s) in f.case.plan.steps.iter().enumerate() {
        events.push((s.at_ms as u64, true, i));
        events.push((s.at_ms as u64 + s.hold_ms.max(1) as u64, false, i));
    }
    // Ends before begins at the same instant; then by step.
    events.sort_by_key(|&(t, begin, i)| (t, begin, i));
    let clock = mortar_net::Clock::new();
    let start = clock.now();
    for (t, begin, i) in events {
        let at = start + Duration::from_millis(t);
        if clock.now() < at {
            clock.sleep(at - clock.now()).await;
        }
        if begin {
            let step = f.case.plan.steps[i].clone();
            f.begin(i, &step).await;
        } else {
            f.end(i).await;
        }
    }
}

// ---------------------------------------------------------------------
// Checks.

/// Entries in every index, from the probe host; `None` if not every brick
/// could be asked.
async fn pending(sim: &Sim, servers: &[String]) -> Option<usize> {
    let mgmt = mgmt_of(servers.first()?);
    sim.run_on(PROBE, "pending", move |rt| async move {
        let c = Client::mount(&rt, &mgmt, "vol").await.ok()?;
        c.wait_all_bricks(Duration::from_secs(10)).await;
        let left = c.pending_heal_total().await.ok();
        c.unmount();
        left
    })
    .await
}

/// The comparator's view now, from the probe host.
async fn differences_list(sim: &Sim) -> Result<Vec<Difference>, String> {
    sim.run_on(PROBE, "compare", |rt| async move {
        let c = Client::mount(&rt, &mgmt_of("s1"), "vol")
            .await
            .map_err(|e| format!("the comparator could not mount: {e}"))?;
        c.wait_all_bricks(Duration::from_secs(20)).await;
        let d = differences(&c).await;
        c.unmount();
        d
    })
    .await
}

/// The comparator's view, for a failure message.
async fn differences_now(sim: &Sim) -> String {
    format!("{:?}", differences_list(sim).await)
}

/// The whole-cluster end checks; the first failure, as text.
async fn converged(
    sim: &Sim,
    pool: &Pool,
    case: &Case,
    models: Arc<Vec<Model>>,
) -> Result<(), String> {
    let clock = mortar_net::Clock::new();
    let bricks = case.settings.layout.bricks().len();
    let servers: Vec<String> = HOSTS.iter().map(|s| s.to_string()).collect();
    let since = clock.now();
    let bound =
        Duration::from_secs(case.settings.heal_timeout_s as u64 + HEALED_AFTER_ONLINE_MAX_S);
    // Every brick online (after the one `start force` an operator runs
    // once the faults are over: a brick that dies later on its own is a
    // liveness failure), then every index empty.
    let mut online_at = None;
    let online_at = loop {
        if bricks_online_from(pool, &servers).await != bricks {
            online_at = None;
            if clock.now() - since > Duration::from_secs(ONLINE_AFTER_FAULTS_MAX_S) {
                return Err(format!(
                    "not every brick is online {ONLINE_AFTER_FAULTS_MAX_S} s after the faults stopped"
                ));
            }
        } else {
            let at = *online_at.get_or_insert(clock.now());
            match pending(sim, &servers).await {
                Some(0) => break at,
                left if clock.now() - at > bound => {
                    return Err(format!(
                        "{left:?} entries still wait for heal {} s after every brick was online; the bricks: {}",
                        bound.as_secs(),
                        differences_now(sim).await
                    ))
                }
                _ => {}
            }
        }
        sim.sleep(Duration::from_secs(1)).await;
    };
    // Then every set's bricks compare equal, within the same bound (a
    // sweep the operator asked for may still be running).
    loop {
        match differences_list(sim).await {
            Ok(d) if d.is_empty() => break,
            d if clock.now() - online_at > bound => {
                return Err(format!(
                    "the bricks still differ {} s after every brick was online: {d:?}",
                    bound.as_secs()
                ))
            }
            _ => sim.sleep(Duration::from_secs(2)).await,
        }
    }
    sim.note(format!(
        "check: healed {} ms after online",
        (clock.now() - online_at).as_millis()
    ));
    let clients = case.settings.clients;
    let guards = case.settings.quorum_guards();
    let uses_shared = case.uses_shared();
    let verdict = sim
        .run_on(PROBE, "check", move |rt| async move {
            let mgmt = mgmt_of("s1");
            let c = Client::mount(&rt, &mgmt, "vol")
                .await
                .map_err(|e| format!("the checker mounts vol: {e}"))?;
            c.wait_all_bricks(Duration::from_secs(20)).await;
            let diffs = differences(&c).await?;
            if !diffs.is_empty() {
                return Err(format!("the bricks differ after heal: {diffs:?}"));
            }
            let info = mortar_heal::info::heal_info(&rt, &mgmt, "vol")
                .await
                .map_err(|e| format!("heal info: {e}"))?;
            for b in &info.bricks {
                let n = mortar_heal::info::counts(b);
                if n.total != Some(0) || n.split_brain != Some(0) {
                    return Err(format!("heal info of {} after heal: {n:?}", b.brick));
                }
            }
            let shared = match uses_shared {
                true => Some(
                    c.resolve(SHARED_DIR)
                        .await
                        .map_err(|e| format!("{SHARED_DIR}: {e}"))?
                        .gfid,
                ),
                false => None,
            };
            for (f, shared) in (0..SHARED_FILES).filter_map(|f| shared.map(|d| (f, d))) {
                let got = match resolve_shared(&c, shared, f).await {
                    Ok(g) => read_gfid(&c, g).await,
                    Err(e) => Err(e),
                };
                match got {
                    Ok(bytes) => {
                        let regions: Vec<Option<&[Vec<u8>]>> = (0..CLIENTS_MAX)
                            .map(|k| {
                                models
                                    .get(k as usize)
                                    .map(|m| m.shared[f as usize].as_slice())
                            })
                            .collect();
                        check_shared(f, &bytes, &regions)?;
                    }
                    // A shared file is never removed; with quorum off a
                    // split-brain may leave it unreadable (EIO).
                    Err(e) if guards || e != Errno::EIO => {
                        return Err(format!("{SHARED_DIR}/sh{f}: {e}"))
                    }
                    Err(_) => {}
                }
            }
            for k in 0..clients {
                let dir = c
                    .resolve(&format!("/{}", client_name(k)))
                    .await
                    .map_err(|e| format!("{}'s directory: {e}", client_name(k)))?
                    .gfid;
                for f in 0..FILES_PER_CLIENT {
                    let path = format!("/{}/f{f}", client_name(k));
                    let got = read_all(&c, dir, f).await;
                    match (&models[k as usize].names[f as usize], got) {
                        (Name::Present(_), Ok(bytes)) => models[k as usize].names[f as usize]
                            .check(&bytes)
                            .map_err(|e| format!("{path} {e}"))?,
                        (Name::Present(_), Err(e)) => {
                            return Err(format!("{path} exists in the model; reading it: {e}"))
                        }
                        (Name::Absent, Ok(_)) => {
                            return Err(format!("{path} was removed, and is back"))
                        }
                        (Name::Absent, Err(Errno::ENOENT)) => {}
                        (_, Err(Errno::ENOENT)) | (Name::Unknown, Ok(_)) => {}
                        (_, Err(e)) if guards || e != Errno::EIO => {
                            return Err(format!("{path}: {e}"))
                        }
                        (_, Err(_)) => {}
                    }
                }
            }
            c.unmount();
            Ok(())
        })
        .await;
    verdict?;
    // No transaction lock outlives its lease: once healed, a change from
    // every server is taken within a lease (and a margin).
    for h in HOSTS {
        let deadline = clock.now() + Duration::from_secs(mortar_mgmt::txnlock::LEASE_SECS + 15);
        loop {
            let set = CliRequest::VolumeSet {
                name: "vol".into(),
                key: options::SERVER_EVENT_THREADS.into(),
                value: "2".into(),
            };
            match pool.cli(h, set).await {
                Ok(_) => break,
                Err(e) if clock.now() > deadline => {
                    return Err(format!(
                        "a change from {h} is still refused after {} s of trying (a transaction lock outlived its lease?): {e}",
                        mortar_mgmt::txnlock::LEASE_SECS + 15
                    ))
                }
                Err(_) => sim.sleep(Duration::from_secs(2)).await,
            }
        }
    }
    // Every mgmtd ends with the same state and version of the volume.
    pool.converged("vol", &HOSTS, Duration::from_secs(60)).await;
    Ok(())
}

// ---------------------------------------------------------------------

/// The options a case sets (only those that differ from the defaults).
fn option_requests(case: &Case) -> Vec<(&'static str, String)> {
    let s = &case.settings;
    let d = crate::plan::Settings::default();
    let mut out = Vec::new();
    match s.quorum {
        Quorum::Auto => {}
        Quorum::None => out.push((options::QUORUM_TYPE, "none".to_string())),
        Quorum::Fixed(c) => {
            out.push((options::QUORUM_TYPE, "fixed".to_string()));
            out.push((options::QUORUM_COUNT, c.to_string()));
        }
    }
    if s.ping_timeout_s != d.ping_timeout_s {
        out.push((options::PING_TIMEOUT, s.ping_timeout_s.to_string()));
    }
    if s.heal_timeout_s != d.heal_timeout_s {
        out.push((options::HEAL_TIMEOUT, s.heal_timeout_s.to_string()));
    }
    if s.shd_threads != d.shd_threads {
        out.push((options::SHD_MAX_THREADS, s.shd_threads.to_string()));
    }
    if !s.fsync_namespace {
        out.push((options::FSYNC_NAMESPACE, "off".to_string()));
    }
    out
}

/// See the module documentation. Panics with every violation found.
pub async fn run_case(sim: Sim, case: Case) {
    eprintln!("sim: cluster: case {case}");
    sim.note(format!("case {case}"));
    if case.settings.buggify {
        mortar_net::fault::enable(sim.seed());
    }
    let pool = Pool::start(&sim).await;
    pool.ok("s1", create_request(case.settings.layout.create()))
        .await;
    for (key, value) in option_requests(&case) {
        pool.ok(
            "s1",
            CliRequest::VolumeSet {
                name: "vol".into(),
                key: key.into(),
                value,
            },
        )
        .await;
    }
    pool.ok("s2", start_request(false)).await;
    let bricks = case.settings.layout.bricks().len();
    let servers: Vec<String> = HOSTS.iter().map(|s| s.to_string()).collect();
    for _ in 0..100 {
        if bricks_online_from(&pool, &servers).await == bricks {
            break;
        }
        sim.sleep(Duration::from_millis(200)).await;
    }
    sim.add_host(PROBE, host_ip(20));
    let clients = case.settings.clients;
    for k in 0..clients {
        sim.add_host(&client_name(k), host_ip(10 + k));
    }
    // Only a case with shared-file ops makes them: a case without keeps
    // the setup, and so the timing, it was found with.
    let shared = case.uses_shared();
    sim.run_on(PROBE, "setup", move |rt| async move {
        let c = Client::mount(&rt, &mgmt_of("s1"), "vol")
            .await
            .unwrap_or_else(|e| panic!("mount vol: {e}"));
        c.wait_all_bricks(Duration::from_secs(20)).await;
        if shared {
            c.mkdir_path(SHARED_DIR, 0o755)
                .await
                .unwrap_or_else(|e| panic!("mkdir {SHARED_DIR}: {e}"));
        }
        for f in (0..SHARED_FILES).filter(|_| shared) {
            let path = format!("{SHARED_DIR}/sh{f}");
            let whole: Vec<u8> = (0..CLIENTS_MAX)
                .flat_map(|k| shared_initial(k, f))
                .collect();
            c.write_path(&path, &whole)
                .await
                .unwrap_or_else(|e| panic!("writing {path} before any fault: {e}"));
        }
        for k in 0..clients {
            c.mkdir_path(&format!("/{}", client_name(k)), 0o755)
                .await
                .unwrap_or_else(|e| panic!("mkdir /{}: {e}", client_name(k)));
            for f in 0..FILES_PER_CLIENT {
                let path = format!("/{}/f{f}", client_name(k));
                c.write_path(&path, &initial(k, f))
                    .await
                    .unwrap_or_else(|e| panic!("writing {path} before any fault: {e}"));
            }
        }
        c.unmount();
    })
    .await;

    let guards = case.settings.quorum_guards();
    let mut tasks = Vec::new();
    let writes_started: Vec<Watch<u64>> = (0..clients).map(|_| Watch::new(0)).collect();
    for (k, ops) in case.workload.iter().cloned().enumerate() {
        let sim2 = sim.clone();
        let host = client_name(k as u8);
        let w = writes_started[k].clone();
        #[allow(clippy::disallowed_methods)] // the scenario's own tasks
        tasks.push(tokio::spawn(async move {
            sim2.run_on(&host, "workload", move |rt| {
                workload(rt, k as u8, ops, guards, mgmt_of("s1"), w, shared)
            })
            .await
        }));
    }
    let mut faults = Faults {
        sim: sim.clone(),
        pool: pool.clone(),
        case: case.clone(),
        active: BTreeMap::new(),
        stale: BTreeSet::new(),
        skipped: 0,
        started: 0,
        powered: BTreeSet::new(),
        lied: false,
        writes_started,
    };
    run_plan(&mut faults).await;
    let mut models = Vec::new();
    for t in tasks {
        models.push(t.await.expect("workload task"));
    }
    faults.end_all().await;
    let (started, skipped) = (faults.started, faults.skipped);
    let violations: Vec<String> = models
        .iter()
        .enumerate()
        .flat_map(|(k, m)| {
            m.violations
                .iter()
                .map(move |v| format!("{}: {v}", client_name(k as u8)))
        })
        .collect();
    let tally: Vec<(u32, u32)> = models.iter().map(|m| (m.acknowledged, m.failed)).collect();
    eprintln!(
        "sim: cluster: {started} faults started, {skipped} skipped by the atlas; (acknowledged, failed) per client {tally:?}"
    );
    if !violations.is_empty() {
        panic!("safety: {}", violations.join("; "));
    }
    // The end checks judge the system as it is, without fault points.
    let fired = mortar_net::fault::fired();
    mortar_net::fault::disable();
    eprintln!("sim: cluster: {fired} fault points fired");
    if let Err(e) = converged(&sim, &pool, &case, Arc::new(models)).await {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(bytes: Vec<u8>) -> Vec<Vec<u8>> {
        bytes.into_iter().map(|b| vec![b]).collect()
    }

    #[test]
    fn a_shared_file_is_checked_region_by_region() {
        let whole: Vec<u8> = (0..CLIENTS_MAX)
            .flat_map(|k| shared_initial(k, 1))
            .collect();
        let mut c2 = known(shared_initial(1, 1));
        let regions = |c2: &[Vec<u8>]| -> Vec<Vec<Vec<u8>>> {
            vec![known(shared_initial(0, 1)), c2.to_vec()]
        };
        // Two clients; the regions of c3 and c4 keep their first bytes.
        let check = |got: &[u8], r: &[Vec<Vec<u8>>]| {
            let mut v: Vec<Option<&[Vec<u8>]>> = r.iter().map(|x| Some(x.as_slice())).collect();
            v.resize(CLIENTS_MAX as usize, None);
            check_shared(1, got, &v)
        };
        assert_eq!(check(&whole, &regions(&c2)), Ok(()));
        let mut changed = whole.clone();
        changed[SHARED_REGION_BYTES as usize + 7] ^= 0xff;
        let e = check(&changed, &regions(&c2)).unwrap_err();
        assert!(e.contains("c2's region") && e.contains("byte 4103"), "{e}");
        // A write in flight in c2's region may have landed: both allowed.
        c2[7].push(changed[SHARED_REGION_BYTES as usize + 7]);
        assert_eq!(check(&changed, &regions(&c2)), Ok(()));
        // A region of a client the case does not have is its first bytes.
        let mut stray = whole.clone();
        stray[3 * SHARED_REGION_BYTES as usize] ^= 1;
        assert!(check(&stray, &regions(&c2))
            .unwrap_err()
            .contains("c4's region"));
        assert!(check(&whole[..100], &regions(&c2))
            .unwrap_err()
            .contains("always 16384"));
    }
}
