//! Pieces every set layer (replicate, disperse) uses to run one operation
//! on several bricks: fan an operation out concurrently, and take or give
//! back a lock on all of them without two clients each holding part.

use mortar_net::{BoxFuture, Runtime};
use mortar_proto::brick::{self as bp, LockKind};
use mortar_proto::{Errno, FopError};

use crate::fop::{Child, Fop, FopOut, FopResult};

/// How long a transaction waits for a lock held by another client.
pub const LOCK_WAIT_MS: u64 = 30_000;

/// Run `make(child)` on the children `idx` concurrently (tasks of `rt`);
/// `None` for a child whose task was cancelled.
pub async fn fan_any<T: Send + 'static>(
    rt: &Runtime,
    children: &[Child],
    idx: &[usize],
    make: impl Fn(Child) -> BoxFuture<'static, T>,
) -> Vec<(usize, Option<T>)> {
    let handles: Vec<_> = idx
        .iter()
        .map(|&i| (i, rt.spawn(make(children[i].clone()))))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for (i, h) in handles {
        out.push((i, h.await.ok().flatten()));
    }
    out
}

/// [`fan_any`] for file operations; a cancelled task is an EIO naming
/// the set.
pub async fn fan(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    idx: &[usize],
    make: impl Fn(Child) -> BoxFuture<'static, FopResult<FopOut>>,
) -> Vec<(usize, FopResult<FopOut>)> {
    fan_any(rt, children, idx, make)
        .await
        .into_iter()
        .map(|(i, r)| {
            let r = r.unwrap_or_else(|| {
                Err(FopError::new(
                    Errno::EIO,
                    format!("{set}: operation on child {i} was cancelled"),
                ))
            });
            (i, r)
        })
        .collect()
}

/// Send `op` to the children `idx` at once and wait for every answer.
pub async fn fan_op(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    idx: &[usize],
    op: &Fop,
) -> Vec<(usize, FopResult<FopOut>)> {
    let op = op.clone();
    fan(rt, set, children, idx, move |c| {
        let op = op.clone();
        Box::pin(async move { c.fop(op).await })
    })
    .await
}

/// The indices whose result is `Ok`.
pub fn succeeded(results: &[(usize, FopResult<FopOut>)]) -> Vec<usize> {
    results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect()
}

/// The first answer that worked and the first error, in brick order: what
/// a set layer gives back once it has judged how many bricks took it.
pub fn first_answers(
    results: Vec<(usize, FopResult<FopOut>)>,
) -> (Option<FopResult<FopOut>>, Option<FopError>) {
    let first_ok = results
        .iter()
        .find(|(_, r)| r.is_ok())
        .map(|(_, r)| r.clone());
    let first_err = results.into_iter().find_map(|(_, r)| r.err());
    (first_ok, first_err)
}

/// Lock on every child of `up` that answers. Fast path: ask all at once
/// without waiting. If any refuses (someone else holds it), give back
/// what was granted and take the slow path: in child order, waiting up to
/// [`LOCK_WAIT_MS`], so that two clients never each hold part and wait on
/// each other. Children that are not connected are left out; any other
/// refusal is the error. `lock(kind, wait)` builds the request.
pub async fn lock_all(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    up: &[usize],
    kind: LockKind,
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
) -> FopResult<Vec<usize>> {
    let tries = fan_op(rt, set, children, up, &lock(kind, None)).await;
    let granted = succeeded(&tries);
    let contended = tries
        .iter()
        .any(|(_, r)| r.as_ref().is_err_and(|e| e.errno != Errno::ENOTCONN));
    if !contended {
        return Ok(granted);
    }
    unlock_all(rt, set, children, &granted, lock).await;
    let mut locked = Vec::new();
    for &i in up {
        match children[i].fop(lock(kind, Some(LOCK_WAIT_MS))).await {
            Ok(_) => locked.push(i),
            Err(e) if e.errno == Errno::ENOTCONN => {}
            Err(e) => {
                unlock_all(rt, set, children, &locked, lock).await;
                return Err(e);
            }
        }
    }
    Ok(locked)
}

/// Give back a lock on `locked`. A failed unlock is released by the brick
/// when the connection goes; nothing more to do here.
pub async fn unlock_all(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    locked: &[usize],
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
) {
    let _ = fan_op(rt, set, children, locked, &lock(LockKind::Unlock, None)).await;
}

/// Lock on every child, in child order, waiting up to [`LOCK_WAIT_MS`]
/// each (heal needs the whole set). On a refusal, gives back what was
/// granted and says which child refused.
pub async fn lock_every(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    kind: LockKind,
    lock: &(dyn Fn(LockKind, Option<u64>) -> Fop + Sync),
) -> Result<Vec<usize>, String> {
    let mut locked = Vec::new();
    for (i, c) in children.iter().enumerate() {
        match c.fop(lock(kind, Some(LOCK_WAIT_MS))).await {
            Ok(_) => locked.push(i),
            Err(e) => {
                unlock_all(rt, set, children, &locked, lock).await;
                return Err(format!("cannot lock on {}: {e}", c.name()));
            }
        }
    }
    Ok(locked)
}

/// The request that gives back what the lock request `op` took (`None`
/// when `op` is not a lock request).
pub fn unlock_of(op: &Fop) -> Option<Fop> {
    match op {
        Fop::Inodelk(q) if q.kind != LockKind::Unlock => Some(Fop::Inodelk(bp::Inodelk {
            kind: LockKind::Unlock,
            wait_ms: None,
            ..q.clone()
        })),
        Fop::Entrylk(q) if q.kind != LockKind::Unlock => Some(Fop::Entrylk(bp::Entrylk {
            kind: LockKind::Unlock,
            wait_ms: None,
            ..q.clone()
        })),
        _ => None,
    }
}

/// A lock request from a layer above failed on the set as a whole: give
/// back what the bricks in `granted` took, so no partial lock stays.
pub async fn release_partial(
    rt: &Runtime,
    set: &str,
    children: &[Child],
    granted: &[usize],
    op: &Fop,
) {
    if let Some(unlock) = unlock_of(op) {
        let _ = fan_op(rt, set, children, granted, &unlock).await;
    }
}
