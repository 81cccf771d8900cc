//! The protocol client against a real brick and a stand-in port map:
//! child-up, calls, child-down when the brick dies, and back up (with a new
//! generation) when the brick returns on another port.
#![allow(clippy::disallowed_methods)] // Loopback and real time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_client::protocol::{BrickAddress, ProtocolClient};
use mortar_net::rpc::{Fault, Reply, Request, RpcConfig, RpcServer, ServerHandle, Service};
use mortar_net::{Addr, BoxFuture, Endpoint, Runtime};
use mortar_node::brick::BrickConfig;
use mortar_node::server::{start_brick, BrickServerConfig, RunningBrick};
use mortar_node::service::AuthRules;
use mortar_node::storage::posix::PosixStorage;
use mortar_proto::brick as bp;
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};
use mortar_proto::{Errno, Gfid};

const T: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Map(Mutex<BTreeMap<String, u16>>);

struct MapService(Arc<Map>);

impl Service for MapService {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let map = self.0.clone();
        Box::pin(async move {
            let q: portmap::Query = req.decode()?;
            Reply::encode(&map.0.lock().unwrap().get(&q.brick_path).copied())
        })
    }
}

async fn portmap(rt: &Runtime, map: Arc<Map>) -> (ServerHandle, u16) {
    let mut s = RpcServer::new(rt.clone(), RpcConfig::default());
    s.register(PROGRAM_PORTMAP, Arc::new(MapService(map)));
    let h = s.listen(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
    let Addr::Inet(sa) = h.local_addr().clone() else {
        unreachable!()
    };
    (h, sa.port())
}

async fn brick(rt: &Runtime, dir: &std::path::Path) -> RunningBrick<PosixStorage> {
    let cfg = BrickServerConfig {
        brick: BrickConfig::new("vol-id-1"),
        brick_path: "/b1".into(),
        listen: Endpoint::tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        mgmt: None,
        auth: AuthRules::default(),
        rpc: RpcConfig::default(),
    };
    start_brick(rt, PosixStorage::open(dir).unwrap(), cfg)
        .await
        .unwrap()
}

fn port_of(b: &RunningBrick<PosixStorage>) -> u16 {
    match &b.local {
        Addr::Inet(sa) => sa.port(),
        Addr::Unix(_) => unreachable!(),
    }
}

#[tokio::test]
async fn child_up_down_and_back_on_a_new_port() {
    let dir = std::env::temp_dir().join(format!("mortar-client-proto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = Runtime::production("test");
    let map = Arc::new(Map::default());
    let (pm, pm_port) = portmap(&rt, map.clone()).await;
    let addr = BrickAddress {
        name: "vol-client-0".into(),
        host: "127.0.0.1".into(),
        brick_path: "/b1".into(),
        volume_id: "vol-id-1".into(),
        ping_timeout: Duration::from_secs(5),
        rdma: false,
    };
    let child = ProtocolClient::start(&rt, addr, pm_port, "client-1");
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

    let b = brick(&rt, &dir).await;
    map.0.lock().unwrap().insert("/b1".into(), port_of(&b));
    assert_eq!(child.wait_up(T).await.unwrap(), 1);
    let (attr, _) = child
        .call(&bp::Stat { gfid: Gfid::ROOT }, Bytes::new(), T)
        .await
        .unwrap();
    assert_eq!(attr.gfid, Gfid::ROOT);

    // The brick dies and leaves the port map (as mgmtd drops a dead
    // brick's entry; otherwise the child could briefly reach the dying
    // brick's listener again): child-down.
    map.0.lock().unwrap().remove("/b1");
    b.kill();
    let state = child.state();
    tokio::time::timeout(T, state.wait_for(|s| !s.up))
        .await
        .unwrap();
    // It comes back on another port: found through the port map again.
    let b2 = brick(&rt, &dir).await;
    map.0.lock().unwrap().insert("/b1".into(), port_of(&b2));
    assert_eq!(child.wait_up(T).await.unwrap(), 2);
    child
        .call(&bp::Stat { gfid: Gfid::ROOT }, Bytes::new(), T)
        .await
        .unwrap();
    child.close();
    b2.shutdown().await;
    pm.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
