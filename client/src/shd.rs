//! The self-heal daemon (`mortar shd`): one per server. It follows the
//! volumes mgmtd knows, keeps a client of every started replicated or dispersed volume
//! with a brick on this server, and crawls this server's bricks'
//! pending-heal indices: every `cluster.heal-timeout` seconds, and sooner
//! when a brick of the volume came back or the last crawl left files it
//! could not heal yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::time::Instant;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::mgmt::{CliReply, CliRequest};
use mortar_proto::options;
use mortar_proto::volume::Volume;

use crate::api::{Client, HealSummary};
use crate::mgmt_rpc::cli_call_flat;

/// How often the daemon looks at its volumes.
const TICK: Duration = Duration::from_secs(2);
/// Files healed per brick per crawl (the rest wait for the next one).
const CRAWL_LIMIT: usize = 10_000;
/// A daemon whose mgmtd has not answered for this long exits (mgmtd
/// starts a new one when it is back): no orphan keeps running forever.
const ORPHAN_AFTER: Duration = Duration::from_secs(600);

struct Followed {
    client: Arc<Client>,
    last_crawl: Option<Instant>,
    /// `Client::connections_made` at the last look: a brick that came
    /// back since makes a crawl due.
    connections: u64,
    /// The last crawl left work (skipped files): crawl again soon.
    unfinished: bool,
}

async fn volumes(rpc: &RpcClient) -> Result<Vec<Volume>, String> {
    match cli_call_flat(
        rpc,
        &CliRequest::VolumeInfo { name: None },
        Duration::from_secs(20),
    )
    .await?
    {
        CliReply::Volumes(v) => Ok(v),
        other => Err(format!("mgmtd answered volume info with {other:?}")),
    }
}

/// Does this server's self-heal daemon serve `v`?
pub fn serves(v: &Volume, hostnames: &[String]) -> bool {
    v.wants_shd() && v.bricks.iter().any(|b| hostnames.contains(&b.host))
}

fn heal_timeout(v: &Volume) -> Duration {
    Duration::from_secs(options::get_u64(&v.options, options::HEAL_TIMEOUT))
}

/// Run until the process is stopped (or its mgmtd has been gone for 10
/// minutes). `hostnames` are this server's names as bricks are written in
/// volumes.
pub async fn run_shd(rt: &Runtime, mgmt: &Endpoint, hostnames: Vec<String>) {
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
    tracing::info!(mgmt = %mgmt, ?hostnames, "self-heal daemon running");
    let mut last_answer = rt.clock().now();
    loop {
        match volumes(&rpc).await {
            Ok(vols) => {
                last_answer = rt.clock().now();
                let wanted: BTreeMap<String, Volume> = vols
                    .into_iter()
                    .filter(|v| serves(v, &hostnames))
                    .map(|v| (v.name.clone(), v))
                    .collect();
                followed.retain(|name, f| {
                    let keep = wanted.contains_key(name);
                    if !keep {
                        f.client.unmount();
                        tracing::info!(volume = %name, "no longer healing");
                    }
                    keep
                });
                for (name, v) in &wanted {
                    if !followed.contains_key(name) {
                        match Client::mount(rt, mgmt, name).await {
                            Ok(c) => {
                                tracing::info!(volume = %name, "healing");
                                followed.insert(
                                    name.clone(),
                                    Followed {
                                        client: c,
                                        last_crawl: None,
                                        connections: 0,
                                        unfinished: true,
                                    },
                                );
                            }
                            Err(e) => {
                                tracing::warn!(volume = %name, error = %e, "cannot follow volume");
                                continue;
                            }
                        }
                    }
                    let f = followed.get_mut(name).expect("just inserted");
                    let now = rt.clock().now();
                    let made = f.client.connections_made();
                    let due = f.last_crawl.is_none_or(|t| now - t >= heal_timeout(v))
                        || made != f.connections
                        || (f.unfinished && f.last_crawl.is_none_or(|t| now - t >= TICK));
                    f.connections = made;
                    if !due {
                        continue;
                    }
                    let names = hostnames.clone();
                    let sum: HealSummary = f
                        .client
                        .heal_pending(&move |a| names.contains(&a.host), CRAWL_LIMIT)
                        .await;
                    f.last_crawl = Some(rt.clock().now());
                    f.unfinished = sum.skipped > 0;
                    if sum.healed + sum.skipped + sum.split_brain > 0 {
                        tracing::info!(
                            volume = %name,
                            healed = sum.healed,
                            skipped = sum.skipped,
                            split_brain = sum.split_brain,
                            first_reason = sum.errors.first().map(String::as_str).unwrap_or(""),
                            "index crawl"
                        );
                    }
                }
            }
            Err(e) => {
                if rt.clock().now() - last_answer >= ORPHAN_AFTER {
                    tracing::warn!(mgmt = %mgmt, error = %e, "mgmtd gone for {ORPHAN_AFTER:?}; self-heal daemon exiting");
                    for f in followed.values() {
                        f.client.unmount();
                    }
                    rpc.close();
                    return;
                }
                tracing::debug!(error = %e, "cannot ask mgmtd for volumes; retrying")
            }
        }
        rt.clock().sleep(TICK).await;
    }
}
