//! `mortar-mgmt`: the management daemon.
//!
//! **Owns:** the cluster state (peers, volumes, their versions), the
//! multi-phase transactions that change it across the pool and their
//! locks, state convergence between peers, the port map, the CLI's
//! requests, volfile generation, the on-disk store of the state, and the
//! supervision of this server's bricks and self-heal daemon.
//!
//! **Must never depend on:** the client stack (`mortar-client`,
//! `mortar-heal`), the CLI (`mortar-cli`), the simulator (`mortar-sim`,
//! `mortar-scenarios`) or any OS process API. It does not spawn
//! processes: bricks and self-heal daemons start through the
//! [`daemon::Launcher`] trait, so the simulator runs them as tasks, and
//! the store goes through the brick's `Storage` trait, so it runs on the
//! simulator's disk. Its only neighbours are the seam (`mortar-net`), the
//! wire types (`mortar-proto`) and the storage trait.
//!
//! Decisions (option checks, volume plans, volfile text, transaction
//! steps, conflict repair) are plain functions over data, tested without
//! a runtime.

#![warn(clippy::too_many_lines)]

pub mod api;
pub mod daemon;
pub mod error;
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

pub use error::MgmtError;
