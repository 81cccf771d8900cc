//! A client's writes under brick kills and partitions, for every volume
//! layout the client serves, in the simulator.
#![cfg(madsim)]

use std::time::Duration;

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

#[test]
fn acknowledged_writes_survive_disperse_4_2() {
    mortar_sim::run("client_writes", 24, |sim| {
        acknowledged_writes(sim, Layout::Disperse4x2)
    });
}

/// Seeds that once ended in split-brain (a stale copy judged good from a
/// partial view) or in a file lost from distribute's view; each must pass
/// now, layout drawn from the seed among the replicated layouts (as
/// `scripts/sim-seeds` did before disperse joined the draw).
#[test]
fn seeds_that_found_replicate_bugs() {
    for seed in [12, 17, 18, 20, 33, 36] {
        mortar_sim::run("client_writes", seed, |sim| {
            let all = Layout::REPLICATED;
            let layout = all[sim.with_rng(|r| r.below(all.len() as u64)) as usize];
            acknowledged_writes(sim, layout)
        });
    }
}

/// mgmtd pushes volfile changes: the mounted client switches graphs well
/// within a second of add-brick (its watch is only renewed every 30 s, so
/// a poll could not do this).
#[test]
fn mounted_client_follows_add_brick_at_once() {
    for seed in [1, 2, 3] {
        let out = std::sync::Arc::new(std::sync::Mutex::new(None));
        let o = out.clone();
        mortar_sim::run("volfile_follows", seed, move |sim| async move {
            let took = mortar_scenarios::client::volfile_follows(sim).await;
            *o.lock().unwrap() = Some(took);
        });
        let took = out.lock().unwrap().expect("scenario ran");
        eprintln!("seed {seed}: client switched {took:?} after add-brick answered");
        assert!(took < Duration::from_secs(1), "switch took {took:?}");
    }
}
