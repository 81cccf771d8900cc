//! Metadata: the inode tree and the journal entries that change it. The
//! live state and crash replay both apply entries through [`apply_meta`],
//! so a replayed journal means exactly what it meant live.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Content {
    /// Entries by name.
    Dir(BTreeMap<String, u64>),
    /// The data lives in [`Inner::files`], outside the journal.
    Regular,
    Symlink(String),
    Fifo,
}

impl Content {
    pub(super) fn kind(&self) -> FileKind {
        match self {
            Content::Dir(_) => FileKind::Directory,
            Content::Regular => FileKind::Regular,
            Content::Symlink(_) => FileKind::Symlink,
            Content::Fifo => FileKind::Fifo,
        }
    }
}

/// One inode's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) content: Content,
    /// Permission bits only (07777).
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// Kept by [`apply_meta`]: entries naming the inode for non-directories,
    /// 2 plus subdirectories for directories.
    pub(super) nlink: u32,
    pub(super) atime: Timespec,
    pub(super) mtime: Timespec,
    pub(super) ctime: Timespec,
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    pub(super) fn kind(&self) -> FileKind {
        self.content.kind()
    }

    pub(super) fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// The namespace and attributes of every inode: what the journal covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) nodes: BTreeMap<u64, Node>,
}

impl Meta {
    pub(super) fn kind(&self, ino: u64) -> Option<FileKind> {
        self.nodes.get(&ino).map(Node::kind)
    }

    pub(super) fn entries(&self, dir: u64) -> Option<&BTreeMap<String, u64>> {
        match &self.nodes.get(&dir)?.content {
            Content::Dir(e) => Some(e),
            _ => None,
        }
    }

    pub(super) fn entries_mut(&mut self, dir: u64) -> Option<&mut BTreeMap<String, u64>> {
        match &mut self.nodes.get_mut(&dir)?.content {
            Content::Dir(e) => Some(e),
            _ => None,
        }
    }

    pub(super) fn lookup(&self, dir: u64, name: &str) -> Option<u64> {
        self.entries(dir)?.get(name).copied()
    }

    /// Drop one entry's reference to `ino` (the entry itself is already
    /// gone from `parent`): a directory is freed, a file loses a link and is
    /// freed at zero. Returns the inode if it was freed.
    pub(super) fn drop_link(
        &mut self,
        parent: u64,
        ino: u64,
        at: Timespec,
    ) -> Result<Option<u64>, &'static str> {
        let node = self
            .nodes
            .get_mut(&ino)
            .ok_or("entry names a missing inode")?;
        if node.kind() == FileKind::Directory {
            self.nodes.remove(&ino);
            let p = self.nodes.get_mut(&parent).ok_or("missing parent")?;
            // Link counts never go below what the tree holds: a parent
            // losing a subdirectory counts it (2 + subdirectories), and a
            // file losing an entry has one. Saturation only keeps release
            // builds going if that is ever broken.
            debug_assert!(p.nlink > 2, "a directory losing a subdirectory has one");
            p.nlink = p.nlink.saturating_sub(1);
            return Ok(Some(ino));
        }
        debug_assert!(node.nlink > 0, "a file losing an entry has one");
        node.nlink = node.nlink.saturating_sub(1);
        if node.nlink == 0 {
            self.nodes.remove(&ino);
            return Ok(Some(ino));
        }
        node.ctime = at;
        Ok(None)
    }

    pub(super) fn touch_dir(&mut self, dir: u64, at: Timespec) -> Result<(), &'static str> {
        let d = self.nodes.get_mut(&dir).ok_or("missing directory")?;
        d.mtime = at;
        d.ctime = at;
        Ok(())
    }
}

/// An attribute change as it is journaled: the effect, already decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AttrChange {
    pub(super) mode: Option<u32>,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) atime: Option<Timespec>,
    pub(super) mtime: Option<Timespec>,
}

/// One journal entry: one system call's metadata effect, by inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MetaOp {
    /// A new inode and its first entry.
    Create {
        parent: u64,
        name: String,
        ino: u64,
        node: Node,
    },
    Link {
        parent: u64,
        name: String,
        ino: u64,
        at: Timespec,
    },
    /// Unlink or rmdir: the entry goes, and the inode with its last link.
    Remove {
        parent: u64,
        name: String,
        at: Timespec,
    },
    /// Replaces any entry at the destination, which the live path has
    /// checked is compatible and not the same inode.
    Rename {
        from_dir: u64,
        from_name: String,
        to_dir: u64,
        to_name: String,
        at: Timespec,
    },
    SetXattr {
        ino: u64,
        name: String,
        value: Vec<u8>,
        at: Timespec,
    },
    RemoveXattr {
        ino: u64,
        name: String,
        at: Timespec,
    },
    /// Sets ctime to `at` as well as what `change` names.
    SetAttr {
        ino: u64,
        change: AttrChange,
        at: Timespec,
    },
    /// A write or truncate changed the file: mtime and ctime.
    Touch { ino: u64, at: Timespec },
}

