//! `mortar-client`: turns a volfile into a graph of layers (protocol client
//! per brick, replicate or disperse sets, distribute on top) and gives a
//! Rust API and a FUSE mount over it. The self-heal daemon reuses the same
//! layers.
//!
//! Decisions (who blames whom, quorum, which copy to read, fragment
//! versions) are plain functions over data in their own modules, tested
//! without any runtime.
//!
//! The typed brick stub ([`remote::RemoteBrick`]) is the client side of
//! the brick program and lives here, so this crate needs only the
//! messenger and the wire types.
//!
//! It must not talk to a disk: bricks do that. It must not depend on the
//! brick server (`mortar-node`) either, except in its tests, which start
//! real bricks, nor on the management daemon (`mortar-mgmt`): the wire
//! types it shares with mgmtd are in `mortar-proto`.
#![warn(clippy::too_many_lines)]

pub mod afr;
pub mod api;
pub mod copy;
pub mod disperse;
pub mod distribute;
pub mod ec;
pub mod error;
pub mod fop;
#[cfg(not(madsim))]
pub mod fuse;
pub mod graph;
pub mod mgmt_rpc;
pub mod migrate;
pub mod protocol;
pub mod remote;
pub mod replicate;
pub mod txn;
