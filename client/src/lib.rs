//! `mortar-client`: turns a volfile into a graph of layers (protocol client
//! per brick, replicate or disperse sets, distribute on top) and gives a
//! Rust API and a FUSE mount over it. The self-heal daemon reuses the same
//! layers.
//!
//! Decisions (who blames whom, quorum, which copy to read, fragment
//! versions) are plain functions over data in their own modules, tested
//! without any runtime.
//!
//! It must not talk to a disk: bricks do that.

pub mod afr;
pub mod api;
pub mod disperse;
pub mod distribute;
pub mod ec;
pub mod fop;
#[cfg(not(madsim))]
pub mod fuse;
pub mod graph;
pub mod mgmt_rpc;
pub mod migrate;
pub mod protocol;
pub mod replicate;
pub mod txn;
