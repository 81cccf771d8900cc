//! Compact traces of a few canonical cases, as snapshots: the faults the
//! runner began, ended or skipped, and every workload op with what the
//! model then holds, in order and without times. A change in what the
//! system does under these faults shows up here as a diff to review
//! (`cargo insta review`, or `INSTA_UPDATE=always` to take it).
#![cfg(madsim)]

use std::sync::{Arc, Mutex};

use mortar_scenarios::plan::Case;

/// Run `case` with `seed`; its compact trace, fault and op lines only
/// (the final check's timing notes are left out: they are figures).
fn compact_trace(seed: u64, case: &str) -> String {
    let case: Case = case.parse().expect("the canonical case parses");
    let out = Arc::new(Mutex::new(Vec::new()));
    let keep = out.clone();
    mortar_sim::run("trace_snapshot", seed, move |sim| async move {
        mortar_scenarios::cluster::run_case(sim.clone(), case).await;
        *keep.lock().expect("trace") = sim.trace().compact();
    });
    let lines = out.lock().expect("trace").clone();
    lines
        .into_iter()
        .filter(|l| l.contains("fault: ") || l.contains(": op "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_brick_killed_under_writes_on_replica_3() {
    insta::assert_snapshot!(compact_trace(
        1,
        "layout=replica3 | plan: @1000+4000 kill s2/0 \
         | c1: w f0 0+512#1, w f0 512+512#2, r f0, mv f0 f1, r f1, t f1 100, rm f1, c f1"
    ));
}

#[test]
fn a_power_loss_and_a_split_on_disperse() {
    insta::assert_snapshot!(compact_trace(
        2,
        "layout=disperse4+2 clients=2 | plan: @500+3000 crash s3; @4000+3000 split s1,c1 \
         | c1: w f0 0+2048#3, r f0, w f2 100+100#4 | c2: c f0, w f0 9000+10#5, r f0"
    ));
}
