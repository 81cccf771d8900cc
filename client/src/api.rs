//! The Rust client API: a mounted volume, addressed by path or by gfid.
//!
//! ```no_run
//! # async fn demo(rt: mortar_net::Runtime) -> Result<(), Box<dyn std::error::Error>> {
//! let c = mortar_client::api::Client::mount(&rt, &"server1:24007".parse()?, "vol1").await?;
//! let f = c.create_path("/hello.txt", 0o644).await?;
//! c.write(f.gfid, 0, bytes::Bytes::from_static(b"hi")).await?;
//! assert_eq!(&c.read(f.gfid, 0, 2).await?[..], b"hi");
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::{Endpoint, Runtime};
use mortar_proto::brick::{self as bp, NewObject, XattrFlags, IO_BYTES_MAX};
use mortar_proto::volfile::Graph;
use mortar_proto::{Attr, Errno, FileKind, FopError, Gfid};

use crate::error::ClientError;
use crate::fop::{shape_error, Child, Fop, FopOut};
use crate::graph::VolumeGraph;

/// How long `mount` waits for bricks before serving with those it has.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

pub use crate::fop::FopResult;

/// A mounted volume.
pub struct Client {
    rt: Runtime,
    /// The graph in use; replaced when the volume's volfile changes.
    /// Operations in flight keep the graph they started on.
    graph: Mutex<Arc<VolumeGraph>>,
    client_id: String,
    mgmt_port: u16,
    pub volume: String,
    /// The volfile text the graph was built from.
    volfile: Mutex<String>,
    /// Connections made by graphs this client has switched away from, so
    /// that [`Client::connections_made`] only grows across a switch.
    connections_before: AtomicU64,
}

/// How long one volfile watch waits in mgmtd before it is renewed.
pub const VOLFILE_WATCH: Duration = Duration::from_secs(30);
/// Pause before renewing a volfile watch that failed (mgmtd unreachable).
pub const VOLFILE_RETRY: Duration = Duration::from_secs(3);
/// How long a replaced graph stays open for operations still using it.
const OLD_GRAPH_GRACE: Duration = Duration::from_secs(30);

/// Fetch a volume's client volfile from an mgmtd.
pub async fn fetch_volfile(
    rt: &Runtime,
    mgmt: &Endpoint,
    volume: &str,
) -> Result<String, ClientError> {
    use crate::mgmt_rpc::cli_call;
    use mortar_proto::mgmt::{CliReply, CliRequest};
    let rpc = RpcClient::new(rt, mgmt.clone(), RpcConfig::default());
    rpc.wait_connected(Duration::from_secs(10))
        .await
        .map_err(|e| ClientError::Mgmt(format!("cannot reach mgmtd at {mgmt}: {e}")))?;
    let req = CliRequest::GetVolfile {
        name: volume.to_string(),
        brick: None,
    };
    let r = cli_call(&rpc, &req, Duration::from_secs(30)).await;
    rpc.close();
    let refused = |e: String| ClientError::Mgmt(format!("mgmtd at {mgmt}: {e}"));
    match r.map_err(|e| refused(e.to_string()))? {
        Ok(CliReply::Volfile(text)) => Ok(text),
        Ok(_) => Err(ClientError::Mgmt(format!(
            "mgmtd at {mgmt} answered the volfile request with something else"
        ))),
        Err(e) => Err(refused(e)),
    }
}

