//! The pool's membership: RPC clients to every peer, probe (invite a
//! server), detach (remove one) and the peer views `peer status` shows.

use mortar_net::rpc::RpcClient;
use mortar_net::Endpoint;
use mortar_storage::Storage;

use super::{endpoint_port, Inner};
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::state::{Op, Peer};
use crate::volume::Pool;

impl<S: Storage> Inner<S> {
    /// Keep an RPC client to every peer in the state.
    pub(super) fn connect_peers(&self) {
        let peers: Vec<Peer> = self
            .state
            .lock()
            .expect("state")
            .live_peers()
            .cloned()
            .collect();
        let mut clients = self.peer_clients.lock().expect("peer clients");
        clients.retain(|uuid, c| {
            let keep = peers.iter().any(|p| &p.uuid == uuid);
            if !keep {
                c.close();
            }
            keep
        });
        for p in peers {
            if p.uuid == self.me.uuid || clients.contains_key(&p.uuid) {
                continue;
            }
            let host = p.hostnames.first().cloned().unwrap_or_default();
            match format!("{host}:{}", p.port).parse::<Endpoint>() {
                Ok(ep) => {
                    clients.insert(p.uuid.clone(), RpcClient::new(&self.rt, ep, self.cfg.rpc));
                }
                Err(e) => tracing::warn!(peer = %p.uuid, error = %e, "peer has no usable address"),
            }
        }
    }

    /// Connect to `ep` and make one peer call on a short-lived client.
    async fn call_once<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        ep: Endpoint,
        procedure: u16,
        q: &Q,
    ) -> std::result::Result<A, String> {
        let client = RpcClient::new(&self.rt, ep, self.cfg.rpc);
        let r = match client.wait_connected(self.cfg.phase_timeout).await {
            Ok(_) => self.call_peer::<_, A>(&client, procedure, q).await,
            Err(e) => Err(e.to_string()),
        };
        client.close();
        r
    }

    pub(super) async fn probe(&self, host: &str) -> Result<String> {
        let host = host.to_ascii_lowercase();
        if self.me.hostnames.contains(&host) {
            return Ok(format!("peer probe: {host} is this server"));
        }
        if self.identify(&host).is_some() {
            return Ok(format!("peer probe: {host} is already in the pool"));
        }
        let port = endpoint_port(&self.cfg.listen);
        let ep: Endpoint = format!("{host}:{port}")
            .parse()
            .map_err(|e: mortar_net::addr::AddrError| MgmtError::BadAddress(e.to_string()))?;
        // The name first, under the resolver's own deadline: a definite
        // answer (NXDOMAIN, no addresses) ends the probe at once instead
        // of the connection retrying it until the phase timeout.
        self.rt
            .resolver()
            .resolve(&ep)
            .await
            .map_err(|e| MgmtError::ProbeUnreachable {
                host: host.clone(),
                error: e.to_string(),
            })?;
        let hello = Hello {
            from: self.me.clone(),
        };
        let hello: HelloReply = self
            .call_once(ep.clone(), peer_procs::HELLO, &hello)
            .await
            .map_err(|error| MgmtError::ProbeUnreachable {
                host: host.clone(),
                error,
            })?;
        if hello.pool_size > 0 || hello.volumes > 0 {
            return Err(MgmtError::ProbeOtherPool {
                host,
                peers: hello.pool_size,
                volumes: hello.volumes,
            });
        }
        let mut peer = hello.me;
        if !peer.hostnames.contains(&host) {
            peer.hostnames.insert(0, host.clone());
        }
        let msg = self
            .transact(
                &format!("peer probe {host}"),
                Op::AddPeer(peer.clone()),
                false,
            )
            .await?;
        // The new peer takes the whole state, which now includes itself.
        let mut state = self.state.lock().expect("state").clone();
        state
            .apply(&Op::AddPeer(self.me.clone()))
            .map_err(MgmtError::Invalid)?;
        self.call_once::<_, PeerResult<()>>(ep, peer_procs::JOIN, &JoinReq { state })
            .await
            .and_then(|r| r)
            .map_err(|error| MgmtError::ProbeNotJoined {
                host: host.clone(),
                error,
            })?;
        // Everyone else learns of this server through the commit; make sure
        // we are a peer in everyone's state too.
        Ok(msg.replace(": success", ": success (peer joined)"))
    }

    pub(super) async fn detach(&self, host: &str, force: bool) -> Result<String> {
        let uuid = self
            .identify(host)
            .ok_or_else(|| MgmtError::DetachUnknown {
                host: host.to_string(),
            })?;
        if uuid == self.me.uuid {
            return Err(MgmtError::DetachSelf);
        }
        let hosting: Vec<String> = self
            .state
            .lock()
            .expect("state")
            .live_volumes()
            .values()
            .filter(|v| {
                v.bricks
                    .iter()
                    .any(|b| self.identify(&b.host).as_deref() == Some(uuid.as_str()))
            })
            .map(|v| v.name.clone())
            .collect();
        if !hosting.is_empty() && !force {
            return Err(MgmtError::DetachHosting {
                host: host.to_string(),
                volumes: hosting,
            });
        }
        let msg = self
            .transact(
                &format!("peer detach {host}"),
                Op::RemovePeer { uuid: uuid.clone() },
                force,
            )
            .await?;
        let client = self
            .peer_clients
            .lock()
            .expect("peer clients")
            .get(&uuid)
            .cloned();
        if let Some(c) = client {
            let _ = self
                .call_peer::<_, PeerResult<()>>(
                    &c,
                    peer_procs::LEAVE,
                    &LeaveReq {
                        from: self.me.uuid.clone(),
                    },
                )
                .await;
        }
        self.connect_peers();
        Ok(msg)
    }

    pub(super) fn peer_views(&self) -> Vec<PeerView> {
        let st = self.state.lock().expect("state").clone();
        let clients = self.peer_clients.lock().expect("peer clients").clone();
        let div = self.divergence.lock().expect("divergence").clone();
        st.live_peers()
            .filter(|p| p.uuid != self.me.uuid)
            .map(|p| PeerView {
                uuid: p.uuid.clone(),
                hostname: p.hostnames.first().cloned().unwrap_or_default(),
                other_names: p.hostnames.iter().skip(1).cloned().collect(),
                connected: clients.get(&p.uuid).is_some_and(|c| c.is_connected()),
                divergence: div.get(&p.uuid).cloned().unwrap_or_default(),
            })
            .collect()
    }
}
