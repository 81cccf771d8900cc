//! The transport conformance suite (`mortar_net::conformance`) on every
//! transport of the ordinary build: TCP and Unix sockets on loopback,
//! turmoil's simulated TCP, and the RDMA pump over the in-memory device
//! pair. madsim's TCP runs the same bodies from
//! `scenarios/tests/transport_conformance.rs`.
#![cfg(not(madsim))]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use mortar_net::conformance::TransportUnderTest;
use mortar_net::{Endpoint, Runtime};

/// Seeds fix the messenger's reconnect jitter; which seed does not matter.
const SEED: u64 = 10;

/// TCP or Unix sockets through the production `SocketTransport`.
pub struct Sockets {
    name: &'static str,
    listen: fn() -> Endpoint,
}

impl TransportUnderTest for Sockets {
    fn name(&self) -> &'static str {
        self.name
    }
    fn runtime(&self, name: &str) -> Runtime {
        Runtime::builder(name).seed(SEED).build()
    }
    fn listen_endpoint(&self) -> Endpoint {
        (self.listen)()
    }
}

mod tcp {
    use super::*;

    const TCP: Sockets = Sockets {
        name: "tcp",
        listen: || "127.0.0.1:0".parse().expect("endpoint"),
    };

    mortar_net::transport_conformance_tests!(#[tokio::test] async TCP);
}

mod unix {
    use super::*;

    /// A fresh socket path per call, under one directory per test process.
    fn socket_path() -> Endpoint {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("mortar-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("socket directory");
        Endpoint::Unix(dir.join(format!("{}.sock", NEXT.fetch_add(1, Ordering::Relaxed))))
    }

    const UNIX: Sockets = Sockets {
        name: "unix",
        listen: socket_path,
    };

    mortar_net::transport_conformance_tests!(#[tokio::test] async UNIX);
}

mod turmoil_tcp {
    use std::future::Future;
    use std::time::Duration;

    use super::*;

    pub struct Turmoil;

    impl TransportUnderTest for Turmoil {
        fn name(&self) -> &'static str {
            "turmoil"
        }
        fn runtime(&self, name: &str) -> Runtime {
            support::turmoil::runtime(name, SEED)
        }
        fn listen_endpoint(&self) -> Endpoint {
            // One host talks to itself over turmoil's loopback.
            "127.0.0.1:0".parse().expect("endpoint")
        }
    }

    /// Run a body in one turmoil host, on simulated time.
    fn run<F: Future<Output = ()> + 'static>(body: impl FnOnce(Turmoil) -> F + 'static) {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(300))
            .rng_seed(SEED)
            .build();
        sim.client("conformance", async move {
            body(Turmoil).await;
            Ok(())
        });
        sim.run().expect("the body ran to completion");
    }

    mortar_net::transport_conformance_tests!(run = run);
}

mod rdma_pump {
    use mortar_net::rdma::memory::MemoryRdma;
    use mortar_net::rdma::RdmaConfig;
    use std::sync::Arc;

    use super::*;

    /// The production pump over the in-memory device pair, reached through
    /// `rdma:` endpoints as bricks of an rdma volume are.
    pub struct Rdma(MemoryRdma);

    impl Rdma {
        fn new() -> Self {
            // Small buffers and few of them: a 1 MiB frame is 64 messages,
            // and credits run out constantly.
            Rdma(MemoryRdma::new(RdmaConfig {
                slot_bytes: 16 << 10,
                send_slots: 4,
                recv_slots: 8,
            }))
        }
    }

    impl Drop for Rdma {
        fn drop(&mut self) {
            let failures = self.0.pump_failures();
            if !std::thread::panicking() {
                assert!(failures.is_empty(), "RDMA pumps failed: {failures:?}");
            }
        }
    }

    impl TransportUnderTest for Rdma {
        fn name(&self) -> &'static str {
            "rdma pump"
        }
        fn runtime(&self, name: &str) -> Runtime {
            Runtime::builder(name)
                .seed(SEED)
                .rdma(Arc::new(self.0.clone()))
                .build()
        }
        fn listen_endpoint(&self) -> Endpoint {
            "rdma:127.0.0.1:0".parse().expect("endpoint")
        }
        fn dial_endpoint(&self, local: &mortar_net::Addr) -> Endpoint {
            let mortar_net::Addr::Inet(sa) = local else {
                panic!("RDMA listeners have IP addresses, not {local}");
            };
            format!("rdma:{sa}").parse().expect("endpoint")
        }
    }

    mortar_net::transport_conformance_tests!(#[tokio::test] async Rdma::new());
}
