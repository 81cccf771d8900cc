//! Code shared by this crate's integration tests.
#![allow(dead_code)] // Each test binary uses its own part.

#[cfg(not(madsim))]
pub mod turmoil;
