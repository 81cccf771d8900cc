//! Every failure the scenarios found, replayed as its fixed case
//! (`src/regressions.rs`): each must now pass.
#![cfg(madsim)]

use mortar_scenarios::plan::Case;
use mortar_scenarios::regressions::ALL;

#[test]
fn every_kept_failure_passes() {
    for r in ALL {
        let case: Case = r.case.parse().expect("a regression's case parses");
        eprintln!("regression {}: {}", r.name, r.postmortem);
        mortar_sim::run(r.name, r.seed, move |sim| {
            mortar_scenarios::cluster::run_case(sim, case)
        });
    }
}
