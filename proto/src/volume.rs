//! The volume model as mgmtd stores it and every process sees it: layout,
//! transport, bricks, status, options, version. Plain data; the checks and
//! plans that change it live in the management daemon.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a volume's bricks are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Files spread over bricks, no redundancy.
    Distribute,
    /// Sets of `replica` copies; with `arbiter`, the last brick of each set
    /// keeps metadata only.
    Replicate { replica: u32, arbiter: bool },
    /// Sets of `data + redundancy` erasure-coded fragments.
    Disperse { data: u32, redundancy: u32 },
}

impl Layout {
    /// Bricks per set (1 for pure distribute).
    pub fn set_size(&self) -> u32 {
        match *self {
            Layout::Distribute => 1,
            Layout::Replicate { replica, .. } => replica,
            Layout::Disperse { data, redundancy } => data + redundancy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Transport {
    Tcp,
    Rdma,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BrickSpec {
    /// As the operator wrote it (a hostname or an address).
    pub host: String,
    /// Absolute, normalised.
    pub path: String,
}

impl std::fmt::Display for BrickSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeStatus {
    Created,
    Started,
    Stopped,
}

impl VolumeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            VolumeStatus::Created => "Created",
            VolumeStatus::Started => "Started",
            VolumeStatus::Stopped => "Stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub id: String,
    pub layout: Layout,
    pub transport: Transport,
    pub bricks: Vec<BrickSpec>,
    pub status: VolumeStatus,
    pub options: BTreeMap<String, String>,
    /// Bumped on every change; peers reconcile by it.
    pub version: u64,
    /// Bricks being drained by `remove-brick start`: clients place no new
    /// files on their sets while their files migrate elsewhere.
    /// (`default` so state written before this field existed still loads;
    /// never skipped when empty: postcard, the peer wire format, is not
    /// self-describing.)
    #[serde(default)]
    pub removing: Vec<BrickSpec>,
}

impl Volume {
    /// Does this volume need self-heal daemons (on the servers with its
    /// bricks)? Started, with redundancy (replicate or disperse), and
    /// `cluster.self-heal-daemon` not off.
    pub fn wants_shd(&self) -> bool {
        let enabled = crate::options::get(&self.options, crate::options::SELF_HEAL_DAEMON)
            .is_none_or(|v| v != "off");
        enabled
            && self.status == VolumeStatus::Started
            && matches!(
                self.layout,
                Layout::Replicate { .. } | Layout::Disperse { .. }
            )
    }

    /// Indices of the sets (distribute subvolumes) whose every brick is
    /// being removed.
    pub fn decommissioned_sets(&self) -> Vec<usize> {
        let set = self.layout.set_size().max(1) as usize;
        self.bricks
            .chunks(set)
            .enumerate()
            .filter(|(_, members)| members.iter().all(|b| self.removing.contains(b)))
            .map(|(i, _)| i)
            .collect()
    }
}

impl Volume {
    /// "Replicate", "Distributed-Disperse", ... as `volume info` prints it.
    pub fn type_name(&self) -> &'static str {
        let sets = self.bricks.len() as u32 / self.layout.set_size().max(1);
        match (self.layout, sets > 1) {
            (Layout::Distribute, _) => "Distribute",
            (Layout::Replicate { .. }, false) => "Replicate",
            (Layout::Replicate { .. }, true) => "Distributed-Replicate",
            (Layout::Disperse { .. }, false) => "Disperse",
            (Layout::Disperse { .. }, true) => "Distributed-Disperse",
        }
    }

    /// "2 x 3 = 6", "1 x (4 + 2) = 6", "1 x (2 + 1) = 3" (arbiter), "3".
    pub fn brick_count_text(&self) -> String {
        let n = self.bricks.len() as u32;
        let set = self.layout.set_size().max(1);
        match self.layout {
            Layout::Distribute => n.to_string(),
            Layout::Replicate {
                replica,
                arbiter: false,
            } => format!("{} x {replica} = {n}", n / set),
            Layout::Replicate {
                replica,
                arbiter: true,
            } => {
                format!("{} x ({} + 1) = {n}", n / set, replica - 1)
            }
            Layout::Disperse { data, redundancy } => {
                format!("{} x ({data} + {redundancy}) = {n}", n / set)
            }
        }
    }

    /// The bricks grouped into their sets.
    pub fn sets(&self) -> Vec<&[BrickSpec]> {
        self.bricks
            .chunks(self.layout.set_size().max(1) as usize)
            .collect()
    }
}

/// A parsed `volume create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub name: String,
    pub replica: Option<u32>,
    pub arbiter: bool,
    pub disperse: Option<u32>,
    pub redundancy: Option<u32>,
    pub transport: Transport,
    pub bricks: Vec<BrickSpec>,
    pub force: bool,
}
