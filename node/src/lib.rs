//! `mortar-node`: the brick server.
//!
//! Owns the `Storage` trait and its backends (a POSIX brick directory and a
//! simulated disk), handles, xattrs, changelog counters, the pending-heal
//! index and locks, and serves file operations over the messenger.
//!
//! It must not know about other bricks: replication, erasure coding and
//! distribution happen in the client graph.
//!
//! The brick server is built in issue 3; this crate holds its place in the
//! workspace so the dependency graph is fixed from the start.
