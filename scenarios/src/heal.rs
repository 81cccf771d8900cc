//! Self-heal with default options, end to end on the simulated cluster:
//! three servers (each with its mgmtd-started self-heal daemon), a
//! volume, a client that changes names, data and modes while a brick is
//! down.
//!
//! * `heal_on_return`: `volume start force` brings the brick back on a new
//!   port; every pending-heal index must be empty within
//!   [`HEALED_AFTER_ONLINE_MAX_MS`] of simulated time after `volume
//!   status` shows it online (default `cluster.heal-timeout` is 600 s: only
//!   the reconnect can start that heal), every set's bricks must compare
//!   equal (`mortar_heal::compare`), and every file must read back as
//!   written. The layout (replica 3, disperse 4 + 2) is drawn from the
//!   seed.
//! * `heal_shd_killed`: the same with 120 new files, and every server's
//!   self-heal daemon killed at a seed-drawn moment of the heal; the
//!   mgmtds start new ones, which must finish from the indices (bounded)
//!   with the same checks: a heal cut short resumes without harm.

use std::time::Duration;

use mortar_client::api::Client;
use mortar_client::fop::Child;
use mortar_client::graph::SetLayer;
use mortar_heal::compare::{compare, Difference, SetKind};
use mortar_mgmt::api::{CliReply, CliRequest};
use mortar_net::Runtime;
use mortar_proto::brick as bp;
use mortar_sim::{host_ip, Sim};

use crate::client::mgmt;
use crate::mgmt::{create_request, start_request, Pool, HOSTS};

/// How long after `volume status` shows the returned brick online its
/// heal may take to finish, in simulated time: the crawl must start
/// within 3 s (the bound) and this scenario's few dozen files
/// heal in well under a second of simulated network time.
pub const HEALED_AFTER_ONLINE_MAX_MS: u64 = 3_000;

/// After the self-heal daemons were killed mid-heal: the bound for their
/// successors (started by mgmtd's supervision) to empty the indices.
const HEALED_AFTER_KILL_MAX_SECS: u64 = 60;

const FILE_BYTES: usize = 4096;

/// The fewest entries `heal_shd_killed` aims to leave pending when it
/// kills the daemons (a look every 10 ms of simulated time sees the
/// indices shrink by up to a few dozen entries at once; over seeds 1 to
/// 80 the fewest left was 4).
const KILL_WITH_PENDING_MIN: usize = 40;

#[derive(Clone, Copy, Debug)]
pub enum Layout {
    Replica3,
    Disperse4x2,
}

impl Layout {
    fn create(self) -> &'static str {
        match self {
            Layout::Replica3 => "vol replica 3 s1:/b s2:/b s3:/b",
            Layout::Disperse4x2 => {
                "vol disperse 6 redundancy 2 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2 force"
            }
        }
    }

    fn bricks(self) -> usize {
        match self {
            Layout::Replica3 => 3,
            Layout::Disperse4x2 => 6,
        }
    }
}

async fn mount(rt: &Runtime) -> std::sync::Arc<Client> {
    let c = Client::mount(rt, &mgmt(), "vol")
        .await
        .unwrap_or_else(|e| panic!("mount vol: {e}"));
    c.wait_all_bricks(Duration::from_secs(20)).await;
    c
}

fn content(name: &str, salt: u8) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(salt, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..FILE_BYTES)
        .map(|i| seed.wrapping_add(i as u8) | 1)
        .collect()
}

/// The bricks every server runs, online with ports, per `volume status`.
pub(crate) async fn bricks_online(pool: &Pool) -> usize {
    bricks_online_from(pool, &["s1".to_string()]).await
}

/// [`bricks_online`] per the first of `servers` that answers (0 if none).
pub(crate) async fn bricks_online_from(pool: &Pool, servers: &[String]) -> usize {
    for s in servers {
        let status = CliRequest::VolumeStatus {
            name: Some("vol".into()),
        };
        if let Ok(CliReply::Status(st)) = pool.cli(s, status).await {
            return st[0]
                .bricks
                .iter()
                .filter(|b| b.online && b.port.is_some())
                .count();
        }
    }
    0
}

