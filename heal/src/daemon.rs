//! The self-heal daemon (`mortar shd`): one per server. It follows the
//! volumes mgmtd knows, keeps a client of every started replicated or
//! dispersed volume with a brick on this server, and crawls this server's
//! bricks' pending-heal indices: every `cluster.heal-timeout` seconds, and
//! sooner when a brick of the volume came back or the last crawl left
//! files it could not heal yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mortar_client::api::Client;
use mortar_client::mgmt_rpc::cli_call_flat;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::time::Instant;
use mortar_net::{Endpoint, Runtime};
use mortar_proto::mgmt::{CliReply, CliRequest, CrawlView, HealCounts, HealStatsView};
use mortar_proto::options;
use mortar_proto::volume::Volume;

use crate::crawl::{heal_pending, CrawlLimits, HealSummary};
use crate::error::HealError;
use crate::full::sweep_graph;
use crate::split_brain::FavoriteChild;

/// How often the daemon looks at its volumes (and retries unfinished work).
const TICK_MS: u64 = 2_000;
/// How soon a crawl that left files to another healer, or healed some and
/// skipped others, tries again: what it waits for (another daemon's entry
/// heal of their directory, its claim) ends within moments. A crawl that
/// only skipped (a brick down) waits a whole tick.
const RETRY_SOON_MS: u64 = 300;
/// How often, between ticks, the daemon looks at its clients' connection
/// counts (a local look, no request): a brick that comes back is healed
/// within this, not within a tick.
const RECONNECT_LOOK_MS: u64 = 100;
/// After a reconnect, how long a crawl waits for the rest of the graph's
/// bricks to connect (a brick back on a new port arrives with a new
/// graph whose connections are made one by one): heal needs every brick
/// of a set up, and a crawl started too early would skip the set until
/// the next tick.
const RECONNECT_SETTLE_MS: u64 = 1_000;
/// Files healed per brick per crawl (the rest wait for the next one).
const CRAWL_FILES_MAX: usize = 10_000;
/// What a crawl takes when a fault point cuts it short (simulator only).
const BUGGIFY_CRAWL_FILES_MAX: usize = 3;
/// A daemon whose mgmtd has not answered for this long exits (mgmtd
/// starts a new one when it is back): no orphan keeps running forever.
const ORPHAN_AFTER_SECS: u64 = 600;
/// How long one volume list request to mgmtd may take.
const MGMT_CALL_SECS: u64 = 20;

// An orphan must outlive many ticks, or a short mgmtd restart would stop it.
const _: () = assert!(ORPHAN_AFTER_SECS * 1000 >= 10 * TICK_MS);

struct Followed {
    client: Arc<Client>,
    last_crawl: Option<Instant>,
    /// `Client::connections_made` at the last look: a brick that came
    /// back since makes a crawl due.
    connections: u64,
    /// The last crawl left work (skipped files): crawl again soon.
    unfinished: bool,
    /// ... and what it left is likely done within moments (see
    /// [`RETRY_SOON_MS`]).
    retry_soon: bool,
    /// Crawls in a row that left work and healed nothing.
    fruitless: u32,
    /// Since when this volume's crawls leave files untried behind a busy
    /// directory ([`crate::crawl::defer_files`]); `None`: the last did not.
    deferring_since: Option<Instant>,
    /// mgmtd's counts of `volume heal [full]` requests at the last look.
    requests: HealCounts,
    /// What the crawls did per local brick (`volume heal NAME statistics`).
    stats: BTreeMap<String, HealStatsView>,
}

/// Fold one crawl's rows into the per-brick statistics of `volume`
/// (pure): counts only grow; the last crawl is replaced.
pub fn note_crawl(
    stats: &mut BTreeMap<String, HealStatsView>,
    volume: &str,
    kind: &str,
    (started_unix_ms, took_ms): (u64, u64),
    sum: &HealSummary,
) {
    for b in &sum.bricks {
        let row = stats
            .entry(b.brick.clone())
            .or_insert_with(|| HealStatsView {
                volume: volume.to_string(),
                brick: b.brick.clone(),
                crawls: 0,
                entries_healed: 0,
                bytes_healed: 0,
                last_crawl: None,
            });
        row.crawls += 1;
        row.entries_healed += b.healed();
        row.bytes_healed += b.bytes;
        row.last_crawl = Some(CrawlView {
            kind: kind.to_string(),
            started_unix_ms,
            took_ms,
            listed: b.listed,
            left: b.left,
            healed: b.healed(),
            bytes: b.bytes,
            split_brain: sum.split_brain,
            failed: sum.skipped,
        });
    }
}

