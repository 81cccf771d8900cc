//! A client's writes under brick kills and partitions, for every volume
//! layout the client serves, in the simulator.
#![cfg(madsim)]

use mortar_scenarios::client::{acknowledged_writes, Layout};

#[test]
fn acknowledged_writes_survive_replica_3() {
    mortar_sim::run("client_writes", 21, |sim| {
        acknowledged_writes(sim, Layout::Replica3)
    });
}

#[test]
fn acknowledged_writes_survive_arbiter() {
    mortar_sim::run("client_writes", 22, |sim| {
        acknowledged_writes(sim, Layout::Arbiter)
    });
}

#[test]
fn acknowledged_writes_survive_distributed_replicate_2x3() {
    mortar_sim::run("client_writes", 23, |sim| {
        acknowledged_writes(sim, Layout::DistRep2x3)
    });
}

/// Seeds that once ended in split-brain (a stale copy judged good from a
/// partial view) or in a file lost from distribute's view; each must pass
/// now, layout drawn from the seed as `scripts/sim-seeds` does.
#[test]
fn seeds_that_found_replicate_bugs() {
    let scenario = mortar_scenarios::all()
        .into_iter()
        .find(|s| s.name == "client_writes")
        .expect("client_writes is registered");
    for seed in [12, 17, 18, 20, 33, 36] {
        mortar_sim::run("client_writes", seed, scenario.run);
    }
}
