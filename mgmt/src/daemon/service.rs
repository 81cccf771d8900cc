//! The three RPC programs mgmtd serves: the port map (bricks sign in, and
//! clients ask for their ports), the peer protocol (transaction phases,
//! state sync) and the CLI. Each decodes, calls the daemon, encodes; peer
//! and CLI errors leave as the wire's strings.

use std::collections::BTreeMap;
use std::sync::Arc;

use mortar_net::rpc::{Fault, FaultCode, Reply, Request, Service};
use mortar_net::BoxFuture;
use mortar_proto::portmap;
use mortar_storage::Storage;
use serde::Serialize;

use super::Inner;
use crate::api::*;

pub(super) struct PortmapService<S: Storage>(pub(super) Arc<Inner<S>>);
pub(super) struct PeerService<S: Storage>(pub(super) Arc<Inner<S>>);
pub(super) struct CliService<S: Storage>(pub(super) Arc<Inner<S>>);

fn reply<T: Serialize>(v: &T) -> Result<Reply, Fault> {
    Reply::encode(v)
}

/// A peer-side result as the wire carries it.
fn wire(r: crate::error::Result<()>) -> PeerResult<()> {
    r.map_err(|e| e.to_string())
}

/// Record that `brick` listens on `port`. A port serves one brick: a
/// brick that held it before (and died without signing out) is
/// forgotten, so no client is sent to the new owner by its old name.
pub(crate) fn sign_in(map: &mut BTreeMap<String, u16>, brick: &str, port: u16) {
    map.retain(|b, p| *p != port || b == brick);
    map.insert(brick.to_string(), port);
}

impl<S: Storage> Service for PortmapService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            match req.procedure {
                portmap::procs::SIGN_IN => {
                    let q: portmap::SignIn = req.decode()?;
                    tracing::info!(brick = %q.brick_path, port = q.port, "brick signed in");
                    inner
                        .rt
                        .trace(|| format!("brick {} signed in on {}", q.brick_path, q.port));
                    sign_in(
                        &mut inner.portmap.lock().expect("portmap"),
                        &q.brick_path,
                        q.port,
                    );
                    inner
                        .sign_ins
                        .modify(|m| *m.entry(q.brick_path).or_default() += 1);
                    reply(&())
                }
                portmap::procs::SIGN_OUT => {
                    let q: portmap::SignOut = req.decode()?;
                    inner.portmap.lock().expect("portmap").remove(&q.brick_path);
                    reply(&())
                }
                portmap::procs::QUERY => {
                    let q: portmap::Query = req.decode()?;
                    reply(
                        &inner
                            .portmap
                            .lock()
                            .expect("portmap")
                            .get(&q.brick_path)
                            .copied(),
                    )
                }
                portmap::procs::WAIT => {
                    let q: portmap::Wait = req.decode()?;
                    reply(&inner.wait_sign_in(q).await)
                }
                p => Err(Fault::new(
                    FaultCode::ProcUnavail,
                    format!("port map has no procedure {p}"),
                )),
            }
        })
    }
}

impl<S: Storage> Service for PeerService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            match req.procedure {
                peer_procs::HELLO => {
                    let q: Hello = req.decode()?;
                    reply(&inner.hello(q))
                }
                peer_procs::LOCK => {
                    let q: LockReq = req.decode()?;
                    reply(&wire(inner.lock(&q)))
                }
                peer_procs::UNLOCK => {
                    let q: UnlockReq = req.decode()?;
                    inner
                        .locks
                        .lock()
                        .expect("locks")
                        .release(&q.key, &q.peer, q.txn_id);
                    reply(&PeerResult::Ok(()))
                }
                peer_procs::STAGE => {
                    let q: PhaseReq = req.decode()?;
                    reply(&wire(inner.stage(&q)))
                }
                peer_procs::BRICK_OP => {
                    let q: PhaseReq = req.decode()?;
                    reply(&wire(inner.brick_op(&q).await))
                }
                peer_procs::COMMIT => {
                    let q: PhaseReq = req.decode()?;
                    reply(&wire(inner.commit(&q).await))
                }
                peer_procs::POST_VALIDATE => {
                    let q: PhaseReq = req.decode()?;
                    reply(&wire(inner.post_validate(&q).await))
                }
                p => peer_queries(&inner, p, req).await,
            }
        })
    }
}

/// The peer procedures outside a transaction's phases.
async fn peer_queries<S: Storage>(
    inner: &Inner<S>,
    procedure: u16,
    req: Request,
) -> Result<Reply, Fault> {
    match procedure {
        peer_procs::GET_STATE => reply(&inner.state.lock().expect("state").clone()),
        peer_procs::JOIN => {
            let q: JoinReq = req.decode()?;
            reply(&wire(inner.join(q).await))
        }
        peer_procs::LEAVE => {
            let q: LeaveReq = req.decode()?;
            reply(&wire(inner.leave(q).await))
        }
        peer_procs::BRICK_STATUS => {
            let name: String = req.decode()?;
            reply(&inner.local_brick_status(&name))
        }
        peer_procs::SHD_STATUS => {
            let _name: String = req.decode()?;
            reply(&inner.shd_running())
        }
        peer_procs::HEAL_NOW => {
            let (name, full): (String, bool) = req.decode()?;
            inner.note_heal_request(&name, full);
            reply(&PeerResult::Ok(()))
        }
        peer_procs::HEAL_STATS => {
            let name: String = req.decode()?;
            reply(&inner.local_heal_stats(&name))
        }
        peer_procs::MIGRATION_STATUS => {
            let name: String = req.decode()?;
            let m = inner
                .migrations
                .lock()
                .expect("migrations")
                .get(&name)
                .cloned();
            reply(&m)
        }
        p => Err(Fault::new(
            FaultCode::ProcUnavail,
            format!("peer protocol has no procedure {p}"),
        )),
    }
}

impl<S: Storage> Service for CliService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        let inner = self.0.clone();
        Box::pin(async move {
            if req.procedure != PROC_CLI {
                return Err(Fault::new(
                    FaultCode::ProcUnavail,
                    "the CLI program has one procedure",
                ));
            }
            let q: CliRequest = req.decode()?;
            // The wire reply stays a string error.
            reply(&inner.cli(q).await.map_err(|e| e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (brick, port) pairs of a port map.
    type Ports<'a> = &'a [(&'a str, u16)];

    #[test]
    fn a_port_names_the_brick_that_signed_in_last() {
        #[rustfmt::skip]
        let table: [(Ports, (&str, u16), Ports); 4] = [
            // (before, sign-in, after)
            (&[],                      ("/b1", 1), &[("/b1", 1)]),
            (&[("/b1", 1)],            ("/b1", 2), &[("/b1", 2)]),
            (&[("/b1", 1), ("/b2", 2)], ("/b3", 3), &[("/b1", 1), ("/b2", 2), ("/b3", 3)]),
            // cluster seed 100: /b1 died holding port 1, /b2 restarted on it
            (&[("/b1", 1), ("/b2", 2)], ("/b2", 1), &[("/b2", 1)]),
        ];
        for (before, (brick, port), after) in table {
            let mut m: BTreeMap<String, u16> =
                before.iter().map(|(b, p)| (b.to_string(), *p)).collect();
            sign_in(&mut m, brick, port);
            let want: BTreeMap<String, u16> =
                after.iter().map(|(b, p)| (b.to_string(), *p)).collect();
            assert_eq!(m, want, "{before:?} then {brick} on {port}");
        }
    }
}