/// What decides whether a volume's crawl is due now.
#[derive(Debug, Clone, Copy)]
pub struct CrawlClock {
    /// Time since the last crawl; `None` before the first.
    pub since_last: Option<Duration>,
    /// `cluster.heal-timeout`.
    pub heal_timeout: Duration,
    /// A brick connection was made since the last look.
    pub reconnected: bool,
    /// The last crawl left files it could not heal.
    pub unfinished: bool,
    /// It left them to another healer, or made progress on the way.
    pub retry_soon: bool,
    /// An operator asked for a heal (`volume heal NAME`) since the last look.
    pub requested: bool,
    /// Crawls in a row that left work and healed nothing.
    pub fruitless: u32,
}

/// Longest wait between two crawls that leave work and heal nothing.
const UNFINISHED_RETRY_MAX_MS: u64 = 32_000;

/// How long after a crawl that left work the next one runs: a tick, then
/// twice as long after each crawl in a row that healed nothing, up to
/// [`UNFINISHED_RETRY_MAX_MS`]. A crawl costs a request per listed file
/// and brick even when it only finds the files not made yet (another
/// daemon's entry heal of their directory makes and heals them) or a
/// brick down (its return starts a crawl at once anyway): ten thousand
/// such files retried every 2 s by the two idle daemons took much of the
/// CPU the healing one needed.
pub fn unfinished_retry_after(fruitless: u32) -> Duration {
    let ms = TICK_MS.saturating_mul(1 << fruitless.min(8));
    Duration::from_millis(ms.min(UNFINISHED_RETRY_MAX_MS))
}

/// Does what a crawl left warrant a try within [`RETRY_SOON_MS`] rather
/// than at the next tick? Only when it made progress: then what it skipped
/// likely waited on that progress (a directory's names just made). A
/// crawl that only found files busy or not yet made leaves them to the
/// healer holding them (an entry heal makes and heals its directory's new
/// files itself); trying every 300 ms then only takes CPU from that
/// healer (measured: the two idle daemons' passes slowed a 500-file
/// directory heal on a 2-core machine).
pub fn retry_soon(sum: &HealSummary) -> bool {
    sum.healed > 0 && (sum.skipped > 0 || sum.busy > 0)
}

/// Is a crawl due? The first look always crawls; then on every reconnect
/// (a brick that came back holds nothing new, its partners' indices name
/// what it missed), on `volume heal NAME`, every tick while work is left,
/// and every heal-timeout.
pub fn crawl_due(c: CrawlClock) -> bool {
    let Some(since) = c.since_last else {
        return true;
    };
    since >= c.heal_timeout
        || c.reconnected
        || c.requested
        || (c.unfinished && since >= unfinished_retry_after(c.fruitless))
        || (c.retry_soon && since >= Duration::from_millis(RETRY_SOON_MS))
}

/// mgmtd's counts of `volume heal` requests, by volume (empty when the
/// mgmtd is older and does not know the request: heal-timeout still holds).
async fn heal_requests(rpc: &RpcClient) -> BTreeMap<String, HealCounts> {
    let req = CliRequest::HealRequests;
    match cli_call_flat(rpc, &req, Duration::from_secs(MGMT_CALL_SECS)).await {
        Ok(CliReply::HealRequests(v)) => v.into_iter().map(|c| (c.volume, c.counts)).collect(),
        _ => BTreeMap::new(),
    }
}

