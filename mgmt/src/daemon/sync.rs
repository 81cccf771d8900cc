//! State convergence: every sync tick each mgmtd compares its state with
//! every reachable peer's, takes the newer version of each object, and
//! settles same-version conflicts (split commits) by majority
//! ([`resolve_by_majority`]); `peer sync` takes a peer's view outright.

use std::sync::Arc;

use mortar_net::rpc::RpcClient;
use mortar_storage::Storage;

use super::Inner;
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::state::{reconcile, resolve_by_majority, ClusterState, ObjectKind, Resolution};
use crate::volume::Pool;

pub(super) async fn sync_loop<S: Storage>(inner: Arc<Inner<S>>) {
    let mut tick = inner.rt.clock().interval(inner.cfg.sync_interval);
    loop {
        tick.tick().await;
        inner.sync_once().await;
        // Also the self-heal daemon's watchdog: started when a volume
        // needs it, restarted if it died, stopped when none does.
        inner.converge_shd().await;
    }
}

impl<S: Storage> Inner<S> {
    /// Compare with every reachable peer and take what is newer there.
    ///
    /// Two servers holding one object at the same version with different
    /// contents means a transaction's commit was cut short (its originator
    /// crashed after committing on some servers) and another transaction
    /// committed since. Changes need a majority, so the variant a strict
    /// majority of the pool holds is the acknowledged one: it is adopted,
    /// and the unacknowledged partial commit dropped. Without a majority
    /// the conflict is reported for an operator (`peer sync`).
    pub(super) async fn sync_once(&self) {
        let clients: Vec<(String, RpcClient)> = self
            .clients()
            .into_iter()
            .filter(|(_, c)| c.is_connected())
            .collect();
        let pool_size = self.peer_clients.lock().expect("peer clients").len() + 1;
        let mut views: Vec<(String, ClusterState)> = Vec::new();
        for (uuid, c) in &clients {
            if let Ok(s) = self
                .call_peer::<_, ClusterState>(c, peer_procs::GET_STATE, &())
                .await
            {
                views.push((uuid.clone(), s));
            }
        }
        let mut changed = false;
        for (uuid, theirs) in &views {
            let unresolved = self.catch_up_from(uuid, theirs, &views, pool_size, &mut changed);
            let mut div = self.divergence.lock().expect("divergence");
            if unresolved.is_empty() {
                div.remove(uuid);
            } else {
                let mut lines: Vec<String> = unresolved.iter().map(|d| d.to_string()).collect();
                lines.push(format!(
                    "repair: run 'mortar peer sync {}' on the server whose view is wrong",
                    self.name()
                ));
                div.insert(uuid.clone(), lines);
            }
        }
        if changed {
            self.connect_peers();
            self.converge_bricks(false).await;
        }
    }

    /// Take what peer `uuid` has newer, and the majority's variant of what
    /// we disagree on; returns the divergences left for an operator.
    fn catch_up_from(
        &self,
        uuid: &str,
        theirs: &ClusterState,
        views: &[(String, ClusterState)],
        pool_size: usize,
        changed: &mut bool,
    ) -> Vec<crate::state::Divergence> {
        let mut st = self.state.lock().expect("state");
        let r = reconcile(&st, theirs);
        let mut next = st.clone();
        let mut adopted = r.take_volumes.len() + r.take_peers.len();
        let taken: Vec<String> = r
            .take_volumes
            .iter()
            .map(|(k, s)| format!("volume {k} v{}", s.version))
            .chain(
                r.take_peers
                    .iter()
                    .map(|(k, s)| format!("peer {k} v{}", s.version)),
            )
            .collect();
        r.adopt(&mut next);
        let mut unresolved = Vec::new();
        for d in r.conflicts {
            match resolve_by_majority(&d, uuid, theirs, views, pool_size) {
                Resolution::TakeMajority(variant) => {
                    let name = d.name.as_str();
                    tracing::warn!(volume = name, "discarding an unacknowledged partial commit: a majority holds another version");
                    self.rt.trace(|| {
                        format!(
                            "{} dropped a partial commit of {name}",
                            self.me.hostnames[0]
                        )
                    });
                    next.volumes.insert(d.name.clone(), variant);
                    adopted += 1;
                }
                Resolution::Unresolved => unresolved.push(d),
                Resolution::Ignore => {}
            }
        }
        if adopted > 0 {
            match self.store.save_all(&next) {
                Ok(()) => {
                    tracing::info!(peer = %uuid, adopted, ?taken, "caught up from peer");
                    self.rt
                        .trace(|| format!("{} caught up from {uuid}", self.me.hostnames[0]));
                    *st = next;
                    self.changed();
                    *changed = true;
                }
                Err(e) => tracing::warn!(error = %e, "cannot persist state taken from a peer"),
            }
        }
        unresolved
    }

    /// `peer sync HOST`: take HOST's view, conflicts included (the
    /// operator decided it is the right one).
    pub(super) async fn peer_sync(&self, host: &str) -> Result<String> {
        let uuid = self
            .identify(host)
            .filter(|u| *u != self.me.uuid)
            .ok_or_else(|| MgmtError::SyncUnknown {
                host: host.to_string(),
            })?;
        let c = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .get(&uuid)
            .cloned()
            .ok_or_else(|| MgmtError::SyncNoConnection {
                host: host.to_string(),
            })?;
        let theirs: ClusterState = self
            .call_peer(&c, peer_procs::GET_STATE, &())
            .await
            .map_err(MgmtError::Remote)?;
        let mut next = self.state.lock().expect("state").clone();
        let r = reconcile(&next, &theirs);
        r.adopt(&mut next);
        // Conflicting objects: take theirs, as the operator asked.
        for d in r.conflicts.iter().filter(|d| d.kind == ObjectKind::Volume) {
            if let Some(s) = theirs.volumes.get(&d.name) {
                next.volumes.insert(d.name.clone(), s.clone());
            }
        }
        self.replace_state(next)?;
        self.divergence.lock().expect("divergence").remove(&uuid);
        self.connect_peers();
        self.converge_bricks(false).await;
        Ok(format!(
            "peer sync: took {} objects from {host} ({} were in conflict)",
            r.take_volumes.len() + r.take_peers.len() + r.conflicts.len(),
            r.conflicts.len()
        ))
    }
}
