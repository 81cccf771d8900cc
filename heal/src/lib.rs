//! `mortar-heal`: the self-heal daemon (`mortar shd`) and the index crawl
//! it runs over the client's set layers.
//!
//! It owns when to heal (triggers, bounds per crawl) and what a crawl
//! reports. It reaches bricks only through `mortar-client`'s public layers
//! (the volume graph and each set's `HealSet`) and must never talk to a
//! disk, link the management daemon, or block on anything without a
//! deadline.
#![warn(clippy::too_many_lines)]

pub mod crawl;
pub mod daemon;
