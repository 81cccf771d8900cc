//! The disk: one lock around the current and durable metadata, the
//! journal, the file data and the faults; path walks, journaling, commit
//! and crash; and [`SimDisk`]'s own (non-`Storage`) calls.

use super::*;

pub(super) struct Inner {
    pub(super) cur: Meta,
    pub(super) durable: Meta,
    pub(super) log: Vec<Logged>,
    pub(super) log_bytes: u64,
    /// Data of regular files, by inode. A file without an entry is empty.
    pub(super) files: BTreeMap<u64, FileData>,
    /// Never reused in the disk's life, crashes included.
    pub(super) next_ino: u64,
    /// Sum of the sizes of the regular files in `cur`.
    pub(super) used_bytes: u64,
    pub(super) faults: SimFaults,
    pub(super) rng: DetRng,
    pub(super) crashes: u64,
    pub(super) clock: Clock,
    /// A lost xattr update was committed, so the durable metadata differs
    /// from the current one until the next crash. Only for self-checks.
    pub(super) durable_diverged: bool,
}

/// Where a path leads.
pub(super) struct Located<'p> {
    /// Directories from the disk root to the parent of `name`, or to the
    /// view root when the path is the view root.
    pub(super) chain: Vec<u64>,
    /// The final name; `None` for the view root.
    pub(super) name: Option<&'p str>,
    /// What is there, if anything.
    pub(super) ino: Option<u64>,
}

impl Located<'_> {
    pub(super) fn parent(&self) -> u64 {
        *self.chain.last().expect("a walk starts at the disk root")
    }
}

pub(super) fn wall_now(clock: &Clock) -> Timespec {
    match clock.wall().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Timespec {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsecs: d.subsec_nanos(),
        },
        // Only a wall clock set before 1970 gets here.
        Err(_) => Timespec::default(),
    }
}

impl Inner {
    pub(super) fn now(&self) -> Timespec {
        wall_now(&self.clock)
    }

