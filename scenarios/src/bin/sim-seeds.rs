//! Run every scenario over a range of seeds and report each failure with
//! the command that replays it.
//!
//! Usage: sim-seeds [--seeds N] [--from SEED] [--scenario NAME] | --list
#![allow(clippy::print_stdout)] // --list prints scenario names for scripts.

#[cfg(madsim)]
fn main() {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    let mut seeds: u64 = 20;
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
    let mut failures = Vec::new();
    let mut runs = 0;
    for s in &scenarios {
        let n = if only.is_some() {
            seeds
        } else {
            (seeds / s.seeds_divisor.max(1)).max(1)
        };
        for seed in from..from + n {
            runs += 1;
            let run = s.run;
            let name = s.name;
            let r = catch_unwind(AssertUnwindSafe(|| mortar_sim::run(name, seed, run)));
            if r.is_err() {
                failures.push((name, seed));
            }
        }
    }
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
    eprintln!("usage: sim-seeds [--seeds N] [--from SEED] [--scenario NAME] | --list");
    std::process::exit(2)
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-seeds runs only in the simulator build: use scripts/sim-seeds");
    std::process::exit(2);
}
