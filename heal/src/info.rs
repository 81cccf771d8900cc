//! `volume heal NAME info`: what every brick of a volume still has to heal.
//!
//! Every brick is asked at once, each under its own deadline
//! ([`BRICK_DEADLINE_MS`]), for its pending-heal index; a brick that cannot
//! be reached reports why as its status and never holds up the others, so
//! the whole answer takes about one brick deadline however many bricks the
//! volume has. Nothing here waits without a deadline: the brick host's name
//! is resolved through the runtime's resolver (which has its own deadline
//! and cache; IP literals and Unix paths never reach DNS), the connection
//! is awaited with the time left, and so is every request. (The original
//! system's heal info once stalled for minutes because each child-up event
//! resolved the management address through `getaddrinfo` under slow DNS,
//! one subvolume after another.)
//!
//! Per entry, two flags, when cheaply known:
//! * *possibly undergoing heal*: the brick's lock dump (one request per
//!   brick) shows a lock held on the file in the set's self-heal domain
//!   (the claim a healer holds for the whole heal,
//!   [`crate::steps::heal_domain`]). "Possibly": the heal may end in the
//!   next instant. A brick that gives no dump is probed entry by entry: a
//!   non-blocking shared lock in that domain refused with EAGAIN (held for
//!   one round trip; a heal that tries its claim in that instant skips the
//!   file until its next try).
//! * *in split-brain*: for replicate sets, the set's copies are read
//!   (`Replicate::views`) and judged by the same rule reads use
//!   (`afr::examine`), within the same deadline. Disperse sets are not
//!   judged (`None`): telling a disperse split from a fragment that is
//!   merely stale needs every fragment's version, which is heal's work.
//!
//! Entries are shown as `<gfid:UUID>`; resolving them to paths is not done.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use mortar_client::afr::{self, Kind, Verdict};
use mortar_client::fop::{Fop, Subvolume};
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::mgmt_rpc::cli_call;
use mortar_client::protocol::ProtocolClient;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::time::Instant;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::brick::{self as bp, LockInfo, LockKind, LockTarget};
use mortar_proto::mgmt::{CliReply, CliRequest};
use mortar_proto::volfile::Graph;
use mortar_proto::{Errno, Gfid};

use crate::error::HealError;

/// How long one brick may take to be reached and to answer (name lookup,
/// port lookup, connection, index listing, lock probes), counted from the
/// moment heal info asks every brick at once.
pub const BRICK_DEADLINE_MS: u64 = 5_000;
/// Entries listed per brick; a brick with more says so (`truncated`).
pub const ENTRIES_PER_BRICK_MAX: usize = 10_000;
/// How long mgmtd may take to be reached and to hand over the volfile.
pub const MGMT_DEADLINE_MS: u64 = 10_000;
/// Where mgmtd listens when the caller reached it over a Unix socket (the
/// bricks' hosts are asked for ports there).
pub const DEFAULT_MGMT_PORT: u16 = 24007;

/// Whether a brick answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrickStatus {
    Connected,
    /// Why it could not be asked, as an operator should read it.
    Error(String),
}

/// One pending entry of one brick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub gfid: Gfid,
    /// `None`: not probed (deadline passed, or the probe failed).
    pub possibly_healing: Option<bool>,
    /// `None`: not judged (disperse set, brick not in a set, or no time).
    pub split_brain: Option<bool>,
}

/// One brick's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickInfo {
    /// `HOST:/PATH`, as in the volume's brick list.
    pub brick: String,
    pub status: BrickStatus,
    pub entries: Vec<PendingEntry>,
    /// The brick has more than [`ENTRIES_PER_BRICK_MAX`] entries.
    pub truncated: bool,
}

/// `heal info` of one volume: every brick, in the volume's brick order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealInfo {
    pub volume: String,
    pub bricks: Vec<BrickInfo>,
}

/// The summary counts of one brick; all `None` for a brick not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrickCounts {
    pub total: Option<usize>,
    pub heal_pending: Option<usize>,
    pub split_brain: Option<usize>,
    pub possibly_healing: Option<usize>,
}

