//! `mortar-mgmt`: the management daemon (peers, volumes, multi-phase
//! transactions, port map, brick and self-heal daemon supervision, volfiles).
//!
//! It must not spawn OS processes directly: bricks and self-heal daemons are
//! started through a launcher trait, so the simulator can run them as tasks.
//!
//! The daemon is built in issue 4; this crate holds its place in the
//! workspace so the dependency graph is fixed from the start.