async fn volumes(rpc: &RpcClient) -> Result<Vec<Volume>, HealError> {
    let req = CliRequest::VolumeInfo { name: None };
    let reply = cli_call_flat(rpc, &req, Duration::from_secs(MGMT_CALL_SECS))
        .await
        .map_err(HealError::Mgmt)?;
    match reply {
        CliReply::Volumes(v) => Ok(v),
        other => Err(HealError::Mgmt(format!(
            "mgmtd answered volume info with {other:?}"
        ))),
    }
}

/// Does this server's self-heal daemon serve `v`?
pub fn serves(v: &Volume, hostnames: &[String]) -> bool {
    v.wants_shd() && v.bricks.iter().any(|b| hostnames.contains(&b.host))
}

/// The volume's `cluster.favorite-child-policy`.
fn favorite_child(v: &Volume) -> FavoriteChild {
    let value = options::get(&v.options, options::FAVORITE_CHILD_POLICY).unwrap_or_default();
    FavoriteChild::from_option(&value)
}

fn heal_timeout(v: &Volume) -> Duration {
    Duration::from_secs(options::get_u64(&v.options, options::HEAL_TIMEOUT))
}

struct Shd {
    rt: Runtime,
    mgmt: Endpoint,
    hostnames: Vec<String>,
    followed: BTreeMap<String, Followed>,
}

impl Shd {
    /// Stop following volumes this server no longer heals.
    fn drop_unwanted(&mut self, wanted: &BTreeMap<String, Volume>) {
        self.followed.retain(|name, f| {
            let keep = wanted.contains_key(name);
            if !keep {
                f.client.unmount();
                tracing::info!(volume = %name, "no longer healing");
            }
            keep
        });
    }

    /// Mount `name` if it is not followed yet; false if that failed.
    /// `asked`: mgmtd's request counts now. A full sweep asked before this
    /// daemon followed the volume is not run again (one cut short by a
    /// crash is asked for again by the operator; the index crawl, which
    /// every start runs, resumes what the indices hold).
    async fn follow(&mut self, name: &str, asked: HealCounts) -> bool {
        if self.followed.contains_key(name) {
            return true;
        }
        match Client::mount(&self.rt, &self.mgmt, name).await {
            Ok(client) => {
                tracing::info!(volume = %name, "healing");
                let f = Followed {
                    client,
                    last_crawl: None,
                    connections: 0,
                    unfinished: true,
                    retry_soon: false,
                    fruitless: 0,
                    deferring_since: None,
                    requests: HealCounts {
                        index: 0,
                        full: asked.full,
                    },
                    stats: BTreeMap::new(),
                };
                self.followed.insert(name.to_string(), f);
                true
            }
            Err(e) => {
                tracing::warn!(volume = %name, error = %e, "cannot follow volume");
                false
            }
        }
    }

