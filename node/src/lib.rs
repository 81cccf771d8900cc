//! `mortar-node`: the brick server.
//!
//! Owns the [`storage::Storage`] trait and its backends (a POSIX brick
//! directory and a simulated disk), the brick logic on top of it (handles,
//! xattrs, changelog counters, the pending-heal index), locks, and the
//! service that serves file operations over the messenger.
//!
//! It must not know about other bricks: replication, erasure coding and
//! distribution happen in the client graph.

pub mod brick;
pub mod locks;
pub mod remote;
pub mod server;
pub mod service;
pub mod storage;
