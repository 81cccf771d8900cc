//! The transport conformance suite (`mortar_net::conformance`) on madsim's
//! simulated TCP: the same bodies the ordinary build runs on TCP, Unix
//! sockets, turmoil and the RDMA pump (`net/tests/transport_conformance.rs`).
//! One simulated node talks to itself over loopback; any seed
//! (MADSIM_TEST_SEED) or many (MADSIM_TEST_NUM).
#![cfg(madsim)]

use mortar_net::conformance::TransportUnderTest;
use mortar_net::{Endpoint, Runtime};

struct MadsimTcp;

impl TransportUnderTest for MadsimTcp {
    fn name(&self) -> &'static str {
        "madsim tcp"
    }
    fn runtime(&self, name: &str) -> Runtime {
        // The messenger's jitter seed; madsim's own randomness comes from
        // the simulation seed.
        Runtime::builder(name).seed(10).build()
    }
    fn listen_endpoint(&self) -> Endpoint {
        "127.0.0.1:0".parse().expect("endpoint")
    }
    fn throttles_writer(&self) -> bool {
        // madsim's TCP queues whatever is written without bound.
        false
    }
    fn half_closes(&self) -> bool {
        // madsim's `poll_shutdown` does nothing ("TODO: simulate
        // shutdown"); the peer sees the end when the stream is dropped.
        false
    }
}

mortar_net::transport_conformance_tests!(#[madsim::test] async MadsimTcp);
