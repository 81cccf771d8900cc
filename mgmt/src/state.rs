//! The cluster's state as every mgmtd keeps it, and how it changes.
//!
//! Every change is an [`Op`] applied identically on every peer at commit.
//! Each object (peer, volume) carries its own version, bumped by every op
//! that touches it; a deleted volume leaves a tombstone with its version so
//! that a peer which missed the delete learns of it. Peers reconcile object
//! by object: the higher version wins. Two different objects with the same
//! version mean the peers diverged (a commit was split by a failure); that
//! is reported with what differs and repaired by an operator command, never
//! by editing files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::options;
use crate::volume::{BrickSpec, Layout, Volume, VolumeStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub uuid: String,
    /// Names and addresses this peer is known by, the first is preferred.
    pub hostnames: Vec<String>,
    /// Its mgmtd port.
    pub port: u16,
}

/// A volume slot: the volume, or a tombstone after delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSlot {
    pub version: u64,
    pub volume: Option<Volume>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSlot {
    pub version: u64,
    pub peer: Option<Peer>,
}

/// What one mgmtd knows about the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub peers: BTreeMap<String, PeerSlot>,
    pub volumes: BTreeMap<String, VolumeSlot>,
}

/// A change to the cluster state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    AddPeer(Peer),
    RemovePeer {
        uuid: String,
    },
    CreateVolume(Volume),
    DeleteVolume {
        name: String,
    },
    SetStatus {
        name: String,
        status: VolumeStatus,
    },
    SetOption {
        name: String,
        key: String,
        value: String,
    },
    /// Reset one option, or all when `key` is None.
    ResetOption {
        name: String,
        key: Option<String>,
    },
    AddBricks {
        name: String,
        bricks: Vec<BrickSpec>,
        layout: Layout,
    },
    RemoveBricks {
        name: String,
        bricks: Vec<BrickSpec>,
    },
    /// `remove-brick start`: mark bricks as draining.
    DrainBricks {
        name: String,
        bricks: Vec<BrickSpec>,
    },
    ReplaceBrick {
        name: String,
        old: BrickSpec,
        new: BrickSpec,
    },
}

impl Op {
    /// The lock an op's transaction takes: its volume, or the pool.
    pub fn lock_key(&self) -> String {
        match self {
            Op::AddPeer(_) | Op::RemovePeer { .. } => GLOBAL_LOCK.to_string(),
            Op::CreateVolume(v) => v.name.clone(),
            Op::DeleteVolume { name }
            | Op::SetStatus { name, .. }
            | Op::SetOption { name, .. }
            | Op::ResetOption { name, .. }
            | Op::AddBricks { name, .. }
            | Op::RemoveBricks { name, .. }
            | Op::DrainBricks { name, .. }
            | Op::ReplaceBrick { name, .. } => name.clone(),
        }
    }
}

/// The lock key of pool-wide changes (peer probe and detach).
pub const GLOBAL_LOCK: &str = "<pool>";

