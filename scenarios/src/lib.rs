//! `mortar-scenarios`: fault scenarios run in the simulator.
//!
//! Each scenario is a correctness workload plus fault workloads, then a
//! healthy phase that must converge. Scenarios draw their configuration
//! from the seed and print it, so a failing seed is a complete bug report.
//! Exists only under `--cfg madsim`.
//!
//! It drives the product crates only through their public interfaces
//! (as an operator, a client or a fault would) and must never be a
//! dependency of anything that ships.

#[cfg(madsim)]
pub mod brick;
#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod heal;
#[cfg(madsim)]
pub mod heal_info;
#[cfg(madsim)]
pub mod mgmt;
pub mod plan;
pub mod regressions;
#[cfg(madsim)]
pub mod rpc;

#[cfg(madsim)]
mod registry {
    use std::future::Future;
    use std::pin::Pin;

    use mortar_sim::Sim;

    pub type ScenarioFuture = Pin<Box<dyn Future<Output = ()>>>;

    /// A named scenario the seed runner can execute.
    pub struct Scenario {
        pub name: &'static str,
        pub run: fn(Sim) -> ScenarioFuture,
        /// A sweep of N seeds runs this one on its first N / `seeds_divisor`
        /// (at least one): whole-cluster heal scenarios cost seconds per
        /// seed. `--scenario NAME` runs it on every seed asked.
        pub seeds_divisor: u64,
        /// For scenarios that run a [`crate::plan::Case`]: the case a seed
        /// stands for, so a failure is printed as a case, shrunk and saved.
        pub case: Option<fn(u64) -> crate::plan::Case>,
    }

    /// Every scenario, for `scripts/sim-seeds`.
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario {
                name: "rpc_faults",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::rpc::rpc_faults(sim, crate::rpc::Plant::None)),
            },
            Scenario {
                name: "brick_locks",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::brick::brick_locks(sim)),
            },
            Scenario {
                name: "mgmt_originator_crash",
                seeds_divisor: 1,
                case: None,
                // The phase to crash in is drawn from the seed.
                run: |sim| {
                    let phase = crate::mgmt::PHASES
                        [sim.with_rng(|r| r.below(crate::mgmt::PHASES.len() as u64)) as usize];
                    Box::pin(crate::mgmt::originator_crash(sim, phase))
                },
            },
            Scenario {
                name: "mgmt_concurrent",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::mgmt::concurrent_transactions(sim)),
            },
            Scenario {
                name: "mgmt_partition_commit",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::mgmt::partition_during_commit(sim)),
            },
            Scenario {
                name: "mgmt_brick_lifecycle",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::mgmt::brick_lifecycle(sim)),
            },
            Scenario {
                name: "mgmt_sync_during_start",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::mgmt::converge_during_start(sim)),
            },
            Scenario {
                name: "mgmt_probe_nxdomain",
                seeds_divisor: 1,
                case: None,
                run: |sim| Box::pin(crate::mgmt::probe_of_a_missing_name(sim)),
            },
            Scenario {
                name: "heal_info_dns",
                // 60 bricks on five servers: over a second per seed on a
                // debug build, and the seed only moves message timing
                // (the faults are fixed), so 40 in CI's sweep of 200.
                seeds_divisor: 5,
                case: None,
                run: |sim| {
                    Box::pin(async move {
                        crate::heal_info::heal_info_dns(sim).await;
                    })
                },
            },
            Scenario {
                name: "heal_on_return",
                seeds_divisor: 10,
                case: None,
                // The layout is drawn from the seed.
                run: |sim| Box::pin(crate::heal::heal_on_return(sim)),
            },
            Scenario {
                name: "heal_shd_killed",
                seeds_divisor: 10,
                case: None,
                run: |sim| Box::pin(crate::heal::heal_shd_killed(sim)),
            },
            Scenario {
                name: "cluster",
                // About a second per case on a debug build: 50 in CI's
                // sweep of 200.
                seeds_divisor: 4,
                case: Some(crate::plan::case_for_seed),
                // The whole case (settings, plan, workload) is drawn from
                // the seed by the case strategy; a failure shrinks.
                run: |sim| {
                    let case = crate::plan::case_for_seed(sim.seed());
                    Box::pin(crate::cluster::run_case(sim, case))
                },
            },
            Scenario {
                name: "power_outage",
                // The cluster runner on cases aimed at power loss
                // mid-write (`plan::strategy::outage_case`). A third of a
                // second per case: every seed of CI's sweep.
                seeds_divisor: 1,
                case: Some(crate::plan::outage_case_for_seed),
                run: |sim| {
                    let case = crate::plan::outage_case_for_seed(sim.seed());
                    Box::pin(crate::cluster::run_case(sim, case))
                },
            },
            Scenario {
                name: "client_writes",
                seeds_divisor: 1,
                case: None,
                // The volume layout is drawn from the seed.
                run: |sim| {
                    let all = crate::client::Layout::ALL;
                    let layout = all[sim.with_rng(|r| r.below(all.len() as u64)) as usize];
                    Box::pin(crate::client::acknowledged_writes(sim, layout))
                },
            },
        ]
    }
}

#[cfg(madsim)]
pub use registry::*;
