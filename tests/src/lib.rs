//! Helpers for process-level tests: locate the built `mortar` binary and
//! run it against loopback addresses.

use std::path::PathBuf;

/// Path of the `mortar` binary built alongside the tests.
pub fn mortar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mortar"))
}
