//! `mortar-node`: the brick server.
//!
//! Owns one brick's logic on top of a [`mortar_storage::Storage`] (gfid
//! handles, entry and inode operations, the xattr rules, changelog
//! counters and the pending-heal index), its lock table, the service that
//! serves file operations over the messenger, and starting and stopping a
//! brick process's server. The typed stub others use to talk to a brick
//! is the client side of the brick program and lives in `mortar-client`
//! (`mortar_client::remote::RemoteBrick`).
//!
//! It must never know about other bricks: replication, erasure coding and
//! distribution happen in the client graph, and healing between bricks in
//! the self-heal daemon. It must not depend on the management daemon
//! (`mortar-mgmt`) or the client (`mortar-client`); it reaches mgmtd only
//! through the port-map wire types in `mortar-proto`. Disks are not its
//! business either: backends live in `mortar-storage`, and a brick works
//! on any of them.

// Functions stay short enough to read at once (issue 10); clippy.toml
// sets the bound.
#![warn(clippy::too_many_lines)]

pub mod brick;
pub mod error;
pub mod locks;
pub mod server;
pub mod service;

pub use error::NodeError;
