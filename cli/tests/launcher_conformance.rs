//! The launcher conformance suite (`mortar_mgmt::launcher_conformance`) on
//! the production launcher: bricks and self-heal daemons as OS processes
//! of the `mortar` binary that cargo builds for this test.
//!
//! It lives beside the binary rather than in the process-level `tests/`
//! crate because it links the launcher itself, which that crate must never
//! do; `CARGO_BIN_EXE_mortar` also guarantees the binary is this build's.

use std::path::PathBuf;

use mortar_mgmt::launcher_conformance::{self as suite, Site};
use mortar_net::{Endpoint, Runtime};

// The launcher is a module of the binary; compile the same file here.
#[allow(dead_code)] // PosixFs and the rest serve the binary, not this suite.
#[path = "../src/launch.rs"]
mod launch;

use launch::ProcessLauncher;

struct ProcessSite {
    rt: Runtime,
    launcher: ProcessLauncher,
    dir: PathBuf,
}

impl ProcessSite {
    /// A launcher with its own scratch work directory (removed on drop).
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mortar-launcher-conformance-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let rt = Runtime::production(format!("launcher conformance {tag}"));
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_mortar"));
        let launcher = ProcessLauncher::new(rt.clone(), bin, &dir.join("work")).expect("launcher");
        ProcessSite { rt, launcher, dir }
    }
}

impl Drop for ProcessSite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Site for ProcessSite {
    type L = ProcessLauncher;

    fn launcher(&self) -> &ProcessLauncher {
        &self.launcher
    }

    fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn mgmt_listen(&self) -> Endpoint {
        "127.0.0.1:0".parse().expect("endpoint")
    }

    fn brick_path(&self, name: &str) -> String {
        // mgmtd's LocalFs creates brick directories before the launcher
        // runs; `mortar brick` refuses a missing one.
        let p = self.dir.join("bricks").join(name);
        std::fs::create_dir_all(&p).expect("brick directory");
        p.display().to_string()
    }

    fn unusable_brick_path(&self) -> String {
        // Below a regular file: no directory can ever exist there.
        let file = self.dir.join("a-file");
        std::fs::write(&file, b"not a directory").expect("file");
        file.join("brick").display().to_string()
    }

    fn hostnames(&self) -> Vec<String> {
        vec!["127.0.0.1".into()]
    }

    fn restarted_launcher(&self) -> ProcessLauncher {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_mortar"));
        ProcessLauncher::new(self.rt.clone(), bin, &self.dir.join("work")).expect("launcher")
    }
}

#[tokio::test]
async fn started_brick_runs_answers_and_stops() {
    suite::started_brick_runs_answers_and_stops(&ProcessSite::new("serve")).await;
}

#[tokio::test]
async fn stopping_a_stopped_brick_is_a_no_op() {
    suite::stopping_a_stopped_brick_is_a_no_op(&ProcessSite::new("stop-twice")).await;
}

#[tokio::test]
async fn start_failure_names_the_brick() {
    suite::start_failure_names_the_brick(&ProcessSite::new("unusable")).await;
}

#[tokio::test]
async fn shd_starts_and_stops() {
    suite::shd_starts_and_stops(&ProcessSite::new("shd")).await;
}

#[tokio::test]
async fn a_restarted_mgmtd_adopts_a_running_brick() {
    suite::a_restarted_mgmtd_adopts_a_running_brick(&ProcessSite::new("adopt")).await;
}
