//! Every server's side of a transaction (the originator runs these on
//! itself too): lock, pre-validate (stage), brick-op, commit and
//! post-validate, and joining or leaving a pool.

use std::time::Duration;

use mortar_storage::Storage;

use super::Inner;
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::state::{ClusterState, Op};
use crate::volume::{self, VolumeStatus};

impl<S: Storage> Inner<S> {
    pub(super) fn hello(&self, q: Hello) -> HelloReply {
        let st = self.state.lock().expect("state");
        HelloReply {
            me: self.me.clone(),
            pool_size: st.live_peers().filter(|p| p.uuid != q.from.uuid).count(),
            volumes: st.live_volumes().len(),
        }
    }

    pub(super) fn lock(&self, q: &LockReq) -> Result<()> {
        let now = self.rt.clock().now();
        self.locks.lock().expect("locks").acquire(
            &q.key,
            q.owner.clone(),
            now,
            Duration::from_millis(q.lease_ms),
        )
    }

    fn holds(&self, q: &PhaseReq) -> Result<()> {
        let now = self.rt.clock().now();
        if self
            .locks
            .lock()
            .expect("locks")
            .holds(&q.key, &q.peer, q.txn_id, now)
        {
            Ok(())
        } else {
            Err(MgmtError::LockNotHeld {
                host: self.name().to_string(),
                key: q.key.clone(),
            })
        }
    }

    /// This server's error, prefixed with its name.
    fn here(&self, error: String) -> MgmtError {
        MgmtError::OnServer {
            host: self.name().to_string(),
            error,
        }
    }

    /// Pre-validate: would the op apply here, and can this server do its part?
    pub(super) fn stage(&self, q: &PhaseReq) -> Result<()> {
        self.holds(q)?;
        let mut trial = self.state.lock().expect("state").clone();
        let before = trial.clone();
        trial.apply(&q.op).map_err(|e| self.here(e))?;
        match &q.op {
            Op::CreateVolume(v) => self.check_local_bricks(&v.bricks, q.force),
            Op::AddBricks { bricks, .. } => self.check_local_bricks(bricks, q.force),
            Op::ReplaceBrick { new, .. } if self.is_local(new) => self
                .fs
                .check_brick(&new.path, true)
                .map_err(|e| self.here(e)),
            Op::SetStatus { name, status } => self.stage_status(&before, name, *status, q.force),
            _ => Ok(()),
        }
    }

    fn check_local_bricks(&self, bricks: &[volume::BrickSpec], force: bool) -> Result<()> {
        for b in bricks.iter().filter(|b| self.is_local(b)) {
            self.fs
                .check_brick(&b.path, force)
                .map_err(|e| self.here(e))?;
        }
        Ok(())
    }

    /// Pre-validate of a start or stop: an rdma volume starts only where
    /// RDMA works; a volume already in that status needs `force`.
    fn stage_status(
        &self,
        before: &ClusterState,
        name: &str,
        status: VolumeStatus,
        force: bool,
    ) -> Result<()> {
        let cur = before.volume(name).map(|v| v.status);
        let starting_rdma_here = status == VolumeStatus::Started
            && before.volume(name).is_some_and(|v| {
                v.transport == volume::Transport::Rdma && v.bricks.iter().any(|b| self.is_local(b))
            })
            && cur != Some(VolumeStatus::Started);
        if starting_rdma_here {
            return self
                .launcher
                .rdma_ready()
                .map_err(|e| MgmtError::RdmaNotReady {
                    host: self.name().to_string(),
                    volume: name.to_string(),
                    error: e,
                });
        }
        if cur == Some(status) && !force {
            return Err(MgmtError::AlreadyInStatus {
                volume: name.to_string(),
                status: status.as_str().to_ascii_lowercase(),
                started: status == VolumeStatus::Started,
            });
        }
        Ok(())
    }

