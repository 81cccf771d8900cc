//! The brick scenario as a madsim test (any seed via MADSIM_TEST_SEED).
#![cfg(madsim)]

use mortar_sim::Sim;

#[madsim::test]
async fn brick_locks() {
    let sim = Sim::new("brick_locks");
    let _tail = mortar_sim::tail_on_panic(&sim);
    mortar_scenarios::brick::brick_locks(sim.clone()).await;
    sim.finish();
}
