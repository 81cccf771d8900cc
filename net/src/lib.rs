//! `mortar-net`: the seam every Mortar daemon is written against.
//!
//! This crate owns time, spawning, seeded randomness, name resolution,
//! transports and the RPC messenger. Daemons take all of these from a
//! [`Runtime`] handle and nothing else, so the same daemon code runs on real
//! tokio and sockets, inside madsim (`RUSTFLAGS="--cfg madsim"`), or inside
//! turmoil, unchanged.
//!
//! It must never know about files, bricks or volumes: those live in the
//! crates built on top of it.

pub mod addr;
pub mod checksum;
#[cfg(any(madsim, feature = "test-support"))]
pub mod conformance;
pub mod fault;
pub mod frame;
#[cfg(not(madsim))]
pub mod rdma;
pub mod resolve;
pub mod rng;
pub mod rpc;
pub mod runtime;
pub mod scope;
pub mod sync;
pub mod time;
pub mod transport;

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the seam's object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use addr::{Addr, DnsName, Endpoint, Host, HostPort};
pub use rng::DetRng;
pub use runtime::{Runtime, TraceSink};
pub use scope::Scope;
pub use time::Clock;
