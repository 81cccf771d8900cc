//! Inode (byte-range) and entry locks, as replicate and disperse use them
//! to serialise their transactions.
//!
//! * An owner is the client id of the connection plus the client's own
//!   owner number; locks of one owner never conflict with each other.
//! * Requests without a wait fail at once with EAGAIN on conflict. Waiting
//!   requests queue in arrival order: a waiter is not overtaken by a later
//!   conflicting request, so writers are not starved by a stream of
//!   readers. A wait that passes its deadline fails with EAGAIN.
//! * Every lock records the connection it came through; when the
//!   connection dies (closed, or silent past the ping timeout) all its
//!   locks go, so a lock never outlives its owner by more than the ping
//!   timeout.
//! * `dump` lists holders and waiters with the time they got or asked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use mortar_net::Clock;
use mortar_proto::brick::{LockInfo, LockKind, LockOwner, LockTarget};
use mortar_proto::{Errno, FopError, Gfid};
use tokio::sync::Notify;

/// Waiters allowed on one lock key; more are refused with EAGAIN rather
/// than queued without bound.
pub const WAITERS_PER_KEY_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    owner: LockOwner,
    conn: u64,
    client_name: String,
    exclusive: bool,
    what: Span,
    since: u64,
    ticket: u64,
    granted: bool,
}

/// What a lock covers: a byte range of an inode, or a name (or the whole
/// directory) of an entry lock.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Span {
    /// `[start, end)`; `end` is `u64::MAX` for "to end of file".
    Range {
        start: u64,
        end: u64,
    },
    Name(Option<String>),
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        match (self, other) {
            (Span::Range { start: a, end: b }, Span::Range { start: c, end: d }) => a < d && c < b,
            (Span::Name(a), Span::Name(b)) => a.is_none() || b.is_none() || a == b,
            _ => false,
        }
    }
}

fn conflicts(a: &Holder, b: &Holder) -> bool {
    a.owner != b.owner && (a.exclusive || b.exclusive) && a.what.overlaps(&b.what)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Inode(Gfid, String),
    Entry(Gfid, String),
}

#[derive(Default)]
struct State {
    locks: BTreeMap<Key, Vec<Holder>>,
    next_ticket: u64,
}

/// The brick's lock table.
pub struct LockTable {
    state: Mutex<State>,
    changed: Notify,
    clock: Clock,
}

/// A lock request, from either lock procedure.
pub struct LockRequest {
    pub owner: LockOwner,
    pub conn: u64,
    pub client_name: String,
    pub wait: Option<Duration>,
}

/// Removes a waiter whose request was cancelled or timed out.
struct WaiterGuard<'a> {
    table: &'a LockTable,
    key: Key,
    ticket: u64,
    armed: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.table.state.lock().expect("lock table");
            if let Some(v) = st.locks.get_mut(&self.key) {
                v.retain(|h| h.ticket != self.ticket);
                if v.is_empty() {
                    st.locks.remove(&self.key);
                }
            }
            drop(st);
            // A waiter leaving may let a later one through.
            self.table.changed.notify_waiters();
        }
    }
}

fn range(start: u64, len: u64) -> Result<Span, FopError> {
    let end = if len == 0 {
        u64::MAX
    } else {
        start
            .checked_add(len)
            .ok_or_else(|| FopError::new(Errno::EINVAL, "lock range overflows"))?
    };
    Ok(Span::Range { start, end })
}

impl Default for LockTable {
    fn default() -> Self {
        Self::new()
    }
}

impl LockTable {
    pub fn new() -> Self {
        LockTable {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            clock: Clock::new(),
        }
    }

    /// An inodelk request: lock or unlock `[start, start+len)`.
    pub async fn inodelk(
        &self,
        gfid: Gfid,
        domain: &str,
        kind: LockKind,
        start: u64,
        len: u64,
        req: LockRequest,
    ) -> Result<(), FopError> {
        let key = Key::Inode(gfid, domain.to_string());
        let span = range(start, len)?;
        match kind {
            LockKind::Unlock => {
                self.unlock_range(&key, &req.owner, &span);
                Ok(())
            }
            LockKind::Read | LockKind::Write => {
                self.acquire(key, span, kind == LockKind::Write, req).await
            }
        }
    }