impl ClusterState {
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.get(name).and_then(|s| s.volume.as_ref())
    }

    pub fn live_volumes(&self) -> BTreeMap<String, Volume> {
        self.volumes
            .iter()
            .filter_map(|(k, s)| s.volume.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    pub fn live_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter_map(|s| s.peer.as_ref())
    }

    fn volume_mut(&mut self, name: &str) -> Result<(&mut Volume, &mut u64), String> {
        match self.volumes.get_mut(name) {
            Some(VolumeSlot {
                version,
                volume: Some(v),
            }) => Ok((v, version)),
            _ => Err(format!("volume {name} does not exist")),
        }
    }

    /// Apply `op`. Fails (changing nothing) if it does not fit the state;
    /// the transaction's validation phase makes that the exception.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        let before = self.generation();
        self.apply_op(op)?;
        // Every op bumps the version of what it touches, so peers can tell
        // newer from older: versions only grow.
        assert!(
            self.generation() > before,
            "applying {op:?} did not raise any version"
        );
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::AddPeer(p) => {
                let slot = self.peers.entry(p.uuid.clone()).or_insert(PeerSlot {
                    version: 0,
                    peer: None,
                });
                slot.version += 1;
                slot.peer = Some(p.clone());
            }
            Op::RemovePeer { uuid } => {
                let slot = self
                    .peers
                    .get_mut(uuid)
                    .filter(|s| s.peer.is_some())
                    .ok_or_else(|| format!("peer {uuid} is not in the pool"))?;
                slot.version += 1;
                slot.peer = None;
            }
            Op::CreateVolume(v) => {
                if self.volume(&v.name).is_some() {
                    return Err(format!("volume {} already exists", v.name));
                }
                let prev = self.volumes.get(&v.name).map_or(0, |s| s.version);
                let mut v = v.clone();
                v.version = prev + 1;
                self.volumes.insert(
                    v.name.clone(),
                    VolumeSlot {
                        version: prev + 1,
                        volume: Some(v),
                    },
                );
            }
            Op::DeleteVolume { name } => {
                let (v, _) = self.volume_mut(name)?;
                if v.status == VolumeStatus::Started {
                    return Err(format!("volume {name} is started: stop it first"));
                }
                let slot = self.volumes.get_mut(name).expect("checked above");
                slot.version += 1;
                slot.volume = None;
            }
            Op::SetStatus { name, status } => {
                let (v, ver) = self.volume_mut(name)?;
                v.status = *status;
                bump(v, ver);
            }
            Op::SetOption { name, key, value } => {
                let value = options::validate(key, value)?;
                let (v, ver) = self.volume_mut(name)?;
                v.options.insert(key.clone(), value);
                bump(v, ver);
            }
            Op::ResetOption { name, key } => {
                let (v, ver) = self.volume_mut(name)?;
                match key {
                    Some(k) => {
                        if options::spec(k).is_none() {
                            return Err(format!("unknown option {k:?}"));
                        }
                        v.options.remove(k);
                    }
                    None => v.options.clear(),
                }
                bump(v, ver);
            }
            Op::AddBricks { .. }
            | Op::RemoveBricks { .. }
            | Op::DrainBricks { .. }
            | Op::ReplaceBrick { .. } => self.apply_brick_op(op)?,
        }
        Ok(())
    }

    /// The ops that change a volume's bricks.
    fn apply_brick_op(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::AddBricks {
                name,
                bricks,
                layout,
            } => {
                let (v, ver) = self.volume_mut(name)?;
                v.bricks.extend(bricks.iter().cloned());
                v.layout = *layout;
                bump(v, ver);
            }
            Op::RemoveBricks { name, bricks } => {
                let (v, ver) = self.volume_mut(name)?;
                for b in bricks {
                    if !v.bricks.contains(b) {
                        return Err(format!("{b} is not a brick of volume {name}"));
                    }
                }
                v.bricks.retain(|b| !bricks.contains(b));
                v.removing.retain(|b| !bricks.contains(b));
                bump(v, ver);
            }
            Op::DrainBricks { name, bricks } => {
                let (v, ver) = self.volume_mut(name)?;
                for b in bricks {
                    if !v.bricks.contains(b) {
                        return Err(format!("{b} is not a brick of volume {name}"));
                    }
                }
                v.removing = bricks.clone();
                bump(v, ver);
            }
            Op::ReplaceBrick { name, old, new } => {
                let (v, ver) = self.volume_mut(name)?;
                let slot = v
                    .bricks
                    .iter_mut()
                    .find(|b| *b == old)
                    .ok_or_else(|| format!("{old} is not a brick of volume {name}"))?;
                *slot = new.clone();
                bump(v, ver);
            }
            _ => unreachable!("not a brick op: {op:?}"),
        }
        Ok(())
    }

    /// Sum of all object versions: a quick "who is newer" for peer status.
    pub fn generation(&self) -> u64 {
        self.peers.values().map(|s| s.version).sum::<u64>()
            + self.volumes.values().map(|s| s.version).sum::<u64>()
    }
}