impl MetaOp {
    /// Roughly what the entry costs to keep, for the journal's byte bound.
    pub(super) fn weight_bytes(&self) -> u64 {
        let var = match self {
            MetaOp::Create { name, node, .. } => {
                name.len()
                    + match &node.content {
                        Content::Symlink(t) => t.len(),
                        _ => 0,
                    }
            }
            MetaOp::Link { name, .. } | MetaOp::Remove { name, .. } => name.len(),
            MetaOp::Rename {
                from_name, to_name, ..
            } => from_name.len() + to_name.len(),
            MetaOp::SetXattr { name, value, .. } => name.len() + value.len(),
            MetaOp::RemoveXattr { name, .. } => name.len(),
            MetaOp::SetAttr { .. } | MetaOp::Touch { .. } => 0,
        };
        64 + var as u64
    }
}

#[derive(Debug, Clone)]
pub(super) struct Logged {
    pub(super) op: MetaOp,
    /// Marked by `lose_xattr_updates`: visible now, never durable.
    pub(super) lost: bool,
}

/// Apply one journal entry. The live path and crash replay both go through
/// here, so a replayed journal means exactly what it meant live. Returns
/// the inode the entry freed, if any.
pub(super) fn apply_meta(meta: &mut Meta, op: &MetaOp) -> Option<u64> {
    match try_apply_meta(meta, op) {
        Ok(freed) => freed,
        Err(what) => {
            // Entries are built against the state they are applied to (the
            // live state, or the durable state plus the entries before
            // them), so this is a bug in this module.
            debug_assert!(
                false,
                "journal entry does not fit the state: {what}: {op:?}"
            );
            tracing::error!(
                ?op,
                "simulated disk journal entry does not fit the state: {what}"
            );
            None
        }
    }
}

/// One journal entry's effect, or what about the state it does not fit.
type Applied = Result<Option<u64>, &'static str>;

pub(super) fn try_apply_meta(meta: &mut Meta, op: &MetaOp) -> Applied {
    match op {
        MetaOp::Create {
            parent,
            name,
            ino,
            node,
        } => apply_create(meta, *parent, name, *ino, node),
        MetaOp::Link {
            parent,
            name,
            ino,
            at,
        } => apply_link(meta, *parent, name, *ino, *at),
        MetaOp::Remove { parent, name, at } => {
            let entries = meta
                .entries_mut(*parent)
                .ok_or("remove from a non-directory")?;
            let ino = entries.remove(name).ok_or("remove of a missing entry")?;
            let freed = meta.drop_link(*parent, ino, *at)?;
            meta.touch_dir(*parent, *at)?;
            Ok(freed)
        }
        MetaOp::Rename {
            from_dir,
            from_name,
            to_dir,
            to_name,
            at,
        } => apply_rename(meta, (*from_dir, from_name), (*to_dir, to_name), *at),
        MetaOp::SetXattr {
            ino,
            name,
            value,
            at,
        } => {
            let node = meta
                .nodes
                .get_mut(ino)
                .ok_or("setxattr on a missing inode")?;
            node.xattrs.insert(name.clone(), value.clone());
            node.ctime = *at;
            Ok(None)
        }
        MetaOp::RemoveXattr { ino, name, at } => {
            let node = meta
                .nodes
                .get_mut(ino)
                .ok_or("removexattr on a missing inode")?;
            // Absent is possible in replay: the set it undoes may have been
            // a lost update.
            node.xattrs.remove(name);
            node.ctime = *at;
            Ok(None)
        }
        MetaOp::SetAttr { ino, change, at } => apply_set_attr(meta, *ino, change, *at),
        MetaOp::Touch { ino, at } => {
            let node = meta.nodes.get_mut(ino).ok_or("touch of a missing inode")?;
            node.mtime = *at;
            node.ctime = *at;
            Ok(None)
        }
    }
}

