//! `heal info` never waits on DNS (issue 11, the seed case).
//!
//! The original system's field failure: on a 12 x (4 + 1)
//! distributed-disperse volume, heal info stalled for minutes because each
//! child-up event resolved the management address through `getaddrinfo`
//! under slow DNS, one subvolume after another (about 36 s each).
//!
//! Here: five servers (one fragment of every set on each), 60 bricks,
//! addressed by IP in the volume (so the volfile names IPs), and mgmtd
//! reached by IP. A client writes files, then a fault process marks some of
//! them pending on chosen bricks (a dirty count raised through the brick
//! program, which puts the file in that brick's pending-heal index, exactly
//! as an interrupted write would) and holds a whole-file lock on one of
//! them in its set's self-heal domain (a healer's claim). Then every DNS lookup
//! hangs, and heal info runs from a fresh client process (empty resolver
//! cache): it must answer within [`INFO_BOUND_MS`] of simulated time with
//! the exact per-brick counts and the locked entry shown as possibly
//! healing. Again with every lookup answering only after 30 s. Finally the
//! same volfile with host *names* instead of IPs: every brick must report
//! the resolver's timeout (its 2 s deadline), all at once, within the same
//! bound, so a name-addressed volume under dead DNS shows why, quickly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mortar_client::afr::{dirty_delta, Kind};
use mortar_client::api::Client;
use mortar_client::fop::{Fop, Subvolume};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_heal::info::{counts, BrickStatus, HealInfo, BRICK_DEADLINE_MS};
use mortar_mgmt::api::{CliReply, CliRequest};
use mortar_mgmt::daemon::{LocalFs, Mgmtd, MgmtdConfig};
use mortar_net::resolve::SimAnswer;
use mortar_net::sync::Watch;
use mortar_net::{Clock, Endpoint, Runtime};
use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::volfile::Graph;
use mortar_proto::Gfid;
use mortar_sim::{host_ip, Sim};
use mortar_storage::sim::SimDisk;

use crate::mgmt::{cli_request, create_request, start_request, SimLauncher};

const SERVERS: usize = 5;
const SETS: usize = 12;
const BRICKS: usize = SETS * SERVERS;
const PORT: u16 = 24007;
const FILES: usize = 40;
/// Files marked pending (each on one brick of its set).
const MARKED: usize = 16;
/// The bound heal info must answer within, whatever DNS does: one brick
/// deadline (every brick is asked at once) plus a second for the volfile
/// fetch and the round trips on the simulated network.
pub const INFO_BOUND_MS: u64 = BRICK_DEADLINE_MS + 1_000;
/// Per-lookup latency of the slow-DNS phase.
const DNS_SLOW: Duration = Duration::from_secs(30);

fn server(i: usize) -> String {
    format!("s{}", i + 1)
}

fn ip(i: usize) -> String {
    host_ip(i as u8 + 1).to_string()
}

fn mgmt() -> Endpoint {
    format!("{}:{PORT}", ip(0)).parse().expect("endpoint")
}

struct Fs(Arc<SimDisk>);

impl LocalFs for Fs {
    fn check_brick(&self, _path: &str, _force: bool) -> Result<(), String> {
        Ok(())
    }
    fn prepare_brick(&self, path: &str) -> Result<(), String> {
        self.0
            .storage(path.trim_start_matches('/'))
            .map(|_| ())
            .map_err(|e| format!("cannot create brick directory {path}: {e}"))
    }
}

/// Five servers, each known by its name and its IP, joined by IP.
async fn start_pool(sim: &Sim) {
    for i in 0..SERVERS {
        let host = server(i);
        sim.add_host(&host, host_ip(i as u8 + 1));
        let disk = SimDisk::new(sim.seed() ^ i as u64);
        sim.attach_disk(&host, disk.clone(), |d: &SimDisk, rng| d.crash(rng));
        let (s, me) = (sim.clone(), host.clone());
        sim.start_process(&me, "mgmtd", move |rt| {
            let (s, host, disk) = (s.clone(), host.clone(), disk.clone());
            async move {
                let launcher = Arc::new(SimLauncher::new(s, &host, disk.clone()));
                let storage = disk.storage("var/lib/mortar").expect("workdir");
                let cfg = MgmtdConfig::new(
                    vec![host.clone(), ip(i)],
                    format!("{}:{PORT}", ip(i)).parse().expect("endpoint"),
                );
                let _d = Mgmtd::start(&rt, storage, cfg, launcher, Arc::new(Fs(disk)))
                    .await
                    .expect("mgmtd starts");
                std::future::pending::<()>().await;
            }
        });
    }
    for i in 1..SERVERS {
        ok(sim, CliRequest::PeerProbe { host: ip(i) }).await;
    }
}