    /// Brick-op: this server's part (create brick directories, start or
    /// stop its bricks).
    pub(super) async fn brick_op(&self, q: &PhaseReq) -> Result<()> {
        self.holds(q)?;
        match &q.op {
            Op::CreateVolume(v) => self.prepare_local_bricks(&v.bricks)?,
            Op::AddBricks { bricks, .. } => self.prepare_local_bricks(bricks)?,
            Op::SetStatus {
                name: vol,
                status: VolumeStatus::Started,
            } => {
                let v = self.state.lock().expect("state").volume(vol).cloned();
                if let Some(mut v) = v {
                    v.status = VolumeStatus::Started;
                    self.start_local_bricks(&v)
                        .await
                        .map_err(|e| self.here(e))?;
                }
            }
            Op::SetStatus {
                name: vol,
                status: VolumeStatus::Stopped,
            } => {
                self.stop_local_bricks(vol, q.force).await;
            }
            _ => {}
        }
        Ok(())
    }

    fn prepare_local_bricks(&self, bricks: &[volume::BrickSpec]) -> Result<()> {
        for b in bricks.iter().filter(|b| self.is_local(b)) {
            self.fs.prepare_brick(&b.path).map_err(|e| self.here(e))?;
        }
        Ok(())
    }

    pub(super) async fn commit(&self, q: &PhaseReq) -> Result<()> {
        self.holds(q)?;
        self.apply_and_persist(&q.op)
            .map_err(|e| MgmtError::CommitFailed {
                host: self.name().to_string(),
                error: e,
            })?;
        if matches!(q.op, Op::AddPeer(_) | Op::RemovePeer { .. }) {
            self.connect_peers();
        }
        // Bricks added to a started volume (or swapped in) start now, as
        // the volume's others run (a failure is logged; `start force`
        // retries).
        if let Op::AddBricks { name, .. } | Op::ReplaceBrick { name, .. } = &q.op {
            let v = self.state.lock().expect("state").volume(name).cloned();
            if let Some(v) = v.filter(|v| v.status == VolumeStatus::Started) {
                if let Err(e) = self.start_local_bricks(&v).await {
                    tracing::warn!(volume = %v.name, error = %e, "cannot start the added bricks");
                }
            }
        }
        // A volume started or stopped: this server's self-heal daemon
        // follows at once (the sync tick would within 3 s).
        if matches!(
            q.op,
            Op::SetStatus { .. } | Op::AddBricks { .. } | Op::RemoveBricks { .. }
        ) {
            self.converge_shd().await;
        }
        Ok(())
    }

    pub(super) async fn post_validate(&self, q: &PhaseReq) -> Result<()> {
        if let Op::SetStatus {
            name,
            status: VolumeStatus::Started,
        } = &q.op
        {
            let down: Vec<String> = self
                .local_brick_status(name)
                .into_iter()
                .filter(|b| !b.online)
                .map(|b| b.brick.to_string())
                .collect();
            if !down.is_empty() {
                return Err(MgmtError::BricksNotRunning {
                    host: self.name().to_string(),
                    bricks: down,
                });
            }
        }
        Ok(())
    }

    /// A probe from another server: take its pool's state (only a server
    /// with no peers and no volumes joins).
    pub(super) async fn join(&self, q: JoinReq) -> Result<()> {
        {
            let st = self.state.lock().expect("state");
            if st.live_peers().count() > 0 || !st.live_volumes().is_empty() {
                return Err(MgmtError::AlreadyPooled {
                    host: self.name().to_string(),
                });
            }
        }
        self.replace_state(q.state)?;
        tracing::info!("joined a pool");
        self.connect_peers();
        self.converge_bricks(false).await;
        Ok(())
    }

    /// Detached by another server: forget the pool.
    pub(super) async fn leave(&self, q: LeaveReq) -> Result<()> {
        tracing::info!(by = %q.from, "detached from the pool");
        let mut next = ClusterState::default();
        // Keep tombstones of everything so a later probe starts clean.
        for (k, s) in &self.state.lock().expect("state").peers {
            let mut s = s.clone();
            s.version += 1;
            s.peer = None;
            next.peers.insert(k.clone(), s);
        }
        self.replace_state(next)?;
        self.connect_peers();
        Ok(())
    }
}
