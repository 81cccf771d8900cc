//! The originator's side of a transaction: lock every reachable server in
//! one global order, run each phase on all of them, and let
//! [`next_step`] decide after each phase whether to go on, abort (giving
//! the locks back) or carry on with warnings once the change is made.

use std::sync::atomic::Ordering;

use mortar_net::rpc::RpcClient;
use mortar_storage::Storage;

use super::phase::{has_majority, next_step, summarize, Next, Outcome, Phase};
use super::Inner;
use crate::api::*;
use crate::error::{MgmtError, Result};
use crate::state::Op;
use crate::txnlock::{LockOwner, LEASE_DURATION};

/// The servers a transaction holds locked (other than this one).
type Locked = Vec<(String, RpcClient)>;

impl<S: Storage> Inner<S> {
    /// Run `op` across the pool.
    pub(super) async fn transact(&self, command: &str, op: Op, force: bool) -> Result<String> {
        let key = op.lock_key();
        let txn_id = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let owner = LockOwner {
            peer: self.me.uuid.clone(),
            peer_name: self.name().to_string(),
            txn_id,
            command: command.to_string(),
            since: self.rt.clock().unix_secs(),
        };
        let clients = self.clients();
        let total = clients.len() + 1;
        let reachable: Locked = clients
            .into_iter()
            .filter(|(_, c)| c.is_connected())
            .collect();
        if !has_majority(reachable.len() + 1, total) {
            return Err(MgmtError::NoMajority {
                reachable: reachable.len() + 1,
                total,
            });
        }
        self.rt.trace(|| {
            format!(
                "txn {txn_id} {command}: begin with {} peers",
                reachable.len()
            )
        });
        self.at(Phase::Lock).await;
        let locked = self.lock_all(&key, owner, &reachable).await?;
        let phase = PhaseReq {
            key: key.clone(),
            peer: self.me.uuid.clone(),
            txn_id,
            op,
            force,
        };
        // Pre-validate, then brick-op: any failure aborts before commit.
        for p in [Phase::PreValidate, Phase::BrickOp] {
            self.at(p).await;
            if let Next::AbortAndUnlock(errors) = self.run_phase(p, &phase, &locked).await {
                self.rt
                    .trace(|| format!("txn {txn_id} {command}: {p} failed"));
                self.unlock_all(&key, txn_id, &locked).await;
                return Err(MgmtError::PhaseFailed {
                    command: command.to_string(),
                    phase: p,
                    summary: summarize(&errors),
                });
            }
        }
        // Commit: from here the change is made; a server that misses it
        // converges by sync.
        self.at(Phase::CommitLocal).await;
        let local = outcome(self.commit(&phase).await);
        if let Next::AbortHoldingLocks(mut errors) = next_step(Phase::CommitLocal, &[local]) {
            return Err(MgmtError::Remote(errors.remove(0)));
        }
        let mut warnings = Vec::new();
        for p in [Phase::CommitPeers, Phase::PostValidate] {
            self.at(p).await;
            if let Next::ContinueWithWarnings(mut w) = self.run_phase(p, &phase, &locked).await {
                warnings.append(&mut w);
            }
        }
        self.at(Phase::Unlock).await;
        self.unlock_all(&key, txn_id, &locked).await;
        self.rt
            .trace(|| format!("txn {txn_id} {command}: committed"));
        let mut msg = format!("{command}: success");
        if !warnings.is_empty() {
            msg.push_str(&format!(" (warnings: {})", warnings.join("; ")));
        }
        Ok(msg)
    }

    /// Take the transaction's lock on this server and every reachable
    /// peer. Every originator locks the servers in one global order (by
    /// uuid): of transactions racing for one volume, whoever wins the
    /// first server's lock proceeds; the others fail there at once,
    /// holding nothing. Locking ourselves first instead would let every
    /// racer hold its own lock and all of them fail.
    async fn lock_all(&self, key: &str, owner: LockOwner, reachable: &Locked) -> Result<Locked> {
        let txn_id = owner.txn_id;
        let lreq = LockReq {
            key: key.to_string(),
            owner,
            lease_ms: LEASE_DURATION.as_millis() as u64,
        };
        let order = lock_order(&self.me.uuid, reachable);
        let mut locked = Vec::new();
        let mut locked_self = false;
        for (u, c) in &order {
            let r = match c {
                None => outcome(self.lock(&lreq)),
                Some(c) => self.ask(u, c, peer_procs::LOCK, &lreq).await,
            };
            if let Next::AbortAndUnlock(mut errors) = next_step(Phase::Lock, &[r]) {
                if locked_self {
                    self.locks
                        .lock()
                        .expect("locks")
                        .release(key, &self.me.uuid, txn_id);
                }
                self.unlock_all(key, txn_id, &locked).await;
                return Err(MgmtError::Remote(errors.remove(0)));
            }
            match c {
                None => locked_self = true,
                Some(c) => locked.push((u.clone(), c.clone())),
            }
        }
        Ok(locked)
    }

