//! The launcher conformance suite (`mortar_mgmt::launcher_conformance`) on
//! the simulated launcher: bricks and self-heal daemons as processes on a
//! simulated host, with brick directories on its simulated disk.
#![cfg(madsim)]

use std::future::Future;
use std::sync::Arc;

use mortar_mgmt::launcher_conformance::{self as suite, Site};
use mortar_net::{Endpoint, Runtime};
use mortar_scenarios::mgmt::SimLauncher;
use mortar_sim::{host_ip, Sim};
use mortar_storage::sim::SimDisk;

const HOST: &str = "s1";

struct SimSite {
    rt: Runtime,
    launcher: Arc<SimLauncher>,
    sim: Sim,
    disk: Arc<SimDisk>,
}

impl Site for SimSite {
    type L = SimLauncher;

    fn launcher(&self) -> &SimLauncher {
        &self.launcher
    }

    fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn mgmt_listen(&self) -> Endpoint {
        format!("{HOST}:0").parse().expect("endpoint")
    }

    fn brick_path(&self, name: &str) -> String {
        // The simulated launcher creates the directory on its disk itself.
        format!("/bricks/{name}")
    }

    fn unusable_brick_path(&self) -> String {
        // The simulated disk refuses `..` in a path, as a brick must.
        "/bricks/../escape".into()
    }

    fn hostnames(&self) -> Vec<String> {
        vec![HOST.into()]
    }

    fn restarted_launcher(&self) -> SimLauncher {
        SimLauncher::new(self.sim.clone(), HOST, self.disk.clone())
    }
}

/// Run one check on a fresh simulated host, from a process on that host
/// (bricks listen on the host of their mgmtd, here the suite's stand-in).
fn on_sim_site<F, Fut>(test: &str, seed: u64, check: F)
where
    F: FnOnce(SimSite) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    mortar_sim::run(test, seed, move |sim: Sim| async move {
        sim.add_host(HOST, host_ip(1));
        let disk = SimDisk::new(sim.seed());
        let launcher = Arc::new(SimLauncher::new(sim.clone(), HOST, disk.clone()));
        let s = sim.clone();
        sim.run_on(HOST, "conformance", move |rt| {
            check(SimSite {
                rt,
                launcher,
                sim: s,
                disk,
            })
        })
        .await;
    });
}

#[test]
fn started_brick_runs_answers_and_stops() {
    on_sim_site("launcher_serve", 1, |site| async move {
        suite::started_brick_runs_answers_and_stops(&site).await
    });
}

#[test]
fn stopping_a_stopped_brick_is_a_no_op() {
    on_sim_site("launcher_stop_twice", 2, |site| async move {
        suite::stopping_a_stopped_brick_is_a_no_op(&site).await
    });
}

#[test]
fn start_failure_names_the_brick() {
    on_sim_site("launcher_unusable", 3, |site| async move {
        suite::start_failure_names_the_brick(&site).await
    });
}

#[test]
fn shd_starts_and_stops() {
    on_sim_site("launcher_shd", 4, |site| async move {
        suite::shd_starts_and_stops(&site).await
    });
}

#[test]
fn a_restarted_mgmtd_adopts_a_running_brick() {
    on_sim_site("launcher_adopt", 5, |site| async move {
        suite::a_restarted_mgmtd_adopts_a_running_brick(&site).await
    });
}