/// What differs between the bricks of each set of `c`'s graph (the brick
/// comparator; an arbiter is compared as one).
pub(crate) async fn differences(c: &Client) -> Result<Vec<Difference>, String> {
    let g = c.graph();
    let mut out = Vec::new();
    for (set, members) in &g.heal_sets {
        let (children, kind): (&[Child], SetKind) = match set {
            SetLayer::Replicate(r) => (
                r.children(),
                SetKind::Replicate {
                    arbiter: r.arbiter(),
                },
            ),
            SetLayer::Disperse(d) => (d.children(), SetKind::Disperse),
        };
        let indices: Vec<_> = members.iter().map(|&m| g.clients[m].clone()).collect();
        let diffs = compare(children, kind, &indices)
            .await
            .map_err(|e| format!("comparing the bricks: {e}"))?;
        out.extend(diffs);
    }
    Ok(out)
}

async fn wait_online(pool: &Pool, bricks: usize) {
    for _ in 0..200 {
        if bricks_online(pool).await == bricks {
            return;
        }
        pool.sim.sleep(Duration::from_millis(100)).await;
    }
    panic!("the volume's {bricks} bricks did not all come online");
}

/// The volume with its files before the fault: `/d` holding `f0..f9`.
async fn setup(sim: &Sim, layout: Layout) -> Pool {
    let pool = Pool::start(sim).await;
    pool.ok("s1", create_request(layout.create())).await;
    pool.ok("s2", start_request(false)).await;
    wait_online(&pool, layout.bricks()).await;
    sim.add_host("c1", host_ip(10));
    sim.run_on("c1", "before", |rt| async move {
        let c = mount(&rt).await;
        c.mkdir_path("/d", 0o755).await.expect("mkdir /d");
        for i in 0..10 {
            let p = format!("/d/f{i}");
            c.write_path(&p, &content(&p, 0)).await.expect("write");
        }
        c.unmount();
    })
    .await;
    pool
}

/// Kill one brick process on s3 (drawn from the seed), then change the
/// volume through a client: `new` new files, an overwrite, a rename, a
/// removal, a chmod, a symlink. What every path must hold afterwards.
async fn change_while_down(sim: &Sim, new: usize) -> Vec<(String, Vec<u8>)> {
    let bricks: Vec<String> = sim
        .running_processes("s3")
        .into_iter()
        .filter(|p| p.starts_with("brick"))
        .collect();
    let victim = sim.with_rng(|r| bricks[r.below(bricks.len() as u64) as usize].clone());
    sim.note(format!("fault: kill s3/{victim}"));
    sim.kill_process("s3", &victim);
    sim.run_on("c1", "while-down", move |rt| async move {
        let c = mount(&rt).await;
        let d = c.resolve("/d").await.expect("/d").gfid;
        let mut want = Vec::new();
        for i in 0..new {
            let p = format!("/d/new{i}");
            let data = content(&p, 1);
            c.write_path(&p, &data).await.expect("new file");
            want.push((p, data));
        }
        let data = content("/d/f0", 2);
        c.write_path("/d/f0", &data).await.expect("overwrite");
        want.push(("/d/f0".into(), data));
        c.rename(d, "f1", d, "f1-moved").await.expect("rename");
        want.push(("/d/f1-moved".into(), content("/d/f1", 0)));
        c.unlink(d, "f2").await.expect("unlink");
        let f3 = c.resolve("/d/f3").await.expect("f3").gfid;
        c.setattr(bp::Setattr {
            gfid: f3,
            mode: Some(0o600),
            uid: None,
            gid: None,
            atime: None,
            mtime: None,
        })
        .await
        .expect("chmod");
        c.symlink(d, "link", "f0", 0, 0).await.expect("symlink");
        for i in 3..10 {
            let p = format!("/d/f{i}");
            want.push((p.clone(), content(&p, 0)));
        }
        c.unmount();
        want
    })
    .await
}

