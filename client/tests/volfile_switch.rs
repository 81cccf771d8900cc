//! A client that switches graphs (the volfile changed: a brick restarted
//! on a new port, an option was set) must still report the new graph's
//! connections as new: the self-heal daemon starts a crawl on exactly that.

mod common;

use common::{Bricks, T};
use mortar_client::api::Client;
use mortar_proto::volfile::Graph;
use mortar_proto::volume::Transport;
use mortar_proto::xlator::{ClientLayer, DistributeLayer, ReplicateLayer, Xlator};

/// A replica-3 volfile over the test bricks; `version` only changes the
/// text (as a volume's version does), not the graph.
fn volfile(vol: &str, version: u32) -> String {
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for i in 0..3 {
        let name = format!("{vol}-client-{i}");
        let layer = Xlator::Client(ClientLayer {
            remote_host: "127.0.0.1".into(),
            remote_subvolume: format!("/b{i}"),
            transport: Transport::Tcp,
            ping_timeout_secs: 5,
            volume_id: vol.into(),
        });
        nodes.push(layer.to_node(&name, vec![]));
        names.push(name);
    }
    let set = Xlator::Replicate(ReplicateLayer {
        arbiter: false,
        quorum_type: "auto".into(),
        quorum_count: 1,
    });
    nodes.push(set.to_node(&format!("{vol}-replicate-0"), names));
    let top = Xlator::Distribute(DistributeLayer::default());
    nodes.push(top.to_node(vol, vec![format!("{vol}-replicate-0")]));
    Graph {
        description: format!("volume {vol} (client graph), version {version}"),
        nodes,
    }
    .render()
}

/// Regression (issue 11): after `volume start force` a restarted brick
/// came back on a new port, the client switched to a new graph whose
/// connection generations began again at 1, the sum equalled the old one,
/// and the self-heal daemon saw no reconnect (heal waited for
/// cluster.heal-timeout, 10 minutes). Fixed by keeping the old graphs'
/// count in `connections_made`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_made_grows_across_a_graph_switch() {
    let b = Bricks::start("vswitch", 3).await;
    let c = Client::from_volfile(&b.rt, "vswitch", &volfile("vswitch", 1), b.map_port()).unwrap();
    assert_eq!(c.wait_all_bricks(T).await, 3);
    let before = c.connections_made();
    assert_eq!(before, 3, "one connection per brick");
    assert!(c.switch_volfile(&volfile("vswitch", 2)).await.unwrap());
    assert_eq!(c.wait_all_bricks(T).await, 3);
    let after = c.connections_made();
    assert!(
        after > before,
        "the new graph's connections must count as new: {before} -> {after}"
    );
    // The same text again is not a switch, and changes nothing.
    assert!(!c.switch_volfile(&volfile("vswitch", 2)).await.unwrap());
    assert_eq!(c.connections_made(), after);
    c.unmount();
}