/// Count one brick's entries: split-brain ones, possibly healing ones
/// (not also in split-brain), and the rest as heal pending.
pub fn counts(b: &BrickInfo) -> BrickCounts {
    if b.status != BrickStatus::Connected {
        return BrickCounts::default();
    }
    let split = b
        .entries
        .iter()
        .filter(|e| e.split_brain == Some(true))
        .count();
    let healing = b
        .entries
        .iter()
        .filter(|e| e.split_brain != Some(true) && e.possibly_healing == Some(true))
        .count();
    BrickCounts {
        total: Some(b.entries.len()),
        heal_pending: Some(b.entries.len() - split - healing),
        split_brain: Some(split),
        possibly_healing: Some(healing),
    }
}

/// The entries `info split-brain` lists for a brick.
pub fn split_brain_entries(b: &BrickInfo) -> Vec<&PendingEntry> {
    b.entries
        .iter()
        .filter(|e| e.split_brain == Some(true))
        .collect()
}

/// The port bricks' mgmtds listen on, from the endpoint the caller used
/// to reach one of them.
pub fn mgmt_port_of(mgmt: &Endpoint) -> u16 {
    match mgmt {
        Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => hp.port,
        Endpoint::Unix(_) => DEFAULT_MGMT_PORT,
    }
}

/// Ask mgmtd at `mgmt` for `volume`'s client volfile, then every brick of
/// it for its pending entries.
pub async fn heal_info(rt: &Runtime, mgmt: &Endpoint, volume: &str) -> Result<HealInfo, HealError> {
    let (text, port) = fetch_volfile(rt, mgmt, volume).await?;
    heal_info_from_volfile(rt, volume, &text, port).await
}

/// The client volfile of `volume` and the port the pool's mgmtds listen
/// on (asked of mgmtd when it was reached over its local socket), within
/// [`MGMT_DEADLINE_MS`].
pub async fn fetch_volfile(
    rt: &Runtime,
    mgmt: &Endpoint,
    volume: &str,
) -> Result<(String, u16), HealError> {
    let within = Duration::from_millis(MGMT_DEADLINE_MS);
    let deadline = rt.clock().now() + within;
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    let r = async {
        rpc.wait_connected(within)
            .await
            .map_err(|e| format!("cannot reach mgmtd at {mgmt}: {e}; is mgmtd running there?"))?;
        let req = CliRequest::GetVolfile {
            name: volume.to_string(),
            brick: None,
        };
        let left = || {
            deadline
                .saturating_duration_since(rt.clock().now())
                .max(Duration::from_millis(1))
        };
        let text = match cli_call(&rpc, &req, left()).await {
            Ok(Ok(CliReply::Volfile(text))) => text,
            Ok(Ok(other)) => {
                return Err(format!(
                    "mgmtd at {mgmt} answered the volfile request with {other:?}"
                ))
            }
            Ok(Err(refused)) => return Err(format!("mgmtd at {mgmt}: {refused}")),
            Err(e) => return Err(format!("mgmtd at {mgmt}: {e}")),
        };
        let port = match mgmt {
            Endpoint::Unix(_) => match cli_call(&rpc, &CliRequest::ListenPort, left()).await {
                Ok(Ok(CliReply::ListenPort(p))) if p != 0 => p,
                _ => DEFAULT_MGMT_PORT,
            },
            _ => mgmt_port_of(mgmt),
        };
        Ok((text, port))
    }
    .await;
    rpc.close();
    r.map_err(HealError::Mgmt)
}

/// [`heal_info`] from a volfile already fetched; bricks' mgmtds (for port
/// lookups) listen on `mgmt_port`.
pub async fn heal_info_from_volfile(
    rt: &Runtime,
    volume: &str,
    text: &str,
    mgmt_port: u16,
) -> Result<HealInfo, HealError> {
    let g = Graph::parse(text)
        .map_err(|e| HealError::Mgmt(format!("volfile of {volume} does not parse: {e}")))?;
    let mut id = [0u8; 16];
    rt.with_rng(|r| r.fill(&mut id));
    let client_id = format!("heal-info-{}", Gfid(id));
    let rt = rt.child(format!("heal info {volume}"));
    let graph = VolumeGraph::build(&rt, &g, mgmt_port, &client_id)
        .map_err(|e| HealError::Mgmt(format!("volfile of {volume}: {e}")))?;
    let deadline = rt.clock().now() + Duration::from_millis(BRICK_DEADLINE_MS);
    let domains = lock_domains(&graph);
    let handles: Vec<_> = graph
        .clients
        .iter()
        .zip(domains)
        .map(|(pc, domain)| {
            let (rt2, pc) = (rt.clone(), pc.clone());
            rt.spawn(async move { ask_brick(&rt2, &pc, domain, mgmt_port, deadline).await })
        })
        .collect();
    let mut bricks = Vec::with_capacity(handles.len());
    for (pc, h) in graph.clients.iter().zip(handles) {
        bricks.push(h.await.ok().flatten().unwrap_or_else(|| BrickInfo {
            brick: brick_name(pc),
            status: BrickStatus::Error("heal info was cancelled".into()),
            entries: Vec::new(),
            truncated: false,
        }));
    }
    judge_split_brain(&graph, &mut bricks, deadline).await;
    graph.close();
    rt.scope().kill();
    Ok(HealInfo {
        volume: volume.to_string(),
        bricks,
    })
}