/// Follow a mounted volume's volfile: a standing watch on mgmtd (a long
/// poll) answers as soon as the volfile changes, and the client switches to
/// a graph built from the new text. Ends when the client is dropped.
async fn follow_volfile(rt: Runtime, client: std::sync::Weak<Client>, mgmt: Endpoint) {
    use crate::mgmt_rpc::cli_call;
    use mortar_proto::mgmt::{volfile_hash, CliReply, CliRequest};
    let rpc = RpcClient::new(&rt, mgmt.clone(), RpcConfig::default());
    loop {
        let (volume, known) = match client.upgrade() {
            Some(c) => (c.volume.clone(), volfile_hash(&c.volfile())),
            None => break,
        };
        if let Err(e) = rpc.wait_connected(VOLFILE_WATCH).await {
            tracing::debug!(volume, mgmt = %mgmt, error = %e, "mgmtd unreachable; volfile watch will retry");
            rt.clock().sleep(VOLFILE_RETRY).await;
            continue;
        }
        let req = CliRequest::WatchVolfile {
            name: volume.clone(),
            known,
            wait_ms: VOLFILE_WATCH.as_millis() as u64,
        };
        let r = cli_call(&rpc, &req, VOLFILE_WATCH + Duration::from_secs(10)).await;
        let failed = match r {
            Ok(Ok(CliReply::Volfile(text))) => {
                let Some(c) = client.upgrade() else { break };
                if let Err(e) = c.switch_volfile(&text).await {
                    tracing::warn!(volume, error = %e, "new volfile not usable; keeping the current graph");
                    true
                } else {
                    false
                }
            }
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::warn!(volume, mgmt = %mgmt, error = %e, "volfile watch refused; will retry");
                true
            }
            Err(e) => {
                tracing::debug!(volume, mgmt = %mgmt, error = %e, "volfile watch failed; will retry");
                true
            }
        };
        if failed {
            rt.clock().sleep(VOLFILE_RETRY).await;
        }
    }
    rpc.close();
}

/// Connections (and reconnections) the bricks of `g` have made.
fn graph_connections(g: &VolumeGraph) -> u64 {
    g.clients.iter().map(|c| c.state().get().generation).sum()
}

impl Client {
    /// Fetch the volfile of `volume` from the mgmtd at `mgmt`, build the
    /// graph and connect. The client then follows volfile changes (bricks
    /// added, replaced, options set): mgmtd answers a standing watch as
    /// soon as the volfile changes, and the client switches graphs.
    pub async fn mount(
        rt: &Runtime,
        mgmt: &Endpoint,
        volume: &str,
    ) -> Result<Arc<Client>, ClientError> {
        let text = fetch_volfile(rt, mgmt, volume).await?;
        let port = match mgmt {
            Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => hp.port,
            Endpoint::Unix(_) => 24007,
        };
        let c = Arc::new(Client::from_volfile(rt, volume, &text, port)?);
        let up = c.graph().wait_connected(rt, CONNECT_WAIT).await;
        tracing::info!(
            volume,
            bricks = c.graph().clients.len(),
            connected = up,
            "volume mounted"
        );
        let weak = Arc::downgrade(&c);
        let mgmt = mgmt.clone();
        let watcher_rt = c.rt.clone();
        c.rt.spawn(async move { follow_volfile(watcher_rt, weak, mgmt).await });
        Ok(c)
    }

    /// Build from a volfile's text (bricks' mgmtds on `mgmt_port`).
    pub fn from_volfile(
        rt: &Runtime,
        volume: &str,
        text: &str,
        mgmt_port: u16,
    ) -> Result<Client, ClientError> {
        let g = Graph::parse(text).map_err(|e| ClientError::Volfile(e.to_string()))?;
        let mut id = [0u8; 16];
        rt.with_rng(|r| r.fill(&mut id));
        let client_id = format!("client-{}", Gfid(id));
        let rt = rt.child(format!("client {volume}"));
        let graph = VolumeGraph::build(&rt, &g, mgmt_port, &client_id)?;
        Ok(Client {
            rt,
            graph: Mutex::new(Arc::new(graph)),
            client_id,
            mgmt_port,
            volume: volume.to_string(),
            volfile: Mutex::new(text.to_string()),
            connections_before: AtomicU64::new(0),
        })
    }

