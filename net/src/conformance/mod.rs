//! One transport conformance suite: test bodies generic over the transport
//! under test, run on every transport Mortar has — TCP and Unix sockets,
//! turmoil's simulated TCP, madsim's simulated TCP, and the RDMA pump over
//! an in-memory device pair.
//!
//! A transport conforms when the messenger cannot tell it from another:
//! frames of any size arrive intact and in order in both directions at
//! once, a peer that closes is an end of stream (and ENOTCONN for pending
//! calls), a reader that stops holds the writer back, garbage ends one
//! connection with an error and never a panic, and a restarted server is
//! found again. The bodies reach the transport only through a [`Runtime`]
//! (`bind`, `connect`, [`RpcServer`](crate::rpc::RpcServer),
//! [`RpcClient`](crate::rpc::RpcClient)), exactly as daemons do.
//!
//! [`transport_conformance_tests!`](crate::transport_conformance_tests)
//! turns every body into a named test for one transport. Compiled under the
//! `test-support` feature and in simulator builds, never in production.
//! Being test code, a broken promise panics, naming the transport, as a
//! failed assertion does.

mod link;
mod rpc;

use std::time::Duration;

use bytes::Bytes;

use crate::addr::{Addr, Endpoint};
use crate::frame::{self, EncodedFrame, Frame, FrameLimits, Header, TRAILER_LEN};
use crate::transport::{FrameSink, FrameSource, Link, LinkError, Listener};
use crate::Runtime;

pub use link::*;
pub use rpc::*;

/// A transport the suite can run on.
pub trait TransportUnderTest {
    /// Names the transport in failure messages.
    fn name(&self) -> &'static str;
    /// A runtime whose `bind` and `connect` go through the transport under
    /// test. Runtimes from one value must reach each other.
    fn runtime(&self, name: &str) -> Runtime;
    /// Where a test server listens. Every call names a fresh place (port 0,
    /// a new socket path) so bodies never collide.
    fn listen_endpoint(&self) -> Endpoint;
    /// What a client dials to reach a listener bound at `local`.
    fn dial_endpoint(&self, local: &Addr) -> Endpoint {
        match local {
            Addr::Inet(sa) => Endpoint::tcp(sa.ip(), sa.port()),
            Addr::Unix(path) => Endpoint::Unix(path.clone()),
        }
    }
    /// Whether a writer whose reader stops reading is held back. madsim's
    /// simulated TCP buffers without bound, so it cannot show this.
    fn throttles_writer(&self) -> bool {
        true
    }
    /// Whether closing a link's sink ends the stream for the peer while
    /// this end still reads (TCP's half-close). madsim's TCP does not
    /// simulate shutdown: its peer sees the end only once the whole
    /// connection is dropped.
    fn half_closes(&self) -> bool {
        true
    }
}