fn brick_name(pc: &ProtocolClient) -> String {
    let a = pc.address();
    format!("{}:{}", a.host, a.brick_path)
}

/// The lock domain (set name) of each client, in client order.
fn lock_domains(g: &VolumeGraph) -> Vec<Option<String>> {
    let mut out = vec![None; g.clients.len()];
    for (set, members) in &g.heal_sets {
        let name = match set {
            SetLayer::Replicate(r) => r.set_name().to_string(),
            SetLayer::Disperse(d) => d.set_name().to_string(),
        };
        for &i in members {
            out[i] = Some(name.clone());
        }
    }
    out
}

/// One brick: reachable by the deadline, its index, its lock probes.
async fn ask_brick(
    rt: &Runtime,
    pc: &ProtocolClient,
    domain: Option<String>,
    mgmt_port: u16,
    deadline: Instant,
) -> BrickInfo {
    let brick = brick_name(pc);
    let failed = |why: String| BrickInfo {
        brick: brick_name(pc),
        status: BrickStatus::Error(why),
        entries: Vec::new(),
        truncated: false,
    };
    let clock = rt.clock().clone();
    if let Err(why) = resolve_host(rt, &pc.address().host, mgmt_port, deadline).await {
        return failed(why);
    }
    let left = deadline.saturating_duration_since(clock.now());
    // The first attempt's outcome: a brick that is not running says so at
    // once instead of holding its row until the deadline.
    if let Err(e) = pc.wait_first_attempt(left).await {
        return failed(e.to_string());
    }
    let listed = clock
        .timeout_at(deadline, pc.pending_heal(ENTRIES_PER_BRICK_MAX + 1))
        .await;
    let mut gfids = match listed {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return failed(format!("listing the pending-heal index: {e}")),
        Err(_) => {
            return failed(format!(
                "the pending-heal index did not arrive within {BRICK_DEADLINE_MS} ms"
            ))
        }
    };
    let truncated = gfids.len() > ENTRIES_PER_BRICK_MAX;
    gfids.truncate(ENTRIES_PER_BRICK_MAX);
    let domain = domain.map(|d| crate::steps::heal_domain(&d));
    // One lock dump tells every entry's claim at once; a brick that
    // cannot give one is probed entry by entry.
    if let Some(d) = &domain {
        let left = deadline.saturating_duration_since(clock.now());
        if let Ok(Ok((dump, _))) = clock
            .timeout_at(deadline, pc.call(&bp::LockDump {}, Bytes::new(), left))
            .await
        {
            let held = claimed_in(&dump, d);
            let entries = gfids
                .into_iter()
                .map(|gfid| PendingEntry {
                    gfid,
                    possibly_healing: Some(held.contains(&gfid)),
                    split_brain: None,
                })
                .collect();
            return BrickInfo {
                brick,
                status: BrickStatus::Connected,
                entries,
                truncated,
            };
        }
    }
    let mut entries = Vec::with_capacity(gfids.len());
    for gfid in gfids {
        let possibly_healing = match &domain {
            Some(d) => clock
                .timeout_at(deadline, probe_lock(pc, d, gfid))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        entries.push(PendingEntry {
            gfid,
            possibly_healing,
            split_brain: None,
        });
    }
    BrickInfo {
        brick,
        status: BrickStatus::Connected,
        entries,
        truncated,
    }
}

/// Resolve the brick's host (through the runtime's resolver, under its own
/// deadline and cache, and ours) so a DNS failure is reported as one.
async fn resolve_host(
    rt: &Runtime,
    host: &str,
    mgmt_port: u16,
    deadline: Instant,
) -> Result<(), String> {
    let ep: Endpoint = format!("{host}:{mgmt_port}")
        .parse()
        .map_err(|e: mortar_net::addr::AddrError| format!("brick host {host:?}: {e}"))?;
    match rt
        .clock()
        .timeout_at(deadline, rt.resolver().resolve(&ep))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "resolving {host} took longer than {BRICK_DEADLINE_MS} ms: DNS is slow or unreachable; check the DNS server or use an IP address"
        )),
    }
}