/// Every set's bricks compare equal (indices empty, counters zero, the
/// same names, gfids, modes, data), every path reads back as `want`, and
/// what was removed stays removed.
async fn check_converged(sim: &Sim, want: Vec<(String, Vec<u8>)>) {
    let verdict = sim
        .run_on("c1", "compare", move |rt| async move {
            let c = mount(&rt).await;
            let diffs = differences(&c).await?;
            if !diffs.is_empty() {
                return Err(format!("the bricks differ after heal: {diffs:?}"));
            }
            for (p, data) in &want {
                let got = c
                    .read_path(p)
                    .await
                    .map_err(|e| format!("reading {p}: {e}"))?;
                if got != *data {
                    return Err(format!("{p} reads {} bytes, not as written", got.len()));
                }
            }
            for gone in ["/d/f1", "/d/f2"] {
                if c.resolve(gone).await.is_ok() {
                    return Err(format!("{gone} is back after heal"));
                }
            }
            let f3 = c.resolve("/d/f3").await.map_err(|e| e.to_string())?;
            if f3.mode & 0o777 != 0o600 {
                return Err(format!("/d/f3 has mode {:o}, not 600", f3.mode & 0o777));
            }
            c.unmount();
            Ok(())
        })
        .await;
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

/// Entries left in every brick's index, from a client on c1.
async fn pending(sim: &Sim) -> usize {
    sim.run_on("c1", "pending", |rt| async move {
        let c = mount(&rt).await;
        let left = c.pending_heal_total().await.unwrap_or(usize::MAX);
        c.unmount();
        left
    })
    .await
}

async fn start_force(pool: &Pool) {
    pool.ok("s1", start_request(true)).await;
}

/// See the module documentation.
pub async fn heal_on_return(sim: Sim) {
    let layout = if sim.with_rng(|r| r.below(2)) == 0 {
        Layout::Replica3
    } else {
        Layout::Disperse4x2
    };
    eprintln!("sim: heal_on_return: layout {layout:?}");
    let pool = setup(&sim, layout).await;
    let want = change_while_down(&sim, 30).await;
    start_force(&pool).await;
    wait_online(&pool, layout.bricks()).await;
    let clock = mortar_net::Clock::new();
    let online = clock.now();
    let mut left = pending(&sim).await;
    while left != 0 && clock.now() - online <= Duration::from_millis(HEALED_AFTER_ONLINE_MAX_MS) {
        sim.sleep(Duration::from_millis(100)).await;
        left = pending(&sim).await;
    }
    let took = clock.now() - online;
    sim.note(format!(
        "heal: {left} pending {} ms after online",
        took.as_millis()
    ));
    eprintln!(
        "sim: heal_on_return: {left} pending {} ms after online",
        took.as_millis()
    );
    assert_eq!(
        left,
        0,
        "{left} entries still wait for heal {} ms after the brick was online (default options)",
        took.as_millis()
    );
    check_converged(&sim, want).await;
}

/// See the module documentation.
pub async fn heal_shd_killed(sim: Sim) {
    let pool = setup(&sim, Layout::Replica3).await;
    let want = change_while_down(&sim, 120).await;
    start_force(&pool).await;
    wait_online(&pool, Layout::Replica3.bricks()).await;
    // Mid-heal: once the indices have shrunk to a drawn count of at least
    // KILL_WITH_PENDING_MIN (seed 20 of a wait drawn in time found the
    // heal already done).
    let clock = mortar_net::Clock::new();
    let online = clock.now();
    let at_start = pending(&sim).await;
    let target = sim.with_rng(|r| {
        KILL_WITH_PENDING_MIN
            + r.below((at_start.saturating_sub(KILL_WITH_PENDING_MIN + 1)).max(1) as u64) as usize
    });
    let mut before = at_start;
    while before > target && clock.now() - online < Duration::from_secs(10) {
        sim.sleep(Duration::from_millis(10)).await;
        before = pending(&sim).await;
    }
    let pause = clock.now() - online;
    for host in HOSTS {
        for p in sim.running_processes(host) {
            if p.starts_with("shd") {
                sim.note(format!("fault: kill {host}/{p}"));
                sim.kill_process(host, &p);
            }
        }
    }
    eprintln!(
        "sim: heal_shd_killed: daemons killed {} ms after online, {before} of {at_start} entries pending",
        pause.as_millis()
    );
    assert!(
        before > 0 && before < at_start,
        "the daemons were to be killed mid-heal: {before} of {at_start} entries pending"
    );
    let killed = clock.now();
    let mut left = before;
    while left != 0 && clock.now() - killed <= Duration::from_secs(HEALED_AFTER_KILL_MAX_SECS) {
        sim.sleep(Duration::from_millis(500)).await;
        left = pending(&sim).await;
    }
    assert_eq!(
        left, 0,
        "{left} entries still wait {HEALED_AFTER_KILL_MAX_SECS} s after the self-heal daemons were killed mid-heal"
    );
    // mgmtd's supervision starts a new daemon on every server (bounded).
    let running = || -> usize {
        HOSTS
            .iter()
            .map(|h| {
                sim.running_processes(h)
                    .iter()
                    .filter(|p| p.starts_with("shd"))
                    .count()
            })
            .sum()
    };
    let mut restarted = running();
    while restarted != 3 && clock.now() - killed <= Duration::from_secs(HEALED_AFTER_KILL_MAX_SECS)
    {
        sim.sleep(Duration::from_millis(500)).await;
        restarted = running();
    }
    assert_eq!(restarted, 3, "every server runs a self-heal daemon again");
    check_converged(&sim, want).await;
}
