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