/// Deadline for anything that should happen promptly. Generous, because
/// the real-time runs share a loaded machine; nothing waits for it unless
/// something is broken.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Expands to one test per conformance body, all running on one transport:
///
/// * `transport_conformance_tests!(run = path::to::run);` makes `#[test] fn
///   BODY() { run(|t| async move { BODY(&t).await }) }`, for transports
///   whose world has to be set up around the body (turmoil's simulation);
/// * `transport_conformance_tests!(#[tokio::test] async Tcp);` makes
///   `#[tokio::test] async fn BODY() { BODY(&Tcp).await }` (any test
///   attribute: `#[madsim::test]` for the simulator).
#[macro_export]
macro_rules! transport_conformance_tests {
    (run = $run:path) => {
        $crate::transport_conformance_tests!(@each [run = $run]);
    };
    (#[$attr:meta] async $make:expr) => {
        $crate::transport_conformance_tests!(@each [#[$attr] async $make]);
    };
    (@each $how:tt) => {
        $crate::transport_conformance_tests!(@one $how frames_of_every_size_arrive_intact_and_in_order);
        $crate::transport_conformance_tests!(@one $how both_directions_flow_at_once);
        $crate::transport_conformance_tests!(@one $how a_dropped_peer_is_an_end_of_stream);
        $crate::transport_conformance_tests!(@one $how a_stalled_reader_throttles_the_writer);
        $crate::transport_conformance_tests!(@one $how malformed_bytes_end_the_link_with_an_error);
        $crate::transport_conformance_tests!(@one $how calls_carry_payloads_of_every_size);
        $crate::transport_conformance_tests!(@one $how many_concurrent_calls_share_one_connection);
        $crate::transport_conformance_tests!(@one $how pending_calls_fail_with_enotconn_when_the_server_dies);
        $crate::transport_conformance_tests!(@one $how the_client_reconnects_after_the_server_restarts);
        $crate::transport_conformance_tests!(@one $how malformed_bytes_close_only_that_connection);
    };
    (@one [run = $run:path] $body:ident) => {
        #[test]
        fn $body() {
            $run(|t| async move { $crate::conformance::$body(&t).await });
        }
    };
    (@one [#[$attr:meta] async $make:expr] $body:ident) => {
        #[$attr]
        async fn $body() {
            $crate::conformance::$body(&$make).await;
        }
    };
}

/// A listener with one connection over it: the dialling and the
/// accepting end.
pub struct LinkPair {
    pub rt: Runtime,
    pub listener: Box<dyn Listener>,
    pub dialed: Link,
    pub accepted: Link,
}

/// Bind a fresh listener and connect to it.
pub async fn link_pair(t: &impl TransportUnderTest) -> LinkPair {
    let rt = t.runtime("links");
    let limits = FrameLimits::default();
    let mut listener = rt
        .bind(&t.listen_endpoint(), limits)
        .await
        .unwrap_or_else(|e| panic!("{}: bind: {e}", t.name()));
    let dial = t.dial_endpoint(&listener.local_addr());
    // Concurrently: some transports finish a connect only once it is
    // accepted.
    let (dialed, accepted) = tokio::join!(rt.connect(&dial, limits, PROMPT), listener.accept());
    let dialed = dialed.unwrap_or_else(|e| panic!("{}: connect to {dial}: {e}", t.name()));
    let accepted = accepted.unwrap_or_else(|e| panic!("{}: accept: {e}", t.name()));
    LinkPair {
        rt,
        listener,
        dialed,
        accepted,
    }
}

/// A payload of `len` bytes in which every byte depends on the frame and
/// its offset, so a dropped, repeated, swapped or shifted chunk shows.
pub fn pattern(frame_id: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| {
            let x = (i ^ (frame_id << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (x >> 56) as u8
        })
        .collect()
}

/// A frame as the messenger would send it; program and procedure are
/// arbitrary (links do not look at them).
pub fn frame(id: u64, body: &[u8], payload: Bytes) -> EncodedFrame {
    let h = Header {
        flags: 0,
        program: 7,
        procedure: 1,
        request_id: id,
    };
    frame::encode(&h, body, payload, &FrameLimits::default()).expect("within the default limits")
}

/// Arbitrary bytes dressed as an encoded frame, so any [`FrameSink`]
/// writes them as they are.
pub fn raw(bytes: &[u8]) -> EncodedFrame {
    assert!(
        bytes.len() >= TRAILER_LEN,
        "raw frames need a trailer's worth of bytes"
    );
    let (head, tail) = bytes.split_at(bytes.len() - TRAILER_LEN);
    EncodedFrame {
        head: Bytes::copy_from_slice(head),
        payload: Bytes::new(),
        trailer: tail.try_into().expect("trailer length"),
    }
}

/// The next frame, bounded by [`PROMPT`]; `name` names the transport.
pub async fn recv(
    name: &'static str,
    rt: &Runtime,
    source: &mut Box<dyn FrameSource>,
) -> Result<Option<Frame>, LinkError> {
    rt.clock()
        .timeout(PROMPT, source.recv())
        .await
        .unwrap_or_else(|e| panic!("{name}: neither a frame nor an end of stream: {e}"))
}

/// Send every frame, then close; fails the test on any error.
pub async fn send_all(
    name: &'static str,
    sink: &mut Box<dyn FrameSink>,
    frames: Vec<EncodedFrame>,
) {
    for f in frames {
        sink.send(f)
            .await
            .unwrap_or_else(|e| panic!("{name}: send: {e}"));
    }
    sink.close()
        .await
        .unwrap_or_else(|e| panic!("{name}: close: {e}"));
}