/// A CLI request to s1's mgmtd, from s1, by IP.
async fn cli(sim: &Sim, req: CliRequest) -> Result<CliReply, String> {
    sim.run_on(&server(0), "cli", move |rt| async move {
        cli_request(&rt, mgmt(), &req).await
    })
    .await
}

async fn ok(sim: &Sim, req: CliRequest) -> CliReply {
    let what = format!("{req:?}");
    cli(sim, req)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

async fn wait_online(sim: &Sim) {
    for _ in 0..120 {
        let r = cli(
            sim,
            CliRequest::VolumeStatus {
                name: Some("vol".into()),
            },
        )
        .await;
        if let Ok(CliReply::Status(s)) = r {
            let up = s[0].bricks.iter().filter(|b| b.online && b.port.is_some());
            if up.count() == BRICKS {
                return;
            }
        }
        sim.sleep(Duration::from_millis(500)).await;
    }
    panic!("the volume's {BRICKS} bricks did not all come online");
}

/// `12 x (4 + 1)`: set `s` has brick `/b{s}` on every server, by IP.
fn create_spec() -> String {
    let mut spec = String::from("vol disperse 5 redundancy 1");
    for s in 0..SETS {
        for i in 0..SERVERS {
            spec.push_str(&format!(" {}:/b{s}", ip(i)));
        }
    }
    spec
}

/// What the fault process left: expected entries per brick (by index in
/// the volfile's client order) and the entry it keeps locked.
#[derive(Debug, Clone, Default)]
struct Marks {
    pending: BTreeMap<usize, Vec<Gfid>>,
    locked: Option<(usize, Gfid)>,
}

/// On host c0: write the files, mark `MARKED` of them pending on one brick
/// each, lock one, publish what was done, then hold the lock for ever.
async fn mark_pending(rt: Runtime, done: Watch<Option<Marks>>) {
    let c = Client::mount(&rt, &mgmt(), "vol")
        .await
        .unwrap_or_else(|e| panic!("mount vol: {e}"));
    let mut gfids = Vec::new();
    for f in 0..FILES {
        let a = c
            .write_path(&format!("/f{f}"), format!("file {f}").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("writing f{f}: {e}"));
        gfids.push(a.gfid);
    }
    let g: Arc<VolumeGraph> = c.graph();
    let mut marks = Marks::default();
    for (f, gfid) in gfids.iter().take(MARKED).enumerate() {
        // The file lives on one set; try fragment `f % 5` of every set.
        for s in 0..SETS {
            let b = s * SERVERS + f % SERVERS;
            let op = Fop::Xattrop(bp::Xattrop {
                gfid: *gfid,
                deltas: vec![dirty_delta(Kind::Data, 1)],
                durable: true,
            });
            if g.clients[b].fop(op).await.is_ok() {
                marks.pending.entry(b).or_default().push(*gfid);
                break;
            }
        }
    }
    let (&b, first) = marks.pending.iter().next().expect("a file was marked");
    let gfid = first[0];
    let domain = g
        .heal_sets
        .iter()
        .find(|(_, m)| m.contains(&b))
        .map(|(s, _)| match s {
            SetLayer::Disperse(d) => mortar_heal::steps::heal_domain(d.set_name()),
            SetLayer::Replicate(r) => mortar_heal::steps::heal_domain(r.set_name()),
        })
        .expect("the brick is in a set");
    let lock = Fop::Inodelk(bp::Inodelk {
        gfid,
        domain,
        kind: LockKind::Write,
        start: 0,
        len: 0,
        owner: 7,
        wait_ms: None,
    });
    g.clients[b].fop(lock).await.expect("lock the marked file");
    marks.locked = Some((b, gfid));
    done.set(Some(marks));
    std::future::pending::<()>().await;
}

/// Make every lookup of every host name answer `answer` after `latency`.
fn dns_everywhere(sim: &Sim, answer: impl Fn(&str) -> SimAnswer, latency: Duration) {
    for h in sim.host_names() {
        sim.dns_fault(&h, answer(&h), latency);
    }
}

/// Heal info from a fresh process on c1 (fresh resolver, empty cache):
/// the report and the simulated time it took.
async fn info_from(sim: &Sim, process: &str, names: bool) -> (HealInfo, Duration) {
    sim.run_on("c1", process, move |rt| async move {
        let t0 = rt.clock().now();
        let info = if names {
            // The same volume as if its bricks had been given by name.
            let (text, _) = mortar_heal::info::fetch_volfile(&rt, &mgmt(), "vol")
                .await
                .expect("volfile");
            let mut g = Graph::parse(&text).expect("volfile parses");
            for n in &mut g.nodes {
                if let Some(v) = n.options.get_mut("remote-host") {
                    let i = (0..SERVERS).find(|i| *v == ip(*i)).expect("a server IP");
                    *v = server(i);
                }
            }
            mortar_heal::info::heal_info_from_volfile(&rt, "vol", &g.render(), PORT).await
        } else {
            mortar_heal::info::heal_info(&rt, &mgmt(), "vol").await
        };
        (info.expect("heal info answers"), rt.clock().now() - t0)
    })
    .await
}

fn check_counts(info: &HealInfo, marks: &Marks, phase: &str) {
    assert_eq!(info.bricks.len(), BRICKS, "{phase}: bricks listed");
    for (i, b) in info.bricks.iter().enumerate() {
        assert_eq!(b.status, BrickStatus::Connected, "{phase}: {}", b.brick);
        let mut want = marks.pending.get(&i).cloned().unwrap_or_default();
        want.sort();
        let got: Vec<Gfid> = b.entries.iter().map(|e| e.gfid).collect();
        assert_eq!(got, want, "{phase}: entries of {}", b.brick);
        let c = counts(b);
        let locked = usize::from(marks.locked.is_some_and(|(lb, _)| lb == i));
        assert_eq!(c.possibly_healing, Some(locked), "{phase}: {}", b.brick);
        assert_eq!(
            c.heal_pending,
            Some(want.len() - locked),
            "{phase}: {}",
            b.brick
        );
    }
}

pub async fn heal_info_dns(sim: Sim) -> Vec<(&'static str, Duration)> {
    start_pool(&sim).await;
    let spec = create_spec();
    ok(&sim, create_request(&format!("{spec} force"))).await;
    ok(&sim, start_request(false)).await;
    wait_online(&sim).await;
    sim.add_host("c0", host_ip(20));
    sim.add_host("c1", host_ip(21));
    let marked = Watch::new(None);
    {
        let marked = marked.clone();
        sim.start_process("c0", "marker", move |rt| mark_pending(rt, marked.clone()));
    }
    let marks = Clock::new()
        .timeout(Duration::from_secs(120), marked.wait_for(|m| m.is_some()))
        .await
        .expect("files written and marked within 120 s")
        .expect("marks");
    sim.note(format!("marked {:?}", marks.pending));
    let bound = Duration::from_millis(INFO_BOUND_MS);
    let mut took = Vec::new();

    let (healthy, t) = info_from(&sim, "info-healthy", false).await;
    check_counts(&healthy, &marks, "healthy DNS");
    took.push(("healthy DNS, bricks by IP", t));

    dns_everywhere(&sim, |_| SimAnswer::Hang, Duration::ZERO);
    let (hung, t) = info_from(&sim, "info-hang", false).await;
    check_counts(&hung, &marks, "every lookup hangs");
    took.push(("every lookup hangs, bricks by IP", t));
    let (named, t) = info_from(&sim, "info-hang-names", true).await;
    all_report_dns(&named, "every lookup hangs, bricks by name");
    took.push(("every lookup hangs, bricks by name", t));

    let ips: BTreeMap<String, SimAnswer> = sim
        .host_names()
        .into_iter()
        .map(|h| (h.clone(), SimAnswer::Addrs(vec![sim.host_ip(&h)])))
        .collect();
    dns_everywhere(&sim, |h| ips[h].clone(), DNS_SLOW);
    let (slow, t) = info_from(&sim, "info-slow", false).await;
    check_counts(&slow, &marks, "30 s per lookup");
    took.push(("30 s per lookup, bricks by IP", t));
    let (named, t) = info_from(&sim, "info-slow-names", true).await;
    all_report_dns(&named, "30 s per lookup, bricks by name");
    took.push(("30 s per lookup, bricks by name", t));

    for (phase, t) in &took {
        eprintln!("sim: heal_info_dns: {phase}: heal info took {t:?} (simulated)");
        sim.note(format!("{phase}: {t:?}"));
        assert!(
            *t <= bound,
            "{phase}: heal info took {t:?}, bound {bound:?}"
        );
    }
    took
}

fn all_report_dns(info: &HealInfo, phase: &str) {
    assert_eq!(info.bricks.len(), BRICKS, "{phase}: bricks listed");
    for b in &info.bricks {
        match &b.status {
            BrickStatus::Error(e) => assert!(e.contains("DNS"), "{phase}: {}: {e}", b.brick),
            BrickStatus::Connected => panic!("{phase}: {} answered without DNS", b.brick),
        }
    }
}
