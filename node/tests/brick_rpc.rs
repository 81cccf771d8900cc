//! The brick over the messenger on loopback: file operations end to end,
//! the handshake and auth rules, locks dying with their connection, port
//! map sign-in, and hostile requests.
#![allow(clippy::disallowed_methods)] // Real sockets, real time: loopback tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_client::remote::RemoteBrick;
use mortar_net::rpc::{Fault, Reply, Request, RpcClient, RpcConfig, RpcServer, Service};
use mortar_net::{Addr, BoxFuture, Endpoint, Runtime};
use mortar_node::brick::BrickConfig;
use mortar_node::server::{start_brick, BrickServerConfig, RunningBrick};
use mortar_node::service::AuthRules;
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, LockKind, NewObject};
use mortar_proto::portmap::{self, PROGRAM_PORTMAP};
use mortar_proto::{Errno, FileKind, Gfid};
use mortar_storage::posix::PosixStorage;
use proptest::prelude::*;

const T: Duration = Duration::from_secs(10);
static NEXT: AtomicU32 = AtomicU32::new(0);

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    let d = std::env::temp_dir().join(format!(
        "mortar-brick-rpc-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("brick")).unwrap();
    Scratch(d)
}

fn config(dir: &Scratch, auth: AuthRules, mgmt: Option<Endpoint>) -> BrickServerConfig {
    BrickServerConfig {
        brick: BrickConfig::new("vol1"),
        brick_path: dir.0.join("brick").display().to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mgmt,
        auth,
        rpc: RpcConfig::default(),
    }
}

async fn serve(rt: &Runtime, dir: &Scratch, auth: AuthRules) -> RunningBrick<PosixStorage> {
    let storage = PosixStorage::open(&dir.0.join("brick")).unwrap();
    start_brick(rt, storage, config(dir, auth, None))
        .await
        .unwrap()
}

fn endpoint(b: &RunningBrick<PosixStorage>) -> Endpoint {
    match &b.local {
        Addr::Inet(sa) => Endpoint::tcp(sa.ip(), sa.port()),
        Addr::Unix(p) => Endpoint::Unix(p.clone()),
    }
}

async fn client(rt: &Runtime, b: &RunningBrick<PosixStorage>, id: &str) -> RemoteBrick {
    let rpc = RpcClient::new(rt, endpoint(b), RpcConfig::default());
    rpc.wait_connected(T).await.unwrap();
    let r = RemoteBrick::new(rpc);
    r.connect("vol1", "", id, &format!("{id}-name"), T)
        .await
        .unwrap();
    r
}

fn obj(n: u128) -> NewObject {
    NewObject {
        // Clear of the root's gfid (1).
        gfid: Gfid::from_u128(0x1_0000 + n),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

#[tokio::test]
async fn file_operations_end_to_end() {
    let dir = scratch();
    let rt = Runtime::production("test");
    let b = serve(&rt, &dir, AuthRules::default()).await;
    let c = client(&rt, &b, "c1").await;
    let d = c
        .call(
            &bp::Mkdir {
                parent: Gfid::ROOT,
                name: "docs".into(),
                new: NewObject {
                    mode: 0o755,
                    ..obj(1)
                },
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(d.kind, FileKind::Directory);
    c.call(
        &bp::Create {
            parent: obj(1).gfid,
            name: "a.bin".into(),
            new: obj(2),
        },
        T,
    )
    .await
    .unwrap();
    let data: Bytes = (0..(1u32 << 20)).map(|i| (i * 13) as u8).collect();
    let w = c
        .write(
            &bp::Write {
                gfid: obj(2).gfid,
                offset: 4096,
            },
            data.clone(),
            T,
        )
        .await
        .unwrap();
    assert_eq!((w.written, w.size), (1 << 20, 4096 + (1 << 20)));
    let back = c
        .read(
            &bp::Read {
                gfid: obj(2).gfid,
                offset: 4096,
                len: 1 << 20,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(back, data);
    // Block checksums and holes over the wire (heal's procedures).
    let sums = c
        .call(
            &bp::Rchecksum {
                gfid: obj(2).gfid,
                offset: 0,
                len: 8 << 20,
                block_size: bp::HEAL_BLOCK_BYTES,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(sums.size, 4096 + (1 << 20));
    assert_eq!(sums.blocks.len(), 9);
    assert!(sums.blocks.iter().all(|b| !b.zero));
    c.call(
        &bp::Discard {
            gfid: obj(2).gfid,
            offset: 0,
            len: 1 << 20,
        },
        T,
    )
    .await
    .unwrap();
    let sums = c
        .call(
            &bp::Rchecksum {
                gfid: obj(2).gfid,
                offset: 0,
                len: 2 << 20,
                block_size: 1 << 20,
            },
            T,
        )
        .await
        .unwrap();
    let zero: Vec<bool> = sums.blocks.iter().map(|b| b.zero).collect();
    assert_eq!(zero, [true, false]);
    let e = c
        .call(
            &bp::Rchecksum {
                gfid: obj(2).gfid,
                offset: 0,
                len: 1 << 20,
                block_size: 0,
            },
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.errno, mortar_proto::Errno::EINVAL);
    // Put the data back for what follows.
    c.write(
        &bp::Write {
            gfid: obj(2).gfid,
            offset: 4096,
        },
        data.clone(),
        T,
    )
    .await
    .unwrap();
    c.call(
        &bp::Rename {
            old_parent: obj(1).gfid,
            old_name: "a.bin".into(),
            new_parent: Gfid::ROOT,
            new_name: "b.bin".into(),
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(
        c.call(
            &bp::Lookup {
                parent: Gfid::ROOT,
                name: "b.bin".into()
            },
            T
        )
        .await
        .unwrap()
        .gfid,
        obj(2).gfid
    );
    let page = c
        .call(
            &bp::Readdir {
                dir: Gfid::ROOT,
                after: None,
                max_entries: 10,
            },
            T,
        )
        .await
        .unwrap();
    let names: Vec<&str> = page.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["b.bin", "docs"]);
    let r = c
        .call(
            &bp::Xattrop {
                gfid: obj(2).gfid,
                deltas: vec![(
                    format!("{}c0", xa::CHANGELOG_PREFIX),
                    CounterDelta::Add32(vec![1, 0, 0]),
                )],
                durable: true,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(r[0].1, CounterDelta::Add32(vec![1, 0, 0]));
    assert_eq!(c.call(&bp::IndexCount {}, T).await.unwrap(), 1);
    assert!(c.call(&bp::Statfs {}, T).await.unwrap().blocks > 0);
    let e = c
        .call(
            &bp::Lookup {
                parent: Gfid::ROOT,
                name: "missing".into(),
            },
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT);
    c.call(
        &bp::Unlink {
            parent: Gfid::ROOT,
            name: "b.bin".into(),
        },
        T,
    )
    .await
    .unwrap();
    assert_eq!(c.call(&bp::IndexCount {}, T).await.unwrap(), 0);
    b.shutdown().await;
}

#[tokio::test]
async fn connect_is_required_and_checks_volume_and_auth() {
    let dir = scratch();
    let rt = Runtime::production("test");
    let b = serve(&rt, &dir, AuthRules::default()).await;
    let rpc = RpcClient::new(&rt, endpoint(&b), RpcConfig::default());
    rpc.wait_connected(T).await.unwrap();
    let raw = RemoteBrick::new(rpc);
    let e = raw
        .call(&bp::Stat { gfid: Gfid::ROOT }, T)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EACCES);
    assert!(e.detail.contains("send Connect first"), "{e}");
    // A client that meant another brick (a port reused after a restart)
    // is told so, and may connect again once it has the right port.
    let e = raw
        .connect("vol1", "/elsewhere/b2", "c", "c", T)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENXIO);
    assert!(
        e.detail.contains("\"/elsewhere/b2\"") && e.detail.contains("stale"),
        "{e}"
    );
    let here = dir.0.join("brick").display().to_string();
    let ok = raw.connect("vol1", &here, "c", "c", T).await.unwrap();
    assert_eq!(ok.brick_path, here);
    let e = raw.connect("other-vol", "", "c", "c", T).await.unwrap_err();
    assert_eq!(e.errno, Errno::EACCES);
    assert!(e.detail.contains("serves \"vol1\""), "{e}");
    // A refused connection stays refused.
    assert_eq!(
        raw.call(&bp::Stat { gfid: Gfid::ROOT }, T)
            .await
            .unwrap_err()
            .errno,
        Errno::EACCES
    );
    b.shutdown().await;

    let dir = scratch();
    let b = serve(&rt, &dir, AuthRules::parse("", "127.0.0.*").unwrap()).await;
    let rpc = RpcClient::new(&rt, endpoint(&b), RpcConfig::default());
    rpc.wait_connected(T).await.unwrap();
    let e = RemoteBrick::new(rpc)
        .connect("vol1", "", "c", "c", T)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EACCES);
    assert!(e.detail.contains("auth.reject"), "{e}");
    b.shutdown().await;
}

#[tokio::test]
async fn locks_block_wait_and_die_with_their_connection() {
    let dir = scratch();
    let rt = Runtime::production("test");
    let b = serve(&rt, &dir, AuthRules::default()).await;
    let a = client(&rt, &b, "A").await;
    let other = client(&rt, &b, "B").await;
    let lock = |kind, wait_ms| bp::Inodelk {
        gfid: Gfid::ROOT,
        domain: "afr".into(),
        kind,
        start: 0,
        len: 0,
        owner: 1,
        wait_ms,
    };
    a.call(&lock(LockKind::Write, None), T).await.unwrap();
    let e = other
        .call(&lock(LockKind::Write, None), T)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EAGAIN);
    assert!(e.detail.contains("A-name"), "the holder is named: {e}");
    let dump = other.call(&bp::LockDump {}, T).await.unwrap();
    assert_eq!(dump.len(), 1);
    assert_eq!(
        (dump[0].owner.client_id.as_str(), dump[0].granted),
        ("A", true)
    );
    // B waits; A's connection goes away; B gets the lock.
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move {
            other
                .call(
                    &lock(LockKind::Write, Some(30_000)),
                    Duration::from_secs(40),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    a.rpc.close();
    tokio::time::timeout(T, waiter)
        .await
        .expect("lock released when its holder disconnected")
        .unwrap()
        .unwrap();
    let dump = other.call(&bp::LockDump {}, T).await.unwrap();
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].owner.client_id, "B");
    // Entry locks; bad domains and names are refused.
    other
        .call(
            &bp::Entrylk {
                parent: Gfid::ROOT,
                name: Some("x".into()),
                domain: "dht".into(),
                kind: LockKind::Write,
                owner: 2,
                wait_ms: None,
            },
            T,
        )
        .await
        .unwrap();
    let e = other
        .call(
            &bp::Entrylk {
                parent: Gfid::ROOT,
                name: Some("a/b".into()),
                domain: "dht".into(),
                kind: LockKind::Write,
                owner: 2,
                wait_ms: None,
            },
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    let e = other
        .call(
            &bp::Inodelk {
                domain: String::new(),
                ..lock(LockKind::Read, None)
            },
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    b.shutdown().await;
}

/// A stand-in for mgmtd's port map that records what bricks tell it.
#[derive(Default)]
struct FakePortmap {
    seen: Mutex<Vec<String>>,
}

struct PortmapService(Arc<FakePortmap>);

impl Service for PortmapService {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let me = self.0.clone();
        Box::pin(async move {
            let line = match req.procedure {
                portmap::procs::SIGN_IN => {
                    let q: portmap::SignIn = req.decode()?;
                    format!("in {} {} {}", q.volume_id, q.brick_path, q.port)
                }
                portmap::procs::SIGN_OUT => {
                    let q: portmap::SignOut = req.decode()?;
                    format!("out {} {}", q.volume_id, q.brick_path)
                }
                _ => "?".into(),
            };
            me.seen.lock().unwrap().push(line);
            Reply::encode(&())
        })
    }
}

#[tokio::test]
async fn brick_signs_in_and_out_of_the_port_map() {
    let dir = scratch();
    let rt = Runtime::production("test");
    let pm = Arc::new(FakePortmap::default());
    let mut s = RpcServer::new(rt.clone(), RpcConfig::default());
    s.register(PROGRAM_PORTMAP, Arc::new(PortmapService(pm.clone())));
    let mgmt = s.listen(&"127.0.0.1:0".parse().unwrap()).await.unwrap();
    let Addr::Inet(msa) = mgmt.local_addr().clone() else {
        unreachable!()
    };
    let storage = PosixStorage::open(&dir.0.join("brick")).unwrap();
    let b = start_brick(
        &rt,
        storage,
        config(
            &dir,
            AuthRules::default(),
            Some(Endpoint::tcp(msa.ip(), msa.port())),
        ),
    )
    .await
    .unwrap();
    let Addr::Inet(bsa) = b.local.clone() else {
        unreachable!()
    };
    let path = dir.0.join("brick").display().to_string();
    tokio::time::timeout(T, async {
        while pm.seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    b.shutdown().await;
    let seen = pm.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            format!("in vol1 {path} {}", bsa.port()),
            format!("out vol1 {path}")
        ]
    );
    mgmt.shutdown().await;
}

/// Requests with hostile contents: arbitrary bytes for any procedure, and
/// well-formed requests with arbitrary names, targets and offsets. The
/// brick must answer each (an errno or a fault), never panic, keep the
/// connection, and never create anything outside its directory.
#[test]
fn hostile_requests_never_panic_or_escape() {
    let dir = scratch();
    let outside = dir.0.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mrt = rt.block_on(async { Runtime::production("test") });
    let b = rt.block_on(serve(&mrt, &dir, AuthRules::default()));
    let c = rt.block_on(client(&mrt, &b, "fuzz"));
    rt.block_on(c.call(
        &bp::Mkdir {
            parent: Gfid::ROOT,
            name: "d".into(),
            new: obj(9),
        },
        T,
    ))
    .unwrap();

    let names = prop_oneof![
        "[a-z]{1,8}".prop_map(String::from),
        Just("..".to_string()),
        Just(".mortar".to_string()),
        Just("../../../etc".to_string()),
        Just("a/b".to_string()),
        Just(String::new()),
        "\\PC{0,300}".prop_map(String::from),
    ];
    let gfids = prop_oneof![
        Just(Gfid::ROOT),
        Just(obj(9).gfid),
        Just(Gfid::NULL),
        any::<u128>().prop_map(Gfid::from_u128),
    ];
    let requests = prop_oneof![
        (1u16..40, prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(p, b)| (
            p,
            Bytes::from(b),
            Bytes::new()
        )),
        (gfids.clone(), names.clone(), any::<u128>()).prop_map(|(g, n, id)| {
            let q = bp::Create {
                parent: g,
                name: n,
                new: obj(id),
            };
            (
                bp::procs::Create,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
        (gfids.clone(), names.clone(), names.clone()).prop_map(|(g, n, t)| {
            let q = bp::Symlink {
                parent: g,
                name: n,
                target: t,
                new: obj(77),
            };
            (
                bp::procs::Symlink,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
        (gfids.clone(), names.clone(), names.clone()).prop_map(|(g, a, z)| {
            let q = bp::Rename {
                old_parent: g,
                old_name: a,
                new_parent: Gfid::ROOT,
                new_name: z,
            };
            (
                bp::procs::Rename,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
        (
            gfids.clone(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(g, off, data)| {
                let q = bp::Write {
                    gfid: g,
                    offset: off,
                };
                (
                    bp::procs::Write,
                    mortar_net::rpc::encode_body(&q).unwrap(),
                    Bytes::from(data),
                )
            }),
        (gfids.clone(), any::<u64>(), any::<u64>()).prop_map(|(g, off, len)| {
            let q = bp::Read {
                gfid: g,
                offset: off,
                len,
            };
            (
                bp::procs::Read,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
        (
            gfids.clone(),
            names.clone(),
            prop::collection::vec(any::<u8>(), 0..128)
        )
            .prop_map(|(g, n, v)| {
                let q = bp::Setxattr {
                    gfid: g,
                    name: n,
                    value: v,
                    flags: bp::XattrFlags::Any,
                };
                (
                    bp::procs::Setxattr,
                    mortar_net::rpc::encode_body(&q).unwrap(),
                    Bytes::new(),
                )
            }),
        (gfids.clone(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(g, off, len, block)| {
                // Small values too, so some requests are accepted.
                let q = bp::Rchecksum {
                    gfid: g,
                    offset: off % 3,
                    len: if len % 2 == 0 { len } else { len % (16 << 20) },
                    block_size: if block % 2 == 0 {
                        block
                    } else {
                        block % (1 << 20)
                    },
                };
                (
                    bp::procs::Rchecksum,
                    mortar_net::rpc::encode_body(&q).unwrap(),
                    Bytes::new(),
                )
            }
        ),
        (gfids.clone(), any::<u64>(), any::<u64>()).prop_map(|(g, off, len)| {
            let q = bp::Discard {
                gfid: g,
                offset: off,
                len,
            };
            (
                bp::procs::Discard,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
        (gfids, names, any::<i32>()).prop_map(|(g, n, d)| {
            let q = bp::Xattrop {
                gfid: g,
                deltas: vec![(n, CounterDelta::Add32(vec![d]))],
                durable: false,
            };
            (
                bp::procs::Xattrop,
                mortar_net::rpc::encode_body(&q).unwrap(),
                Bytes::new(),
            )
        }),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(400));
    runner
        .run(&requests, |(procedure, body, payload)| {
            let r = rt.block_on(c.rpc.call(bp::PROGRAM_BRICK, procedure, body, payload, T));
            // Either a decoded reply or a messenger fault; never a dropped
            // connection, never a hang.
            if let Err(e) = &r {
                prop_assert!(matches!(e, mortar_net::rpc::RpcError::Fault { .. }), "{e}");
            }
            Ok(())
        })
        .unwrap();
    // Still serving, on the same connection.
    assert_eq!(c.rpc.link_state().generation, 1);
    rt.block_on(c.call(&bp::Stat { gfid: Gfid::ROOT }, T))
        .unwrap();
    // Nothing appeared next to the brick directory.
    let mut beside: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["brick"]);
    rt.block_on(b.shutdown());
}
