//! The protocol client against a real brick and a stand-in port map:
//! child-up, calls, child-down when the brick dies, and back up (with a new
//! generation) when the brick returns on another port.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{port_of, posix_brick, PortMap};
use mortar_client::protocol::{BrickAddress, ProtocolClient};
use mortar_net::Runtime;
use mortar_proto::brick as bp;
use mortar_proto::{Errno, Gfid};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn child_up_down_and_back_on_a_new_port() {
    let dir = std::env::temp_dir().join(format!("mortar-client-proto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = Runtime::production("test");
    let pm = PortMap::start(&rt).await;
    let addr = BrickAddress {
        name: "vol-client-0".into(),
        host: "127.0.0.1".into(),
        brick_path: "/b1".into(),
        volume_id: "vol-id-1".into(),
        ping_timeout: Duration::from_secs(5),
        rdma: false,
    };
    let child = ProtocolClient::start(&rt, addr, pm.port, "client-1");
    // Not in the port map yet: down, saying why.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = child.state().get();
    assert!(!st.up);
    assert!(st.last_error.unwrap().contains("not in the port map"));
    let e = child
        .call(&bp::Stat { gfid: Gfid::ROOT }, Bytes::new(), T)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOTCONN);

    let b = posix_brick(&rt, &dir, "vol-id-1", "/b1").await;
    pm.set("/b1", Some(port_of(&b)));
    assert_eq!(child.wait_up(T).await.unwrap(), 1);
    let (attr, _) = child
        .call(&bp::Stat { gfid: Gfid::ROOT }, Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(attr.gfid, Gfid::ROOT);

    // The brick dies and leaves the port map (as mgmtd drops a dead
    // brick's entry; otherwise the child could briefly reach the dying
    // brick's listener again): child-down.
    pm.set("/b1", None);
    b.kill();
    let state = child.state();
    tokio::time::timeout(T, state.wait_for(|s| !s.up))
        .await
        .unwrap();
    // It comes back on another port: found through the port map again.
    let b2 = posix_brick(&rt, &dir, "vol-id-1", "/b1").await;
    pm.set("/b1", Some(port_of(&b2)));
    assert_eq!(child.wait_up(T).await.unwrap(), 2);
    child
        .call(&bp::Stat { gfid: Gfid::ROOT }, Bytes::new(), T)
        .await
        .unwrap();
    child.close();
    b2.shutdown().await;
    drop(pm);
    let _ = std::fs::remove_dir_all(&dir);
}
