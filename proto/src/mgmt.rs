//! The management CLI program: what `mortar` (and clients, the self-heal
//! daemon and migration workers) ask of a management daemon, and its
//! answers. The peer protocol between management daemons is mgmtd's own
//! business and lives there.

use serde::{Deserialize, Serialize};

use crate::volume::{BrickSpec, CreateRequest, Volume};

/// The CLI program (Unix socket, or TCP with `--remote-host`).
pub const PROGRAM_MGMT_CLI: u16 = 0x4d43;

/// The CLI program has one procedure; the request says what to do.
pub const PROC_CLI: u16 = 1;

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
    /// `volume heal NAME`: every server's self-heal daemon crawls its
    /// bricks' pending-heal indices now, not at the next heal-timeout;
    /// `full` (`volume heal NAME full`): it sweeps every file and
    /// directory of the volume instead, healing what the indices missed.
    HealNow {
        name: String,
        full: bool,
    },
    /// From a self-heal daemon: how many `volume heal` requests of each
    /// kind each volume has had since this mgmtd started (counters only
    /// grow); a change is the signal to crawl or sweep.
    HealRequests,
    /// From a self-heal daemon, after a crawl: what it has done for each
    /// of its server's bricks so far (replaces what it said before).
    HealReport(Vec<HealStatsView>),
    /// `volume heal NAME statistics`: every server's record of its bricks.
    HealStatistics {
        name: String,
    },
    /// The TCP port this mgmtd listens on for peers, bricks and clients
    /// (what a process that reached it over the local socket needs for
    /// port lookups on the pool's servers).
    ListenPort,
}

/// Longest a volfile watch is held open by mgmtd.
pub const VOLFILE_WATCH_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// A stable 64-bit hash of a volfile's text, for watches.
pub fn volfile_hash(text: &str) -> u64 {
    crate::hash::fnv1a_64(text.as_bytes())
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
    /// Answer to [`CliRequest::HealRequests`]: per volume, requests so far.
    HealRequests(Vec<HealCount>),
    /// Answer to [`CliRequest::ListenPort`].
    ListenPort(u16),
    /// Answer to [`CliRequest::HealStatistics`]: one row per brick whose
    /// server's daemon has reported (bricks are `HOST:/PATH`, in order).
    HealStatistics(Vec<HealStatsView>),
}

/// What a server's self-heal daemon has done for one of its bricks since
/// it started (counts only grow while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealStatsView {
    pub volume: String,
    /// `HOST:/PATH`.
    pub brick: String,
    pub crawls: u64,
    /// Entries taken off the brick's pending-heal index, over all crawls.
    pub entries_healed: u64,
    /// Data bytes the daemon wrote healing the brick's set.
    pub bytes_healed: u64,
    pub last_crawl: Option<CrawlView>,
}

/// One crawl of one brick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlView {
    /// `INDEX` (the pending-heal index) or `FULL` (`volume heal NAME full`).
    pub kind: String,
    /// Wall clock, Unix milliseconds.
    pub started_unix_ms: u64,
    pub took_ms: u64,
    /// Entries the index listed when it began.
    pub listed: u64,
    /// Entries left when it ended (`None`: the brick did not answer).
    pub left: Option<u64>,
    /// Entries taken off the index.
    pub healed: u64,
    pub bytes: u64,
    /// Files the crawl found in split-brain (over every set of the volume
    /// this daemon crawled, not the brick's set alone).
    pub split_brain: u64,
    /// Files the crawl could not heal now (tried again later; over the
    /// same sets).
    pub failed: u64,
}

/// How many `volume heal` requests one volume has had (since the mgmtd
/// answering started): index crawls and full sweeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealCounts {
    pub index: u64,
    pub full: u64,
}

/// One volume's [`HealCounts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealCount {
    pub volume: String,
    pub counts: HealCounts,
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
