//! Building a client graph from a volfile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mortar_net::Runtime;
use mortar_proto::volfile::Graph;
use mortar_proto::xlator::Xlator;

use crate::afr::Quorum;
use crate::disperse::Disperse;
use crate::distribute::Distribute;
use crate::fop::Child;
use crate::protocol::{BrickAddress, ProtocolClient};
use crate::replicate::Replicate;

/// A set of bricks that keeps redundancy, as the self-heal crate heals
/// it: its procedures differ by kind, so the graph names the kind.
#[derive(Clone)]
pub enum SetLayer {
    Replicate(Arc<Replicate>),
    Disperse(Arc<Disperse>),
}

/// A built graph: its top layer and the protocol clients under it.
pub struct VolumeGraph {
    pub top: Child,
    pub clients: Vec<ProtocolClient>,
    /// The distribute layer, when the volume has one (for migration).
    pub distribute: Option<Arc<Distribute>>,
    /// Replicate and disperse sets with the indices (into `clients`) of
    /// their bricks (for the self-heal daemon).
    pub heal_sets: Vec<(SetLayer, Vec<usize>)>,
}

impl VolumeGraph {
    /// Build every node of `g` (each defined after its subvolumes).
    /// `mgmt_port` is where bricks' hosts run mgmtd (for port lookups).
    pub fn build(
        rt: &Runtime,
        g: &Graph,
        mgmt_port: u16,
        client_id: &str,
    ) -> Result<VolumeGraph, String> {
        let mut built: BTreeMap<String, Child> = BTreeMap::new();
        let mut clients = Vec::new();
        let mut distribute = None;
        let mut heal_sets: Vec<(SetLayer, Vec<usize>)> = Vec::new();
        for n in &g.nodes {
            let subs: Result<Vec<Child>, String> = n
                .subvolumes
                .iter()
                .map(|s| {
                    built
                        .get(s)
                        .cloned()
                        .ok_or_else(|| format!("volfile: {} uses undefined {s}", n.name))
                })
                .collect();
            let subs = subs?;
            let layer: Child = match Xlator::from_node(n)? {
                Xlator::Client(_) => {
                    let pc = ProtocolClient::start(
                        rt,
                        BrickAddress::from_node(n)?,
                        mgmt_port,
                        client_id,
                    );
                    clients.push(pc.clone());
                    Arc::new(pc)
                }
                Xlator::Replicate(x) => {
                    let members = members_of(&clients, &n.subvolumes);
                    let r = Arc::new(Replicate::new(
                        rt,
                        &n.name,
                        subs,
                        Quorum::from_options(&x.quorum_type, x.quorum_count as usize),
                        x.arbiter,
                    ));
                    heal_sets.push((SetLayer::Replicate(r.clone()), members));
                    r
                }
                Xlator::Distribute(x) => {
                    let mut drained = std::collections::BTreeSet::new();
                    for name in &x.decommissioned {
                        let i = n.subvolumes.iter().position(|s| s == name).ok_or_else(|| {
                            format!(
                                "volfile: {}: decommissioned subvolume {name} is not one of its subvolumes",
                                n.name
                            )
                        })?;
                        drained.insert(i);
                    }
                    let d = Arc::new(Distribute::with_drained(&n.name, subs, drained));
                    distribute = Some(d.clone());
                    d
                }
                Xlator::Disperse(x) => {
                    let members = members_of(&clients, &n.subvolumes);
                    let d = Arc::new(Disperse::new(rt, &n.name, subs, x.redundancy as usize)?);
                    heal_sets.push((SetLayer::Disperse(d.clone()), members));
                    d
                }
                Xlator::Server(_) | Xlator::Posix(_) => {
                    return Err(format!(
                        "volfile: {} is a brick-side {} layer, not one a client builds",
                        n.name, n.kind
                    ))
                }
            };
            built.insert(n.name.clone(), layer);
        }
        let top = g
            .top()
            .and_then(|t| built.get(&t.name).cloned())
            .ok_or("volfile: empty graph")?;
        Ok(VolumeGraph {
            top,
            clients,
            distribute,
            heal_sets,
        })
    }

    /// Wait (bounded) until every brick is connected, or return how many
    /// are; a volume is usable before all are.
    pub async fn wait_connected(&self, rt: &Runtime, within: Duration) -> usize {
        let deadline = rt.clock().now() + within;
        loop {
            let up = self.clients.iter().filter(|c| c.is_up()).count();
            if up == self.clients.len() || rt.clock().now() >= deadline {
                return up;
            }
            rt.clock().sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn close(&self) {
        for c in &self.clients {
            c.close();
        }
    }
}

/// Indices (into `clients`) of the named subvolumes.
fn members_of(clients: &[ProtocolClient], names: &[String]) -> Vec<usize> {
    names
        .iter()
        .filter_map(|s| clients.iter().position(|c| c.name() == s))
        .collect()
}