    /// Crawl `v`'s local bricks if a crawl is due, or sweep the whole
    /// volume if one was asked for; `requests` is mgmtd's count of
    /// `volume heal [full]` requests for it. The volume's statistics rows
    /// when a crawl ran (for mgmtd).
    async fn crawl_if_due(
        &mut self,
        v: &Volume,
        requests: HealCounts,
    ) -> Option<Vec<HealStatsView>> {
        let now = self.rt.clock().now();
        let f = self
            .followed
            .get_mut(&v.name)
            .expect("followed before crawling");
        let made = f.client.connections_made();
        let due = crawl_due(CrawlClock {
            since_last: f.last_crawl.map(|t| now - t),
            heal_timeout: heal_timeout(v),
            reconnected: made != f.connections,
            unfinished: f.unfinished,
            retry_soon: f.retry_soon,
            requested: requests.index != f.requests.index,
            fruitless: f.fruitless,
        });
        let sweep = requests.full != f.requests.full;
        f.requests = requests;
        if !due && !sweep {
            f.connections = made;
            return None;
        }
        if made != f.connections {
            f.client
                .wait_all_bricks(Duration::from_millis(RECONNECT_SETTLE_MS))
                .await;
            f.connections = f.client.connections_made();
        }
        let names = self.hostnames.clone();
        let is_local = move |a: &mortar_client::protocol::BrickAddress| names.contains(&a.host);
        let limits = CrawlLimits {
            // Fault point: a crawl cut short after a few files, as one
            // over a large backlog is.
            files_max: if mortar_net::buggify!() {
                BUGGIFY_CRAWL_FILES_MAX
            } else {
                CRAWL_FILES_MAX
            },
            threads: options::get_u64(&v.options, options::SHD_MAX_THREADS) as usize,
            favorite_child: favorite_child(v),
            deferred_for: f.deferring_since.map_or(Duration::ZERO, |t| now - t),
        };
        let started = self.rt.clock().now();
        let started_wall = wall_ms(&self.rt);
        let (what, sum) = if sweep {
            tracing::info!(volume = %v.name, "full sweep starting");
            let g = f.client.graph();
            let sum = sweep_graph(f.client.runtime(), &g, &is_local, limits).await;
            ("full sweep", sum)
        } else {
            (
                "index crawl",
                heal_pending(&f.client, &is_local, limits).await,
            )
        };
        if f.last_crawl.is_none() && sum.healed > 0 {
            mortar_net::mark!(HEAL_AT_DAEMON_START);
        }
        f.last_crawl = Some(self.rt.clock().now());
        f.unfinished = sum.unfinished();
        f.retry_soon = retry_soon(&sum);
        f.deferring_since = match (sum.deferred > 0, f.deferring_since) {
            (true, since) => since.or(Some(started)),
            (false, _) => None,
        };
        f.fruitless = if f.unfinished && sum.healed == 0 {
            f.fruitless.saturating_add(1)
        } else {
            0
        };
        let took = f.last_crawl.expect("just set") - started;
        log_crawl(&v.name, what, &sum, took);
        let kind = if sweep { "FULL" } else { "INDEX" };
        let times = (started_wall, took.as_millis() as u64);
        note_crawl(&mut f.stats, &v.name, kind, times, &sum);
        Some(f.stats.values().cloned().collect())
    }

    /// Wait one tick, or less when a followed volume's brick (re)connects.
    async fn wait_tick(&self) {
        let clock = self.rt.clock();
        let end = clock.now() + Duration::from_millis(TICK_MS);
        loop {
            let now = clock.now();
            if now >= end {
                return;
            }
            let look = Duration::from_millis(RECONNECT_LOOK_MS).min(end - now);
            clock.sleep(look).await;
            let reconnected = self
                .followed
                .values()
                .any(|f| f.client.connections_made() != f.connections);
            let retry = self.followed.values().any(|f| {
                f.retry_soon
                    && f.last_crawl
                        .is_some_and(|t| clock.now() - t >= Duration::from_millis(RETRY_SOON_MS))
            });
            if reconnected || retry {
                return;
            }
        }
    }

