//! The port map: bricks tell their management daemon which port they
//! listen on, and clients ask it where a brick is.

use serde::{Deserialize, Serialize};

/// The port map's program number on the messenger (served by mgmtd).
pub const PROGRAM_PORTMAP: u16 = 0x504d;

pub mod procs {
    pub const SIGN_IN: u16 = 1;
    pub const SIGN_OUT: u16 = 2;
    pub const QUERY: u16 = 3;
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
