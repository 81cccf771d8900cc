//! The port map: bricks tell their management daemon which port they
//! listen on, and clients ask it where a brick is.

use serde::{Deserialize, Serialize};

/// The port map's program number on the messenger (served by mgmtd).
pub const PROGRAM_PORTMAP: u16 = 0x504d;

pub mod procs {
    pub const SIGN_IN: u16 = 1;
    pub const SIGN_OUT: u16 = 2;
    pub const QUERY: u16 = 3;
    /// Wait (bounded) for a brick to sign in: see [`Wait`].
    pub const WAIT: u16 = 4;
}

/// Longest a [`Wait`] is held by the port map.
pub const WAIT_MAX_MS: u64 = 10_000;

/// Answer once `brick_path` has signed in a number of times other than
/// `seen` (a restart signs in again, even on the same port), or after
/// `wait_ms` (capped at [`WAIT_MAX_MS`]) with how things stand. Replies
/// [`Signed`]. A client that cannot reach its brick waits on this
/// instead of polling, so it reconnects the moment the brick is back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub brick_path: String,
    pub seen: u64,
    pub wait_ms: u64,
}

/// Where a brick listens now, and how many times it has signed in since
/// the answering mgmtd started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub port: Option<u16>,
    pub sign_ins: u64,
}

/// A brick announcing itself after it starts listening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    pub volume_id: String,
    pub brick_path: String,
    pub port: u16,
    pub pid: u32,
}

/// A brick going away cleanly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOut {
    pub volume_id: String,
    pub brick_path: String,
}

/// Where does this brick listen? Replies `Option<u16>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub brick_path: String,
}
