//! Supervision of this server's bricks and self-heal daemon: they run
//! through the [`Launcher`] (OS processes in production, tasks on the
//! simulated host in the simulator), and are made to match the state at
//! volume start and stop, at mgmtd start, after catching up and on every
//! sync tick (the self-heal daemon).

use mortar_net::{BoxFuture, Endpoint};
use mortar_storage::Storage;

use super::Inner;
use crate::api::*;
use crate::options;
use crate::volume::{self, BrickSpec, Volume, VolumeStatus};

/// What mgmtd needs to start a brick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrickLaunch {
    pub volume: String,
    pub volume_id: String,
    pub path: String,
    /// The local mgmtd the brick signs in with.
    pub mgmt: Endpoint,
    pub auth_allow: String,
    pub auth_reject: String,
    pub ping_timeout_secs: u64,
    pub fsync_namespace: bool,
    /// Serve clients over RDMA (`transport rdma`) instead of TCP.
    pub rdma: bool,
}

/// Starts and stops bricks: OS processes in production, tasks on the
/// simulated host in the simulator. mgmtd never spawns processes itself.
pub trait Launcher: Send + Sync + 'static {
    /// Start a brick; returns an id (the pid in production).
    fn start(&self, b: BrickLaunch) -> BoxFuture<'_, Result<u32, String>>;
    fn running(&self, id: u32) -> bool;
    /// Stop a brick (SIGTERM; with `force`, SIGKILL) and wait for it.
    fn stop(&self, id: u32, force: bool) -> BoxFuture<'_, Result<(), String>>;
    /// Can bricks started here serve RDMA? `Err` says why not and what to
    /// do; checked before a `transport rdma` volume starts.
    fn rdma_ready(&self) -> Result<(), String>;
    /// Start moving files off the volume's draining bricks
    /// (`remove-brick start`): a client of the volume that reports its
    /// progress to the mgmtd at `mgmt` with `CliRequest::MigrationReport`.
    fn start_migration(&self, volume: &str, mgmt: Endpoint) -> BoxFuture<'_, Result<(), String>>;
    /// Start this server's self-heal daemon; returns an id for `running`
    /// and `stop`. `hostnames` are this server's names (which bricks are
    /// local); `mgmt` is this mgmtd.
    fn start_shd(
        &self,
        hostnames: Vec<String>,
        mgmt: Endpoint,
    ) -> BoxFuture<'_, Result<u32, String>>;
}

/// Checks and preparation on this server's filesystem for its bricks.
pub trait LocalFs: Send + Sync + 'static {
    /// Can `path` hold a brick? (Refuses the root filesystem unless forced.)
    fn check_brick(&self, path: &str, force: bool) -> Result<(), String>;
    /// Create the brick directory (mkdir -p).
    fn prepare_brick(&self, path: &str) -> Result<(), String>;
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RunningBrick {
    id: u32,
}

impl<S: Storage> Inner<S> {
    fn launch_spec(&self, v: &Volume, b: &BrickSpec) -> BrickLaunch {
        let opt = |k| options::get(&v.options, k).unwrap_or_default();
        BrickLaunch {
            volume: v.name.clone(),
            volume_id: v.id.clone(),
            path: b.path.clone(),
            mgmt: self.cfg.listen.clone(),
            auth_allow: opt(options::AUTH_ALLOW),
            auth_reject: opt(options::AUTH_REJECT),
            ping_timeout_secs: options::get_u64(&v.options, options::PING_TIMEOUT),
            fsync_namespace: opt(options::FSYNC_NAMESPACE) == "on",
            rdma: v.transport == volume::Transport::Rdma,
        }
    }

    /// Start every local brick of `v` that is not running.
    pub(super) async fn start_local_bricks(&self, v: &Volume) -> Result<(), String> {
        for b in v.bricks.iter().filter(|b| self.is_local(b)) {
            let key = (v.name.clone(), b.path.clone());
            let running = self.bricks.lock().expect("bricks").get(&key).copied();
            if running.is_some_and(|r| self.launcher.running(r.id)) {
                continue;
            }
            let id = self.launcher.start(self.launch_spec(v, b)).await?;
            tracing::info!(brick = %b, id, "brick started");
            self.rt
                .trace(|| format!("{} started brick {b}", self.name()));
            self.bricks
                .lock()
                .expect("bricks")
                .insert(key, RunningBrick { id });
        }
        Ok(())
    }

    pub(super) async fn stop_local_bricks(&self, vol: &str, force: bool) {
        let stopping: Vec<((String, String), RunningBrick)> = {
            let mut m = self.bricks.lock().expect("bricks");
            let keys: Vec<_> = m.keys().filter(|(v, _)| v == vol).cloned().collect();
            keys.into_iter()
                .filter_map(|k| m.remove(&k).map(|r| (k, r)))
                .collect()
        };
        for ((_, path), r) in stopping {
            if let Err(e) = self.launcher.stop(r.id, force).await {
                tracing::warn!(brick = %path, error = %e, "stopping brick failed");
            }
            self.portmap.lock().expect("portmap").remove(&path);
        }
    }