/// The files a lock dump shows held in `domain` (a set's self-heal
/// domain: a healer's claim), pure.
pub fn claimed_in(dump: &[LockInfo], domain: &str) -> BTreeSet<Gfid> {
    dump.iter()
        .filter(|l| l.granted && l.domain == domain)
        .filter_map(|l| match l.target {
            LockTarget::Inode { gfid, .. } => Some(gfid),
            LockTarget::Entry { .. } => None,
        })
        .collect()
}

/// Is `gfid` locked by someone (a heal or a write)? A shared lock that is
/// refused at once says yes; granted, it is given back at once. `None`
/// when the brick answered something else. (The caller bounds the time.)
async fn probe_lock(pc: &ProtocolClient, domain: &str, gfid: Gfid) -> Option<bool> {
    // This heal info run's own client id makes the owner unique.
    const PROBE_OWNER: u64 = 1;
    let lock = |kind| {
        Fop::Inodelk(bp::Inodelk {
            gfid,
            domain: domain.to_string(),
            kind,
            start: 0,
            len: 0,
            owner: PROBE_OWNER,
            wait_ms: None,
        })
    };
    match pc.fop(lock(LockKind::Read)).await {
        Ok(_) => {
            let _ = pc.fop(lock(LockKind::Unlock)).await;
            Some(false)
        }
        Err(e) if e.errno == Errno::EAGAIN => Some(true),
        Err(_) => None,
    }
}

/// Judge every entry of every replicate set's bricks for split-brain by
/// reading the set's copies, until the deadline.
async fn judge_split_brain(g: &VolumeGraph, bricks: &mut [BrickInfo], deadline: Instant) {
    for (set, members) in &g.heal_sets {
        let SetLayer::Replicate(r) = set else {
            continue;
        };
        let gfids: BTreeSet<Gfid> = members
            .iter()
            .flat_map(|&i| bricks[i].entries.iter().map(|e| e.gfid))
            .collect();
        // A page of files per request and brick, page after page; what
        // the deadline cuts off stays unjudged.
        let gfids: Vec<Gfid> = gfids.into_iter().collect();
        let clock = r.runtime().clock().clone();
        let mut judged: BTreeMap<Gfid, bool> = BTreeMap::new();
        for page in gfids.chunks(bp::GETXATTR_FILES_MAX) {
            let Ok(views) = clock.timeout_at(deadline, r.views_of_many(page)).await else {
                break;
            };
            for (gfid, v) in page.iter().zip(views) {
                judged.insert(*gfid, in_split_brain(&v, r.arbiter()));
            }
        }
        for &i in members {
            for e in &mut bricks[i].entries {
                e.split_brain = judged.get(&e.gfid).copied();
            }
        }
    }
}