fn apply_create(meta: &mut Meta, parent: u64, name: &str, ino: u64, node: &Node) -> Applied {
    let mut node = node.clone();
    let is_dir = node.kind() == FileKind::Directory;
    node.nlink = if is_dir { 2 } else { 1 };
    let at = node.ctime;
    let entries = meta
        .entries_mut(parent)
        .ok_or("create in a non-directory")?;
    if entries.insert(name.to_string(), ino).is_some() {
        return Err("create over an existing entry");
    }
    meta.nodes.insert(ino, node);
    let p = meta.nodes.get_mut(&parent).ok_or("missing parent")?;
    if is_dir {
        p.nlink += 1;
    }
    meta.touch_dir(parent, at)?;
    Ok(None)
}

fn apply_link(meta: &mut Meta, parent: u64, name: &str, ino: u64, at: Timespec) -> Applied {
    let entries = meta.entries_mut(parent).ok_or("link in a non-directory")?;
    if entries.insert(name.to_string(), ino).is_some() {
        return Err("link over an existing entry");
    }
    let node = meta.nodes.get_mut(&ino).ok_or("link to a missing inode")?;
    node.nlink += 1;
    node.ctime = at;
    meta.touch_dir(parent, at)?;
    Ok(None)
}

/// `from` and `to` are (directory, name) pairs.
fn apply_rename(meta: &mut Meta, from: (u64, &str), to: (u64, &str), at: Timespec) -> Applied {
    let ((from_dir, from_name), (to_dir, to_name)) = (from, to);
    let ino = meta
        .entries_mut(from_dir)
        .ok_or("rename from a non-directory")?
        .remove(from_name)
        .ok_or("rename of a missing entry")?;
    let moved_dir = meta.kind(ino) == Some(FileKind::Directory);
    let replaced = meta
        .entries_mut(to_dir)
        .ok_or("rename into a non-directory")?
        .insert(to_name.to_string(), ino);
    let mut freed = None;
    if let Some(old) = replaced {
        if old == ino {
            return Err("rename onto the same inode was journaled");
        }
        freed = meta.drop_link(to_dir, old, at)?;
    }
    if moved_dir && from_dir != to_dir {
        let f = meta
            .nodes
            .get_mut(&from_dir)
            .ok_or("missing source directory")?;
        debug_assert!(f.nlink > 2, "a directory losing a subdirectory has one");
        f.nlink = f.nlink.saturating_sub(1);
        meta.nodes
            .get_mut(&to_dir)
            .ok_or("missing target directory")?
            .nlink += 1;
    }
    meta.nodes
        .get_mut(&ino)
        .ok_or("renamed inode missing")?
        .ctime = at;
    meta.touch_dir(from_dir, at)?;
    meta.touch_dir(to_dir, at)?;
    Ok(freed)
}

fn apply_set_attr(meta: &mut Meta, ino: u64, change: &AttrChange, at: Timespec) -> Applied {
    let node = meta
        .nodes
        .get_mut(&ino)
        .ok_or("setattr on a missing inode")?;
    if let Some(m) = change.mode {
        node.mode = m;
    }
    if let Some((u, g)) = change.owner {
        node.uid = u;
        node.gid = g;
    }
    if let Some(t) = change.atime {
        node.atime = t;
    }
    if let Some(t) = change.mtime {
        node.mtime = t;
    }
    node.ctime = at;
    Ok(None)
}

/// Free every inode not reachable from the root, and recount links if
/// anything went. With one journal entry per system call nothing should
/// ever be unreachable after a replay; this keeps the tree sound even so.
pub(super) fn free_unreachable(meta: &mut Meta) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        if !seen.insert(ino) {
            continue;
        }
        if let Some(entries) = meta.entries(ino) {
            stack.extend(entries.values().copied());
        }
    }
    let before = meta.nodes.len();
    meta.nodes.retain(|ino, _| seen.contains(ino));
    if meta.nodes.len() == before {
        return;
    }
    tracing::warn!(
        freed = before - meta.nodes.len(),
        "simulated disk freed unreachable inodes at crash"
    );
    let mut links: BTreeMap<u64, u32> = BTreeMap::new();
    for node in meta.nodes.values() {
        if let Content::Dir(entries) = &node.content {
            for ino in entries.values() {
                *links.entry(*ino).or_default() += 1;
            }
        }
    }
    let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
    for (ino, node) in &meta.nodes {
        if let Content::Dir(entries) = &node.content {
            let n = entries
                .values()
                .filter(|c| meta.kind(**c) == Some(FileKind::Directory))
                .count();
            subdirs.insert(*ino, n as u32);
        }
    }
    for (ino, node) in meta.nodes.iter_mut() {
        node.nlink = match node.kind() {
            FileKind::Directory => 2 + subdirs.get(ino).copied().unwrap_or(0),
            _ => links.get(ino).copied().unwrap_or(0),
        };
    }
}
