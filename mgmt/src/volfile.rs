//! Volfiles for a volume: the client graph (protocol clients, then
//! replicate or disperse sets, then distribute on top) and one server
//! graph per brick. Pure functions of the volume.

use mortar_proto::volfile::Graph;
use mortar_proto::xlator::{
    ClientLayer, DisperseLayer, DistributeLayer, PosixLayer, ReplicateLayer, ServerLayer, Xlator,
};

use crate::options;
use crate::volume::{BrickSpec, Layout, Volume};

/// The name clients mount: the top of the client graph.
pub fn top_name(v: &Volume) -> String {
    v.name.clone()
}

/// The graph a client builds to use the volume.
pub fn client_graph(v: &Volume) -> Graph {
    let opt = |k| options::get(&v.options, k).unwrap_or_default();
    let mut nodes = Vec::new();
    let clients: Vec<String> = v
        .bricks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let name = format!("{}-client-{i}", v.name);
            let layer = Xlator::Client(ClientLayer {
                remote_host: b.host.clone(),
                remote_subvolume: b.path.clone(),
                transport: v.transport,
                ping_timeout_secs: options::get_u64(&v.options, options::PING_TIMEOUT),
                volume_id: v.id.clone(),
            });
            nodes.push(layer.to_node(&name, vec![]));
            name
        })
        .collect();
    let set = v.layout.set_size().max(1) as usize;
    let sets: Vec<String> = match v.layout {
        Layout::Distribute => clients.clone(),
        Layout::Replicate { arbiter, .. } => clients
            .chunks(set)
            .enumerate()
            .map(|(i, members)| {
                let name = format!("{}-replicate-{i}", v.name);
                let layer = Xlator::Replicate(ReplicateLayer {
                    arbiter,
                    quorum_type: opt(options::QUORUM_TYPE),
                    quorum_count: options::get_u64(&v.options, options::QUORUM_COUNT) as u32,
                });
                nodes.push(layer.to_node(&name, members.to_vec()));
                name
            })
            .collect(),
        Layout::Disperse { redundancy, .. } => clients
            .chunks(set)
            .enumerate()
            .map(|(i, members)| {
                let name = format!("{}-disperse-{i}", v.name);
                let layer = Xlator::Disperse(DisperseLayer { redundancy });
                nodes.push(layer.to_node(&name, members.to_vec()));
                name
            })
            .collect(),
    };
    // remove-brick start: the drained sets take no new files; theirs migrate.
    let top = Xlator::Distribute(DistributeLayer {
        decommissioned: v
            .decommissioned_sets()
            .into_iter()
            .map(|i| sets[i].clone())
            .collect(),
    });
    nodes.push(top.to_node(&top_name(v), sets));
    Graph {
        description: format!("volume {} (client graph), version {}", v.name, v.version),
        nodes,
    }
}

/// The graph one brick serves.
pub fn brick_graph(v: &Volume, brick: &BrickSpec) -> Graph {
    let opt = |k| options::get(&v.options, k).unwrap_or_default();
    let posix = format!("{}-posix", v.name);
    let storage = Xlator::Posix(PosixLayer {
        directory: brick.path.clone(),
        volume_id: v.id.clone(),
        fsync_namespace: opt(options::FSYNC_NAMESPACE) == "on",
    });
    let server = Xlator::Server(ServerLayer {
        transport: v.transport,
        auth_allow: opt(options::AUTH_ALLOW),
        auth_reject: opt(options::AUTH_REJECT),
        ping_timeout_secs: options::get_u64(&v.options, options::PING_TIMEOUT),
        event_threads: options::get_u64(&v.options, options::SERVER_EVENT_THREADS) as u32,
    });
    Graph {
        description: format!("volume {} (brick {brick}), version {}", v.name, v.version),
        nodes: vec![
            storage.to_node(&posix, vec![]),
            server.to_node(&format!("{}-server", v.name), vec![posix]),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{parse_brick, Transport, VolumeStatus};
    use std::collections::BTreeMap;

    fn vol(layout: Layout, bricks: &[&str]) -> Volume {
        Volume {
            name: "vol1".into(),
            id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            layout,
            transport: Transport::Tcp,
            bricks: bricks.iter().map(|b| parse_brick(b).unwrap()).collect(),
            status: VolumeStatus::Created,
            options: BTreeMap::new(),
            version: 4,
            removing: Vec::new(),
        }
    }

    #[test]
    fn distributed_replicate_client_volfile() {
        let mut v = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            &[
                "s1:/b/1", "s2:/b/1", "s3:/b/1", "s1:/b/2", "s2:/b/2", "s3:/b/2",
            ],
        );
        v.options.insert("network.ping-timeout".into(), "10".into());
        let g = client_graph(&v);
        let text = g.render();
        assert_eq!(mortar_proto::volfile::Graph::parse(&text).unwrap(), g);
        insta::assert_snapshot!("client_2x3", text);
    }

    #[test]
    fn draining_sets_are_named_in_the_client_volfile() {
        let mut v = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            &[
                "s1:/b/1", "s2:/b/1", "s3:/b/1", "s1:/b/2", "s2:/b/2", "s3:/b/2",
            ],
        );
        // Part of a set draining marks nothing; the whole set marks it.
        v.removing = vec![parse_brick("s1:/b/1").unwrap()];
        assert!(!client_graph(&v).render().contains("decommissioned"));
        v.removing = v.bricks[..3].to_vec();
        let text = client_graph(&v).render();
        assert!(
            text.contains("option decommissioned-subvolumes vol1-replicate-0\n"),
            "{text}"
        );
        assert_eq!(v.decommissioned_sets(), vec![0]);
    }

    #[test]
    fn disperse_and_arbiter_and_distribute_volfiles() {
        let d = vol(
            Layout::Disperse {
                data: 4,
                redundancy: 2,
            },
            &["s1:/e", "s2:/e", "s3:/e", "s4:/e", "s5:/e", "s6:/e"],
        );
        insta::assert_snapshot!("client_disperse_4_2", client_graph(&d).render());
        let mut a = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: true,
            },
            &["s1:/a", "s2:/a", "s3:/a"],
        );
        a.options
            .insert("cluster.quorum-type".into(), "fixed".into());
        a.options.insert("cluster.quorum-count".into(), "2".into());
        insta::assert_snapshot!("client_arbiter_fixed_quorum", client_graph(&a).render());
        let p = vol(Layout::Distribute, &["s1:/p", "s2:/p"]);
        insta::assert_snapshot!("client_distribute", client_graph(&p).render());
    }

    #[test]
    fn brick_volfile() {
        let mut v = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            &["s1:/b", "s2:/b", "s3:/b"],
        );
        v.options.insert("auth.allow".into(), "10.0.0.*".into());
        insta::assert_snapshot!("brick_s1", brick_graph(&v, &v.bricks[0].clone()).render());
    }
}
