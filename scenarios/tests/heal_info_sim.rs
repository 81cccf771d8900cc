//! `heal info` on a 12 x (4 + 1) volume never waits on DNS (issue 11,
//! the seed case), in the simulator.
#![cfg(madsim)]

use std::time::Duration;

#[test]
fn heal_info_does_not_wait_on_dns() {
    for seed in [1, 2] {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let o = out.clone();
        mortar_sim::run("heal_info_dns", seed, move |sim| async move {
            *o.lock().unwrap() = mortar_scenarios::heal_info::heal_info_dns(sim).await;
        });
        let took = out.lock().unwrap().clone();
        assert_eq!(took.len(), 5, "every phase ran");
        let bound = Duration::from_millis(mortar_scenarios::heal_info::INFO_BOUND_MS);
        for (phase, t) in took {
            eprintln!("seed {seed}: {phase}: {t:?}");
            assert!(t <= bound, "{phase}: {t:?}");
        }
    }
}