fn bump(v: &mut Volume, slot_version: &mut u64) {
    *slot_version += 1;
    v.version = *slot_version;
}

/// How two peers' views differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconcile {
    /// Objects the other side has newer: take them.
    pub take_volumes: Vec<(String, VolumeSlot)>,
    pub take_peers: Vec<(String, PeerSlot)>,
    /// Objects we have newer (the other side should take them).
    pub newer_here: Vec<String>,
    /// Same version, different content: a split commit. Resolved towards
    /// a majority's variant when there is one ([`resolve_by_majority`]),
    /// otherwise shown to an operator.
    pub conflicts: Vec<Divergence>,
}

/// What kind of object two peers disagree about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    Volume,
    Peer,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Volume => "volume",
            ObjectKind::Peer => "peer",
        }
    }
}

/// One object two peers hold at the same version with different
/// contents: a commit that was split by a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub kind: ObjectKind,
    /// The volume's name or the peer's uuid.
    pub name: String,
    /// The version both sides claim.
    pub version: u64,
    /// What differs (volumes only), for the operator.
    pub detail: Option<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: both at version {} but different",
            self.kind.as_str(),
            self.name,
            self.version
        )?;
        match &self.detail {
            Some(d) => write!(f, " ({d})"),
            None => Ok(()),
        }
    }
}

/// How a divergence found against one peer is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A strict majority of the pool holds this variant: it is the
    /// acknowledged change, so take it (dropping our partial commit).
    TakeMajority(VolumeSlot),
    /// No majority (or not a volume): an operator decides (`peer sync`).
    Unresolved,
    /// The peer does not hold the object after all: nothing to do.
    Ignore,
}

/// Settle divergence `d`, found between us and peer `from` (whose view is
/// `theirs`), by counting who else holds `from`'s variant. `views` are the
/// states of every peer that answered this round (`from` included, it is
/// not counted twice); `pool_size` counts every server, us too.
///
/// Changes need a majority, so a variant held by a strict majority is the
/// one the pool acknowledged; we hold a different one, so we are not part
/// of that majority and are not counted.
pub fn resolve_by_majority(
    d: &Divergence,
    from: &str,
    theirs: &ClusterState,
    views: &[(String, ClusterState)],
    pool_size: usize,
) -> Resolution {
    if d.kind != ObjectKind::Volume {
        return Resolution::Unresolved;
    }
    let Some(variant) = theirs.volumes.get(&d.name) else {
        return Resolution::Ignore;
    };
    let holders = 1 + views
        .iter()
        .filter(|(u, v)| u != from && v.volumes.get(&d.name) == Some(variant))
        .count();
    if holders * 2 > pool_size {
        Resolution::TakeMajority(variant.clone())
    } else {
        Resolution::Unresolved
    }
}

/// Compare our state with a peer's.
pub fn reconcile(ours: &ClusterState, theirs: &ClusterState) -> Reconcile {
    let mut r = Reconcile::default();
    let keys: std::collections::BTreeSet<&String> =
        ours.volumes.keys().chain(theirs.volumes.keys()).collect();
    for k in keys {
        match (ours.volumes.get(k), theirs.volumes.get(k)) {
            (None, Some(t)) => r.take_volumes.push((k.clone(), t.clone())),
            (Some(_), None) => r.newer_here.push(format!("volume {k}")),
            (Some(o), Some(t)) if t.version > o.version => {
                r.take_volumes.push((k.clone(), t.clone()))
            }
            (Some(o), Some(t)) if o.version > t.version => r.newer_here.push(format!("volume {k}")),
            (Some(o), Some(t)) if o != t => r.conflicts.push(Divergence {
                kind: ObjectKind::Volume,
                name: k.clone(),
                version: o.version,
                detail: Some(describe_diff(o.volume.as_ref(), t.volume.as_ref())),
            }),
            _ => {}
        }
    }
    let keys: std::collections::BTreeSet<&String> =
        ours.peers.keys().chain(theirs.peers.keys()).collect();
    for k in keys {
        match (ours.peers.get(k), theirs.peers.get(k)) {
            (None, Some(t)) => r.take_peers.push((k.clone(), t.clone())),
            (Some(_), None) => r.newer_here.push(format!("peer {k}")),
            (Some(o), Some(t)) if t.version > o.version => {
                r.take_peers.push((k.clone(), t.clone()))
            }
            (Some(o), Some(t)) if o.version > t.version => r.newer_here.push(format!("peer {k}")),
            (Some(o), Some(t)) if o != t => r.conflicts.push(Divergence {
                kind: ObjectKind::Peer,
                name: k.clone(),
                version: o.version,
                detail: None,
            }),
            _ => {}
        }
    }
    r
}