    /// Walk directories from the disk root. Nothing is followed: a symlink
    /// where a directory is needed is ELOOP, anything else ENOTDIR.
    pub(super) fn walk<'a>(&self, comps: impl Iterator<Item = &'a str>) -> SResult<Vec<u64>> {
        let mut chain = vec![ROOT_INO];
        for c in comps {
            let dir = *chain.last().expect("a walk starts at the disk root");
            let child = self.cur.lookup(dir, c).ok_or(Errno::ENOENT)?;
            match self.cur.kind(child) {
                Some(FileKind::Directory) => chain.push(child),
                Some(FileKind::Symlink) => return Err(Errno::ELOOP),
                Some(_) => return Err(Errno::ENOTDIR),
                None => return Err(Errno::EIO),
            }
        }
        Ok(chain)
    }

    pub(super) fn locate<'p>(&self, root: &BrickPath, p: &'p BrickPath) -> SResult<Located<'p>> {
        match p.split_last() {
            None => {
                let chain = self.walk(root.components())?;
                let ino = *chain.last().expect("a walk starts at the disk root");
                Ok(Located {
                    chain,
                    name: None,
                    ino: Some(ino),
                })
            }
            Some((dir, name)) => {
                let chain = self.walk(root.components().chain(dir.components()))?;
                let parent = *chain.last().expect("a walk starts at the disk root");
                let ino = self.cur.lookup(parent, name);
                Ok(Located {
                    chain,
                    name: Some(name),
                    ino,
                })
            }
        }
    }

    /// The entry for a namespace change at `p`: its parent and name. The
    /// view root has no name to change, which is EINVAL, as for the POSIX
    /// backend.
    pub(super) fn locate_entry<'p>(
        &self,
        root: &BrickPath,
        p: &'p BrickPath,
    ) -> SResult<(Located<'p>, &'p str)> {
        if p.is_root() {
            return Err(Errno::EINVAL);
        }
        let loc = self.locate(root, p)?;
        let name = loc.name.ok_or(Errno::EINVAL)?;
        Ok((loc, name))
    }

    pub(super) fn existing(&self, root: &BrickPath, p: &BrickPath) -> SResult<u64> {
        self.locate(root, p)?.ino.ok_or(Errno::ENOENT)
    }

    pub(super) fn node(&self, ino: u64) -> SResult<&Node> {
        // Every inode a walk or lookup returns is in `cur`.
        self.cur.nodes.get(&ino).ok_or(Errno::EIO)
    }

    pub(super) fn file_size(&self, ino: u64) -> u64 {
        self.files.get(&ino).map_or(0, |f| f.current.size)
    }

    pub(super) fn stat(&self, ino: u64) -> SResult<Stat> {
        let n = self.node(ino)?;
        let (size, blocks) = match &n.content {
            Content::Regular => match self.files.get(&ino) {
                Some(f) => (f.current.size, f.current.allocated_bytes() / 512),
                None => (0, 0),
            },
            // An ext4 directory of one block, as every directory here is.
            Content::Dir(_) => (PAGE_BYTES as u64, PAGE_BYTES as u64 / 512),
            Content::Symlink(t) => {
                let blocks = if t.len() <= FAST_SYMLINK_BYTES_MAX {
                    0
                } else {
                    PAGE_BYTES as u64 / 512
                };
                (t.len() as u64, blocks)
            }
            Content::Fifo => (0, 0),
        };
        Ok(Stat {
            ino,
            kind: n.kind(),
            mode: n.mode,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            size,
            blocks,
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
        })
    }

    /// Apply a journal entry to the current state and journal it.
    pub(super) fn journal(&mut self, op: MetaOp, lost: bool) {
        if let Some(freed) = apply_meta(&mut self.cur, &op) {
            // The data stays (a crash can bring the file back); it just no
            // longer counts against the capacity.
            let size = self.file_size(freed);
            debug_assert!(self.used_bytes >= size, "used bytes count every file");
            self.used_bytes -= size;
        }
        self.log_bytes += op.weight_bytes();
        self.log.push(Logged { op, lost });
        if self.log.len() > META_LOG_OPS_MAX || self.log_bytes > META_LOG_BYTES_MAX {
            // The journal bound: commit as a full ext4 journal would.
            self.commit_meta();
        }
    }

    /// Record that a write or truncate changed `ino`. Consecutive changes to
    /// one file share one journal entry, so a stream of writes does not
    /// fill the journal.
    pub(super) fn touch(&mut self, ino: u64) {
        let at = self.now();
        if let Some(Logged {
            op:
                MetaOp::Touch {
                    ino: last,
                    at: last_at,
                },
            lost: false,
        }) = self.log.last_mut()
        {
            if *last == ino {
                *last_at = at;
                if let Some(n) = self.cur.nodes.get_mut(&ino) {
                    n.mtime = at;
                    n.ctime = at;
                }
                return;
            }
        }
        self.journal(MetaOp::Touch { ino, at }, false);
    }

    /// Commit the journal: the durable metadata catches up with the current
    /// one, except for lost xattr updates.
    pub(super) fn commit_meta(&mut self) {
        self.durable_diverged |= self.log.iter().any(|l| l.lost);
        for l in self.log.drain(..) {
            if !l.lost {
                apply_meta(&mut self.durable, &l.op);
            }
        }
        self.log_bytes = 0;
        if cfg!(test) && !self.durable_diverged {
            assert_eq!(
                self.durable, self.cur,
                "commit must make the durable metadata the current one"
            );
        }
        // Data of inodes gone from both states can never come back.
        let (cur, durable) = (&self.cur, &self.durable);
        self.files
            .retain(|ino, _| cur.nodes.contains_key(ino) || durable.nodes.contains_key(ino));
    }

    pub(super) fn check_room_for_inode(&self) -> SResult<()> {
        if self.cur.nodes.len() as u64 >= FILES_MAX {
            return Err(Errno::ENOSPC);
        }
        match self.faults.capacity_bytes {
            Some(cap) if self.used_bytes >= cap => Err(Errno::ENOSPC),
            _ => Ok(()),
        }
    }

    /// Create an inode and its entry `parent/name` (the caller checked the
    /// name is free). Group and set-group-ID are inherited from a set-gid
    /// parent, as on ext4.
    pub(super) fn make_node(
        &mut self,
        parent: u64,
        name: &str,
        content: Content,
        mode: u32,
    ) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        let at = self.now();
        let (mut gid, mut mode) = (0, mode);
        if let Some(p) = self.cur.nodes.get(&parent) {
            if p.mode & S_ISGID != 0 {
                gid = p.gid;
                if matches!(content, Content::Dir(_)) {
                    mode |= S_ISGID;
                }
            }
        }
        let node = Node {
            content,
            mode,
            uid: 0,
            gid,
            nlink: 0,
            atime: at,
            mtime: at,
            ctime: at,
            xattrs: BTreeMap::new(),
        };
        self.journal(
            MetaOp::Create {
                parent,
                name: name.to_string(),
                ino,
                node,
            },
            false,
        );
        ino
    }

    pub(super) fn create_at(
        &mut self,
        root: &BrickPath,
        p: &BrickPath,
        content: Content,
        mode: u32,
    ) -> SResult<()> {
        let (loc, name) = self.locate_entry(root, p)?;
        if loc.ino.is_some() {
            return Err(Errno::EEXIST);
        }
        self.check_room_for_inode()?;
        let parent = loc.parent();
        self.make_node(parent, name, content, mode);
        Ok(())
    }

    /// The inode at `p` if it is a regular file: EISDIR for a directory,
    /// EINVAL for anything else, as for `read`, `write` and `truncate`.
    pub(super) fn regular(&self, root: &BrickPath, p: &BrickPath) -> SResult<u64> {
        let ino = self.existing(root, p)?;
        match self.node(ino)?.kind() {
            FileKind::Regular => Ok(ino),
            FileKind::Directory => Err(Errno::EISDIR),
            FileKind::Symlink | FileKind::Fifo => Err(Errno::EINVAL),
        }
    }

    pub(super) fn sync_all_files(&mut self) {
        for f in self.files.values_mut() {
            f.sync();
        }
    }

    pub(super) fn sync_file(&mut self, ino: u64) {
        if let Some(f) = self.files.get_mut(&ino) {
            f.sync();
        }
    }

    pub(super) fn crash(&mut self, rng: &mut DetRng) {
        let kept = rng.range_inclusive(0, self.log.len() as u64) as usize;
        let mut meta = self.durable.clone();
        for l in &self.log[..kept] {
            if !l.lost {
                apply_meta(&mut meta, &l.op);
            }
        }
        free_unreachable(&mut meta);
        self.files
            .retain(|ino, _| meta.kind(*ino) == Some(FileKind::Regular));
        for f in self.files.values_mut() {
            f.crash(rng);
        }
        self.used_bytes = self.files.values().map(|f| f.current.size).sum();
        self.cur = meta.clone();
        self.durable = meta;
        self.log.clear();
        self.log_bytes = 0;
        self.crashes += 1;
        self.durable_diverged = false;
    }
}

