//! `mortar-scenarios`: fault scenarios run in the simulator.
//!
//! Each scenario is a correctness workload plus fault workloads, then a
//! healthy phase that must converge. Scenarios draw their configuration
//! from the seed and print it, so a failing seed is a complete bug report.
//! Exists only under `--cfg madsim`.

#[cfg(madsim)]
pub mod brick;
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
    }

    /// Every scenario, for `scripts/sim-seeds`.
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario {
                name: "rpc_faults",
                run: |sim| Box::pin(crate::rpc::rpc_faults(sim, crate::rpc::Plant::None)),
            },
            Scenario {
                name: "brick_locks",
                run: |sim| Box::pin(crate::brick::brick_locks(sim)),
            },
        ]
    }
}

#[cfg(madsim)]
pub use registry::*;