fn describe_diff(a: Option<&Volume>, b: Option<&Volume>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let mut d = Vec::new();
            if a.status != b.status {
                d.push(format!(
                    "status {} vs {}",
                    a.status.as_str(),
                    b.status.as_str()
                ));
            }
            if a.bricks != b.bricks {
                d.push("bricks differ".into());
            }
            if a.options != b.options {
                d.push("options differ".into());
            }
            if a.id != b.id {
                d.push("volume ids differ".into());
            }
            if d.is_empty() {
                d.push("layout or transport differ".into());
            }
            d.join(", ")
        }
        (Some(_), None) => "deleted on the peer".into(),
        (None, Some(_)) => "deleted here".into(),
        (None, None) => "both deleted".into(),
    }
}

impl Reconcile {
    pub fn is_in_sync(&self) -> bool {
        self.take_volumes.is_empty()
            && self.take_peers.is_empty()
            && self.newer_here.is_empty()
            && self.conflicts.is_empty()
    }

    /// Take what the peer has newer (conflicts are left alone).
    /// `ours` must be the state this was computed from: taking only
    /// newer objects, versions only grow.
    pub fn adopt(&self, ours: &mut ClusterState) {
        for (k, s) in &self.take_volumes {
            debug_assert!(
                ours.volumes.get(k).is_none_or(|o| o.version < s.version),
                "volume {k}: adopting an older version"
            );
            ours.volumes.insert(k.clone(), s.clone());
        }
        for (k, s) in &self.take_peers {
            debug_assert!(
                ours.peers.get(k).is_none_or(|o| o.version < s.version),
                "peer {k}: adopting an older version"
            );
            ours.peers.insert(k.clone(), s.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{parse_brick, Transport};

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            id: format!("id-{name}"),
            layout: Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            transport: Transport::Tcp,
            bricks: ["s1:/b", "s2:/b", "s3:/b"]
                .iter()
                .map(|b| parse_brick(b).unwrap())
                .collect(),
            status: VolumeStatus::Created,
            options: BTreeMap::new(),
            version: 0,
            removing: Vec::new(),
        }
    }

    #[test]
    fn ops_change_state_and_versions() {
        let mut s = ClusterState::default();
        s.apply(&Op::CreateVolume(vol("v"))).unwrap();
        assert_eq!(s.volume("v").unwrap().version, 1);
        assert!(s
            .apply(&Op::CreateVolume(vol("v")))
            .unwrap_err()
            .contains("already exists"));
        s.apply(&Op::SetOption {
            name: "v".into(),
            key: "network.ping-timeout".into(),
            value: "10".into(),
        })
        .unwrap();
        assert!(s
            .apply(&Op::SetOption {
                name: "v".into(),
                key: "network.ping-timeout".into(),
                value: "0".into()
            })
            .is_err());
        s.apply(&Op::SetStatus {
            name: "v".into(),
            status: VolumeStatus::Started,
        })
        .unwrap();
        assert!(s
            .apply(&Op::DeleteVolume { name: "v".into() })
            .unwrap_err()
            .contains("stop it first"));
        s.apply(&Op::SetStatus {
            name: "v".into(),
            status: VolumeStatus::Stopped,
        })
        .unwrap();
        assert_eq!(s.volume("v").unwrap().version, 4);
        s.apply(&Op::DeleteVolume { name: "v".into() }).unwrap();
        assert!(s.volume("v").is_none());
        assert_eq!(s.volumes["v"].version, 5, "a tombstone keeps the version");
        // Re-creating continues the version sequence.
        s.apply(&Op::CreateVolume(vol("v"))).unwrap();
        assert_eq!(s.volume("v").unwrap().version, 6);
    }

    #[test]
    fn a_peer_that_missed_commits_catches_up() {
        let mut a = ClusterState::default();
        a.apply(&Op::AddPeer(Peer {
            uuid: "u2".into(),
            hostnames: vec!["s2".into()],
            port: 24007,
        }))
        .unwrap();
        a.apply(&Op::CreateVolume(vol("v"))).unwrap();
        let mut b = a.clone();
        // b misses a start, an option and a delete of another volume.
        a.apply(&Op::CreateVolume(vol("w"))).unwrap();
        b.apply(&Op::CreateVolume(vol("w"))).unwrap();
        a.apply(&Op::SetStatus {
            name: "v".into(),
            status: VolumeStatus::Started,
        })
        .unwrap();
        a.apply(&Op::DeleteVolume { name: "w".into() }).unwrap();
        let r = reconcile(&b, &a);
        assert!(r.conflicts.is_empty(), "{r:?}");
        assert_eq!(r.take_volumes.len(), 2);
        r.adopt(&mut b);
        assert_eq!(b, a);
        assert!(reconcile(&b, &a).is_in_sync());
        assert_eq!(reconcile(&a, &ClusterState::default()).newer_here.len(), 3);
    }

    #[test]
    fn split_commits_are_reported_not_guessed() {
        let mut a = ClusterState::default();
        a.apply(&Op::CreateVolume(vol("v"))).unwrap();
        let mut b = a.clone();
        a.apply(&Op::SetStatus {
            name: "v".into(),
            status: VolumeStatus::Started,
        })
        .unwrap();
        b.apply(&Op::SetOption {
            name: "v".into(),
            key: "auth.allow".into(),
            value: "10.*".into(),
        })
        .unwrap();
        let r = reconcile(&a, &b);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(
            r.conflicts[0].to_string(),
            "volume v: both at version 2 but different (status Started vs Created, options differ)"
        );
    }

    /// Views of one volume "v" split by a partial commit: server `i`
    /// holds the variant with the volume started if `started[i]`, else the
    /// one with an option set; both are at the same version.
    fn split_views(started: &[bool]) -> Vec<(String, ClusterState)> {
        let mut base = ClusterState::default();
        base.apply(&Op::CreateVolume(vol("v"))).unwrap();
        started
            .iter()
            .enumerate()
            .map(|(i, started)| {
                let mut s = base.clone();
                let op = if *started {
                    Op::SetStatus {
                        name: "v".into(),
                        status: VolumeStatus::Started,
                    }
                } else {
                    Op::SetOption {
                        name: "v".into(),
                        key: "auth.allow".into(),
                        value: "10.*".into(),
                    }
                };
                s.apply(&op).unwrap();
                (format!("u{i}"), s)
            })
            .collect()
    }

    #[test]
    fn divergences_read_as_before() {
        let cases = [
            (
                Divergence {
                    kind: ObjectKind::Volume,
                    name: "vol".into(),
                    version: 7,
                    detail: Some("bricks differ".into()),
                },
                "volume vol: both at version 7 but different (bricks differ)",
            ),
            (
                Divergence {
                    kind: ObjectKind::Peer,
                    name: "u2".into(),
                    version: 3,
                    detail: None,
                },
                "peer u2: both at version 3 but different",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(d.to_string(), want);
        }
    }

    #[test]
    fn majority_repair_table() {
        const S: bool = true;
        const O: bool = false;
        // We hold the "options" variant; `answered` are the peers that
        // answered this round (u1, u2, ...), compared with u1 ("started").
        let cases: [(usize, &[bool], bool); 8] = [
            (3, &[S, S], true),
            // u2 unreachable: u1 alone is not a majority of three.
            (3, &[S], false),
            // u2 holds our variant: one holder each.
            (3, &[S, O], false),
            (5, &[S, S], false),
            (5, &[S, S, S], true),
            // Half of the pool is not a majority.
            (2, &[S], false),
            (4, &[S, S, O], false),
            (4, &[S, S, S], true),
        ];
        for (pool, answered, take) in cases {
            let mut all = vec![O];
            all.extend_from_slice(answered);
            let views = split_views(&all);
            let (ours, theirs) = (&views[0].1, &views[1].1);
            let r = reconcile(ours, theirs);
            assert_eq!(r.conflicts.len(), 1, "{pool} {answered:?}");
            let got = resolve_by_majority(&r.conflicts[0], "u1", theirs, &views[1..], pool);
            let want = if take {
                Resolution::TakeMajority(theirs.volumes["v"].clone())
            } else {
                Resolution::Unresolved
            };
            assert_eq!(got, want, "pool {pool}, answered {answered:?}");
        }
    }

    #[test]
    fn peer_divergences_are_left_to_an_operator() {
        let d = Divergence {
            kind: ObjectKind::Peer,
            name: "u1".into(),
            version: 1,
            detail: None,
        };
        let views = split_views(&[false, true, true]);
        assert_eq!(
            resolve_by_majority(&d, "u1", &views[1].1, &views[1..], 3),
            Resolution::Unresolved
        );
    }

    /// Regression (mgmt_originator_crash, commit 0938641): s1 committed
    /// locally and crashed, s2 and s3 then committed another change at the
    /// same version, and the pool stayed "Diverged" until an operator ran
    /// `peer sync`; fixed by taking the variant a strict majority holds.
    #[test]
    fn regression_partial_commit_of_a_crashed_originator_yields_to_the_majority() {
        let views = split_views(&[false, true, true]);
        let (ours, theirs) = (&views[0].1, &views[1].1);
        let r = reconcile(ours, theirs);
        let got = resolve_by_majority(&r.conflicts[0], "u1", theirs, &views[1..], 3);
        assert_eq!(got, Resolution::TakeMajority(theirs.volumes["v"].clone()));
    }

    #[test]
    fn every_op_raises_a_version() {
        let mut s = ClusterState::default();
        let v = vol("v");
        let b = v.bricks[0].clone();
        let other = parse_brick("s4:/b").unwrap();
        let ops = [
            Op::AddPeer(Peer {
                uuid: "u2".into(),
                hostnames: vec!["s2".into()],
                port: 24007,
            }),
            Op::CreateVolume(v),
            Op::SetStatus {
                name: "v".into(),
                status: VolumeStatus::Started,
            },
            Op::SetOption {
                name: "v".into(),
                key: "auth.allow".into(),
                value: "10.*".into(),
            },
            Op::ResetOption {
                name: "v".into(),
                key: None,
            },
            Op::DrainBricks {
                name: "v".into(),
                bricks: vec![b.clone()],
            },
            Op::ReplaceBrick {
                name: "v".into(),
                old: b,
                new: other.clone(),
            },
            Op::RemoveBricks {
                name: "v".into(),
                bricks: vec![other],
            },
            Op::SetStatus {
                name: "v".into(),
                status: VolumeStatus::Stopped,
            },
            Op::DeleteVolume { name: "v".into() },
            Op::RemovePeer { uuid: "u2".into() },
        ];
        for op in ops {
            let before = s.generation();
            s.apply(&op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
            assert!(s.generation() > before, "{op:?}");
        }
    }
}