    /// Make this server's bricks match the state: started volumes' bricks
    /// run, others do not. `restart_dead` also brings back bricks that
    /// died (what `start force` does); at startup and after a sync only
    /// missing bricks are started.
    pub(super) async fn converge_bricks(&self, restart_dead: bool) {
        let vols = self.state.lock().expect("state").live_volumes();
        let busy = self.volumes_in_transaction();
        for v in vols.values().filter(|v| converges(&busy, &v.name)) {
            if v.status == VolumeStatus::Started {
                let has_any = self
                    .bricks
                    .lock()
                    .expect("bricks")
                    .keys()
                    .any(|(n, _)| *n == v.name);
                if !has_any || restart_dead {
                    if let Err(e) = self.start_local_bricks(v).await {
                        tracing::warn!(volume = %v.name, error = %e, "cannot start bricks");
                    }
                }
            }
        }
        let running: Vec<String> = self
            .bricks
            .lock()
            .expect("bricks")
            .keys()
            .map(|(n, _)| n.clone())
            .collect();
        for n in running.into_iter().filter(|n| converges(&busy, n)) {
            if vols
                .get(&n)
                .is_none_or(|v| v.status != VolumeStatus::Started)
            {
                self.stop_local_bricks(&n, false).await;
            }
        }
    }

    /// Volumes a transaction holds the lock of on this server now.
    fn volumes_in_transaction(&self) -> Vec<String> {
        let now = self.rt.clock().now();
        let locks = self.locks.lock().expect("locks");
        locks.current(now).into_iter().map(|(k, _)| k).collect()
    }

    /// Does this server need a self-heal daemon? (A started replicated or
    /// dispersed volume with a brick here.)
    fn wants_shd(&self) -> bool {
        // Copy first: `shd_serves` looks hosts up in the state (its lock
        // is not reentrant).
        let vols = self.state.lock().expect("state").live_volumes();
        vols.values().any(|v| self.shd_serves(v))
    }

    fn shd_serves(&self, v: &Volume) -> bool {
        v.wants_shd() && v.bricks.iter().any(|b| self.is_local(b))
    }

    pub(super) fn shd_running(&self) -> bool {
        let id = *self.shd.lock().expect("shd");
        id.is_some_and(|id| self.launcher.running(id))
    }

    pub(super) async fn converge_shd(&self) {
        let want = self.wants_shd();
        let running = self.shd_running();
        if want && !running {
            match self
                .launcher
                .start_shd(self.me.hostnames.clone(), self.cfg.listen.clone())
                .await
            {
                Ok(id) => {
                    tracing::info!(id, "self-heal daemon started");
                    *self.shd.lock().expect("shd") = Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "cannot start the self-heal daemon"),
            }
        } else if !want {
            let id = self.shd.lock().expect("shd").take();
            if let Some(id) = id {
                if let Err(e) = self.launcher.stop(id, false).await {
                    tracing::warn!(error = %e, "cannot stop the self-heal daemon");
                } else {
                    tracing::info!("self-heal daemon stopped (no volume needs it)");
                }
            }
        }
    }

    pub(super) fn local_brick_status(&self, vol: &str) -> Vec<BrickStatus> {
        let Some(v) = self.state.lock().expect("state").volume(vol).cloned() else {
            return Vec::new();
        };
        let bricks = self.bricks.lock().expect("bricks").clone();
        let ports = self.portmap.lock().expect("portmap").clone();
        v.bricks
            .iter()
            .filter(|b| self.is_local(b))
            .map(|b| {
                let r = bricks.get(&(vol.to_string(), b.path.clone()));
                let online = r.is_some_and(|r| self.launcher.running(r.id));
                BrickStatus {
                    brick: b.clone(),
                    port: if online {
                        ports.get(&b.path).copied()
                    } else {
                        None
                    },
                    pid: r.filter(|_| online).map(|r| r.id),
                    online,
                }
            })
            .collect()
    }
}

/// May convergence start or stop the bricks of `volume` now? Not while a
/// transaction on it holds its lock here (`locked`, the keys held): its
/// brick-op has started or stopped them for a commit still to come.
///
/// Regression (process test `cli_heal_dns`, a 60-brick `volume start`):
/// a sync tick that adopted an unrelated object from a peer converged the
/// bricks between the start's brick-op and its commit, saw the volume not
/// yet started, and stopped the 20 bricks the brick-op had just started;
/// the commit then marked it started with those bricks down. Fixed by
/// leaving a volume under a transaction to that transaction (scenario
/// `mgmt_sync_during_start`).
pub(super) fn converges(locked: &[String], volume: &str) -> bool {
    !locked
        .iter()
        .any(|k| k == volume || k == crate::state::GLOBAL_LOCK)
}

#[cfg(test)]
mod tests {
    use super::converges;

    #[test]
    fn convergence_leaves_volumes_under_a_transaction_alone() {
        let l = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        for (locked, volume, want, why) in [
            (l(&[]), "vol", true, "nothing locked"),
            (l(&["other"]), "vol", true, "another volume's transaction"),
            (
                l(&["vol"]),
                "vol",
                false,
                "its own transaction: brick-op before commit",
            ),
            (
                l(&["<pool>"]),
                "vol",
                false,
                "a pool transaction (probe, detach)",
            ),
        ] {
            assert_eq!(converges(&locked, volume), want, "{why}");
        }
    }
}
