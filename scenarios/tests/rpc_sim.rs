//! The RPC fault scenario as an ordinary madsim test: any seed
//! (MADSIM_TEST_SEED), many seeds (MADSIM_TEST_NUM), or a determinism
//! re-run (MADSIM_TEST_CHECK_DETERMINISM).
#![cfg(madsim)]

use mortar_scenarios::rpc::{rpc_faults, Plant};
use mortar_sim::Sim;

#[madsim::test]
async fn rpc_partition_and_process_kill() {
    let sim = Sim::new("rpc_partition_and_process_kill");
    let _tail = mortar_sim::tail_on_panic(&sim);
    rpc_faults(sim.clone(), Plant::None).await;
    sim.finish();
}
