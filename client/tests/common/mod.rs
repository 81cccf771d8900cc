//! Real bricks on loopback for the set-layer tests: a port map, `n`
//! bricks on temporary directories, and one protocol client per brick;
//! bricks can be killed and revived on a new port.
#![allow(dead_code)] // each test file uses its own part

pub mod disperse;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_client::fop::{Child, Fop, FopOut, Subvolume};
use mortar_client::protocol::{BrickAddress, ProtocolClient};
use mortar_net::rpc::{Fault, Reply, Request, RpcConfig, RpcServer, ServerHandle, Service};
use mortar_net::{Addr, BoxFuture, Endpoint, Runtime};
use mortar_node::brick::BrickConfig;
use mortar_node::server::{start_brick, BrickServerConfig, RunningBrick};
use mortar_node::service::AuthRules;
use mortar_proto::brick::{self as bp};
use mortar_proto::Gfid;
use mortar_storage::posix::PosixStorage;

pub const T: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Map(Mutex<BTreeMap<String, u16>>);
struct MapService(Arc<Map>);
impl Service for MapService {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let map = self.0.clone();
        Box::pin(async move {
            // Only lookups: a client's wait for a sign-in is refused, and
            // it polls instead.
            if req.procedure != mortar_proto::portmap::procs::QUERY {
                return Err(Fault::new(
                    mortar_net::rpc::FaultCode::ProcUnavail,
                    "this stand-in port map only answers queries",
                ));
            }
            let q: mortar_proto::portmap::Query = req.decode()?;
            Reply::encode(&map.0.lock().unwrap().get(&q.brick_path).copied())
        })
    }
}

/// A stand-in for mgmtd's port map: brick path -> port.
pub struct PortMap {
    map: Arc<Map>,
    _server: ServerHandle,
    pub port: u16,
}

impl PortMap {
    pub async fn start(rt: &Runtime) -> PortMap {
        let map = Arc::new(Map::default());
        let mut s = RpcServer::new(rt.clone(), RpcConfig::default());
        s.register(
            mortar_proto::portmap::PROGRAM_PORTMAP,
            Arc::new(MapService(map.clone())),
        );
        let h = s.listen(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
        let Addr::Inet(sa) = h.local_addr().clone() else {
            unreachable!()
        };
        PortMap {
            map,
            _server: h,
            port: sa.port(),
        }
    }

    /// Say where the brick at `path` listens (`None`: not running).
    pub fn set(&self, path: &str, port: Option<u16>) {
        let mut m = self.map.0.lock().unwrap();
        match port {
            Some(p) => m.insert(path.to_string(), p),
            None => m.remove(path),
        };
    }
}

/// A brick of volume `vol` on `dir`, listening on a loopback port.
pub async fn posix_brick(
    rt: &Runtime,
    dir: &Path,
    vol: &str,
    path: &str,
) -> RunningBrick<PosixStorage> {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = BrickServerConfig {
        brick: BrickConfig::new(vol),
        brick_path: path.into(),
        listen: Endpoint::tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        mgmt: None,
        auth: AuthRules::default(),
        rpc: RpcConfig::default(),
    };
    start_brick(rt, PosixStorage::open(dir).unwrap(), cfg)
        .await
        .unwrap()
}

pub fn port_of(b: &RunningBrick<PosixStorage>) -> u16 {
    match &b.local {
        Addr::Inet(sa) => sa.port(),
        Addr::Unix(_) => unreachable!("loopback bricks listen on TCP"),
    }
}

pub struct Bricks {
    pub rt: Runtime,
    pub vol: String,
    pub dir: PathBuf,
    map: PortMap,
    bricks: Vec<Option<RunningBrick<PosixStorage>>>,
    pub clients: Vec<ProtocolClient>,
}

impl Bricks {
    /// `n` bricks of volume `vol`, all connected.
    pub async fn start(vol: &str, n: usize) -> Bricks {
        let dir = std::env::temp_dir().join(format!("mortar-client-{vol}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = Runtime::production("test");
        let map = PortMap::start(&rt).await;
        let mut c = Bricks {
            rt: rt.clone(),
            vol: vol.to_string(),
            dir,
            map,
            bricks: vec![],
            clients: vec![],
        };
        for i in 0..n {
            c.bricks.push(Some(c.brick(i).await));
            let addr = BrickAddress {
                name: format!("{vol}-client-{i}"),
                host: "127.0.0.1".into(),
                brick_path: format!("/b{i}"),
                volume_id: vol.into(),
                ping_timeout: Duration::from_secs(5),
                rdma: false,
            };
            c.clients
                .push(ProtocolClient::start(&rt, addr, c.map.port, "client-a"));
        }
        for cl in &c.clients {
            cl.wait_up(T).await.unwrap();
        }
        c
    }

    /// Where the bricks' port map listens (the "mgmtd port" of a volfile
    /// built over these bricks).
    pub fn map_port(&self) -> u16 {
        self.map.port
    }

    pub fn children(&self) -> Vec<Child> {
        self.clients
            .iter()
            .map(|p| Arc::new(p.clone()) as Child)
            .collect()
    }

    async fn brick(&self, i: usize) -> RunningBrick<PosixStorage> {
        let path = format!("/b{i}");
        let b = posix_brick(&self.rt, &self.dir.join(format!("b{i}")), &self.vol, &path).await;
        self.map.set(&path, Some(port_of(&b)));
        b
    }

    /// Kill brick `i` and wait until its client has seen it go.
    pub async fn kill(&mut self, i: usize) {
        self.bricks[i].take().unwrap().kill();
        self.map.set(&format!("/b{i}"), None);
        let st = self.clients[i].state();
        tokio::time::timeout(T, st.wait_for(|s| !s.up))
            .await
            .unwrap();
    }

    /// Start brick `i` again (same directory) and wait for its client.
    pub async fn revive(&mut self, i: usize) {
        self.bricks[i] = Some(self.brick(i).await);
        self.clients[i].wait_up(T).await.unwrap();
    }

    /// What brick `i` itself holds for `g` (first MiB).
    pub async fn read_on(&self, i: usize, g: Gfid) -> Bytes {
        match self.clients[i]
            .fop(Fop::Read(bp::Read {
                gfid: g,
                offset: 0,
                len: 1 << 20,
            }))
            .await
            .unwrap()
        {
            FopOut::Data(d) => d,
            other => panic!("{other:?}"),
        }
    }
}
