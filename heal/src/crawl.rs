//! The index crawl: heal every file listed in the pending-heal indices of
//! chosen bricks, through the set layer that owns each brick.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use mortar_client::api::Client;
use mortar_client::graph::{SetLayer, VolumeGraph};
use mortar_client::protocol::BrickAddress;
use mortar_net::Runtime;
use mortar_proto::brick as bp;
use mortar_proto::Gfid;

use crate::split_brain::FavoriteChild;
use crate::{heal_file_with, HealOutcome};

/// What one heal crawl did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealSummary {
    pub healed: u64,
    pub clean: u64,
    pub split_brain: u64,
    pub skipped: u64,
    /// Left to another healer that holds them.
    pub busy: u64,
    /// Not tried: another healer held a directory they may belong to
    /// ([`defer_files`]).
    pub deferred: u64,
    /// Why files were skipped or left in split-brain (the first
    /// [`SUMMARY_ERRORS_MAX`]).
    pub errors: Vec<String>,
    /// Each local brick the crawl worked from, and what it saw there.
    pub bricks: Vec<BrickCrawl>,
}

/// One local brick's part of a crawl (`volume heal NAME statistics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrickCrawl {
    /// `HOST:/PATH`.
    pub brick: String,
    /// Entries its pending-heal index listed when the crawl began (a full
    /// sweep lists none: it walks the tree).
    pub listed: u64,
    /// Entries it still lists when the crawl ended; `None`: not known
    /// (the brick did not answer).
    pub left: Option<u64>,
    /// Data bytes this daemon wrote to the bricks of the brick's set
    /// during the crawl (heal's copies; its clients write nothing else).
    pub bytes: u64,
}

impl BrickCrawl {
    /// Entries the crawl took off the brick's index (by this daemon or
    /// another healer of the same files while it ran).
    pub fn healed(&self) -> u64 {
        self.left.map_or(0, |l| self.listed.saturating_sub(l))
    }
}

/// The [`BrickCrawl`] rows of one set's crawl from its local members:
/// `listed` per member, the index counts at the end, the bytes written
/// to the set's bricks since `bytes_before`.
pub(crate) async fn brick_rows(
    g: &VolumeGraph,
    set: usize,
    local: &[usize],
    listed: &[u64],
    bytes_before: u64,
) -> Vec<BrickCrawl> {
    let bytes = set_bytes_written(g, set).saturating_sub(bytes_before);
    let mut rows = Vec::with_capacity(local.len());
    for (n, &m) in local.iter().enumerate() {
        let pc = &g.clients[m];
        let left = pc
            .call(&bp::IndexCount {}, bytes::Bytes::new(), INDEX_COUNT_WAIT)
            .await
            .ok()
            .map(|(c, _)| c);
        let a = pc.address();
        rows.push(BrickCrawl {
            brick: format!("{}:{}", a.host, a.brick_path),
            listed: listed.get(n).copied().unwrap_or(0),
            left,
            bytes,
        });
    }
    rows
}

/// How long the count of a brick's index at the end of a crawl may take.
const INDEX_COUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes this process has written to the bricks of set `set` of `g`.
pub(crate) fn set_bytes_written(g: &VolumeGraph, set: usize) -> u64 {
    g.heal_sets[set]
        .1
        .iter()
        .map(|&m| g.clients[m].bytes_written())
        .sum()
}

/// Reasons a summary keeps: enough to see what is wrong, bounded however
/// many files fail.
pub const SUMMARY_ERRORS_MAX: usize = 20;

/// Index passes one crawl makes over a set. A pass that healed files and
/// skipped others goes again at once: healing a directory creates the
/// names its files' own heals were waiting for (a file created while a
/// brick was down is missing there until its directory is healed), one
/// directory level per pass. The bound keeps a crawl finite; what is
/// left waits for the next crawl (2 s later, since work was left).
pub const CRAWL_PASSES_MAX: usize = 16;

impl HealSummary {
    /// Count one file's outcome.
    pub fn record(&mut self, outcome: HealOutcome) {
        match outcome {
            HealOutcome::Clean => self.clean += 1,
            HealOutcome::Healed(_) => self.healed += 1,
            HealOutcome::SplitBrain(why) => {
                self.split_brain += 1;
                self.note(why);
            }
            HealOutcome::Skipped(why) => {
                self.skipped += 1;
                self.note(why);
            }
            HealOutcome::Busy(_) => self.busy += 1,
        }
    }

