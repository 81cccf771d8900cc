//! The same seed must replay the same run, and the check must notice when
//! something escapes the seam.
#![cfg(madsim)]

use mortar_scenarios::rpc::{rpc_faults, Plant};

fn twice(seed: u64, plant: Plant) -> (u64, u64) {
    let a = mortar_sim::run("rpc_faults", seed, move |sim| rpc_faults(sim, plant));
    let b = mortar_sim::run("rpc_faults", seed, move |sim| rpc_faults(sim, plant));
    assert!(a.events > 50, "scenario produced only {} events", a.events);
    (a.trace_hash, b.trace_hash)
}

#[test]
fn same_seed_same_trace_hash() {
    for seed in [1, 2, 3] {
        let (a, b) = twice(seed, Plant::None);
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
}

#[test]
fn different_seeds_differ() {
    let a = mortar_sim::run("rpc_faults", 11, |sim| rpc_faults(sim, Plant::None));
    let b = mortar_sim::run("rpc_faults", 12, |sim| rpc_faults(sim, Plant::None));
    assert_ne!(
        a.trace_hash, b.trace_hash,
        "the seed has no effect on the run"
    );
}

#[test]
fn planted_real_time_is_caught() {
    let (a, b) = twice(5, Plant::RealTime);
    assert_ne!(a, b, "real wall-clock time leaked in but the hashes agree");
}

#[test]
fn planted_os_randomness_is_caught() {
    let (a, b) = twice(5, Plant::OsRandom);
    assert_ne!(a, b, "OS randomness leaked in but the hashes agree");
}

#[test]
fn every_scenario_replays_its_seed_exactly() {
    for s in mortar_scenarios::all() {
        let run = s.run;
        let a = mortar_sim::run(s.name, 3, run);
        let b = mortar_sim::run(s.name, 3, run);
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "scenario {} is not deterministic",
            s.name
        );
    }
}
