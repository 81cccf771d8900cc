//! Self-heal end to end in the simulator (issue 11): a brick back on a new
//! port is healed within the stated bound with default options, and a
//! heal whose daemons are killed midway is finished by their successors;
//! both leave every set's bricks byte-identical (`mortar_heal::compare`).
//! More seeds run through `scripts/sim-seeds`.
#![cfg(madsim)]

#[test]
fn a_returned_brick_is_healed_with_default_options() {
    // Seeds 1 and 2 draw replica 3 and disperse 4 + 2 between them.
    for seed in [1, 2] {
        mortar_sim::run("heal_on_return", seed, |sim| {
            mortar_scenarios::heal::heal_on_return(sim)
        });
    }
}

#[test]
fn a_heal_cut_short_by_killed_daemons_resumes() {
    for seed in [1, 2] {
        mortar_sim::run("heal_shd_killed", seed, |sim| {
            mortar_scenarios::heal::heal_shd_killed(sim)
        });
    }
}