    /// Keep a reason, up to the bound.
    pub fn note(&mut self, why: String) {
        if self.errors.len() < SUMMARY_ERRORS_MAX {
            self.errors.push(why);
        }
    }

    /// Did the crawl leave files it may heal on a later try?
    pub fn unfinished(&self) -> bool {
        self.skipped > 0 || self.busy > 0 || self.deferred > 0
    }

    /// Add another set's (or pass's) summary to this one.
    pub fn add(&mut self, other: HealSummary) {
        self.healed += other.healed;
        self.clean += other.clean;
        self.split_brain += other.split_brain;
        self.skipped += other.skipped;
        self.busy += other.busy;
        self.deferred += other.deferred;
        for e in other.errors {
            self.note(e);
        }
        self.bricks.extend(other.bricks);
    }
}

/// Should a crawl make another pass over a set at once? Only when the
/// last pass both healed something (progress, so the next may find
/// names it created) and left something it may heal on a try (skipped;
/// split-brain files and files busy with another healer stay as they
/// are however often they are tried).
pub fn pass_again(last: &HealSummary, passes_done: usize) -> bool {
    passes_done < CRAWL_PASSES_MAX && last.healed > 0 && last.skipped > 0
}

/// How a crawl is bounded.
#[derive(Debug, Clone, Copy)]
pub struct CrawlLimits {
    /// Index entries taken from each brick per pass.
    pub files_max: usize,
    /// Files healed at once per local brick (`cluster.shd-max-threads`).
    pub threads: usize,
    /// How a replicate split-brain is resolved without the operator
    /// (`cluster.favorite-child-policy`; `None` leaves it). A volume
    /// option the client graph does not carry, so the daemon, which has
    /// the volume, passes it down with the crawl's other bounds.
    pub favorite_child: FavoriteChild,
    /// How long this volume's crawls have been deferring files
    /// ([`defer_files`]); zero when the last one did not.
    pub deferred_for: std::time::Duration,
}

/// The longest a daemon's crawls keep deferring files behind busy
/// directories before one tries them anyway.
pub const FILES_DEFERRED_MAX_MS: u64 = 5_000;

/// Should a pass leave its files untried after its directories? When
/// another healer holds one of the directories it is healing that
/// directory's names, and a new file's data with them: looking at its
/// files now mostly finds them not made yet, a request per file and
/// brick spent for nothing while that healer needs the bricks. They are
/// left for a later crawl. Once the crawls have deferred for
/// [`FILES_DEFERRED_MAX_MS`] one tries them, so files outside that
/// directory wait at most that long (then a crawl) however long the
/// directory's heal takes.
pub fn defer_files(busy_dirs: u64, files: usize, deferred_for: std::time::Duration) -> bool {
    busy_dirs > 0
        && files > 0
        && deferred_for < std::time::Duration::from_millis(FILES_DEFERRED_MAX_MS)
}

/// One index crawl: heal every file in the pending-heal index of the
/// bricks `is_local` picks (the self-heal daemon passes its server's
/// bricks). Every set is crawled at once; within a set, `threads` files
/// per local brick are healed at a time, each file once per pass however
/// many local bricks list it.
pub async fn heal_pending(
    client: &Client,
    is_local: &(dyn Fn(&BrickAddress) -> bool + Send + Sync),
    limits: CrawlLimits,
) -> HealSummary {
    heal_graph(client.runtime(), &client.graph(), is_local, limits).await
}

/// [`heal_pending`] over a built graph `g` (tasks on `rt`).
pub async fn heal_graph(
    rt: &Runtime,
    g: &Arc<VolumeGraph>,
    is_local: &(dyn Fn(&BrickAddress) -> bool + Send + Sync),
    limits: CrawlLimits,
) -> HealSummary {
    let mut handles = Vec::new();
    for (i, (_, members)) in g.heal_sets.iter().enumerate() {
        let local: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&m| is_local(g.clients[m].address()))
            .collect();
        if local.is_empty() {
            continue;
        }
        let (rt2, g2) = (rt.clone(), g.clone());
        handles.push(rt.spawn(async move { crawl_set(&rt2, &g2, i, &local, limits).await }));
    }
    let mut sum = HealSummary::default();
    for h in handles {
        match h.await {
            Ok(Some(s)) => sum.add(s),
            _ => sum.note("a set's crawl was cancelled".to_string()),
        }
    }
    sum
}

