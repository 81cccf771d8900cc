//! `mortar-mgmt`: the management daemon (peers, volumes, multi-phase
//! transactions, port map, brick and self-heal daemon supervision, volfiles).
//!
//! It must not spawn OS processes directly: bricks and self-heal daemons are
//! started through a launcher trait, so the simulator can run them as tasks.
//!
//! Decisions (option checks, volume plans, volfile text, transaction
//! phases) are plain functions over data, tested without a runtime.

pub mod api;
pub mod daemon;
/// The shared test bodies every `Launcher` must pass (test sites only).
#[cfg(feature = "test-support")]
pub mod launcher_conformance;
/// The option table is shared with clients and bricks.
pub use mortar_proto::options;
pub mod state;
pub mod store;
pub mod txnlock;
pub mod volfile;
pub mod volume;
