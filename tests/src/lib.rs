//! Helpers for process-level tests: locate the built `mortar` binary and
//! run it against loopback addresses.

use std::path::PathBuf;

/// Path of the `mortar` binary in the same target directory as the running
/// test (`target/<profile>/mortar`). `scripts/test` builds it before the
/// tests run; run `cargo build -p mortar-cli` first when testing by hand.
pub fn mortar_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/mortar
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("mortar");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p mortar-cli` (scripts/test does this)",
        bin.display()
    );
    bin
}

/// A fresh scratch directory for one test (removed first if left over).
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mortar-tests-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch directory");
    d
}

/// Poll `cond` every 20 ms for at most `limit`. These tests drive real
/// processes in real time, so polling with a deadline is the only way to
/// wait for them.
pub fn wait(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let step = std::time::Duration::from_millis(20);
    let mut waited = std::time::Duration::ZERO;
    while !cond() {
        assert!(waited < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(step);
        waited += step;
    }
}