/// Crawl set `set` of `g` from the indices of its bricks `local`, pass
/// after pass while passes make progress.
async fn crawl_set(
    rt: &Runtime,
    g: &Arc<VolumeGraph>,
    set: usize,
    local: &[usize],
    limits: CrawlLimits,
) -> HealSummary {
    let mut total = HealSummary::default();
    let mut passes = 0;
    let bytes_before = set_bytes_written(g, set);
    let mut first_listing = Vec::new();
    let workers = limits.threads.max(1) * local.len();
    loop {
        let mut listed = HealSummary::default();
        let (pending, counts) = list_pending(g, local, limits.files_max, &mut listed).await;
        if passes == 0 {
            first_listing = counts;
        }
        // Directories first: healing one makes its new files and heals
        // them under the lock it holds, so a file looked at before its
        // directory is healed is a look wasted (it is not there yet).
        let (dirs, mut rest) = split_directories(&g.clients[local[0]], pending).await;
        let favorite = limits.favorite_child;
        let mut pass = heal_each(rt, g, set, dirs, workers, false, favorite).await;
        if pass.healed > 0 && !rest.is_empty() {
            // What the directories' heals healed has left the indices.
            let (still, _) = list_pending(g, local, limits.files_max, &mut listed).await;
            rest.retain(|g| still.contains(g));
        }
        if defer_files(pass.busy, rest.len(), limits.deferred_for) {
            pass.deferred += rest.len() as u64;
        } else {
            pass.add(heal_each(rt, g, set, rest, workers, false, favorite).await);
        }
        passes += 1;
        let again = pass_again(&pass, passes);
        // A file a pass skipped and a later one healed counts as healed:
        // only the last pass's skips and split-brains stand.
        total.healed += pass.healed;
        total.clean += pass.clean;
        if !again {
            total.split_brain = pass.split_brain;
            total.skipped = pass.skipped;
            total.busy = pass.busy;
            total.deferred = pass.deferred;
            total.errors = listed.errors;
            for e in pass.errors {
                total.note(e);
            }
            total.bricks = brick_rows(g, set, local, &first_listing, bytes_before).await;
            return total;
        }
    }
}

/// The union of the pending-heal indices of the bricks `local` of `g`
/// (at most `files_max` entries from each), and how many each listed
/// (0 for a brick that could not say; why is noted in `sum`).
async fn list_pending(
    g: &VolumeGraph,
    local: &[usize],
    files_max: usize,
    sum: &mut HealSummary,
) -> (BTreeSet<Gfid>, Vec<u64>) {
    let mut pending = BTreeSet::new();
    let mut counts = Vec::with_capacity(local.len());
    for &m in local {
        let pc = &g.clients[m];
        match pc.pending_heal(files_max).await {
            Ok(gfids) => {
                counts.push(gfids.len() as u64);
                pending.extend(gfids);
            }
            Err(e) => {
                counts.push(0);
                sum.note(format!("{}: listing the index: {e}", pc.name()));
            }
        }
    }
    (pending, counts)
}

/// `pending` split into the directories (as brick `pc` knows them) and
/// everything else, each in gfid order. A brick that cannot say (an older
/// brick without the procedure, an error) leaves everything in the second
/// part, healed in gfid order as before.
async fn split_directories(
    pc: &mortar_client::protocol::ProtocolClient,
    pending: BTreeSet<Gfid>,
) -> (Vec<Gfid>, Vec<Gfid>) {
    let all: Vec<Gfid> = pending.into_iter().collect();
    let Some(kinds) = crate::steps::kinds_of(pc, &all).await else {
        return (Vec::new(), all);
    };
    let (dirs, rest): (Vec<_>, Vec<_>) = all
        .into_iter()
        .zip(kinds)
        .partition(|(_, k)| *k == Some(mortar_proto::FileKind::Directory));
    let only = |v: Vec<(Gfid, _)>| v.into_iter().map(|(g, _)| g).collect();
    (only(dirs), only(rest))
}

