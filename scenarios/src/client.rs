//! A client writing to a volume while bricks die and the network splits.
//!
//! Three servers run a volume (replica 3, replica 3 arbiter 1,
//! distributed-replicate 2 x 3, or disperse 4 + 2 with two fragments per
//! server); a client on a fourth host mounts it and
//! overwrites ranges of a few files, each write followed by fsync, while
//! the fault task kills brick processes (restarting them later with
//! `volume start force`) and cuts the client off from servers. The client
//! records every outcome:
//!
//! * acknowledged (write and fsync both succeeded): the bytes must read
//!   back, unless a later write covered them;
//! * refused with EROFS (quorum, arbiter rule): refused before anything
//!   was touched, so the old bytes must stay;
//! * failed otherwise: either the old or the new bytes may be there.
//!
//! When the faults stop and every brick is back, a fresh client mounts the
//! volume and reads every file from whichever copy replicate picks: every
//! byte must be one the model allows, and no file may be in split-brain.
//! Then the self-heal daemons (one per server, started by mgmtd) must
//! empty every pending-heal index within 120 s, and the files still read
//! back as the model allows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_client::api::Client;
use mortar_mgmt::api::CliRequest;
use mortar_net::sync::Watch;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::{options, Errno};
use mortar_sim::{host_ip, Sim};

use crate::mgmt::{create_request, start_request, Pool, HOSTS};

const FILES: usize = 6;
const SIZE: usize = 8 * 1024;
const WRITES: usize = 120;

#[derive(Clone, Copy, Debug)]
pub enum Layout {
    Replica3,
    Arbiter,
    DistRep2x3,
    /// Disperse 4 + 2, two fragments per server (so cutting a server off
    /// loses exactly the two fragments the set can spare).
    Disperse4x2,
}

impl Layout {
    pub const ALL: [Layout; 4] = [
        Layout::Replica3,
        Layout::Arbiter,
        Layout::DistRep2x3,
        Layout::Disperse4x2,
    ];
    /// The replicated layouts (the draw older seeds were found with).
    pub const REPLICATED: [Layout; 3] = [Layout::Replica3, Layout::Arbiter, Layout::DistRep2x3];

    fn create(self) -> &'static str {
        match self {
            Layout::Replica3 => "vol replica 3 s1:/b s2:/b s3:/b",
            Layout::Arbiter => "vol replica 3 arbiter 1 s1:/b s2:/b s3:/b",
            Layout::DistRep2x3 => "vol replica 3 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2",
            Layout::Disperse4x2 => {
                "vol disperse 6 redundancy 2 s1:/b1 s2:/b1 s3:/b1 s1:/b2 s2:/b2 s3:/b2 force"
            }
        }
    }

    fn bricks(self) -> usize {
        match self {
            Layout::DistRep2x3 | Layout::Disperse4x2 => 6,
            _ => 3,
        }
    }

    /// A disperse set survives `m` fragments missing or stale at once,
    /// not more: its faults come one at a time (one brick killed or one
    /// server cut off, which is two fragments), and the next waits until
    /// the writer reaches every brick again and heal has rebuilt what the
    /// last one left stale (seed 19 once lost a file when a brick was
    /// killed during a write while two fragments were still stale from
    /// the writer's own lagging reconnect). Replica sets take stacked
    /// faults (quorum refuses what they cannot survive).
    fn one_fault_at_a_time(self) -> bool {
        matches!(self, Layout::Disperse4x2)
    }
}

/// What each byte of each file may hold.
struct Model {
    allowed: Vec<Vec<Vec<u8>>>,
}

impl Model {
    fn new() -> Model {
        Model {
            allowed: vec![vec![vec![0u8]; SIZE]; FILES],
        }
    }

