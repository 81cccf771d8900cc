//! What travels to and between management daemons: CLI requests and
//! replies, and the peer protocol that runs transactions.

use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, Op, Peer};
use crate::txnlock::LockOwner;
use crate::volume::{BrickSpec, CreateRequest, Volume};

/// The CLI program (Unix socket, or TCP with `--remote-host`).
pub const PROGRAM_MGMT_CLI: u16 = 0x4d43;
/// mgmtd-to-mgmtd program.
pub const PROGRAM_MGMT_PEER: u16 = 0x4d50;

/// The CLI program has one procedure; the request says what to do.
pub const PROC_CLI: u16 = 1;

/// Send one CLI request over `rpc`. The outer error is the transport's
/// (unreachable, timed out); the inner one is mgmtd refusing, with its
/// reason.
pub async fn cli_call(
    rpc: &mortar_net::rpc::RpcClient,
    req: &CliRequest,
    timeout: std::time::Duration,
) -> Result<Result<CliReply, String>, mortar_net::rpc::RpcError> {
    rpc.call_typed(
        PROGRAM_MGMT_CLI,
        PROC_CLI,
        req,
        bytes::Bytes::new(),
        timeout,
    )
    .await
    .map(|(reply, _)| reply)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CliRequest {
    PeerProbe {
        host: String,
    },
    PeerDetach {
        host: String,
        force: bool,
    },
    PeerStatus,
    /// Adopt `host`'s view of every object that differs (repairs a
    /// diverged peer without editing files).
    PeerSync {
        host: String,
    },
    PoolList,
    VolumeCreate(CreateRequest),
    VolumeStart {
        name: String,
        force: bool,
    },
    VolumeStop {
        name: String,
        force: bool,
    },
    VolumeDelete {
        name: String,
    },
    VolumeInfo {
        name: Option<String>,
    },
    VolumeStatus {
        name: Option<String>,
    },
    VolumeSet {
        name: String,
        key: String,
        value: String,
    },
    VolumeGet {
        name: String,
        key: Option<String>,
    },
    VolumeReset {
        name: String,
        key: Option<String>,
    },
    VolumeList,
    AddBrick {
        name: String,
        replica: Option<u32>,
        bricks: Vec<BrickSpec>,
        force: bool,
    },
    RemoveBrick {
        name: String,
        bricks: Vec<BrickSpec>,
        action: RemoveBrickAction,
    },
    ReplaceBrick {
        name: String,
        old: BrickSpec,
        new: BrickSpec,
    },
    GetVolfile {
        name: String,
        brick: Option<BrickSpec>,
    },
    /// A client's volfile subscription (a long poll): answered with the
    /// client volfile as soon as its hash differs from `known`
    /// ([`volfile_hash`]), or with [`CliReply::VolfileUnchanged`] after at
    /// most `wait_ms` (capped at [`VOLFILE_WATCH_MAX`]).
    WatchVolfile {
        name: String,
        known: u64,
        wait_ms: u64,
    },
    /// From a migration process (`remove-brick start`): progress so far.
    MigrationReport(MigrationView),
}

/// Longest a volfile watch is held open by mgmtd.
pub const VOLFILE_WATCH_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// A stable 64-bit hash of a volfile's text (FNV-1a), for watches.
pub fn volfile_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoveBrickAction {
    Start,
    Status,
    Commit,
    Force,
}

/// How a peer looks from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub uuid: String,
    pub hostname: String,
    pub other_names: Vec<String>,
    pub connected: bool,
    /// Empty when in sync; otherwise what differs and how to repair it.
    pub divergence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrickStatus {
    pub brick: BrickSpec,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatusView {
    pub name: String,
    pub status: String,
    pub bricks: Vec<BrickStatus>,
    /// Self-heal daemons of servers with bricks of this volume.
    pub shd: Vec<(String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionView {
    pub key: String,
    pub value: String,
    pub set: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CliReply {
    Done(String),
    Peers(Vec<PeerView>),
    Volumes(Vec<Volume>),
    Status(Vec<VolumeStatusView>),
    Options(Vec<OptionView>),
    Names(Vec<String>),
    Volfile(String),
    /// A volfile watch ended without a change.
    VolfileUnchanged,
    /// `remove-brick status`: one line per server that ran a migration.
    Migration(Vec<MigrationView>),
}

/// The state of `remove-brick start`'s data migration on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationView {
    pub volume: String,
    /// The server running it.
    pub node: String,
    /// "in progress", "completed" or "failed".
    pub status: String,
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// The bricks being drained.
    pub bricks: Vec<BrickSpec>,
}

impl MigrationView {
    pub const IN_PROGRESS: &'static str = "in progress";
    pub const COMPLETED: &'static str = "completed";
    pub const FAILED: &'static str = "failed";
}

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