/// Heal `gfids` of set `set` with `workers` healers at once; `full`: as
/// the full sweep does (a replicate file whose copies differ unmarked is
/// marked first, [`crate::full::mark_if_differs`]); split-brains resolved
/// by `favorite`.
pub(crate) async fn heal_each(
    rt: &Runtime,
    g: &Arc<VolumeGraph>,
    set: usize,
    gfids: Vec<Gfid>,
    workers: usize,
    full: bool,
    favorite: FavoriteChild,
) -> HealSummary {
    let queue = Arc::new(Mutex::new(VecDeque::from(gfids)));
    let n = workers.min(queue.lock().expect("queue").len());
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (g, queue) = (g.clone(), queue.clone());
            rt.spawn(async move {
                let mut sum = HealSummary::default();
                loop {
                    let next = queue.lock().expect("queue").pop_front();
                    let Some(gfid) = next else { break };
                    let layer = &g.heal_sets[set].0;
                    if let (true, SetLayer::Replicate(r)) = (full, layer) {
                        crate::full::mark_if_differs(r.children(), r.arbiter(), gfid).await;
                    }
                    sum.record(heal_file_with(layer, gfid, favorite).await);
                }
                sum
            })
        })
        .collect();
    let mut sum = HealSummary::default();
    for h in handles {
        match h.await {
            Ok(Some(s)) => sum.add(s),
            _ => sum.note("a healer task was cancelled".to_string()),
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_and_reasons_bounded() {
        let mut s = HealSummary::default();
        s.record(HealOutcome::Clean);
        s.record(HealOutcome::Healed(vec!["b1".into()]));
        for i in 0..SUMMARY_ERRORS_MAX + 5 {
            s.record(HealOutcome::Skipped(format!("skip {i}")));
        }
        s.record(HealOutcome::SplitBrain("both blame".into()));
        assert_eq!((s.clean, s.healed, s.split_brain), (1, 1, 1));
        assert_eq!(s.skipped, SUMMARY_ERRORS_MAX as u64 + 5);
        assert_eq!(s.errors.len(), SUMMARY_ERRORS_MAX);
        assert_eq!(s.errors[0], "skip 0");
        assert!(s.unfinished());
    }

    #[test]
    fn when_files_wait_behind_a_busy_directory() {
        let max = FILES_DEFERRED_MAX_MS;
        for (busy_dirs, files, deferred_ms, defer, why) in [
            (
                1,
                500,
                0,
                true,
                "another healer is making this directory's names",
            ),
            (1, 500, max - 1, true, "deferring, within the bound"),
            (0, 500, 0, false, "no directory busy: the files are tried"),
            (1, 0, 0, false, "nothing to leave"),
            (
                1,
                500,
                max,
                false,
                "deferred long enough: files outside the directory are tried",
            ),
        ] {
            let d = std::time::Duration::from_millis(deferred_ms);
            assert_eq!(defer_files(busy_dirs, files, d), defer, "{why}");
        }
        let left = HealSummary {
            deferred: 3,
            ..HealSummary::default()
        };
        assert!(left.unfinished(), "deferred files are work left");
    }

    fn pass(healed: u64, skipped: u64, split_brain: u64, busy: u64) -> HealSummary {
        HealSummary {
            healed,
            skipped,
            split_brain,
            busy,
            ..HealSummary::default()
        }
    }

    #[test]
    fn when_a_crawl_passes_again() {
        for (last, done, again, why) in [
            (pass(3, 2, 0, 0), 1, true, "progress and files left to try"),
            (
                pass(0, 2, 0, 0),
                1,
                false,
                "no progress: another pass finds the same",
            ),
            (pass(3, 0, 0, 0), 1, false, "nothing left"),
            (
                pass(3, 0, 2, 0),
                1,
                false,
                "split-brain does not heal by trying again",
            ),
            (
                pass(3, 0, 0, 2),
                1,
                false,
                "busy files belong to another healer",
            ),
            (
                pass(3, 2, 0, 0),
                CRAWL_PASSES_MAX,
                false,
                "the bound ends the crawl",
            ),
        ] {
            assert_eq!(pass_again(&last, done), again, "{why}: {last:?}");
        }
    }
}
