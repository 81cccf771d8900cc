//! Building a client graph from a volfile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mortar_net::Runtime;
use mortar_proto::volfile::{Graph, Node};
use mortar_proto::xlator::Xlator;

use crate::afr::Quorum;
use crate::disperse::Disperse;
use crate::distribute::Distribute;
use crate::error::ClientError;
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

/// The layers built so far while a graph is read top-down from its
/// first node (every node is defined after its subvolumes).
struct Builder<'a> {
    rt: &'a Runtime,
    mgmt_port: u16,
    client_id: &'a str,
    built: BTreeMap<String, Child>,
    clients: Vec<ProtocolClient>,
    distribute: Option<Arc<Distribute>>,
    heal_sets: Vec<(SetLayer, Vec<usize>)>,
}

fn volfile_error(text: String) -> ClientError {
    ClientError::Volfile(text)
}

impl Builder<'_> {
    fn subvolumes(&self, n: &Node) -> Result<Vec<Child>, ClientError> {
        n.subvolumes
            .iter()
            .map(|s| {
                self.built
                    .get(s)
                    .cloned()
                    .ok_or_else(|| volfile_error(format!("volfile: {} uses undefined {s}", n.name)))
            })
            .collect()
    }

    /// Build node `n` over its (already built) subvolumes.
    fn layer(&mut self, n: &Node) -> Result<Child, ClientError> {
        let subs = self.subvolumes(n)?;
        let members = members_of(&self.clients, &n.subvolumes);
        Ok(match Xlator::from_node(n).map_err(volfile_error)? {
            Xlator::Client(x) => {
                let addr = BrickAddress::from_layer(&n.name, &x);
                let pc = ProtocolClient::start(self.rt, addr, self.mgmt_port, self.client_id);
                self.clients.push(pc.clone());
                Arc::new(pc)
            }
            Xlator::Replicate(x) => {
                let quorum = Quorum::from_options(&x.quorum_type, x.quorum_count as usize);
                let r = Arc::new(Replicate::new(self.rt, &n.name, subs, quorum, x.arbiter));
                self.heal_sets
                    .push((SetLayer::Replicate(r.clone()), members));
                r
            }
            Xlator::Distribute(x) => {
                let drained = drained_indices(n, &x.decommissioned)?;
                let d = Arc::new(Distribute::with_drained(&n.name, subs, drained));
                self.distribute = Some(d.clone());
                d
            }
            Xlator::Disperse(x) => {
                let d = Disperse::new(self.rt, &n.name, subs, x.redundancy as usize)
                    .map_err(volfile_error)?;
                let d = Arc::new(d);
                self.heal_sets
                    .push((SetLayer::Disperse(d.clone()), members));
                d
            }
            Xlator::Server(_) | Xlator::Posix(_) => {
                return Err(volfile_error(format!(
                    "volfile: {} is a brick-side {} layer, not one a client builds",
                    n.name, n.kind
                )))
            }
        })
    }
}

/// Positions (among `n`'s subvolumes) of the sets being drained.
fn drained_indices(n: &Node, names: &[String]) -> Result<BTreeSet<usize>, ClientError> {
    names
        .iter()
        .map(|name| {
            n.subvolumes.iter().position(|s| s == name).ok_or_else(|| {
                volfile_error(format!(
                    "volfile: {}: decommissioned subvolume {name} is not one of its subvolumes",
                    n.name
                ))
            })
        })
        .collect()
}

impl VolumeGraph {
    /// Build every node of `g` (each defined after its subvolumes).
    /// `mgmt_port` is where bricks' hosts run mgmtd (for port lookups).
    pub fn build(
        rt: &Runtime,
        g: &Graph,
        mgmt_port: u16,
        client_id: &str,
    ) -> Result<VolumeGraph, ClientError> {
        let mut b = Builder {
            rt,
            mgmt_port,
            client_id,
            built: BTreeMap::new(),
            clients: Vec::new(),
            distribute: None,
            heal_sets: Vec::new(),
        };
        for n in &g.nodes {
            let layer = b.layer(n)?;
            b.built.insert(n.name.clone(), layer);
        }
        let top = g
            .top()
            .and_then(|t| b.built.get(&t.name).cloned())
            .ok_or_else(|| volfile_error("volfile: empty graph".into()))?;
        Ok(VolumeGraph {
            top,
            clients: b.clients,
            distribute: b.distribute,
            heal_sets: b.heal_sets,
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
