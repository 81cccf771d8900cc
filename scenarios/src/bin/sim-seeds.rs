//! Run every scenario over a range of seeds and report each failure with
//! the command that replays it.
//!
//! Usage: sim-seeds [--seeds N] [--from SEED] [--scenario NAME] [--jobs J] | --list
//!
//! Seeds run on `--jobs` threads at once (default: the machine's cores);
//! each run is its own simulation on its own thread, so the outcome of a
//! seed does not depend on what runs beside it. Log lines of runs that
//! overlap interleave: `--jobs 1`, or the replay command, gives one run's
//! log alone.
#![allow(clippy::print_stdout)] // --list prints scenario names for scripts.

#[cfg(madsim)]
fn main() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    let mut seeds: u64 = 20;
    let mut jobs: usize = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut from: u64 = 1;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--seeds" => {
                seeds = val("--seeds")
                    .parse()
                    .unwrap_or_else(|_| usage("--seeds takes a number"))
            }
            "--from" => {
                from = val("--from")
                    .parse()
                    .unwrap_or_else(|_| usage("--from takes a number"))
            }
            "--scenario" => only = Some(val("--scenario")),
            "--jobs" => {
                jobs = val("--jobs")
                    .parse()
                    .ok()
                    .filter(|j| *j > 0)
                    .unwrap_or_else(|| usage("--jobs takes a number above 0"))
            }
            "--list" => {
                for s in mortar_scenarios::all() {
                    println!("{}", s.name);
                }
                return;
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let scenarios: Vec<_> = mortar_scenarios::all()
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
        .collect();
    if scenarios.is_empty() {
        usage("no scenario by that name");
    }
    // Every (scenario, seed) run, in the order a one-thread sweep takes.
    let mut runs = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let n = if only.is_some() {
            seeds
        } else {
            (seeds / s.seeds_divisor.max(1)).max(1)
        };
        runs.extend((from..from + n).map(|seed| (i, seed)));
    }
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs.len()) {
            #[allow(clippy::disallowed_methods)] // Sweep workers, outside any simulation.
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, seed)) = runs.get(k) else { break };
                let (name, run) = (scenarios[i].name, scenarios[i].run);
                let r = catch_unwind(AssertUnwindSafe(|| mortar_sim::run(name, seed, run)));
                if r.is_err() {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push(k);
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_unstable();
    let failures: Vec<_> = failed
        .iter()
        .map(|&k| (scenarios[runs[k].0].name, runs[k].1))
        .collect();
    let runs = runs.len();
    eprintln!();
    for (name, seed) in &failures {
        eprintln!(
            "FAILED {name} seed {seed}: replay with {}",
            replay(name, *seed)
        );
    }
    eprintln!(
        "sim-seeds: {} passed, {} failed",
        runs - failures.len(),
        failures.len()
    );
    std::process::exit(if failures.is_empty() { 0 } else { 1 });
}

#[cfg(madsim)]
fn replay(name: &str, seed: u64) -> String {
    mortar_sim::replay_command(name, seed)
}

#[cfg(madsim)]
fn usage(why: &str) -> ! {
    if !why.is_empty() {
        eprintln!("sim-seeds: {why}");
    }
    eprintln!("usage: sim-seeds [--seeds N] [--from SEED] [--scenario NAME] [--jobs J] | --list");
    std::process::exit(2)
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-seeds runs only in the simulator build: use scripts/sim-seeds");
    std::process::exit(2);
}
