//! The CLI's requests, one function per command group: peers, volume
//! lifecycle, information, options, bricks (add, remove with its
//! migration, replace) and volfiles. Errors are [`MgmtError`]s; the CLI
//! service turns them into the wire's strings.

use std::collections::BTreeMap;
use std::time::Duration;

use mortar_storage::Storage;

use super::{new_uuid, Inner};
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::options;
use crate::state::Op;
use crate::volfile;
use crate::volume::{self, BrickSpec, Pool, Volume, VolumeStatus};

fn brick_list(bricks: &[BrickSpec]) -> String {
    bricks
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl<S: Storage> Inner<S> {
    pub(super) fn volume_or_err(&self, name: &str) -> Result<Volume> {
        self.state
            .lock()
            .expect("state")
            .volume(name)
            .cloned()
            .ok_or_else(|| MgmtError::NoVolume(name.to_string()))
    }

    pub(super) async fn cli(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        match req {
            R::PeerProbe { .. }
            | R::PeerDetach { .. }
            | R::PeerSync { .. }
            | R::PeerStatus
            | R::PoolList => self.cli_peers(req).await,
            R::VolumeCreate(_)
            | R::VolumeStart { .. }
            | R::VolumeStop { .. }
            | R::VolumeDelete { .. } => self.cli_lifecycle(req).await,
            R::VolumeInfo { .. } | R::VolumeStatus { .. } | R::VolumeList => {
                self.cli_info(req).await
            }
            R::VolumeSet { .. } | R::VolumeGet { .. } | R::VolumeReset { .. } => {
                self.cli_options(req).await
            }
            R::AddBrick { .. } | R::ReplaceBrick { .. } => self.cli_bricks(req).await,
            R::RemoveBrick {
                name,
                bricks,
                action,
            } => self.remove_brick(name, bricks, action).await,
            R::MigrationReport(m) => self.migration_report(m),
            R::GetVolfile { .. } | R::WatchVolfile { .. } => self.cli_volfile(req).await,
            R::HealNow { name, full } => self.heal_now(&name, full).await,
            R::HealRequests => Ok(CliReply::HealRequests(self.heal_requests())),
            R::HealReport(rows) => Ok(self.heal_report(rows)),
            R::HealStatistics { name } => self.heal_statistics(&name).await,
            R::ListenPort => Ok(CliReply::ListenPort(super::endpoint_port(&self.cfg.listen))),
        }
    }

    async fn cli_peers(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        Ok(match req {
            R::PeerProbe { host } => CliReply::Done(self.probe(&host).await?),
            R::PeerDetach { host, force } => CliReply::Done(self.detach(&host, force).await?),
            R::PeerSync { host } => CliReply::Done(self.peer_sync(&host).await?),
            R::PeerStatus => CliReply::Peers(self.peer_views()),
            R::PoolList => {
                let mut v = self.peer_views();
                v.insert(
                    0,
                    PeerView {
                        uuid: self.me.uuid.clone(),
                        hostname: "localhost".into(),
                        other_names: self.me.hostnames.clone(),
                        connected: true,
                        divergence: Vec::new(),
                    },
                );
                CliReply::Peers(v)
            }
            other => unreachable!("not a peer request: {other:?}"),
        })
    }

    async fn cli_lifecycle(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        let (command, op, force) = match req {
            R::VolumeCreate(c) => {
                let vols = self.state.lock().expect("state").live_volumes();
                let layout = volume::plan_create(&c, &vols, self).map_err(MgmtError::Invalid)?;
                let v = Volume {
                    name: c.name.clone(),
                    id: new_uuid(&self.rt),
                    layout,
                    transport: c.transport,
                    bricks: c.bricks.clone(),
                    status: VolumeStatus::Created,
                    options: BTreeMap::new(),
                    version: 0,
                    removing: Vec::new(),
                };
                let msg = self
                    .transact(
                        &format!("volume create {}", c.name),
                        Op::CreateVolume(v),
                        c.force,
                    )
                    .await?;
                return Ok(CliReply::Done(format!(
                    "{msg}: start the volume to access data"
                )));
            }
            R::VolumeStart { name, force } => {
                self.volume_or_err(&name)?;
                let op = Op::SetStatus {
                    name: name.clone(),
                    status: VolumeStatus::Started,
                };
                (format!("volume start {name}"), op, force)
            }
            R::VolumeStop { name, force } => {
                self.volume_or_err(&name)?;
                let op = Op::SetStatus {
                    name: name.clone(),
                    status: VolumeStatus::Stopped,
                };
                (format!("volume stop {name}"), op, force)
            }
            R::VolumeDelete { name } => {
                self.volume_or_err(&name)?;
                let op = Op::DeleteVolume { name: name.clone() };
                (format!("volume delete {name}"), op, false)
            }
            other => unreachable!("not a volume lifecycle request: {other:?}"),
        };
        Ok(CliReply::Done(self.transact(&command, op, force).await?))
    }

    async fn cli_info(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        let vols = self.state.lock().expect("state").live_volumes();
        Ok(match req {
            R::VolumeInfo { name } => match name {
                Some(n) if n != "all" => {
                    CliReply::Volumes(vec![vols.get(&n).cloned().ok_or(MgmtError::NoVolume(n))?])
                }
                _ => CliReply::Volumes(vols.into_values().collect()),
            },
            R::VolumeStatus { name } => {
                let names: Vec<String> = match name {
                    Some(n) if n != "all" => {
                        if !vols.contains_key(&n) {
                            return Err(MgmtError::NoVolume(n));
                        }
                        vec![n]
                    }
                    _ => vols.keys().cloned().collect(),
                };
                let mut out = Vec::new();
                for n in names {
                    out.push(self.volume_status(&vols[&n]).await);
                }
                CliReply::Status(out)
            }
            R::VolumeList => CliReply::Names(vols.into_keys().collect()),
            other => unreachable!("not an information request: {other:?}"),
        })
    }

    async fn cli_options(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        let (command, op) = match req {
            R::VolumeSet { name, key, value } => {
                self.volume_or_err(&name)?;
                let value = options::validate(&key, &value).map_err(MgmtError::Invalid)?;
                let op = Op::SetOption {
                    name: name.clone(),
                    key: key.clone(),
                    value,
                };
                (format!("volume set {name} {key}"), op)
            }
            R::VolumeGet { name, key } => return self.volume_get(&name, key),
            R::VolumeReset { name, key } => {
                self.volume_or_err(&name)?;
                let op = Op::ResetOption {
                    name: name.clone(),
                    key,
                };
                (format!("volume reset {name}"), op)
            }
            other => unreachable!("not an option request: {other:?}"),
        };
        Ok(CliReply::Done(self.transact(&command, op, false).await?))
    }

    fn volume_get(&self, name: &str, key: Option<String>) -> Result<CliReply> {
        let v = self.volume_or_err(name)?;
        let all = options::effective(&v.options);
        let rows: Vec<OptionView> = all
            .into_iter()
            .filter(|(k, _, _)| {
                key.as_deref()
                    .is_none_or(|want| want == "all" || want == *k)
            })
            .map(|(k, value, set)| OptionView {
                key: k.to_string(),
                value,
                set,
            })
            .collect();
        if rows.is_empty() {
            return Err(MgmtError::UnknownOption {
                key: key.unwrap_or_default(),
                volume: name.to_string(),
            });
        }
        Ok(CliReply::Options(rows))
    }

    /// add-brick and replace-brick.
    async fn cli_bricks(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        let (command, op, force) = match req {
            R::AddBrick {
                name,
                replica,
                bricks,
                force,
            } => {
                let v = self.volume_or_err(&name)?;
                let layout = match (v.layout, replica) {
                    (l, None) => l,
                    (
                        volume::Layout::Replicate {
                            replica: r,
                            arbiter,
                        },
                        Some(n),
                    ) if n == r => volume::Layout::Replicate {
                        replica: r,
                        arbiter,
                    },
                    (_, Some(n)) => {
                        return Err(MgmtError::ReplicaChange {
                            replica: n,
                            set: v.layout.set_size(),
                        })
                    }
                };
                let vols = self.state.lock().expect("state").live_volumes();
                volume::check_bricks(&name, layout, &bricks, force, &vols, self)
                    .map_err(MgmtError::Invalid)?;
                let op = Op::AddBricks {
                    name: name.clone(),
                    bricks,
                    layout,
                };
                (format!("volume add-brick {name}"), op, force)
            }
            R::ReplaceBrick { name, old, new } => {
                let v = self.volume_or_err(&name)?;
                if !v.bricks.contains(&old) {
                    return Err(MgmtError::NotABrick {
                        old: old.to_string(),
                        volume: name,
                    });
                }
                let vols = self.state.lock().expect("state").live_volumes();
                volume::check_bricks(
                    &name,
                    volume::Layout::Distribute,
                    std::slice::from_ref(&new),
                    true,
                    &vols,
                    self,
                )
                .map_err(MgmtError::Invalid)?;
                let op = Op::ReplaceBrick {
                    name: name.clone(),
                    old,
                    new,
                };
                (format!("volume replace-brick {name}"), op, true)
            }
            other => unreachable!("not a brick request: {other:?}"),
        };
        Ok(CliReply::Done(self.transact(&command, op, force).await?))
    }

    async fn remove_brick(
        &self,
        name: String,
        bricks: Vec<BrickSpec>,
        action: RemoveBrickAction,
    ) -> Result<CliReply> {
        let v = self.volume_or_err(&name)?;
        let set = v.layout.set_size() as usize;
        if bricks.len() % set != 0 {
            return Err(MgmtError::RemovePartialSet { set });
        }
        match action {
            RemoveBrickAction::Force => {
                let op = Op::RemoveBricks {
                    name: name.clone(),
                    bricks,
                };
                Ok(CliReply::Done(
                    self.transact(&format!("volume remove-brick {name}"), op, true)
                        .await?,
                ))
            }
            RemoveBrickAction::Commit => self.remove_brick_commit(&v, bricks).await,
            RemoveBrickAction::Start => self.remove_brick_start(&v, bricks).await,
            RemoveBrickAction::Status => {
                let views = self.migration_views(&name).await;
                if views.is_empty() {
                    return Err(MgmtError::NoMigrationKnown(name));
                }
                Ok(CliReply::Migration(views))
            }
        }
    }

    /// `remove-brick commit`: only once the migration off exactly these
    /// bricks says completed.
    async fn remove_brick_commit(&self, v: &Volume, bricks: Vec<BrickSpec>) -> Result<CliReply> {
        let name = &v.name;
        let mut sorted = bricks.clone();
        sorted.sort();
        let mut removing = v.removing.clone();
        removing.sort();
        if removing != sorted {
            return Err(MgmtError::RemoveNotStarted {
                volume: name.clone(),
                bricks: brick_list(&bricks),
            });
        }
        let views = self.migration_views(name).await;
        if !views.iter().any(|m| m.status == MigrationView::COMPLETED) {
            let now = views
                .first()
                .map(|m| {
                    format!(
                        "{} ({} files moved, {} failures)",
                        m.status, m.files, m.failures
                    )
                })
                .unwrap_or_else(|| {
                    "not running (its server may have restarted: run 'start' again)".into()
                });
            return Err(MgmtError::RemoveNotMigrated {
                volume: name.clone(),
                now,
            });
        }
        let op = Op::RemoveBricks {
            name: name.clone(),
            bricks,
        };
        let msg = self
            .transact(&format!("volume remove-brick {name}"), op, true)
            .await?;
        self.migrations.lock().expect("migrations").remove(name);
        Ok(CliReply::Done(msg))
    }

    /// `remove-brick start`: mark the bricks draining and start a
    /// migration worker moving their files to the other sets.
    async fn remove_brick_start(&self, v: &Volume, bricks: Vec<BrickSpec>) -> Result<CliReply> {
        let name = &v.name;
        let set = v.layout.set_size() as usize;
        if v.status != VolumeStatus::Started {
            return Err(MgmtError::RemoveVolumeStopped(name.clone()));
        }
        let mut trial = v.clone();
        trial.removing = bricks.clone();
        let drained = trial.decommissioned_sets();
        if drained.len() * set != bricks.len() {
            return Err(MgmtError::RemoveNotWholeSets { set });
        }
        if drained.len() * set >= v.bricks.len() {
            return Err(MgmtError::RemoveEverySet);
        }
        if let Some(m) = self.migrations.lock().expect("migrations").get(name) {
            if m.status == MigrationView::IN_PROGRESS {
                return Err(MgmtError::MigrationRunning(name.clone()));
            }
        }
        let op = Op::DrainBricks {
            name: name.clone(),
            bricks: bricks.clone(),
        };
        self.transact(&format!("volume remove-brick {name} start"), op, true)
            .await?;
        self.migrations.lock().expect("migrations").insert(
            name.clone(),
            MigrationView {
                volume: name.clone(),
                node: self.name().to_string(),
                status: MigrationView::IN_PROGRESS.into(),
                dirs: 0,
                files: 0,
                bytes: 0,
                failures: 0,
                last_error: None,
                bricks: bricks.clone(),
            },
        );
        if let Err(e) = self
            .launcher
            .start_migration(name, self.cfg.listen.clone())
            .await
        {
            if let Some(m) = self.migrations.lock().expect("migrations").get_mut(name) {
                m.status = MigrationView::FAILED.into();
                m.last_error = Some(e.clone());
            }
            return Err(MgmtError::MigrationNotStarted(e));
        }
        let list = brick_list(&bricks);
        Ok(CliReply::Done(format!(
            "volume remove-brick start: success\nMigration of {name}'s files off {list} started on {}; see 'volume remove-brick {name} {list} status'",
            self.name(),
        )))
    }

    /// Progress from a migration worker started here.
    fn migration_report(&self, m: MigrationView) -> Result<CliReply> {
        let mut all = self.migrations.lock().expect("migrations");
        let Some(cur) = all.get_mut(&m.volume) else {
            return Err(MgmtError::NoMigrationHere(m.volume));
        };
        let bricks = cur.bricks.clone();
        *cur = MigrationView {
            bricks,
            node: cur.node.clone(),
            ..m
        };
        Ok(CliReply::Done("noted".into()))
    }

    async fn cli_volfile(&self, req: CliRequest) -> Result<CliReply> {
        use CliRequest as R;
        match req {
            R::GetVolfile { name, brick } => {
                let v = self.volume_or_err(&name)?;
                let g = match brick {
                    Some(b) => volfile::brick_graph(&v, &b),
                    None => volfile::client_graph(&v),
                };
                Ok(CliReply::Volfile(g.render()))
            }
            R::WatchVolfile {
                name,
                known,
                wait_ms,
            } => self.watch_volfile(&name, known, wait_ms).await,
            other => unreachable!("not a volfile request: {other:?}"),
        }
    }

    /// A client's volfile long poll: answer when the text differs from
    /// `known`, or say "unchanged" at the deadline or when mgmtd stops.
    async fn watch_volfile(&self, name: &str, known: u64, wait_ms: u64) -> Result<CliReply> {
        let wait = Duration::from_millis(wait_ms).min(VOLFILE_WATCH_MAX);
        let deadline = self.rt.clock().now() + wait;
        loop {
            let seen = self.changes.get();
            let text = volfile::client_graph(&self.volume_or_err(name)?).render();
            if volfile_hash(&text) != known {
                return Ok(CliReply::Volfile(text));
            }
            let now = self.rt.clock().now();
            if seen.1 || now >= deadline {
                return Ok(CliReply::VolfileUnchanged);
            }
            let _ = self
                .rt
                .clock()
                .timeout(
                    deadline - now,
                    self.changes.wait_for(|c| c.0 != seen.0 || c.1),
                )
                .await;
        }
    }

    /// Migrations of `name` known here and on every reachable peer.
    async fn migration_views(&self, name: &str) -> Vec<MigrationView> {
        let mut out: Vec<MigrationView> = self
            .migrations
            .lock()
            .expect("migrations")
            .get(name)
            .cloned()
            .into_iter()
            .collect();
        for (_, c) in self.clients() {
            if let Ok(Some(m)) = self
                .call_peer::<_, Option<MigrationView>>(
                    &c,
                    peer_procs::MIGRATION_STATUS,
                    &name.to_string(),
                )
                .await
            {
                out.push(m);
            }
        }
        out
    }

    /// Is the brick's host the peer `uuid`?
    fn on_peer(&self, b: &BrickSpec, uuid: &str) -> bool {
        self.identify(&b.host).as_deref() == Some(uuid)
    }

    async fn volume_status(&self, v: &Volume) -> VolumeStatusView {
        let mut bricks = self.local_brick_status(&v.name);
        for (uuid, c) in self.clients() {
            if !v.bricks.iter().any(|b| self.on_peer(b, &uuid)) {
                continue;
            }
            match self
                .call_peer::<_, Vec<BrickStatus>>(&c, peer_procs::BRICK_STATUS, &v.name)
                .await
            {
                Ok(mut s) => bricks.append(&mut s),
                Err(_) => {
                    for b in v.bricks.iter().filter(|b| self.on_peer(b, &uuid)) {
                        bricks.push(BrickStatus {
                            brick: b.clone(),
                            port: None,
                            pid: None,
                            online: false,
                        });
                    }
                }
            }
        }
        bricks.sort_by_key(|b| v.bricks.iter().position(|x| *x == b.brick));
        VolumeStatusView {
            name: v.name.clone(),
            status: v.status.as_str().to_string(),
            bricks,
            shd: self.shd_status(v).await,
        }
    }

    /// Self-heal daemons of the servers with bricks of `v` (replicated
    /// and dispersed volumes only).
    async fn shd_status(&self, v: &Volume) -> Vec<(String, bool)> {
        let mut shd = Vec::new();
        if !v.wants_shd() {
            return shd;
        }
        if v.bricks.iter().any(|b| self.is_local(b)) {
            shd.push((self.name().to_string(), self.shd_running()));
        }
        for (uuid, c) in self.clients() {
            let Some(b) = v.bricks.iter().find(|b| self.on_peer(b, &uuid)) else {
                continue;
            };
            let up = self
                .call_peer::<_, bool>(&c, peer_procs::SHD_STATUS, &v.name)
                .await
                .unwrap_or(false);
            shd.push((b.host.clone(), up));
        }
        shd
    }
}