    fn stop(&self, rpc: &RpcClient) {
        for f in self.followed.values() {
            f.client.unmount();
        }
        rpc.close();
    }
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn wall_ms(rt: &Runtime) -> u64 {
    rt.clock()
        .wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn log_crawl(volume: &str, what: &str, sum: &HealSummary, took: Duration) {
    let listed: u64 = sum.bricks.iter().map(|b| b.listed).sum();
    let off_index: u64 = sum.bricks.iter().map(|b| b.healed()).sum();
    let bytes: u64 = sum.bricks.iter().map(|b| b.bytes).sum();
    if what != "index crawl"
        || sum.healed + sum.skipped + sum.split_brain + sum.busy + sum.deferred > 0
    {
        let secs = took.as_secs_f64().max(0.001);
        tracing::info!(
            volume = %volume,
            listed,
            off_index,
            bytes,
            entries_per_s = (off_index as f64 / secs).round() as u64,
            healed = sum.healed,
            skipped = sum.skipped,
            split_brain = sum.split_brain,
            busy = sum.busy,
            deferred = sum.deferred,
            took_ms = took.as_millis() as u64,
            first_reason = sum.errors.first().map(String::as_str).unwrap_or(""),
            "{what}"
        );
    }
}

/// Tell mgmtd what the crawls did (best effort, bounded: statistics wait
/// for the next crawl when mgmtd does not answer).
async fn report(rpc: &RpcClient, volume: &str, rows: Vec<HealStatsView>) {
    let sent = cli_call_flat(
        rpc,
        &CliRequest::HealReport(rows),
        Duration::from_secs(REPORT_CALL_SECS),
    )
    .await;
    if let Err(e) = sent {
        tracing::debug!(volume, error = %e, "self-heal statistics not reported; sent again after the next crawl");
    }
}

/// How long one statistics report to mgmtd may take.
const REPORT_CALL_SECS: u64 = 2;

/// Run until the process is stopped (or its mgmtd has been gone for 10
/// minutes). `hostnames` are this server's names as bricks are written in
/// volumes.
pub async fn run_shd(rt: &Runtime, mgmt: &Endpoint, hostnames: Vec<String>) {
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    tracing::info!(mgmt = %mgmt, ?hostnames, "self-heal daemon running");
    let mut shd = Shd {
        rt: rt.clone(),
        mgmt: mgmt.clone(),
        hostnames,
        followed: BTreeMap::new(),
    };
    let mut last_answer = rt.clock().now();
    loop {
        match volumes(&rpc).await {
            Ok(vols) => {
                last_answer = rt.clock().now();
                let wanted: BTreeMap<String, Volume> = vols
                    .into_iter()
                    .filter(|v| serves(v, &shd.hostnames))
                    .map(|v| (v.name.clone(), v))
                    .collect();
                shd.drop_unwanted(&wanted);
                let requests = heal_requests(&rpc).await;
                for (name, v) in &wanted {
                    let asked = requests.get(name).copied().unwrap_or_default();
                    if shd.follow(name, asked).await {
                        if let Some(rows) = shd.crawl_if_due(v, asked).await {
                            report(&rpc, name, rows).await;
                        }
                    }
                }
            }
            Err(e) if rt.clock().now() - last_answer >= Duration::from_secs(ORPHAN_AFTER_SECS) => {
                tracing::warn!(mgmt = %mgmt, error = %e, "mgmtd gone for {ORPHAN_AFTER_SECS} s; self-heal daemon exiting");
                shd.stop(&rpc);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "cannot ask mgmtd for volumes; retrying"),
        }
        shd.wait_tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn clock(since_ms: Option<u64>, reconnected: bool, unfinished: bool) -> CrawlClock {
        CrawlClock {
            since_last: since_ms.map(Duration::from_millis),
            heal_timeout: Duration::from_secs(600),
            reconnected,
            unfinished,
            retry_soon: false,
            requested: false,
            fruitless: 0,
        }
    }

    #[test]
    fn fruitless_crawls_back_off() {
        for (fruitless, want_ms) in [
            (0, 2_000),
            (1, 4_000),
            (2, 8_000),
            (3, 16_000),
            (4, 32_000),
            (5, 32_000),
            (u32::MAX, 32_000),
        ] {
            assert_eq!(
                unfinished_retry_after(fruitless),
                Duration::from_millis(want_ms),
                "{fruitless}"
            );
        }
        let c = |since_ms, fruitless| CrawlClock {
            fruitless,
            ..clock(Some(since_ms), false, true)
        };
        assert!(crawl_due(c(2_000, 0)));
        assert!(!crawl_due(c(2_000, 1)), "backed off");
        assert!(crawl_due(c(4_000, 1)));
        // A reconnect crawls at once whatever came before.
        assert!(crawl_due(CrawlClock {
            reconnected: true,
            ..c(100, 6)
        }));
    }

    #[test]
    fn crawl_statistics_add_up_per_brick() {
        use crate::crawl::BrickCrawl;
        let row = |brick: &str, listed, left, bytes| BrickCrawl {
            brick: brick.into(),
            listed,
            left,
            bytes,
        };
        let mut stats = BTreeMap::new();
        let first = HealSummary {
            skipped: 2,
            bricks: vec![row("s1:/b", 500, Some(100), 4096), row("s1:/c", 7, None, 0)],
            ..HealSummary::default()
        };
        note_crawl(&mut stats, "v", "INDEX", (1_000, 20), &first);
        let second = HealSummary {
            split_brain: 1,
            bricks: vec![row("s1:/b", 100, Some(1), 512)],
            ..HealSummary::default()
        };
        note_crawl(&mut stats, "v", "FULL", (2_000, 30), &second);
        let b = &stats["s1:/b"];
        assert_eq!(
            (b.crawls, b.entries_healed, b.bytes_healed),
            (2, 400 + 99, 4608)
        );
        let last = b.last_crawl.as_ref().expect("crawled");
        assert_eq!(
            (last.kind.as_str(), last.started_unix_ms, last.took_ms),
            ("FULL", 2_000, 30)
        );
        assert_eq!((last.listed, last.left, last.healed), (100, Some(1), 99));
        assert_eq!((last.split_brain, last.failed), (1, 0));
        // A brick that did not answer at the end counts nothing healed.
        let c = &stats["s1:/c"];
        assert_eq!((c.crawls, c.entries_healed), (1, 0));
        // An index that grew during the crawl never makes the count fall.
        let grew = HealSummary {
            bricks: vec![row("s1:/b", 3, Some(9), 0)],
            ..HealSummary::default()
        };
        note_crawl(&mut stats, "v", "INDEX", (3_000, 1), &grew);
        assert_eq!(stats["s1:/b"].entries_healed, 499);
    }

    #[test]
    fn when_a_crawl_tries_again_soon() {
        let sum = |healed, skipped, busy| HealSummary {
            healed,
            skipped,
            busy,
            ..HealSummary::default()
        };
        for (s, soon, why) in [
            (sum(3, 2, 0), true, "progress, files left"),
            (sum(3, 0, 2), true, "progress, files another healer holds"),
            (sum(3, 0, 0), false, "nothing left"),
            (
                sum(0, 500, 1),
                false,
                "another daemon heals the directory: its work, not ours",
            ),
            (
                sum(0, 0, 4),
                false,
                "only busy files: their healer finishes them",
            ),
            (
                sum(0, 2, 0),
                false,
                "only skips (a brick down): the tick retries",
            ),
        ] {
            assert_eq!(retry_soon(&s), soon, "{why}: {s:?}");
        }
    }

    #[test]
    fn when_a_crawl_is_due() {
        for (c, due, why) in [
            (clock(None, false, false), true, "first look"),
            (
                clock(Some(1), false, false),
                false,
                "just crawled, nothing new",
            ),
            (clock(Some(1), true, false), true, "a brick reconnected"),
            (
                clock(Some(1), false, true),
                false,
                "unfinished, but within a tick",
            ),
            (
                clock(Some(TICK_MS), false, true),
                true,
                "unfinished, a tick later",
            ),
            (
                clock(Some(599_999), false, false),
                false,
                "before heal-timeout",
            ),
            (
                clock(Some(600_000), false, false),
                true,
                "heal-timeout passed",
            ),
            (
                CrawlClock {
                    since_last: Some(HOUR),
                    ..clock(None, false, false)
                },
                true,
                "long idle",
            ),
            (
                CrawlClock {
                    retry_soon: true,
                    ..clock(Some(RETRY_SOON_MS), false, true)
                },
                true,
                "left to another healer: soon",
            ),
            (
                CrawlClock {
                    retry_soon: true,
                    ..clock(Some(RETRY_SOON_MS - 1), false, true)
                },
                false,
                "not sooner than that",
            ),
        ] {
            assert_eq!(crawl_due(c), due, "{why}: {c:?}");
        }
    }

    /// Regression (commit fb89beb): a brick that came back was only
    /// healed at the next heal-timeout (10 minutes by default); fixed by
    /// crawling on every reconnect, which this pins with default options.
    #[test]
    fn reconnect_crawls_long_before_the_default_heal_timeout() {
        let default =
            Duration::from_secs(options::default_of(options::HEAL_TIMEOUT).parse().unwrap());
        let c = CrawlClock {
            since_last: Some(Duration::from_secs(3)),
            heal_timeout: default,
            reconnected: true,
            unfinished: false,
            retry_soon: false,
            requested: false,
            fruitless: 0,
        };
        assert!(crawl_due(c));
    }
}