    /// Switch to the graph of `text` if it differs from the current one.
    /// Returns whether it switched. The new graph is connected (bounded
    /// wait) before it takes over; the old one is closed after a grace.
    pub async fn switch_volfile(&self, text: &str) -> Result<bool, ClientError> {
        if *self.volfile.lock().expect("volfile") == text {
            return Ok(false);
        }
        let g = Graph::parse(text).map_err(|e| ClientError::Volfile(e.to_string()))?;
        let graph = Arc::new(VolumeGraph::build(
            &self.rt,
            &g,
            self.mgmt_port,
            &self.client_id,
        )?);
        let up = graph.wait_connected(&self.rt, CONNECT_WAIT).await;
        let old = {
            // Under the graph lock, so a reader never sees the new graph
            // without the old one's count (or both).
            let mut current = self.graph.lock().expect("graph");
            let old = std::mem::replace(&mut *current, graph.clone());
            self.connections_before
                .fetch_add(graph_connections(&old), Ordering::Relaxed);
            old
        };
        *self.volfile.lock().expect("volfile") = text.to_string();
        tracing::info!(
            volume = %self.volume,
            bricks = graph.clients.len(),
            connected = up,
            "volfile changed; switched to the new graph"
        );
        let rt = self.rt.clone();
        self.rt.spawn(async move {
            rt.clock().sleep(OLD_GRAPH_GRACE).await;
            old.close();
        });
        Ok(true)
    }

    /// The graph in use now (a volfile change may replace it; hold the
    /// `Arc` for one operation, not for good).
    pub fn graph(&self) -> Arc<VolumeGraph> {
        self.graph.lock().expect("graph").clone()
    }

    /// The top of the current graph.
    pub fn top(&self) -> Child {
        self.graph().top.clone()
    }