    /// An entrylk request: lock or unlock one name (or the whole directory).
    pub async fn entrylk(
        &self,
        parent: Gfid,
        name: Option<String>,
        domain: &str,
        kind: LockKind,
        req: LockRequest,
    ) -> Result<(), FopError> {
        let key = Key::Entry(parent, domain.to_string());
        let span = Span::Name(name);
        match kind {
            LockKind::Unlock => {
                let mut st = self.state.lock().expect("lock table");
                let before = st.locks.get(&key).map_or(0, Vec::len);
                if let Some(v) = st.locks.get_mut(&key) {
                    v.retain(|h| !(h.granted && h.owner == req.owner && h.what == span));
                    if v.is_empty() {
                        st.locks.remove(&key);
                    }
                }
                let after = st.locks.get(&key).map_or(0, Vec::len);
                drop(st);
                if before == after {
                    return Err(FopError::new(
                        Errno::EINVAL,
                        "unlock of an entry lock that is not held",
                    ));
                }
                self.changed.notify_waiters();
                Ok(())
            }
            LockKind::Read | LockKind::Write => {
                self.acquire(key, span, kind == LockKind::Write, req).await
            }
        }
    }

    async fn acquire(
        &self,
        key: Key,
        what: Span,
        exclusive: bool,
        req: LockRequest,
    ) -> Result<(), FopError> {
        let since = self.clock.unix_secs();
        let deadline = req.wait.map(|w| self.clock.now() + w);
        let me = Holder {
            owner: req.owner.clone(),
            conn: req.conn,
            client_name: req.client_name.clone(),
            exclusive,
            what,
            since,
            ticket: 0,
            granted: false,
        };
        let Some(ticket) = self.grant_or_queue(&key, me, deadline.is_some())? else {
            return Ok(());
        };
        let mut guard = WaiterGuard {
            table: self,
            key: key.clone(),
            ticket,
            armed: true,
        };
        let deadline = deadline.expect("waiting requests have a deadline");
        loop {
            let notified = self.changed.notified();
            if self.grant_if_first(&key, ticket) {
                guard.armed = false;
                return Ok(());
            }
            if self.clock.timeout_at(deadline, notified).await.is_err() {
                let st = self.state.lock().expect("lock table");
                let me = st
                    .locks
                    .get(&key)
                    .and_then(|l| l.iter().find(|h| h.ticket == ticket))
                    .cloned();
                drop(st);
                let mut e = match me {
                    Some(me) => self.busy(&key, &me),
                    None => FopError::new(Errno::EAGAIN, "lock busy"),
                };
                e.detail = format!("waited {:?}: {}", req.wait.unwrap_or_default(), e.detail);
                return Err(e);
            }
        }
    }

    /// Grant `me` at once if nothing conflicts (`None`); otherwise queue it
    /// as a waiter and return its ticket, or refuse with EAGAIN if it may
    /// not wait or the queue is full. `me.ticket` is assigned here.
    fn grant_or_queue(
        &self,
        key: &Key,
        mut me: Holder,
        waits: bool,
    ) -> Result<Option<u64>, FopError> {
        let mut st = self.state.lock().expect("lock table");
        st.next_ticket += 1;
        me.ticket = st.next_ticket;
        let list = st.locks.entry(key.clone()).or_default();
        let blocked = list.iter().any(|h| conflicts(h, &me));
        if !blocked {
            list.push(Holder {
                granted: true,
                ..me
            });
            return Ok(None);
        }
        if !waits {
            if list.is_empty() {
                st.locks.remove(key);
            }
            // `busy` takes the table lock itself.
            drop(st);
            return Err(self.busy(key, &me));
        }
        if list.iter().filter(|h| !h.granted).count() >= WAITERS_PER_KEY_MAX {
            return Err(FopError::new(
                Errno::EAGAIN,
                format!("{WAITERS_PER_KEY_MAX} requests already wait for this lock"),
            ));
        }
        let ticket = me.ticket;
        list.push(me);
        Ok(Some(ticket))
    }

    /// Grant waiter `ticket` if nothing blocks it now: no granted lock and
    /// no earlier waiter it conflicts with (first come, first served).
    fn grant_if_first(&self, key: &Key, ticket: u64) -> bool {
        let mut st = self.state.lock().expect("lock table");
        let list = st.locks.get_mut(key).expect("waiter's key exists");
        let pos = list
            .iter()
            .position(|h| h.ticket == ticket)
            .expect("waiter is listed");
        let me = &list[pos];
        let blocked = list
            .iter()
            .any(|h| h.ticket != ticket && (h.granted || h.ticket < ticket) && conflicts(h, me));
        if blocked {
            return false;
        }
        list[pos].granted = true;
        list[pos].since = self.clock.unix_secs();
        true
    }

    /// EAGAIN naming who holds what blocks `me`.
    fn busy(&self, key: &Key, me: &Holder) -> FopError {
        let st = self.state.lock().expect("lock table");
        let holder = st
            .locks
            .get(key)
            .and_then(|l| l.iter().find(|h| h.granted && conflicts(h, me)))
            .map(|h| {
                format!(
                    "held by {} (owner {}) since {}",
                    h.client_name, h.owner.owner, h.since
                )
            })
            .unwrap_or_else(|| "queued behind an earlier request".into());
        FopError::new(Errno::EAGAIN, format!("lock busy: {holder}"))
    }

