//! The management daemon's one error type. Every message says what was
//! refused and, where there is one, what the operator can do about it;
//! the texts are the ones the CLI has always shown (the CLI wire reply
//! carries them as strings, converted at the edge with `to_string()`).

use crate::daemon::Phase;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MgmtError {
    // ---- start-up ----
    #[error("mgmtd needs at least one hostname for this server")]
    NoHostname,
    #[error("mgmtd cannot listen on {endpoint}: {error} (is another mgmtd running?)")]
    ListenPeers { endpoint: String, error: String },
    #[error("mgmtd cannot listen on {endpoint}: {error}")]
    ListenCli { endpoint: String, error: String },
    /// The on-disk store failed (its message names the file and errno).
    #[error("{0}")]
    Store(String),

    // ---- transactions ----
    #[error("Another transaction is in progress for {what} (held by {holder} for {command} since {since}); retry when it finishes")]
    Busy {
        /// The volume, or "the pool".
        what: String,
        holder: String,
        command: String,
        /// When it was taken, as UTC text.
        since: String,
    },
    #[error("only {reachable} of the {total} servers in the pool are reachable; changes need a majority (check 'mortar peer status')")]
    NoMajority { reachable: usize, total: usize },
    #[error("{command} failed in {phase}: {summary}")]
    PhaseFailed {
        command: String,
        phase: Phase,
        /// One line per distinct problem.
        summary: String,
    },
    /// What another server (or the RPC layer reaching it) said, as it is.
    #[error("{0}")]
    Remote(String),
    #[error(
        "{host}: the transaction's lock on {key} is not held here (lease expired or lost); retry"
    )]
    LockNotHeld { host: String, key: String },
    /// A check or action on this server failed; prefixed with its name
    /// so pool-wide summaries say where.
    #[error("{host}: {error}")]
    OnServer { host: String, error: String },
    #[error("{host}: commit failed: {error}")]
    CommitFailed { host: String, error: String },
    #[error("{host}: volume {volume} uses transport rdma, but {error}")]
    RdmaNotReady {
        host: String,
        volume: String,
        error: String,
    },
    #[error("volume {volume} is already {status}{}", if *.started { " (use 'start force' to restart dead bricks)" } else { "" })]
    AlreadyInStatus {
        volume: String,
        /// Lower-case status name.
        status: String,
        started: bool,
    },
    #[error("{host}: bricks not running: {}", .bricks.join(", "))]
    BricksNotRunning { host: String, bricks: Vec<String> },

    // ---- peers ----
    #[error("{host} is already part of a pool with peers or volumes")]
    AlreadyPooled { host: String },
    #[error("{0}")]
    BadAddress(String),
    #[error("peer probe: cannot reach mgmtd on {host}: {error}")]
    ProbeUnreachable { host: String, error: String },
    #[error("peer probe: {host} is already part of another pool (it has {peers} peers and {volumes} volumes)")]
    ProbeOtherPool {
        host: String,
        peers: usize,
        volumes: usize,
    },
    #[error(
        "peer probe: {host} was added but did not join: {error}; run 'mortar peer sync' on it"
    )]
    ProbeNotJoined { host: String, error: String },
    #[error("peer detach: {host} is not in the pool")]
    DetachUnknown { host: String },
    #[error("peer detach: cannot detach this server from itself; run it on another server")]
    DetachSelf,
    #[error("peer detach: {host} has bricks of {}: remove or replace them first (or use 'force')", .volumes.join(", "))]
    DetachHosting { host: String, volumes: Vec<String> },
    #[error("peer sync: {host} is not a peer")]
    SyncUnknown { host: String },
    #[error("peer sync: no connection to {host}")]
    SyncNoConnection { host: String },

    // ---- volumes (the CLI's checks) ----
    #[error("volume {volume} {why}: nothing to heal")]
    NothingToHeal { volume: String, why: &'static str },
    #[error("volume {0} does not exist")]
    NoVolume(String),
    /// A volume plan, option value or state change that does not fit
    /// (the message comes from the module that checked it).
    #[error("{0}")]
    Invalid(String),
    #[error("unknown option {key:?}: see 'mortar volume get {volume} all'")]
    UnknownOption { key: String, volume: String },
    #[error("add-brick: changing the replica count to {replica} is not supported; add bricks in sets of {set}")]
    ReplicaChange { replica: u32, set: u32 },
    #[error("remove-brick: remove whole sets ({set} bricks each)")]
    RemovePartialSet { set: usize },
    #[error("remove-brick commit: run 'volume remove-brick {volume} {bricks} start' first and wait for 'completed' in 'status' (or use 'force' to drop the bricks with their files still on them)")]
    RemoveNotStarted { volume: String, bricks: String },
    #[error("remove-brick commit: the migration off these bricks is {now}; commit when 'volume remove-brick {volume} ... status' says completed, or use 'force'")]
    RemoveNotMigrated { volume: String, now: String },
    #[error("remove-brick start: volume {0} is not started; start it so its files can move")]
    RemoveVolumeStopped(String),
    #[error("remove-brick start: the bricks must make up whole sets of {set} (bricks listed together in 'volume info')")]
    RemoveNotWholeSets { set: usize },
    #[error(
        "remove-brick start: that would remove every set; at least one must stay to take the files"
    )]
    RemoveEverySet,
    #[error("remove-brick start: a migration of {0} is already in progress on this server")]
    MigrationRunning(String),
    #[error("remove-brick start: cannot start the migration: {0}")]
    MigrationNotStarted(String),
    #[error("remove-brick status: no migration of {0} is known (run 'start' first)")]
    NoMigrationKnown(String),
    #[error("no migration of {0} was started here")]
    NoMigrationHere(String),
    #[error("replace-brick: {old} is not a brick of {volume}")]
    NotABrick { old: String, volume: String },
}

/// The daemon's results.
pub type Result<T, E = MgmtError> = std::result::Result<T, E>;
