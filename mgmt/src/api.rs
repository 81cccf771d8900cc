//! What travels between management daemons: the peer protocol that runs
//! transactions. The CLI program's types are wire contracts shared with
//! clients and live in `mortar_proto::mgmt` (re-exported here).

use serde::{Deserialize, Serialize};

pub use mortar_proto::mgmt::*;

use crate::state::{ClusterState, Op, Peer};
use crate::txnlock::LockOwner;

/// mgmtd-to-mgmtd program.
pub const PROGRAM_MGMT_PEER: u16 = 0x4d50;

/// Peer protocol procedures.
pub mod peer_procs {
    pub const HELLO: u16 = 1;
    pub const LOCK: u16 = 2;
    pub const UNLOCK: u16 = 3;
    pub const STAGE: u16 = 4;
    pub const BRICK_OP: u16 = 5;
    pub const COMMIT: u16 = 6;
    pub const POST_VALIDATE: u16 = 7;
    pub const GET_STATE: u16 = 8;
    pub const JOIN: u16 = 9;
    pub const LEAVE: u16 = 10;
    pub const BRICK_STATUS: u16 = 11;
    pub const MIGRATION_STATUS: u16 = 12;
    pub const SHD_STATUS: u16 = 13;
    /// `volume heal NAME` on another server: tell this one's self-heal daemon.
    pub const HEAL_NOW: u16 = 14;
    /// The self-heal statistics this server's daemon reported for a
    /// volume (`volume heal NAME statistics`).
    pub const HEAL_STATS: u16 = 15;
}

/// "Who are you?" — the first thing peers say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub from: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub me: Peer,
    /// Peers (other than the caller) this one already has: a server in
    /// another pool cannot be probed into this one.
    pub pool_size: usize,
    pub volumes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockReq {
    pub key: String,
    pub owner: LockOwner,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockReq {
    pub key: String,
    pub peer: String,
    pub txn_id: u64,
}

/// A phase of a transaction on one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseReq {
    pub key: String,
    pub peer: String,
    pub txn_id: u64,
    pub op: Op,
    /// `start force` and friends.
    pub force: bool,
}

/// Sent to a newly probed server: the pool it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReq {
    pub state: ClusterState,
}

/// Sent to a detached server: forget the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveReq {
    pub from: String,
}

pub type PeerResult<T> = Result<T, String>;