    fn acknowledged(&mut self, f: usize, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.allowed[f][off + i] = vec![*b];
        }
    }

    fn uncertain(&mut self, f: usize, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = &mut self.allowed[f][off + i];
            if !a.contains(b) {
                a.push(*b);
            }
        }
    }

    /// The first byte of `got` that the model does not allow.
    fn check(&self, f: usize, got: &[u8]) -> Result<(), String> {
        if got.len() != SIZE {
            return Err(format!("f{f} is {} bytes, expected {SIZE}", got.len()));
        }
        for (i, b) in got.iter().enumerate() {
            if !self.allowed[f][i].contains(b) {
                return Err(format!(
                    "f{f} byte {i} is {b:#04x}; only {:?} were written there",
                    self.allowed[f][i]
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Tally {
    acknowledged: u32,
    refused: u32,
    failed: u32,
}

pub(crate) fn mgmt() -> Endpoint {
    "s1:24007".parse().expect("endpoint")
}

async fn mount(rt: &Runtime) -> Arc<Client> {
    Client::mount(rt, &mgmt(), "vol")
        .await
        .unwrap_or_else(|e| panic!("mount vol: {e}"))
}

/// How long after `volume status` shows a restarted brick online the
/// writer may take to reach it (it waits on the port map for the brick's
/// sign-in; before, it polled every 3 s).
const RECONNECT_AFTER_ONLINE_MAX_MS: u64 = 1_000;

async fn wait_online(pool: &Pool, bricks: usize) {
    for _ in 0..80 {
        if crate::heal::bricks_online(pool).await == bricks {
            return;
        }
        pool.sim.sleep(Duration::from_millis(500)).await;
    }
    panic!("the volume's {bricks} bricks did not all come online");
}

/// Files still in pending-heal indices after waiting (bounded: `tries`
/// looks, `step` apart, on simulated time) for them to drain to none.
async fn heal_drained(rt: &Runtime, c: &Client, tries: u32, step: Duration) -> usize {
    let mut left = usize::MAX;
    for _ in 0..tries {
        left = c.pending_heal_total().await.unwrap_or(usize::MAX);
        if left == 0 {
            break;
        }
        rt.clock().sleep(step).await;
    }
    left
}

/// The writer: creates the files, says it is `ready` for faults, then
/// overwrites random ranges.
/// What the writer last saw of the volume's bricks (after each write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// No write done yet.
    NotYet,
    Bricks {
        up: usize,
        total: usize,
    },
    /// The writer is done: it sees nothing any more.
    Finished,
}

impl Reach {
    /// Nothing more to wait for: every brick reached, or the writer gone.
    fn settled(&self) -> bool {
        match *self {
            Reach::Bricks { up, total } => up == total,
            Reach::Finished => true,
            Reach::NotYet => false,
        }
    }
}

async fn writer(rt: Runtime, ready: Watch<bool>, seen: Watch<Reach>) -> (Model, Tally) {
    let c = mount(&rt).await;
    let mut gfids = Vec::new();
    for f in 0..FILES {
        let a = c
            .write_path(&format!("/f{f}"), &vec![0u8; SIZE])
            .await
            .unwrap_or_else(|e| panic!("creating f{f} before any fault: {e}"));
        gfids.push(a.gfid);
    }
    ready.set(true);
    let mut model = Model::new();
    let mut tally = Tally::default();
    for _ in 0..WRITES {
        let (f, off, len, pause) = rt.with_rng(|r| {
            let len = 1 + r.below(1024) as usize;
            (
                r.below(FILES as u64) as usize,
                r.below((SIZE - len) as u64) as usize,
                len,
                Duration::from_millis(50 + r.below(400)),
            )
        });
        let mut data = vec![0u8; len];
        rt.with_rng(|r| r.fill(&mut data));
        let w = c
            .write(gfids[f], off as u64, Bytes::from(data.clone()))
            .await;
        let outcome = match w {
            Ok(_) => c.fsync(gfids[f], false).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                model.acknowledged(f, off, &data);
                tally.acknowledged += 1;
            }
            Err(e) if e.errno == Errno::EROFS => {
                tally.refused += 1;
                tracing::info!(file = f, error = %e, "write refused");
            }
            Err(e) => {
                model.uncertain(f, off, &data);
                tally.failed += 1;
                tracing::info!(file = f, error = %e, "write failed");
            }
        }
        let (up, total) = c.bricks_up();
        seen.set(Reach::Bricks { up, total });
        rt.clock().sleep(pause).await;
    }
    seen.set(Reach::Finished);
    c.unmount();
    (model, tally)
}

/// Kill brick processes and cut the client off from servers until the
/// writer is done, then heal the cluster.
async fn faults(
    sim: Sim,
    pool: Pool,
    layout: Layout,
    ready: Watch<bool>,
    done: Watch<bool>,
    seen: Watch<Reach>,
) -> u32 {
    ready.wait_for(|r| *r).await;
    let mut n = 0;
    while !done.get() {
        let (kind, host, hold, gap) = sim.with_rng(|r| {
            (
                r.below(3),
                HOSTS[r.below(3) as usize],
                Duration::from_millis(500 + r.below(5000)),
                Duration::from_millis(r.below(3000)),
            )
        });
        sim.sleep(gap).await;
        n += 1;
        match kind {
            0 | 1 => {
                let bricks: Vec<String> = sim
                    .running_processes(host)
                    .into_iter()
                    .filter(|p| p.starts_with("brick"))
                    .collect();
                let Some(b) = sim.with_rng(|r| {
                    (!bricks.is_empty())
                        .then(|| bricks[r.below(bricks.len() as u64) as usize].clone())
                }) else {
                    continue;
                };
                sim.note(format!("fault: kill {host}/{b}"));
                sim.kill_process(host, &b);
                if kind == 1 && !layout.one_fault_at_a_time() {
                    // Leave it down while something else fails too.
                    continue;
                }
                sim.sleep(hold).await;
            }
            _ => {
                sim.note(format!("fault: cut c1 off from {host}"));
                sim.partition(&["c1"], &[host]);
                sim.sleep(hold).await;
                sim.repair();
            }
        }
        // Restart dead bricks, as an operator would.
        let _ = pool.cli("s1", start_request(true)).await;
        if layout.one_fault_at_a_time() && !done.get() {
            wait_online(&pool, layout.bricks()).await;
            // The writer reaches every brick again (until it does, its
            // writes leave the missing ones stale), then heal catches up.
            let clock = mortar_net::Clock::new();
            let online = clock.now();
            let reach = clock
                .timeout(Duration::from_secs(60), seen.wait_for(Reach::settled))
                .await;
            let took = clock.now() - online;
            sim.note(format!(
                "fault: writer after {} ms: {reach:?}",
                took.as_millis()
            ));
            // A writer still writing reaches every brick again. (Seed 111
            // once looked as if it did not: its writer had finished, and
            // what it last saw never changed again.)
            let reach = reach.unwrap_or_else(|_| {
                panic!("the writer, still writing, did not reach every brick within 60 s of the restart")
            });
            // A killed brick that is back is reached at once: the client
            // waits on the port map for its sign-in rather than polling.
            if kind < 2 && reach != Reach::Finished {
                assert!(
                    took <= Duration::from_millis(RECONNECT_AFTER_ONLINE_MAX_MS),
                    "the writer reached the restarted brick {} ms after it was online",
                    took.as_millis()
                );
            }
            let left = sim
                .run_on("c1", "heal-probe", |rt| async move {
                    let c = mount(&rt).await;
                    c.wait_all_bricks(Duration::from_secs(20)).await;
                    let left = heal_drained(&rt, &c, 120, Duration::from_millis(500)).await;
                    c.unmount();
                    left
                })
                .await;
            sim.note(format!("fault: heal settled ({left} pending)"));
        }
    }
    sim.repair();
    n
}

pub async fn acknowledged_writes(sim: Sim, layout: Layout) {
    eprintln!("sim: client_writes: layout {layout:?}");
    let pool = Pool::start(&sim).await;
    pool.ok("s1", create_request(layout.create())).await;
    pool.ok(
        "s1",
        CliRequest::VolumeSet {
            name: "vol".into(),
            key: options::PING_TIMEOUT.into(),
            value: "4".into(),
        },
    )
    .await;
    // Index crawls every 10 s: files blamed while the client was cut off
    // (no brick restarted, so no reconnect to trigger a crawl) are healed
    // within the check's 120 s.
    pool.ok(
        "s1",
        CliRequest::VolumeSet {
            name: "vol".into(),
            key: options::HEAL_TIMEOUT.into(),
            // Disperse faults wait for heal: crawl as often as allowed.
            value: if layout.one_fault_at_a_time() {
                "5"
            } else {
                "10"
            }
            .into(),
        },
    )
    .await;
    pool.ok("s2", start_request(false)).await;
    wait_online(&pool, layout.bricks()).await;
    sim.add_host("c1", host_ip(10));

    let (ready, done) = (Watch::new(false), Watch::new(false));
    let seen = Watch::new(Reach::NotYet);
    let fault_task = {
        let (sim, pool, ready, done, seen) = (
            sim.clone(),
            pool.clone(),
            ready.clone(),
            done.clone(),
            seen.clone(),
        );
        #[allow(clippy::disallowed_methods)] // the scenario's own task, on the supervisor node
        tokio::spawn(async move { faults(sim, pool, layout, ready, done, seen).await })
    };
    let (model, tally) = sim
        .run_on("c1", "writer", move |rt| writer(rt, ready, seen))
        .await;
    done.set(true);
    let injected = fault_task.await.expect("fault task");
    eprintln!("sim: client_writes: {injected} faults; {tally:?}");
    assert!(
        tally.acknowledged > 0,
        "no write was acknowledged in {WRITES} attempts: {tally:?}"
    );

    // Every brick back, then a fresh client reads everything.
    pool.ok("s1", start_request(true)).await;
    wait_online(&pool, layout.bricks()).await;
    let model = Arc::new(model);
    let bricks = layout.bricks();
    let verdict = sim
        .run_on("c1", "reader", move |rt| async move {
            let c = mount(&rt).await;
            let (up, total) = c.bricks_up();
            if up != total || total != bricks {
                return Err(format!("reader sees {up} of {total} bricks"));
            }
            for f in 0..FILES {
                let got = c
                    .read_path(&format!("/f{f}"))
                    .await
                    .map_err(|e| format!("reading f{f} with every brick up: {e}"))?;
                model.check(f, &got)?;
            }
            // The self-heal daemons empty every pending-heal index once
            // every brick is back (bounded, on simulated time).
            let left = heal_drained(&rt, &c, 120, Duration::from_secs(1)).await;
            if left != 0 {
                return Err(format!(
                    "{left} files still wait for heal 120 s after every brick came back"
                ));
            }
            // The bricks of every set compare equal (the brick
            // comparator: data, metadata, gfids, counters, indices), soon
            // after the indices drained (bounded, on simulated time).
            let mut diffs = crate::heal::differences(&c).await?;
            for _ in 0..60 {
                if diffs.is_empty() {
                    break;
                }
                rt.clock().sleep(Duration::from_secs(1)).await;
                diffs = crate::heal::differences(&c).await?;
            }
            if !diffs.is_empty() {
                return Err(format!(
                    "the bricks still differ 60 s after heal drained: {diffs:?}"
                ));
            }
            // And what they healed reads back as before.
            for f in 0..FILES {
                let got = c
                    .read_path(&format!("/f{f}"))
                    .await
                    .map_err(|e| format!("reading f{f} after heal: {e}"))?;
                model.check(f, &got)?;
            }
            c.unmount();
            Ok(())
        })
        .await;
    if let Err(e) = verdict {
        panic!("after {injected} faults ({tally:?}): {e}");
    }
}

/// A mounted client follows its volume's volfile: growing the volume from
/// replica 3 to 2 x 3 while the client is mounted switches the client to
/// the new graph as soon as mgmtd has committed, without waiting for a
/// poll (the watch is renewed only every 30 s), and files created after
/// the switch work. Returns how long the switch took after add-brick
/// answered.
pub async fn volfile_follows(sim: Sim) -> Duration {
    let pool = Pool::start(&sim).await;
    pool.ok("s1", create_request("vol replica 3 s1:/b1 s2:/b1 s3:/b1"))
        .await;
    pool.ok("s1", start_request(false)).await;
    wait_online(&pool, 3).await;
    sim.add_host("c1", host_ip(10));
    let (mounted, grown) = (Watch::new(false), Watch::new(false));
    let client = {
        let (sim, mounted, grown) = (sim.clone(), mounted.clone(), grown.clone());
        #[allow(clippy::disallowed_methods)] // the scenario's own task, on the supervisor node
        tokio::spawn(async move {
            sim.run_on("c1", "client", move |rt| async move {
                let c = mount(&rt).await;
                assert_eq!(c.bricks_up(), (3, 3), "mounted before growth");
                mounted.set(true);
                grown.wait_for(|g| *g).await;
                let at = rt.clock().now();
                // Wait (bounded) for the switch, on simulated time.
                let switched = rt
                    .clock()
                    .timeout(Duration::from_secs(20), async {
                        while c.bricks_up().1 != 6 {
                            rt.clock().sleep(Duration::from_millis(10)).await;
                        }
                    })
                    .await;
                assert!(
                    switched.is_ok(),
                    "client still on {} bricks 20 s after add-brick",
                    c.bricks_up().1
                );
                let took = rt.clock().now() - at;
                // Names spread over both sets once the new layout is in use.
                let mut names = Vec::new();
                for i in 0..24 {
                    let name = format!("/after-{i}");
                    c.write_path(&name, name.as_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("create {name} after growth: {e}"));
                    names.push(name);
                }
                for name in &names {
                    let got = c.read_path(name).await.expect("read back");
                    assert_eq!(got, name.as_bytes());
                }
                c.unmount();
                took
            })
            .await
        })
    };
    mounted.wait_for(|m| *m).await;
    let bricks = ["s1:/b2", "s2:/b2", "s3:/b2"]
        .iter()
        .map(|b| mortar_mgmt::volume::parse_brick(b).expect("brick"))
        .collect();
    pool.ok(
        "s1",
        CliRequest::AddBrick {
            name: "vol".into(),
            replica: None,
            bricks,
            force: false,
        },
    )
    .await;
    grown.set(true);
    client.await.expect("client task")
}