/// A file is in split-brain when, for any of data, metadata or entries,
/// the copies that answered blame each other with no copy free of blame.
pub fn in_split_brain(views: &[Option<afr::BrickView>], arbiter: Option<usize>) -> bool {
    [Kind::Data, Kind::Metadata, Kind::Entry]
        .into_iter()
        .any(|k| matches!(afr::examine(views, k, arbiter), Verdict::SplitBrain { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, healing: Option<bool>, split: Option<bool>) -> PendingEntry {
        PendingEntry {
            gfid: Gfid([n; 16]),
            possibly_healing: healing,
            split_brain: split,
        }
    }

    fn brick(status: BrickStatus, entries: Vec<PendingEntry>) -> BrickInfo {
        BrickInfo {
            brick: "s1:/b".into(),
            status,
            entries,
            truncated: false,
        }
    }

    #[test]
    fn summary_counts() {
        let c = |t, p, s, h| BrickCounts {
            total: Some(t),
            heal_pending: Some(p),
            split_brain: Some(s),
            possibly_healing: Some(h),
        };
        let cases = [
            (
                "no entries",
                brick(BrickStatus::Connected, vec![]),
                c(0, 0, 0, 0),
            ),
            (
                "unknown flags count as heal pending",
                brick(
                    BrickStatus::Connected,
                    vec![entry(1, None, None), entry(2, None, None)],
                ),
                c(2, 2, 0, 0),
            ),
            (
                "one of each",
                brick(
                    BrickStatus::Connected,
                    vec![
                        entry(1, Some(false), Some(false)),
                        entry(2, Some(true), Some(false)),
                        entry(3, Some(false), Some(true)),
                    ],
                ),
                c(3, 1, 1, 1),
            ),
            (
                "split-brain wins over possibly healing",
                brick(
                    BrickStatus::Connected,
                    vec![entry(1, Some(true), Some(true))],
                ),
                c(1, 0, 1, 0),
            ),
            (
                "an unreachable brick has no counts",
                brick(BrickStatus::Error("down".into()), vec![]),
                BrickCounts::default(),
            ),
        ];
        for (what, b, want) in cases {
            assert_eq!(counts(&b), want, "{what}");
        }
    }

    #[test]
    fn a_claim_is_a_granted_inode_lock_in_the_heal_domain() {
        let lock = |domain: &str, target: LockTarget, granted: bool| LockInfo {
            domain: domain.into(),
            target,
            kind: LockKind::Write,
            owner: bp::LockOwner {
                client_id: "shd".into(),
                owner: 7,
            },
            client_name: "v-client-0".into(),
            since: 0,
            granted,
        };
        let inode = |n: u128| LockTarget::Inode {
            gfid: Gfid::from_u128(n),
            start: 0,
            len: 0,
        };
        let dump = vec![
            lock("v-replicate-0:self-heal", inode(1), true),
            lock("v-replicate-0:self-heal", inode(2), false),
            lock("v-replicate-0", inode(3), true),
            lock("v-replicate-1:self-heal", inode(4), true),
            lock(
                "v-replicate-0:self-heal",
                LockTarget::Entry {
                    parent: Gfid::from_u128(5),
                    name: None,
                },
                true,
            ),
        ];
        // Only 1: 2 is waited for, 3 is a writer's lock, 4 another set's
        // claim, 5 an entry lock.
        let want: BTreeSet<Gfid> = [Gfid::from_u128(1)].into_iter().collect();
        assert_eq!(claimed_in(&dump, "v-replicate-0:self-heal"), want);
    }

    #[test]
    fn split_brain_entries_are_the_flagged_ones() {
        let b = brick(
            BrickStatus::Connected,
            vec![
                entry(1, None, Some(true)),
                entry(2, None, None),
                entry(3, None, Some(false)),
            ],
        );
        let got: Vec<Gfid> = split_brain_entries(&b).iter().map(|e| e.gfid).collect();
        assert_eq!(got, vec![Gfid([1; 16])]);
    }

    #[test]
    fn split_brain_rule() {
        let v = |blames: &[[i64; 3]]| {
            Some(afr::BrickView {
                blames: blames.to_vec(),
                dirty: [0; 3],
            })
        };
        let z = [0i64; 3];
        let data = [1, 0, 0];
        let meta = [0, 1, 0];
        type Case = (
            &'static str,
            Vec<Option<afr::BrickView>>,
            Option<usize>,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("clean", vec![v(&[z, z]), v(&[z, z])], None, false),
            (
                "one blames the other",
                vec![v(&[z, data]), v(&[z, z])],
                None,
                false,
            ),
            (
                "data blamed both ways",
                vec![v(&[z, data]), v(&[data, z])],
                None,
                true,
            ),
            (
                "metadata blamed both ways",
                vec![v(&[z, meta]), v(&[meta, z])],
                None,
                true,
            ),
            (
                "data one way, metadata the other: no kind is split",
                vec![v(&[z, data]), v(&[meta, z])],
                None,
                false,
            ),
            (
                "the accuser is down",
                vec![v(&[z, data]), None],
                None,
                false,
            ),
            (
                "an arbiter that blames one side settles data",
                vec![v(&[z, data, z]), v(&[data, z, z]), v(&[z, data, z])],
                Some(2),
                false,
            ),
            ("nobody answered", vec![None, None], None, false),
        ];
        for (what, views, arbiter, want) in cases {
            assert_eq!(in_split_brain(&views, arbiter), want, "{what}");
        }
    }

    #[test]
    fn mgmt_port_from_the_endpoint_used() {
        let tcp: Endpoint = "s1:24100".parse().unwrap();
        assert_eq!(mgmt_port_of(&tcp), 24100);
        let unix: Endpoint = "/var/lib/mortar/mgmtd.sock".parse().unwrap();
        assert_eq!(mgmt_port_of(&unix), DEFAULT_MGMT_PORT);
    }
}
