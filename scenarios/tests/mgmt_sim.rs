//! Management transactions under crashes and partitions, in the simulator.
#![cfg(madsim)]

use mortar_scenarios::mgmt;

/// The originator crashes at every phase boundary in turn.
#[test]
fn originator_crash_at_every_phase() {
    for (i, &phase) in mgmt::PHASES.iter().enumerate() {
        mortar_sim::run("mgmt_originator_crash", 100 + i as u64, move |sim| {
            mgmt::originator_crash(sim, phase)
        });
    }
}

#[test]
fn concurrent_transactions_from_different_peers() {
    mortar_sim::run("mgmt_concurrent", 7, mgmt::concurrent_transactions);
}

#[test]
fn a_peer_partitioned_during_commit_catches_up() {
    mortar_sim::run("mgmt_partition_commit", 8, mgmt::partition_during_commit);
}

#[test]
fn bricks_restart_with_their_mgmtd() {
    mortar_sim::run("mgmt_brick_lifecycle", 9, mgmt::brick_lifecycle);
}

#[test]
fn probe_of_a_name_with_nxdomain_fails_at_once() {
    mortar_sim::run("mgmt_probe_nxdomain", 10, mgmt::probe_of_a_missing_name);
}

#[test]
fn a_convergence_during_a_start_leaves_its_bricks_running() {
    mortar_sim::run("mgmt_sync_during_start", 11, mgmt::converge_during_start);
}