    /// The volfile text in use.
    pub fn volfile(&self) -> String {
        self.volfile.lock().expect("volfile").clone()
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Move every file off the volume's draining sets (`remove-brick
    /// start`), calling `report` as it goes. Errors when the volfile in use
    /// drains nothing.
    pub async fn migrate_drained(
        &self,
        report: &(dyn Fn(&crate::distribute::MigrationStats) + Send + Sync),
    ) -> Result<crate::distribute::MigrationStats, ClientError> {
        let g = self.graph();
        let d = g.distribute.clone().ok_or_else(|| {
            ClientError::Migration(format!(
                "volume {} has no distribute layer to migrate in",
                self.volume
            ))
        })?;
        if !d.has_drained() {
            return Err(ClientError::Migration(format!(
                "volume {} has no bricks being removed (run 'volume remove-brick ... start')",
                self.volume
            )));
        }
        Ok(d.migrate_drained(report).await)
    }

    /// Files waiting for heal, summed over every brick's pending-heal
    /// index (`Err` names a brick that could not be asked).
    pub async fn pending_heal_total(&self) -> Result<usize, String> {
        let g = self.graph();
        let mut total = 0;
        for c in &g.clients {
            total += c
                .pending_heal(100_000)
                .await
                .map_err(|e| format!("{}: {e}", c.name()))?
                .len();
        }
        Ok(total)
    }

    /// Wait (bounded) until every brick of the current graph is
    /// connected; returns how many are.
    pub async fn wait_all_bricks(&self, within: Duration) -> usize {
        self.graph().wait_connected(&self.rt, within).await
    }

    /// The sum of every brick connection's generation: it grows whenever
    /// a brick (re)connects, even between two looks at `bricks_up`.
    ///
    /// A switch to a new graph (a restarted brick comes back on a new port
    /// and the volfile changes with it) starts new connections whose
    /// generations begin again at one; the old graph's count is kept, so
    /// the sum never falls back and the new connections still show as new.
    pub fn connections_made(&self) -> u64 {
        let current = self.graph.lock().expect("graph");
        self.connections_before.load(Ordering::Relaxed) + graph_connections(&current)
    }

    /// Bricks connected now, and in all.
    pub fn bricks_up(&self) -> (usize, usize) {
        let g = self.graph();
        let up = g.clients.iter().filter(|c| c.is_up()).count();
        (up, g.clients.len())
    }

    pub fn unmount(&self) {
        self.graph().close();
        self.rt.scope().kill();
    }

    /// A new object's identity and owner (the gfid is chosen here so every
    /// brick of a set stores the same one).
    fn new_object(&self, mode: u32, uid: u32, gid: u32) -> NewObject {
        NewObject {
            gfid: self.new_gfid(),
            mode,
            uid,
            gid,
        }
    }

    fn new_gfid(&self) -> Gfid {
        let mut b = [0u8; 16];
        self.rt.with_rng(|r| r.fill(&mut b));
        let g = Gfid::random_v4(b);
        // Neither can be a v4 UUID, but the rule is what matters here.
        if g.is_null() || g == Gfid::ROOT {
            return self.new_gfid();
        }
        g
    }

    async fn op(&self, f: Fop) -> FopResult<FopOut> {
        let top = self.top();
        top.fop(f).await
    }

    // ---- by gfid (FUSE) ----

    pub async fn lookup(&self, parent: Gfid, name: &str) -> FopResult<Attr> {
        self.op(Fop::Lookup(bp::Lookup {
            parent,
            name: name.into(),
        }))
        .await?
        .attr()
    }

    pub async fn stat(&self, gfid: Gfid) -> FopResult<Attr> {
        self.op(Fop::Stat(bp::Stat { gfid })).await?.attr()
    }

    pub async fn create(
        &self,
        parent: Gfid,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FopResult<Attr> {
        let new = self.new_object(mode, uid, gid);
        self.op(Fop::Create(bp::Create {
            parent,
            name: name.into(),
            new,
        }))
        .await?
        .attr()
    }

    pub async fn mkdir(
        &self,
        parent: Gfid,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FopResult<Attr> {
        let new = self.new_object(mode, uid, gid);
        self.op(Fop::Mkdir(bp::Mkdir {
            parent,
            name: name.into(),
            new,
        }))
        .await?
        .attr()
    }

    pub async fn mknod_fifo(
        &self,
        parent: Gfid,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FopResult<Attr> {
        let new = self.new_object(mode, uid, gid);
        self.op(Fop::Mknod(bp::Mknod {
            parent,
            name: name.into(),
            new,
        }))
        .await?
        .attr()
    }

    pub async fn symlink(
        &self,
        parent: Gfid,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> FopResult<Attr> {
        let new = self.new_object(0o777, uid, gid);
        self.op(Fop::Symlink(bp::Symlink {
            parent,
            name: name.into(),
            target: target.into(),
            new,
        }))
        .await?
        .attr()
    }

    pub async fn link(&self, gfid: Gfid, new_parent: Gfid, new_name: &str) -> FopResult<Attr> {
        self.op(Fop::Link(bp::Link {
            gfid,
            new_parent,
            new_name: new_name.into(),
        }))
        .await?
        .attr()
    }

    pub async fn unlink(&self, parent: Gfid, name: &str) -> FopResult<()> {
        self.op(Fop::Unlink(bp::Unlink {
            parent,
            name: name.into(),
        }))
        .await
        .map(|_| ())
    }

    pub async fn rmdir(&self, parent: Gfid, name: &str) -> FopResult<()> {
        self.op(Fop::Rmdir(bp::Rmdir {
            parent,
            name: name.into(),
        }))
        .await
        .map(|_| ())
    }

    pub async fn rename(
        &self,
        old_parent: Gfid,
        old_name: &str,
        new_parent: Gfid,
        new_name: &str,
    ) -> FopResult<()> {
        self.op(Fop::Rename(bp::Rename {
            old_parent,
            old_name: old_name.into(),
            new_parent,
            new_name: new_name.into(),
        }))
        .await
        .map(|_| ())
    }

    pub async fn readlink(&self, gfid: Gfid) -> FopResult<String> {
        match self.op(Fop::Readlink(bp::Readlink { gfid })).await? {
            FopOut::Target(t) => Ok(t),
            other => Err(shape_error("readlink", &other)),
        }
    }

    /// Read up to `len` bytes (fewer at end of file).
    pub async fn read(&self, gfid: Gfid, offset: u64, len: u64) -> FopResult<Bytes> {
        let len = len.min(IO_BYTES_MAX);
        self.op(Fop::Read(bp::Read { gfid, offset, len }))
            .await?
            .data()
    }

    /// Write all of `data` at `offset`, in pieces of at most the I/O limit.
    pub async fn write(&self, gfid: Gfid, offset: u64, data: Bytes) -> FopResult<u64> {
        let mut done = 0u64;
        while done < data.len() as u64 {
            let end = (done + IO_BYTES_MAX).min(data.len() as u64);
            let piece = data.slice(done as usize..end as usize);
            match self
                .op(Fop::Write(
                    bp::Write {
                        gfid,
                        offset: offset + done,
                    },
                    piece,
                ))
                .await?
            {
                FopOut::Written(w) => done += w.written,
                other => return Err(shape_error("write", &other)),
            }
        }
        Ok(done)
    }

    pub async fn truncate(&self, gfid: Gfid, size: u64) -> FopResult<Attr> {
        self.op(Fop::Truncate(bp::Truncate { gfid, size }))
            .await?
            .attr()
    }

    pub async fn fsync(&self, gfid: Gfid, datasync: bool) -> FopResult<()> {
        self.op(Fop::Fsync(bp::Fsync { gfid, datasync }))
            .await
            .map(|_| ())
    }

    pub async fn setattr(&self, q: bp::Setattr) -> FopResult<Attr> {
        self.op(Fop::Setattr(q)).await?.attr()
    }

    /// One page of a directory after `after`.
    pub async fn readdir_page(
        &self,
        dir: Gfid,
        after: Option<String>,
        max: u32,
    ) -> FopResult<bp::ReaddirReply> {
        match self
            .op(Fop::Readdir(bp::Readdir {
                dir,
                after,
                max_entries: max,
            }))
            .await?
        {
            FopOut::Dir(d) => Ok(d),
            other => Err(shape_error("readdir", &other)),
        }
    }

    /// Every entry of a directory.
    pub async fn readdir(&self, dir: Gfid) -> FopResult<Vec<bp::DirEntry>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.readdir_page(dir, after, 1024).await?;
            after = page.entries.last().map(|e| e.name.clone());
            out.extend(page.entries);
            if page.eof || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every entry of a directory, each with whether its attributes are
    /// what a lookup would give (false: ask [`Client::lookup`]).
    pub async fn readdir_plus(&self, dir: Gfid) -> FopResult<Vec<(bp::DirEntry, bool)>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let q = bp::Readdir {
                dir,
                after,
                max_entries: 1024,
            };
            let (page, good) = match self.op(Fop::ReaddirPlus(q)).await? {
                FopOut::DirPlus(p, good) if good.len() == p.entries.len() => (p, good),
                other => return Err(shape_error("readdir", &other)),
            };
            after = page.entries.last().map(|e| e.name.clone());
            out.extend(page.entries.into_iter().zip(good));
            if page.eof || after.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn getxattr(&self, gfid: Gfid, name: &str) -> FopResult<Vec<u8>> {
        match self
            .op(Fop::Getxattr(bp::Getxattr {
                gfid,
                name: name.into(),
            }))
            .await?
        {
            FopOut::Value(v) => Ok(v),
            other => Err(shape_error("getxattr", &other)),
        }
    }

    pub async fn setxattr(
        &self,
        gfid: Gfid,
        name: &str,
        value: &[u8],
        flags: XattrFlags,
    ) -> FopResult<()> {
        self.op(Fop::Setxattr(bp::Setxattr {
            gfid,
            name: name.into(),
            value: value.to_vec(),
            flags,
        }))
        .await
        .map(|_| ())
    }

    pub async fn removexattr(&self, gfid: Gfid, name: &str) -> FopResult<()> {
        self.op(Fop::Removexattr(bp::Removexattr {
            gfid,
            name: name.into(),
        }))
        .await
        .map(|_| ())
    }

    pub async fn listxattr(&self, gfid: Gfid) -> FopResult<Vec<String>> {
        match self.op(Fop::Listxattr(bp::Listxattr { gfid })).await? {
            FopOut::Names(n) => Ok(n),
            other => Err(shape_error("listxattr", &other)),
        }
    }

    pub async fn statfs(&self) -> FopResult<bp::StatfsReply> {
        match self.op(Fop::Statfs).await? {
            FopOut::Statfs(s) => Ok(s),
            other => Err(shape_error("statfs", &other)),
        }
    }

    // ---- by path ----

    /// The attributes of the object at an absolute path (`/` = root).
    /// Symlinks along the way are not followed (callers resolve them).
    pub async fn resolve(&self, path: &str) -> FopResult<Attr> {
        let mut attr = self.stat(Gfid::ROOT).await?;
        for name in components(path)? {
            if attr.kind != FileKind::Directory {
                return Err(FopError::new(
                    Errno::ENOTDIR,
                    format!("{path}: not a directory on the way"),
                ));
            }
            attr = self.lookup(attr.gfid, name).await?;
        }
        Ok(attr)
    }

    /// The parent directory's gfid and the last name of `path`.
    async fn parent_of<'p>(&self, path: &'p str) -> FopResult<(Gfid, &'p str)> {
        let parts = components(path)?;
        let (name, dirs) = parts.split_last().ok_or_else(|| {
            FopError::new(Errno::EINVAL, format!("{path}: the root has no parent"))
        })?;
        let mut dir = Gfid::ROOT;
        for d in dirs {
            let a = self.lookup(dir, d).await?;
            if a.kind != FileKind::Directory {
                return Err(FopError::new(
                    Errno::ENOTDIR,
                    format!("{path}: {d} is not a directory"),
                ));
            }
            dir = a.gfid;
        }
        Ok((dir, name))
    }

    pub async fn create_path(&self, path: &str, mode: u32) -> FopResult<Attr> {
        let (p, n) = self.parent_of(path).await?;
        self.create(p, n, mode, 0, 0).await
    }

    pub async fn mkdir_path(&self, path: &str, mode: u32) -> FopResult<Attr> {
        let (p, n) = self.parent_of(path).await?;
        self.mkdir(p, n, mode, 0, 0).await
    }

    pub async fn unlink_path(&self, path: &str) -> FopResult<()> {
        let (p, n) = self.parent_of(path).await?;
        self.unlink(p, n).await
    }

    pub async fn rmdir_path(&self, path: &str) -> FopResult<()> {
        let (p, n) = self.parent_of(path).await?;
        self.rmdir(p, n).await
    }

    pub async fn rename_path(&self, from: &str, to: &str) -> FopResult<()> {
        let (a, an) = self.parent_of(from).await?;
        let (b, bn) = self.parent_of(to).await?;
        self.rename(a, an, b, bn).await
    }

    pub async fn symlink_path(&self, target: &str, path: &str) -> FopResult<Attr> {
        let (p, n) = self.parent_of(path).await?;
        self.symlink(p, n, target, 0, 0).await
    }

    /// The whole content of a file.
    pub async fn read_path(&self, path: &str) -> FopResult<Vec<u8>> {
        let a = self.resolve(path).await?;
        let mut out = Vec::with_capacity(a.size as usize);
        while (out.len() as u64) < a.size {
            let chunk = self.read(a.gfid, out.len() as u64, IO_BYTES_MAX).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Create (or replace the content of) a file.
    pub async fn write_path(&self, path: &str, data: &[u8]) -> FopResult<Attr> {
        let a = match self.resolve(path).await {
            Ok(a) => self.truncate(a.gfid, 0).await?,
            Err(e) if e.errno == Errno::ENOENT => self.create_path(path, 0o644).await?,
            Err(e) => return Err(e),
        };
        self.write(a.gfid, 0, Bytes::copy_from_slice(data)).await?;
        self.stat(a.gfid).await
    }
}

fn components(path: &str) -> FopResult<Vec<&str>> {
    if !path.starts_with('/') {
        return Err(FopError::new(
            Errno::EINVAL,
            format!("{path:?} is not an absolute path"),
        ));
    }
    Ok(path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect())
}