    fn unlock_range(&self, key: &Key, owner: &LockOwner, span: &Span) {
        let Span::Range { start, end } = *span else {
            return;
        };
        let mut st = self.state.lock().expect("lock table");
        let Some(list) = st.locks.get_mut(key) else {
            return;
        };
        let mut kept = Vec::with_capacity(list.len());
        for h in list.drain(..) {
            let Span::Range { start: a, end: b } = h.what else {
                kept.push(h);
                continue;
            };
            if !h.granted || h.owner != *owner || !(a < end && start < b) {
                kept.push(h);
                continue;
            }
            // Keep the parts of the lock outside the unlocked range.
            if a < start {
                kept.push(Holder {
                    what: Span::Range {
                        start: a,
                        end: start,
                    },
                    ..h.clone()
                });
            }
            if end < b {
                kept.push(Holder {
                    what: Span::Range { start: end, end: b },
                    ..h.clone()
                });
            }
        }
        *list = kept;
        if list.is_empty() {
            st.locks.remove(key);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Drop every lock a connection holds (it closed or was declared dead).
    /// Returns how many were released.
    pub fn release_conn(&self, conn: u64) -> usize {
        let mut st = self.state.lock().expect("lock table");
        let mut released = 0;
        st.locks.retain(|_, list| {
            let before = list.len();
            list.retain(|h| !(h.granted && h.conn == conn));
            released += before - list.len();
            !list.is_empty()
        });
        drop(st);
        if released > 0 {
            self.changed.notify_waiters();
        }
        released
    }

    /// Everything held or awaited, for `lock dump`.
    pub fn dump(&self) -> Vec<LockInfo> {
        let st = self.state.lock().expect("lock table");
        let mut out = Vec::new();
        for (key, list) in &st.locks {
            for h in list {
                let (domain, target) = match (key, &h.what) {
                    (Key::Inode(g, d), Span::Range { start, end }) => (
                        d.clone(),
                        LockTarget::Inode {
                            gfid: *g,
                            start: *start,
                            len: if *end == u64::MAX { 0 } else { end - start },
                        },
                    ),
                    (Key::Entry(g, d), Span::Name(n)) => (
                        d.clone(),
                        LockTarget::Entry {
                            parent: *g,
                            name: n.clone(),
                        },
                    ),
                    _ => continue,
                };
                out.push(LockInfo {
                    domain,
                    target,
                    kind: if h.exclusive {
                        LockKind::Write
                    } else {
                        LockKind::Read
                    },
                    owner: h.owner.clone(),
                    client_name: h.client_name.clone(),
                    since: h.since,
                    granted: h.granted,
                });
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Unit tests run on tokio's paused clock; the ban guards daemon code.
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(client: &str, owner: u64, conn: u64, wait_ms: Option<u64>) -> LockRequest {
        LockRequest {
            owner: LockOwner {
                client_id: client.into(),
                owner,
            },
            conn,
            client_name: format!("{client}-name"),
            wait: wait_ms.map(Duration::from_millis),
        }
    }

    const G: Gfid = Gfid([7; 16]);

    #[tokio::test(start_paused = true)]
    async fn readers_share_writers_exclude_and_nonblocking_is_eagain() {
        let t = LockTable::new();
        t.inodelk(G, "d", LockKind::Read, 0, 100, req("a", 1, 1, None))
            .await
            .unwrap();
        t.inodelk(G, "d", LockKind::Read, 50, 100, req("b", 1, 2, None))
            .await
            .unwrap();
        let e = t
            .inodelk(G, "d", LockKind::Write, 0, 10, req("c", 1, 3, None))
            .await
            .unwrap_err();
        assert_eq!(e.errno, Errno::EAGAIN);
        assert!(e.detail.contains("a-name"), "{}", e.detail);
        // Disjoint ranges and other domains do not conflict.
        t.inodelk(G, "d", LockKind::Write, 200, 10, req("c", 1, 3, None))
            .await
            .unwrap();
        t.inodelk(G, "other", LockKind::Write, 0, 0, req("c", 1, 3, None))
            .await
            .unwrap();
        // The same owner never conflicts with itself...
        t.inodelk(G, "d", LockKind::Write, 0, 10, req("a", 1, 1, None))
            .await
            .unwrap();
        // ...but does with another owner's read lock (b holds 50..150).
        let e = t
            .inodelk(G, "d", LockKind::Write, 40, 20, req("a", 1, 1, None))
            .await
            .unwrap_err();
        assert!(e.detail.contains("b-name"), "{}", e.detail);
        // A different owner number of the same client is another owner.
        let e = t
            .inodelk(G, "d", LockKind::Write, 0, 10, req("a", 2, 1, None))
            .await
            .unwrap_err();
        assert_eq!(e.errno, Errno::EAGAIN);
        t.inodelk(G, "d", LockKind::Write, 200, 10, req("c", 1, 3, None))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn blocking_waits_until_unlock_or_deadline() {
        let t = Arc::new(LockTable::new());
        t.inodelk(G, "d", LockKind::Write, 0, 0, req("a", 1, 1, None))
            .await
            .unwrap();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move {
            t2.inodelk(G, "d", LockKind::Write, 0, 0, req("b", 1, 2, Some(5_000)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        assert_eq!(t.dump().iter().filter(|l| !l.granted).count(), 1);
        t.inodelk(G, "d", LockKind::Unlock, 0, 0, req("a", 1, 1, None))
            .await
            .unwrap();
        waiter.await.unwrap().unwrap();
        // Now b holds it; c times out after its wait.
        let t0 = mortar_net::Clock::new().now();
        let e = t
            .inodelk(G, "d", LockKind::Read, 0, 1, req("c", 1, 3, Some(300)))
            .await
            .unwrap_err();
        assert_eq!(e.errno, Errno::EAGAIN);
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        assert!(
            t.dump().iter().all(|l| l.granted),
            "timed-out waiter left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let t = Arc::new(LockTable::new());
        t.inodelk(G, "d", LockKind::Read, 0, 0, req("r0", 1, 1, None))
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, (who, kind)) in [("w1", LockKind::Write), ("r2", LockKind::Read)]
            .into_iter()
            .enumerate()
        {
            let (t, order) = (t.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                t.inodelk(G, "d", kind, 0, 0, req(who, 1, 10 + i as u64, Some(60_000)))
                    .await
                    .unwrap();
                order.lock().unwrap().push(who);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // r2 is compatible with r0 but must not overtake the queued writer.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(order.lock().unwrap().is_empty());
        t.inodelk(G, "d", LockKind::Unlock, 0, 0, req("r0", 1, 1, None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*order.lock().unwrap(), vec!["w1"]);
        t.inodelk(G, "d", LockKind::Unlock, 0, 0, req("w1", 1, 10, None))
            .await
            .unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["w1", "r2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_unlock_keeps_the_rest() {
        let t = LockTable::new();
        t.inodelk(G, "d", LockKind::Write, 0, 100, req("a", 1, 1, None))
            .await
            .unwrap();
        t.inodelk(G, "d", LockKind::Unlock, 40, 20, req("a", 1, 1, None))
            .await
            .unwrap();
        t.inodelk(G, "d", LockKind::Write, 40, 20, req("b", 1, 2, None))
            .await
            .unwrap();
        for off in [0, 60] {
            let e = t
                .inodelk(G, "d", LockKind::Write, off, 10, req("b", 1, 2, None))
                .await
                .unwrap_err();
            assert_eq!(e.errno, Errno::EAGAIN, "offset {off}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entry_locks_by_name_and_whole_directory() {
        let t = LockTable::new();
        t.entrylk(
            G,
            Some("x".into()),
            "d",
            LockKind::Write,
            req("a", 1, 1, None),
        )
        .await
        .unwrap();
        t.entrylk(
            G,
            Some("y".into()),
            "d",
            LockKind::Write,
            req("b", 1, 2, None),
        )
        .await
        .unwrap();
        let e = t
            .entrylk(G, None, "d", LockKind::Write, req("c", 1, 3, None))
            .await
            .unwrap_err();
        assert_eq!(e.errno, Errno::EAGAIN);
        assert!(t
            .entrylk(
                G,
                Some("x".into()),
                "d",
                LockKind::Unlock,
                req("c", 1, 3, None)
            )
            .await
            .is_err());
        t.entrylk(
            G,
            Some("x".into()),
            "d",
            LockKind::Unlock,
            req("a", 1, 1, None),
        )
        .await
        .unwrap();
        t.entrylk(
            G,
            Some("x".into()),
            "d",
            LockKind::Write,
            req("c", 1, 3, None),
        )
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_connection_loses_its_locks_and_waiters_proceed() {
        let t = Arc::new(LockTable::new());
        t.inodelk(G, "d", LockKind::Write, 0, 0, req("a", 1, 1, None))
            .await
            .unwrap();
        t.entrylk(G, None, "d", LockKind::Write, req("a", 2, 1, None))
            .await
            .unwrap();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move {
            t2.inodelk(G, "d", LockKind::Write, 0, 0, req("b", 1, 2, Some(60_000)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(t.release_conn(1), 2);
        waiter.await.unwrap().unwrap();
        let dump = t.dump();
        assert_eq!(dump.len(), 1);
        assert_eq!(dump[0].owner.client_id, "b");
    }
}
