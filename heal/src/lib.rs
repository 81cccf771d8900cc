//! `mortar-heal`: the self-heal daemon (index heal, full sweep, replicate
//! and disperse repair), `heal info` and split-brain resolution.
//!
//! It must not block on anything without a deadline: `heal info` answers
//! from the pending-heal indices within a bounded time per brick.
//!
//! Built after the brick server and client; this crate holds its place in
//! the workspace so the dependency graph is fixed from the start.
