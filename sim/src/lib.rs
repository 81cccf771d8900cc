//! `mortar-sim`: deterministic simulation of whole Mortar clusters.
//!
//! Built on madsim, so it exists only under `RUSTFLAGS="--cfg madsim"` (with
//! its own target directory); ordinary builds see an empty crate. madsim
//! gives deterministic scheduling, simulated time, simulated TCP between
//! hosts, node kill/restart and link clogging. This crate adds what Mortar
//! needs on top:
//!
//! * **hosts** with names, addresses and a DNS table (the simulated resolver
//!   with per-name latency, NXDOMAIN, SERVFAIL and hangs);
//! * **processes** inside a host (a brick, an mgmtd, a client), each a task
//!   scope that can be killed and restarted while the host runs on;
//! * **host crash and restart**, with a per-host disk slot whose crash hook
//!   the storage backend supplies (unsynced data lost or torn);
//! * **partitions**, symmetric or one-way between host sets, and repair;
//!   **message delay and loss** (on TCP, a lost segment is retransmitted, so
//!   loss shows up as delay; connection attempts can fail outright);
//! * a **trace hash** over every event, with simulated time, so running a
//!   seed twice proves the run is deterministic;
//! * the **seed and a one-line replay command** printed at the start of
//!   every run.
//!
//! It depends on the seam (`mortar-net`) and `mortar-proto` only, knows
//! nothing of bricks, volumes or clients (scenarios bring those), and must
//! never be a dependency of a production build.

#[cfg(madsim)]
mod engine;

#[cfg(madsim)]
pub use engine::*;