    /// Run one phase here (unless it is the peers' commit) and on every
    /// locked peer, in order, and decide what follows.
    async fn run_phase(&self, p: Phase, q: &PhaseReq, locked: &Locked) -> Next {
        let (procedure, local) = match p {
            Phase::PreValidate => (peer_procs::STAGE, Some(self.stage(q))),
            Phase::BrickOp => (peer_procs::BRICK_OP, Some(self.brick_op(q).await)),
            Phase::CommitPeers => (peer_procs::COMMIT, None),
            Phase::PostValidate => (peer_procs::POST_VALIDATE, Some(self.post_validate(q).await)),
            Phase::Lock | Phase::CommitLocal | Phase::Unlock => {
                unreachable!("{p} is not run on every server alike")
            }
        };
        let mut outcomes: Vec<Outcome> = local.into_iter().map(outcome).collect();
        for (u, c) in locked {
            outcomes.push(self.ask(u, c, procedure, q).await);
        }
        next_step(p, &outcomes)
    }

    /// One peer's answer to one phase.
    async fn ask<Q: serde::Serialize>(
        &self,
        uuid: &str,
        c: &RpcClient,
        procedure: u16,
        q: &Q,
    ) -> Outcome {
        match self.call_peer::<_, PeerResult<()>>(c, procedure, q).await {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => Outcome::Refused(e),
            Err(error) => Outcome::Unreachable {
                peer: self.peer_name(uuid),
                error,
            },
        }
    }

    async fn at(&self, phase: Phase) {
        if let Some(hook) = &self.cfg.phase_hook {
            hook(phase).await;
        }
    }

    pub(super) async fn unlock_all(&self, key: &str, txn_id: u64, locked: &[(String, RpcClient)]) {
        self.locks
            .lock()
            .expect("locks")
            .release(key, &self.me.uuid, txn_id);
        let req = UnlockReq {
            key: key.to_string(),
            peer: self.me.uuid.clone(),
            txn_id,
        };
        for (_, c) in locked {
            // A peer that misses the unlock has its lock lapse with the lease.
            let _ = self
                .call_peer::<_, PeerResult<()>>(c, peer_procs::UNLOCK, &req)
                .await;
        }
    }
}

/// The order a transaction locks servers in: every server by uuid, this
/// one (`None`) among them, so racing originators all start at the same
/// server and exactly one of them wins.
fn lock_order<C: Clone>(me: &str, peers: &[(String, C)]) -> Vec<(String, Option<C>)> {
    let mut order: Vec<(String, Option<C>)> = peers
        .iter()
        .map(|(u, c)| (u.clone(), Some(c.clone())))
        .collect();
    order.push((me.to_string(), None));
    order.sort_by(|a, b| a.0.cmp(&b.0));
    order
}

/// This server's own answer to a phase.
fn outcome(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (mgmt_concurrent, commit 0938641): three servers changing
    /// one volume at once each locked itself first, so each held one lock
    /// and all three failed, every time; fixed by locking in uuid order.
    #[test]
    fn regression_racing_originators_lock_in_one_order() {
        let pool = ["u1", "u2", "u3"];
        let orders: Vec<Vec<String>> = pool
            .iter()
            .map(|me| {
                let peers: Vec<(String, ())> = pool
                    .iter()
                    .filter(|u| *u != me)
                    .map(|u| (u.to_string(), ()))
                    .collect();
                lock_order(me, &peers).into_iter().map(|(u, _)| u).collect()
            })
            .collect();
        for o in &orders {
            assert_eq!(o, &["u1", "u2", "u3"]);
        }
        // This server appears once, as itself (no client).
        let o = lock_order("u2", &[("u3".to_string(), 3), ("u1".to_string(), 1)]);
        assert_eq!(
            o,
            [
                ("u1".to_string(), Some(1)),
                ("u2".to_string(), None),
                ("u3".to_string(), Some(3))
            ]
        );
    }
}
