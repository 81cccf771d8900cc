//! The brick program on the messenger.
//!
//! The first call on a connection must be `Connect`: it checks the peer's
//! address against `auth.allow` / `auth.reject` and the volume id, and
//! records who the client is (lock owners are scoped by its client id).
//! Storage work runs on blocking threads through the runtime; lock calls
//! wait asynchronously with bounded deadlines. When a connection ends,
//! closed or declared dead by the ping timeout, its locks are released.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::{ConnInfo, Fault, FaultCode, Reply, Request, Service};
use mortar_net::{Addr, BoxFuture, Runtime};
use mortar_proto::brick::{self as bp, procs, BrickRequest, FopResult, LockOwner};
use mortar_proto::{Errno, FopError};
use mortar_storage::Storage;
use serde::Serialize;

use crate::brick::Brick;
use crate::locks::{LockRequest, LockTable};

/// Longest a lock request may ask to wait. Clients ask for less; this only
/// stops a request from pinning a server slot for ever.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(600);
const DOMAIN_BYTES_MAX: usize = 255;

/// `auth.allow` / `auth.reject`: comma-separated address patterns with `*`
/// and `?` wildcards, matched against the client's IP address (`unix` for
/// local socket clients). Reject wins; with a non-empty allow list, an
/// address must match it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRules {
    allow: Vec<String>,
    reject: Vec<String>,
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