impl SimDisk {
    /// A fresh empty disk (root directory only). `seed` drives the
    /// probabilistic faults.
    pub fn new(seed: u64) -> Arc<SimDisk> {
        let clock = Clock::new();
        let at = wall_now(&clock);
        let root = Node {
            content: Content::Dir(BTreeMap::new()),
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            atime: at,
            mtime: at,
            ctime: at,
            xattrs: BTreeMap::new(),
        };
        let meta = Meta {
            nodes: BTreeMap::from([(ROOT_INO, root)]),
        };
        Arc::new(SimDisk {
            inner: Mutex::new(Inner {
                cur: meta.clone(),
                durable: meta,
                log: Vec::new(),
                log_bytes: 0,
                files: BTreeMap::new(),
                next_ino: ROOT_INO + 1,
                used_bytes: 0,
                faults: SimFaults::default(),
                rng: DetRng::from_seed(seed),
                crashes: 0,
                clock,
                durable_diverged: false,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means an earlier call panicked half way through a
        // change; the state cannot be trusted, so neither can this call.
        self.inner
            .lock()
            .expect("simulated disk lock poisoned by an earlier panic")
    }

    /// A view of the disk rooted at directory `root` ("" is the disk root,
    /// "bricks/b1" a subdirectory), creating missing directories durably,
    /// like `mkdir -p` followed by fsyncs.
    pub fn storage(self: &Arc<Self>, root: &str) -> SResult<SimStorage> {
        let root = BrickPath::new(root)?;
        let mut d = self.lock();
        let mut dir = ROOT_INO;
        let mut made = false;
        for c in root.components() {
            match d.cur.lookup(dir, c) {
                Some(child) => match d.cur.kind(child) {
                    Some(FileKind::Directory) => dir = child,
                    Some(FileKind::Symlink) => return Err(Errno::ELOOP),
                    _ => return Err(Errno::ENOTDIR),
                },
                None => {
                    dir = d.make_node(dir, c, Content::Dir(BTreeMap::new()), 0o755);
                    made = true;
                }
            }
        }
        if made {
            d.commit_meta();
        }
        drop(d);
        Ok(SimStorage {
            disk: Arc::clone(self),
            root,
        })
    }

    /// Power loss: keep what was durable and a random part of what was not,
    /// per the module documentation. Faults stay as they were set.
    pub fn crash(&self, rng: &mut DetRng) {
        self.lock().crash(rng);
    }

    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// The faults in force (`lose_xattr_updates` counts down as it is used).
    pub fn faults(&self) -> SimFaults {
        self.lock().faults.clone()
    }

    /// Reads of regular file `path` (from the disk root, e.g.
    /// "bricks/b1/x") that overlap `[start, start + len)` fail with EIO
    /// until every byte of the range has been rewritten. Truncating below
    /// the range also clears it (the sectors are no longer the file's).
    pub fn add_latent_error(&self, path: &str, start: u64, len: u64) -> SResult<()> {
        let p = BrickPath::new(path)?;
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let mut d = self.lock();
        let ino = d.regular(&BrickPath::root(), &p)?;
        let f = d.files.entry(ino).or_default();
        f.clear_latent(start, end);
        if f.latent.len() >= LATENT_RANGES_MAX {
            return Err(Errno::ENOSPC);
        }
        let at = f.latent.partition_point(|&(s, _)| s < start);
        f.latent.insert(at, (start, end));
        Ok(())
    }

    /// Forget every latent error, as a disk does once it has remapped the
    /// bad sectors: the ranges read their old bytes again.
    pub fn clear_latent_errors(&self) {
        for f in self.lock().files.values_mut() {
            f.latent.clear();
        }
    }

    pub fn stats(&self) -> SimDiskStats {
        let d = self.lock();
        SimDiskStats {
            crashes: d.crashes,
            pending_meta_ops: d.log.len() as u64,
            pending_data_ops: d.files.values().map(|f| f.pending.len() as u64).sum(),
            data_bytes: d.used_bytes,
            inodes: d.cur.nodes.len() as u64,
        }
    }
}