impl AuthRules {
    /// Parse the two option values ("" means no rule).
    pub fn parse(allow: &str, reject: &str) -> Result<Self, String> {
        let list = |what: &str, s: &str| -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if p.len() > 64
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b"*?.:unix".contains(&b))
                {
                    return Err(format!(
                        "{what} pattern {p:?} is not an address pattern (digits, '.', ':', '*', '?' or 'unix')"
                    ));
                }
                out.push(p.to_string());
            }
            Ok(out)
        };
        Ok(AuthRules {
            allow: list(mortar_proto::options::AUTH_ALLOW, allow)?,
            reject: list(mortar_proto::options::AUTH_REJECT, reject)?,
        })
    }

    /// Why `peer` may not connect, if it may not.
    pub fn check(&self, peer: &Addr) -> Result<(), String> {
        let who = match peer {
            Addr::Inet(sa) => sa.ip().to_string(),
            Addr::Unix(_) => "unix".to_string(),
        };
        if let Some(p) = self
            .reject
            .iter()
            .find(|p| glob(p.as_bytes(), who.as_bytes()))
        {
            return Err(format!("{who} matches auth.reject pattern {p:?}"));
        }
        if !self.allow.is_empty()
            && !self
                .allow
                .iter()
                .any(|p| glob(p.as_bytes(), who.as_bytes()))
        {
            return Err(format!(
                "{who} matches no auth.allow pattern ({})",
                self.allow.join(",")
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Session {
    Connected {
        client_id: String,
        client_name: String,
    },
    Refused(String),
}

struct Inner<S: Storage> {
    brick: Arc<Brick<S>>,
    rt: Runtime,
    locks: LockTable,
    sessions: Mutex<BTreeMap<u64, Session>>,
    auth: AuthRules,
    brick_path: String,
}

/// The brick program; register it under [`bp::PROGRAM_BRICK`].
pub struct BrickService<S: Storage> {
    inner: Arc<Inner<S>>,
}

impl<S: Storage> Clone for BrickService<S> {
    fn clone(&self) -> Self {
        BrickService {
            inner: self.inner.clone(),
        }
    }
}

fn encode<T: Serialize>(r: &FopResult<T>) -> Result<Reply, Fault> {
    Reply::encode(r)
}

impl<S: Storage> BrickService<S> {
    pub fn new(rt: Runtime, brick: Arc<Brick<S>>, auth: AuthRules, brick_path: String) -> Self {
        BrickService {
            inner: Arc::new(Inner {
                brick,
                rt,
                locks: LockTable::new(),
                sessions: Mutex::new(BTreeMap::new()),
                auth,
                brick_path,
            }),
        }
    }

    pub fn locks(&self) -> &LockTable {
        &self.inner.locks
    }

    /// Connected clients (for status output).
    pub fn clients(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .expect("sessions")
            .values()
            .filter(|s| matches!(s, Session::Connected { .. }))
            .count()
    }
}

impl<S: Storage> Inner<S> {
    fn connect(&self, conn: &ConnInfo, q: bp::Connect) -> FopResult<bp::ConnectReply> {
        if let Err(why) = meant_brick(&q.brick_path, &self.brick_path) {
            // Not refused for good: the client asks the port map again.
            tracing::warn!(conn = conn.id, peer = %conn.peer, reason = %why, "client meant another brick");
            return Err(FopError::new(Errno::ENXIO, why));
        }
        let verdict = self.auth.check(&conn.peer).and_then(|()| {
            if q.volume_id == self.brick.config().volume_id {
                Ok(())
            } else {
                Err(format!(
                    "client asked for volume {:?}, this brick serves {:?}",
                    q.volume_id,
                    self.brick.config().volume_id
                ))
            }
        });
        if q.client_id.is_empty() || q.client_id.len() > 255 || q.client_name.len() > 255 {
            return Err(FopError::new(
                Errno::EINVAL,
                "client id must be 1 to 255 bytes",
            ));
        }
        let mut sessions = self.sessions.lock().expect("sessions");
        match verdict {
            Ok(()) => {
                tracing::info!(conn = conn.id, peer = %conn.peer, client = %q.client_name, "client connected");
                self.rt
                    .trace(|| format!("client {} connected on conn {}", q.client_name, conn.id));
                sessions.insert(
                    conn.id,
                    Session::Connected {
                        client_id: q.client_id,
                        client_name: q.client_name,
                    },
                );
                Ok(bp::ConnectReply {
                    brick_path: self.brick_path.clone(),
                    volume_id: self.brick.config().volume_id.clone(),
                })
            }
            Err(why) => {
                tracing::warn!(conn = conn.id, peer = %conn.peer, reason = %why, "refusing client");
                sessions.insert(conn.id, Session::Refused(why.clone()));
                Err(FopError::new(Errno::EACCES, why))
            }
        }
    }

    fn session(&self, conn: &ConnInfo) -> FopResult<(String, String)> {
        match self.sessions.lock().expect("sessions").get(&conn.id) {
            Some(Session::Connected {
                client_id,
                client_name,
            }) => Ok((client_id.clone(), client_name.clone())),
            Some(Session::Refused(why)) => Err(FopError::new(Errno::EACCES, why.clone())),
            None => Err(FopError::new(
                Errno::EACCES,
                "no Connect on this connection yet: send Connect first",
            )),
        }
    }
}

/// Run a storage operation on a blocking thread and encode its result.
async fn blocking<S, Q, T>(
    inner: &Arc<Inner<S>>,
    req: &Request,
    op: fn(&Brick<S>, &Q) -> FopResult<T>,
) -> Result<Reply, Fault>
where
    S: Storage,
    Q: serde::de::DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    let q: Q = req.decode()?;
    let brick = inner.brick.clone();
    let res = inner.rt.blocking(move || op(&brick, &q)).await;
    encode(&res)
}

/// [`blocking`] for a namespace change, logged (debug) with its outcome:
/// what a replay needs to see which brick gained or lost a name.
async fn blocking_ns<S, Q, T>(
    inner: &Arc<Inner<S>>,
    req: &Request,
    op: fn(&Brick<S>, &Q) -> FopResult<T>,
) -> Result<Reply, Fault>
where
    S: Storage,
    Q: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    T: Serialize + Send + 'static,
{
    let q: Arc<Q> = Arc::new(req.decode()?);
    let brick = inner.brick.clone();
    let asked = q.clone();
    let res = inner.rt.blocking(move || op(&brick, &asked)).await;
    log_ns_change(&inner.brick_path, &*q, &res);
    encode(&res)
}

/// Log (debug) a namespace change's outcome: what a replay needs to see
/// which brick gained or lost a name.
fn log_ns_change<Q: std::fmt::Debug, T>(brick: &impl std::fmt::Display, q: &Q, res: &FopResult<T>) {
    match res {
        Ok(_) => tracing::debug!(brick = %brick, request = ?q, "namespace change made"),
        Err(e) => {
            tracing::debug!(brick = %brick, request = ?q, error = %e, "namespace change refused")
        }
    }
}

/// [`blocking`] for a counter update, logged (debug) with the counters'
/// new values: what a replay needs to follow marks and blame.
async fn blocking_counters<S: Storage>(
    inner: &Arc<Inner<S>>,
    req: &Request,
) -> Result<Reply, Fault> {
    let q: Arc<bp::Xattrop> = Arc::new(req.decode()?);
    let brick = inner.brick.clone();
    let asked = q.clone();
    let res = inner.rt.blocking(move || brick.xattrop(&asked)).await;
    match &res {
        Ok(now) => {
            tracing::debug!(brick = %inner.brick_path, gfid = %q.gfid, deltas = ?q.deltas, now = ?now, "counters changed")
        }
        Err(e) => {
            tracing::debug!(brick = %inner.brick_path, gfid = %q.gfid, deltas = ?q.deltas, error = %e, "counters unchanged")
        }
    }
    encode(&res)
}

/// [`bp::ReadWhole`]: the file's data goes as the reply's payload.
async fn read_whole<S: Storage>(inner: &Arc<Inner<S>>, req: &Request) -> Result<Reply, Fault> {
    let q: bp::ReadWhole = req.decode()?;
    let brick = inner.brick.clone();
    match inner.rt.blocking(move || brick.read_whole(&q)).await {
        Ok((whole, data)) => Reply::with_payload(&FopResult::Ok(whole), data),
        Err(e) => encode::<bp::Whole>(&Err(e)),
    }
}

/// [`bp::CreateWhole`]: the file's data comes as the request's payload.
async fn create_whole<S: Storage>(inner: &Arc<Inner<S>>, req: &Request) -> Result<Reply, Fault> {
    let q: Arc<bp::CreateWhole> = Arc::new(req.decode()?);
    let brick = inner.brick.clone();
    let data: Bytes = req.payload.clone();
    let asked = q.clone();
    let res = inner
        .rt
        .blocking(move || brick.create_whole(&asked, &data))
        .await;
    log_ns_change(&inner.brick_path, &*q, &res);
    encode(&res)
}

/// A lock request on behalf of this connection's client.
fn lock_request(
    client_id: String,
    client_name: String,
    req: &Request,
    owner: u64,
    wait_ms: Option<u64>,
) -> LockRequest {
    LockRequest {
        owner: LockOwner { client_id, owner },
        conn: req.conn.id,
        client_name,
        wait: wait_ms.map(|ms| Duration::from_millis(ms).min(LOCK_WAIT_MAX)),
    }
}

fn check_domain(d: &str) -> FopResult<()> {
    if d.is_empty() || d.len() > DOMAIN_BYTES_MAX {
        return Err(FopError::new(
            Errno::EINVAL,
            "lock domain must be 1 to 255 bytes",
        ));
    }
    Ok(())
}

/// Whether a client that asked for brick `asked` is talking to the brick
/// it means (`mine`). Empty asks for whichever brick serves the port.
///
/// Regression `WRONG_BRICK_BEHIND_A_REUSED_PORT` (cluster seed 100): a
/// brick that restarted took the port a dead brick of the same server had
/// held, the port map still named that port for the dead one, and its
/// clients wrote to the wrong replica set's brick; fixed by this check
/// (and the port map forgetting a port's former owner at sign-in).
pub(crate) fn meant_brick(asked: &str, mine: &str) -> Result<(), String> {
    if asked.is_empty() || asked == mine {
        return Ok(());
    }
    Err(format!(
        "client asked for brick {asked:?}, this port serves {mine:?}: \
         the port map it asked is stale; it asks again"
    ))
}

async fn dispatch<S: Storage>(inner: Arc<Inner<S>>, req: Request) -> Result<Reply, Fault> {
    if req.procedure == procs::Connect {
        let q: bp::Connect = req.decode()?;
        return encode(&inner.connect(&req.conn, q));
    }
    let (client_id, client_name) = match inner.session(&req.conn) {
        Ok(s) => s,
        // Refuse with an errno of the request's reply shape: every reply
        // body starts with the same Result encoding, so `Err` decodes for
        // any procedure.
        Err(e) => return encode::<()>(&Err(e)),
    };
    let i = &inner;
    match req.procedure {
        procs::Lookup => blocking(i, &req, |b, q: &bp::Lookup| b.lookup(&q.parent, &q.name)).await,
        procs::Stat => blocking(i, &req, |b, q: &bp::Stat| b.stat(&q.gfid)).await,
        procs::Create => blocking_ns(i, &req, Brick::create).await,
        procs::Mkdir => blocking_ns(i, &req, Brick::mkdir).await,
        procs::Mknod => blocking_ns(i, &req, Brick::mknod).await,
        procs::Symlink => blocking_ns(i, &req, Brick::symlink).await,
        procs::Link => blocking_ns(i, &req, Brick::link).await,
        procs::Unlink => blocking_ns(i, &req, Brick::unlink).await,
        procs::Rmdir => blocking_ns(i, &req, Brick::rmdir).await,
        procs::Rename => blocking_ns(i, &req, Brick::rename).await,
        procs::Readlink => blocking(i, &req, |b, q: &bp::Readlink| b.readlink(&q.gfid)).await,
        procs::Open => blocking(i, &req, Brick::open).await,
        procs::Truncate => blocking(i, &req, Brick::truncate).await,
        procs::Fsync => blocking(i, &req, Brick::fsync).await,
        procs::Setattr => blocking(i, &req, Brick::setattr).await,
        procs::Readdir => blocking(i, &req, Brick::readdir).await,
        procs::Getxattr => blocking(i, &req, Brick::getxattr).await,
        procs::GetxattrMany => blocking(i, &req, Brick::getxattr_many).await,
        procs::GfidKinds => blocking(i, &req, Brick::gfid_kinds).await,
        procs::GetxattrFiles => blocking(i, &req, Brick::getxattr_files).await,
        procs::Setxattr => blocking(i, &req, Brick::setxattr).await,
        procs::Removexattr => blocking(i, &req, Brick::removexattr).await,
        procs::Listxattr => blocking(i, &req, |b, q: &bp::Listxattr| b.listxattr(&q.gfid)).await,
        procs::Xattrop => blocking_counters(i, &req).await,
        procs::XattropMany => blocking(i, &req, Brick::xattrop_many).await,
        procs::Statfs => blocking(i, &req, |b, _: &bp::Statfs| b.statfs()).await,
        procs::IndexList => blocking(i, &req, Brick::index_list).await,
        procs::IndexCount => blocking(i, &req, |b, _: &bp::IndexCount| b.index_count()).await,
        procs::Rchecksum => blocking(i, &req, Brick::rchecksum).await,
        procs::Discard => blocking(i, &req, Brick::discard).await,
        procs::Read => {
            let q: bp::Read = req.decode()?;
            let brick = inner.brick.clone();
            match inner.rt.blocking(move || brick.read(&q)).await {
                Ok(data) => Reply::with_payload(&FopResult::<()>::Ok(()), data),
                Err(e) => encode::<()>(&Err(e)),
            }
        }
        procs::ReadWhole => read_whole(i, &req).await,
        procs::CreateWhole => create_whole(i, &req).await,
        procs::Write => {
            let q: bp::Write = req.decode()?;
            let brick = inner.brick.clone();
            let data: Bytes = req.payload.clone();
            encode(&inner.rt.blocking(move || brick.write(&q, &data)).await)
        }
        procs::Inodelk => {
            let q: bp::Inodelk = req.decode()?;
            let res = match check_domain(&q.domain) {
                Ok(()) => {
                    let lr = lock_request(client_id, client_name, &req, q.owner, q.wait_ms);
                    inner
                        .locks
                        .inodelk(q.gfid, &q.domain, q.kind, q.start, q.len, lr)
                        .await
                }
                Err(e) => Err(e),
            };
            encode(&res)
        }
        procs::Entrylk => {
            let q: bp::Entrylk = req.decode()?;
            let valid = check_domain(&q.domain).and_then(|()| match &q.name {
                Some(n) => mortar_storage::check_name(n)
                    .map_err(|e| FopError::new(e, format!("bad entry lock name {n:?}"))),
                None => Ok(()),
            });
            let res = match valid {
                Ok(()) => {
                    let lr = lock_request(client_id, client_name, &req, q.owner, q.wait_ms);
                    inner
                        .locks
                        .entrylk(q.parent, q.name, &q.domain, q.kind, lr)
                        .await
                }
                Err(e) => Err(e),
            };
            encode(&res)
        }
        procs::LockDump => encode(&FopResult::Ok(inner.locks.dump())),
        p => Err(Fault::new(
            FaultCode::ProcUnavail,
            format!("brick has no procedure {p} ({})", bp::proc_name(p)),
        )),
    }
}

impl<S: Storage> Service for BrickService<S> {
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Reply, Fault>> {
        Box::pin(dispatch(self.inner.clone(), req))
    }

    fn disconnected(&self, conn: &ConnInfo) {
        let session = self
            .inner
            .sessions
            .lock()
            .expect("sessions")
            .remove(&conn.id);
        let released = self.inner.locks.release_conn(conn.id);
        if released > 0 {
            mortar_net::mark!(LOCK_RELEASED_BY_DISCONNECT);
        }
        if let Some(Session::Connected { client_name, .. }) = session {
            tracing::info!(conn = conn.id, client = %client_name, released, "client gone; its locks released");
            self.inner
                .rt
                .trace(|| format!("client {client_name} gone; released {released} locks"));
        }
    }
}

/// The reply type of a brick request, decoded. Requests and replies pair
/// through [`BrickRequest`].
pub type ReplyOf<Q> = <Q as BrickRequest>::Reply;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ip(s: &str) -> Addr {
        Addr::Inet(SocketAddr::new(s.parse().unwrap(), 1))
    }

    #[test]
    fn a_client_reaches_only_the_brick_it_means() {
        #[rustfmt::skip]
        let table = [
            // (asked, mine, accepted)
            ("/b1", "/b1", true),
            ("",    "/b1", true),  // a tool addressing the port itself
            ("/b1", "/b2", false), // a port reused by another brick
            ("/b1", "/b1/", false),
            ("/b",  "/b1", false),
        ];
        for (asked, mine, ok) in table {
            let v = meant_brick(asked, mine);
            assert_eq!(v.is_ok(), ok, "{asked:?} at {mine:?}: {v:?}");
            if let Err(why) = v {
                assert!(why.contains(asked) && why.contains("stale"), "{why}");
            }
        }
    }

    #[test]
    fn auth_patterns() {
        let open = AuthRules::parse("", "").unwrap();
        assert!(open.check(&ip("10.1.2.3")).is_ok());
        let r = AuthRules::parse("10.0.*,192.168.1.?", "10.0.0.66").unwrap();
        assert!(r.check(&ip("10.0.5.9")).is_ok());
        assert!(r.check(&ip("192.168.1.7")).is_ok());
        let e = r.check(&ip("192.168.1.70")).unwrap_err();
        assert!(e.contains("no auth.allow pattern"), "{e}");
        let e = r.check(&ip("10.0.0.66")).unwrap_err();
        assert!(e.contains("auth.reject"), "{e}");
        assert!(r.check(&Addr::Unix("/x".into())).is_err());
        assert!(AuthRules::parse("unix", "")
            .unwrap()
            .check(&Addr::Unix("/x".into()))
            .is_ok());
        assert!(AuthRules::parse("", "*")
            .unwrap()
            .check(&ip("::1"))
            .is_err());
        assert!(AuthRules::parse("10.0.0.1; rm -rf /", "").is_err());
    }
}
