//! The simulated disk's own tests: POSIX behaviour, the durability model
//! at crashes, the faults, and the tree invariants after random workloads.

use super::*;

fn bp(s: &str) -> BrickPath {
    BrickPath::new(s).expect("test paths are valid")
}

fn fresh() -> (Arc<SimDisk>, SimStorage) {
    let disk = SimDisk::new(1);
    let s = disk.storage("").unwrap();
    (disk, s)
}

fn read_all(s: &SimStorage, p: &str) -> Vec<u8> {
    let size = s.lstat(&bp(p)).unwrap().size;
    s.read(&bp(p), 0, size as usize).unwrap().to_vec()
}

fn write_file(s: &SimStorage, p: &str, data: &[u8]) {
    s.create(&bp(p), 0o644).unwrap();
    s.write(&bp(p), 0, data).unwrap();
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 3) % 251) as u8 ^ salt).collect()
}

fn exists(s: &SimStorage, p: &str) -> bool {
    match s.lstat(&bp(p)) {
        Ok(_) => true,
        Err(Errno::ENOENT) => false,
        Err(e) => panic!("lstat {p}: {e}"),
    }
}

/// The tree invariants: every entry names a live inode, link counts
/// match the entries, everything is reachable from the root, and the
/// data accounting matches the files. After a crash, also: nothing is
/// pending and the durable state is the current one.
fn check_consistent(disk: &SimDisk) {
    let d = disk.lock();
    let meta = &d.cur;
    let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
    for (ino, node) in &meta.nodes {
        if let Content::Dir(entries) = &node.content {
            let mut subdirs = 0;
            for (name, child) in entries {
                let c = meta
                    .nodes
                    .get(child)
                    .unwrap_or_else(|| panic!("entry {name} in {ino} names missing inode {child}"));
                if c.kind() == FileKind::Directory {
                    subdirs += 1;
                }
                *refs.entry(*child).or_default() += 1;
            }
            assert_eq!(node.nlink, 2 + subdirs, "directory {ino} nlink");
        }
    }
    for (ino, node) in &meta.nodes {
        let r = refs.get(ino).copied().unwrap_or(0);
        if *ino == ROOT_INO {
            assert_eq!(r, 0);
            continue;
        }
        assert!(r >= 1, "inode {ino} has no entry");
        if node.kind() == FileKind::Directory {
            assert_eq!(r, 1, "directory {ino} has one entry");
        } else {
            assert_eq!(node.nlink, r, "inode {ino} nlink");
        }
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec![ROOT_INO];
    while let Some(ino) = stack.pop() {
        assert!(
            seen.insert(ino),
            "inode {ino} reached twice: a directory cycle"
        );
        if let Some(e) = meta.entries(ino) {
            stack.extend(
                e.values()
                    .filter(|c| meta.kind(**c) == Some(FileKind::Directory)),
            );
        }
    }
    let dirs = meta
        .nodes
        .values()
        .filter(|n| n.kind() == FileKind::Directory)
        .count();
    assert_eq!(seen.len(), dirs, "every directory reachable from the root");
    let used: u64 = d
        .files
        .iter()
        .filter(|(ino, _)| meta.kind(**ino) == Some(FileKind::Regular))
        .map(|(_, f)| f.current.size)
        .sum();
    assert_eq!(used, d.used_bytes, "data accounting");
    let created_since_commit: BTreeSet<u64> = d
        .log
        .iter()
        .filter_map(|l| match l.op {
            MetaOp::Create { ino, .. } => Some(ino),
            _ => None,
        })
        .collect();
    for (ino, f) in &d.files {
        assert!(
            meta.nodes.contains_key(ino)
                || d.durable.nodes.contains_key(ino)
                || created_since_commit.contains(ino),
            "data kept for inode {ino}, which no crash can bring back"
        );
        let mut durable = f.durable.clone();
        for op in &f.pending {
            durable.apply(op);
        }
        assert_eq!(
            durable, f.current,
            "current data is durable data plus the queue"
        );
    }
    assert!(d.next_ino > meta.nodes.keys().copied().max().unwrap_or(0));
}

fn check_quiescent_after_crash(disk: &SimDisk) {
    check_consistent(disk);
    let d = disk.lock();
    assert!(d.log.is_empty());
    assert_eq!(d.cur, d.durable);
    assert!(d
        .files
        .values()
        .all(|f| f.pending.is_empty() && f.durable == f.current));
}

/// The errnos of `namespace_operations_and_their_errnos`: `d` is a
/// directory holding regular file `d/f` and FIFO `d/p`, and `nope` is
/// missing.
fn assert_errnos_of_d_f_and_p(s: &SimStorage) {
    assert_eq!(s.lstat(&bp("nope")), Err(Errno::ENOENT));
    assert_eq!(s.lstat(&bp("nope/x")), Err(Errno::ENOENT));
    assert_eq!(s.lstat(&bp("d/f/x")), Err(Errno::ENOTDIR));
    assert_eq!(s.create(&bp("d/p/x"), 0o644), Err(Errno::ENOTDIR));
    for p in ["d", "d/f", "d/p"] {
        assert_eq!(s.mkdir(&bp(p), 0o755), Err(Errno::EEXIST), "{p}");
        assert_eq!(s.create(&bp(p), 0o644), Err(Errno::EEXIST), "{p}");
        assert_eq!(s.mkfifo(&bp(p), 0o644), Err(Errno::EEXIST), "{p}");
        assert_eq!(s.symlink("t", &bp(p)), Err(Errno::EEXIST), "{p}");
    }
    assert_eq!(s.unlink(&bp("d")), Err(Errno::EISDIR));
    assert_eq!(s.unlink(&bp("d/nope")), Err(Errno::ENOENT));
    assert_eq!(s.rmdir(&bp("d/f")), Err(Errno::ENOTDIR));
    assert_eq!(s.rmdir(&bp("d")), Err(Errno::ENOTEMPTY));
    assert_eq!(s.rmdir(&bp("nope")), Err(Errno::ENOENT));
    assert_eq!(s.readlink(&bp("d/f")), Err(Errno::EINVAL));
    assert_eq!(s.readdir(&bp("d/f")), Err(Errno::ENOTDIR));
    assert_eq!(s.read(&bp("d"), 0, 10), Err(Errno::EISDIR));
    assert_eq!(s.read(&bp("d/p"), 0, 10), Err(Errno::EINVAL));
    assert_eq!(s.write(&bp("d"), 0, b"x"), Err(Errno::EISDIR));
    assert_eq!(s.write(&bp("d/p"), 0, b"x"), Err(Errno::EINVAL));
    assert_eq!(s.truncate(&bp("d"), 0), Err(Errno::EISDIR));
    assert_eq!(s.truncate(&bp("d/p"), 0), Err(Errno::EINVAL));
    assert_eq!(s.read(&bp("d/nope"), 0, 1), Err(Errno::ENOENT));

    // The view root cannot be removed, renamed or created.
    let root = BrickPath::root();
    assert_eq!(s.unlink(&root), Err(Errno::EINVAL));
    assert_eq!(s.rmdir(&root), Err(Errno::EINVAL));
    assert_eq!(s.rename(&root, &bp("x")), Err(Errno::EINVAL));
    assert_eq!(s.rename(&bp("d/f"), &root), Err(Errno::EINVAL));
    assert_eq!(s.mkdir(&root, 0o755), Err(Errno::EINVAL));
    assert_eq!(s.link(&root, &bp("x")), Err(Errno::EINVAL));
    assert_eq!(s.link(&bp("d/f"), &root), Err(Errno::EINVAL));
    assert_eq!(s.read(&root, 0, 1), Err(Errno::EISDIR));
    assert!(s.fsync(&root, false).is_ok());
}

#[test]
fn namespace_operations_and_their_errnos() {
    let (disk, s) = fresh();
    s.mkdir(&bp("d"), 0o755).unwrap();
    s.create(&bp("d/f"), 0o644).unwrap();
    s.mkfifo(&bp("d/p"), 0o600).unwrap();
    let st = s.lstat(&bp("d/f")).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.nlink, st.size, st.uid, st.gid),
        (FileKind::Regular, 0o644, 1, 0, 0, 0)
    );
    assert_eq!(s.lstat(&bp("d/p")).unwrap().kind, FileKind::Fifo);
    let d = s.lstat(&bp("d")).unwrap();
    assert_eq!(
        (d.kind, d.mode, d.nlink, d.size, d.blocks),
        (FileKind::Directory, 0o755, 2, 4096, 8)
    );
    assert_eq!(s.lstat(&BrickPath::root()).unwrap().nlink, 3);
    assert!(st.ino > d.ino, "inode numbers grow");
    let mut names = s.readdir(&bp("d")).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            DirEntry {
                name: "f".into(),
                kind: FileKind::Regular
            },
            DirEntry {
                name: "p".into(),
                kind: FileKind::Fifo
            },
        ]
    );

    assert_errnos_of_d_f_and_p(&s);

    // Hard links.
    s.link(&bp("d/f"), &bp("g")).unwrap();
    let (f, g) = (s.lstat(&bp("d/f")).unwrap(), s.lstat(&bp("g")).unwrap());
    assert_eq!((f.ino, f.nlink, g.nlink), (g.ino, 2, 2));
    assert_eq!(s.link(&bp("d"), &bp("e")), Err(Errno::EPERM));
    assert_eq!(s.link(&bp("d/f"), &bp("d/p")), Err(Errno::EEXIST));
    assert_eq!(
        s.link(&bp("d"), &bp("g")),
        Err(Errno::EEXIST),
        "EEXIST comes before EPERM"
    );
    assert_eq!(s.link(&bp("nope"), &bp("x")), Err(Errno::ENOENT));
    s.write(&bp("g"), 0, b"shared").unwrap();
    assert_eq!(read_all(&s, "d/f"), b"shared");
    s.unlink(&bp("d/f")).unwrap();
    assert_eq!(s.lstat(&bp("g")).unwrap().nlink, 1);
    assert_eq!(read_all(&s, "g"), b"shared");

    // Directory link counts follow subdirectories.
    s.mkdir(&bp("d/sub"), 0o700).unwrap();
    assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 3);
    s.rmdir(&bp("d/sub")).unwrap();
    assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 2);
    s.unlink(&bp("d/p")).unwrap();
    s.rmdir(&bp("d")).unwrap();
    assert_eq!(s.lstat(&BrickPath::root()).unwrap().nlink, 2);

    // Inode numbers are never reused.
    let before = s.lstat(&bp("g")).unwrap().ino;
    s.unlink(&bp("g")).unwrap();
    s.create(&bp("h"), 0o644).unwrap();
    assert!(s.lstat(&bp("h")).unwrap().ino > before);

    // Symlink targets: empty and overlong are refused as Linux does.
    assert_eq!(s.symlink("", &bp("l")), Err(Errno::ENOENT));
    assert_eq!(
        s.symlink(&"x".repeat(4096), &bp("l")),
        Err(Errno::ENAMETOOLONG)
    );
    s.symlink(&"x".repeat(4095), &bp("l")).unwrap();
    assert_eq!(s.lstat(&bp("l")).unwrap().size, 4095);
    assert_eq!(s.describe(), "simdisk:/");
    check_consistent(&disk);
}

#[test]
fn symlinks_are_never_followed() {
    let (disk, s) = fresh();
    s.mkdir(&bp("real"), 0o755).unwrap();
    write_file(&s, "real/f", b"data");
    s.symlink("real", &bp("ln")).unwrap();
    s.symlink("/etc", &bp("abs")).unwrap();
    let st = s.lstat(&bp("ln")).unwrap();
    assert_eq!(
        (st.kind, st.mode, st.size, st.blocks),
        (FileKind::Symlink, 0o777, 4, 0)
    );
    assert_eq!(s.readlink(&bp("ln")).unwrap(), "real");
    assert_eq!(s.readlink(&bp("abs")).unwrap(), "/etc");

    // Through a symlink in a directory position: ELOOP, for every call.
    let through = bp("ln/f");
    assert_eq!(s.lstat(&through), Err(Errno::ELOOP));
    assert_eq!(s.read(&through, 0, 4), Err(Errno::ELOOP));
    assert_eq!(s.write(&through, 0, b"x"), Err(Errno::ELOOP));
    assert_eq!(s.create(&bp("ln/g"), 0o644), Err(Errno::ELOOP));
    assert_eq!(s.mkdir(&bp("ln/g"), 0o755), Err(Errno::ELOOP));
    assert_eq!(s.unlink(&through), Err(Errno::ELOOP));
    assert_eq!(s.rename(&through, &bp("x")), Err(Errno::ELOOP));
    assert_eq!(s.rename(&bp("real/f"), &bp("ln/f2")), Err(Errno::ELOOP));
    assert_eq!(s.link(&through, &bp("x")), Err(Errno::ELOOP));
    assert_eq!(s.getxattr(&through, "user.a"), Err(Errno::ELOOP));
    assert_eq!(s.fsync(&through, false), Err(Errno::ELOOP));
    assert_eq!(s.lstat(&bp("abs/passwd")), Err(Errno::ELOOP));

    // As the final component, the link itself is what is operated on.
    assert_eq!(s.readdir(&bp("ln")), Err(Errno::ELOOP));
    assert_eq!(s.read(&bp("ln"), 0, 4), Err(Errno::EINVAL));
    assert_eq!(s.write(&bp("ln"), 0, b"x"), Err(Errno::EINVAL));
    assert_eq!(s.truncate(&bp("ln"), 0), Err(Errno::EINVAL));
    assert_eq!(s.rmdir(&bp("ln")), Err(Errno::ENOTDIR));
    assert_eq!(s.set_mode(&bp("ln"), 0o600), Err(Errno::EOPNOTSUPP));
    s.set_owner(&bp("ln"), 7, 8).unwrap();
    assert_eq!(s.lstat(&bp("ln")).unwrap().uid, 7);
    assert_eq!(
        s.lstat(&bp("real")).unwrap().uid,
        0,
        "the target is untouched"
    );
    s.setxattr(&bp("ln"), "trusted.t", b"v", XattrFlags::Any)
        .unwrap();
    assert_eq!(s.getxattr(&bp("ln"), "trusted.t").unwrap(), b"v");
    assert!(s.listxattr(&bp("real")).unwrap().is_empty());
    s.link(&bp("ln"), &bp("ln2")).unwrap();
    assert_eq!(s.lstat(&bp("ln2")).unwrap().kind, FileKind::Symlink);
    s.unlink(&bp("ln")).unwrap();
    s.unlink(&bp("ln2")).unwrap();
    assert_eq!(read_all(&s, "real/f"), b"data");
    check_consistent(&disk);
}

#[test]
fn rename_follows_posix() {
    let (disk, s) = fresh();
    write_file(&s, "a", b"A");
    write_file(&s, "b", b"B");
    s.mkdir(&bp("d"), 0o755).unwrap();
    s.mkdir(&bp("e"), 0o755).unwrap();
    write_file(&s, "e/x", b"X");
    s.mkdir(&bp("d/sub"), 0o755).unwrap();
    s.mkdir(&bp("d/sub/deep"), 0o755).unwrap();

    // File over file replaces it atomically; the old one is freed.
    let b_ino = s.lstat(&bp("b")).unwrap().ino;
    s.rename(&bp("a"), &bp("b")).unwrap();
    assert!(!exists(&s, "a"));
    assert_eq!(read_all(&s, "b"), b"A");
    assert_ne!(s.lstat(&bp("b")).unwrap().ino, b_ino);
    assert!(!disk.lock().cur.nodes.contains_key(&b_ino));

    // Kind mismatches and non-empty targets.
    assert_eq!(s.rename(&bp("b"), &bp("d")), Err(Errno::EISDIR));
    assert_eq!(s.rename(&bp("d"), &bp("b")), Err(Errno::ENOTDIR));
    assert_eq!(s.rename(&bp("d"), &bp("e")), Err(Errno::ENOTEMPTY));
    assert_eq!(s.rename(&bp("nope"), &bp("x")), Err(Errno::ENOENT));
    assert_eq!(s.rename(&bp("b"), &bp("nope/x")), Err(Errno::ENOENT));
    assert_eq!(s.rename(&bp("b"), &bp("b/x")), Err(Errno::ENOTDIR));

    // A directory cannot move beneath itself; a target that contains
    // the source is not empty.
    assert_eq!(s.rename(&bp("d"), &bp("d/x")), Err(Errno::EINVAL));
    assert_eq!(s.rename(&bp("d"), &bp("d/sub/deep/x")), Err(Errno::EINVAL));
    assert_eq!(s.rename(&bp("d"), &bp("d/sub")), Err(Errno::EINVAL));
    assert_eq!(s.rename(&bp("d/sub/deep"), &bp("d")), Err(Errno::ENOTEMPTY));
    assert_eq!(s.rename(&bp("d/sub"), &bp("d")), Err(Errno::ENOTEMPTY));

    // Onto itself or a hard link of itself: nothing happens.
    s.rename(&bp("b"), &bp("b")).unwrap();
    s.link(&bp("b"), &bp("b2")).unwrap();
    s.rename(&bp("b"), &bp("b2")).unwrap();
    assert!(exists(&s, "b") && exists(&s, "b2"));
    assert_eq!(s.lstat(&bp("b")).unwrap().nlink, 2);
    s.rename(&bp("d"), &bp("d")).unwrap();

    // Directory over an empty directory, across parents: link counts.
    s.mkdir(&bp("e/empty"), 0o755).unwrap();
    assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 3);
    s.rename(&bp("d/sub"), &bp("e/empty")).unwrap();
    assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 2);
    assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 3);
    assert!(exists(&s, "e/empty/deep"));
    s.rename(&bp("e/empty"), &bp("d/moved")).unwrap();
    assert_eq!(s.lstat(&bp("d")).unwrap().nlink, 3);
    assert_eq!(s.lstat(&bp("e")).unwrap().nlink, 2);

    // Renaming a file over one of several links drops just that link.
    write_file(&s, "c", b"C");
    s.rename(&bp("c"), &bp("b2")).unwrap();
    assert_eq!(s.lstat(&bp("b")).unwrap().nlink, 1);
    assert_eq!(read_all(&s, "b2"), b"C");
    check_consistent(&disk);
}

#[test]
fn data_reads_writes_truncates_and_holes() {
    let (disk, s) = fresh();
    write_file(&s, "f", b"hello");
    let f = bp("f");
    assert_eq!(&s.read(&f, 0, 5).unwrap()[..], b"hello");
    assert_eq!(&s.read(&f, 3, 100).unwrap()[..], b"lo");
    assert!(s.read(&f, 5, 10).unwrap().is_empty());
    assert!(s.read(&f, 1 << 40, 10).unwrap().is_empty());
    assert_eq!(s.lstat(&f).unwrap().blocks, 8);

    // A write past the end leaves a hole that reads as zeros.
    s.write(&f, 10_000, b"x").unwrap();
    let st = s.lstat(&f).unwrap();
    assert_eq!(
        (st.size, st.blocks),
        (10_001, 16),
        "the hole's middle page is not allocated"
    );
    let all = s.read(&f, 0, 20_000).unwrap();
    assert_eq!(all.len(), 10_001);
    assert_eq!(&all[..5], b"hello");
    assert!(all[5..10_000].iter().all(|b| *b == 0));
    assert_eq!(all[10_000], b'x');

    // Shrinking then growing again reads zeros, not the old bytes.
    s.truncate(&f, 3).unwrap();
    assert_eq!(read_all(&s, "f"), b"hel");
    s.truncate(&f, 8192).unwrap();
    let all = read_all(&s, "f");
    assert_eq!(all.len(), 8192);
    assert_eq!(&all[..3], b"hel");
    assert!(all[3..].iter().all(|b| *b == 0));
    s.truncate(&f, 1 << 30).unwrap();
    assert_eq!(
        s.lstat(&f).unwrap().blocks,
        8,
        "growing by truncate allocates nothing"
    );

    // Sizes and limits.
    assert_eq!(s.write(&f, FILE_BYTES_MAX, b"x"), Err(Errno::EFBIG));
    assert_eq!(s.write(&f, u64::MAX, b"x"), Err(Errno::EFBIG));
    assert_eq!(s.truncate(&f, FILE_BYTES_MAX + 1), Err(Errno::EFBIG));
    s.write(&f, FILE_BYTES_MAX - 1, b"x").unwrap();
    assert_eq!(s.lstat(&f).unwrap().size, FILE_BYTES_MAX);
    s.truncate(&f, 0).unwrap();
    assert_eq!(s.lstat(&f).unwrap().blocks, 0);

    // Against a plain vector: random writes and truncates across pages.
    let mut model: Vec<u8> = Vec::new();
    let mut rng = DetRng::from_seed(99);
    for round in 0..400u32 {
        if rng.chance(0.2) {
            let size = rng.below(40_000) as usize;
            s.truncate(&f, size as u64).unwrap();
            model.resize(size, 0);
        } else {
            let off = rng.below(30_000) as usize;
            let mut data = vec![0u8; rng.range_inclusive(1, 9000) as usize];
            rng.fill(&mut data);
            s.write(&f, off as u64, &data).unwrap();
            if model.len() < off + data.len() {
                model.resize(off + data.len(), 0);
            }
            model[off..off + data.len()].copy_from_slice(&data);
        }
        if round % 50 == 0 {
            let off = rng.below(model.len() as u64 + 1) as usize;
            let len = rng.below(10_000) as usize;
            let want = &model[off.min(model.len())..(off + len).min(model.len())];
            assert_eq!(&s.read(&f, off as u64, len).unwrap()[..], want);
        }
    }
    assert_eq!(read_all(&s, "f"), model);
    assert_eq!(disk.stats().data_bytes, model.len() as u64);
    check_consistent(&disk);
}

#[test]
fn xattrs_follow_linux() {
    let (disk, s) = fresh();
    write_file(&s, "f", b"");
    let f = bp("f");
    assert_eq!(s.getxattr(&f, "user.a"), Err(Errno::ENODATA));
    assert_eq!(s.removexattr(&f, "user.a"), Err(Errno::ENODATA));
    assert_eq!(
        s.setxattr(&f, "user.a", b"1", XattrFlags::Replace),
        Err(Errno::ENODATA)
    );
    s.setxattr(&f, "user.a", b"1", XattrFlags::Create).unwrap();
    assert_eq!(
        s.setxattr(&f, "user.a", b"2", XattrFlags::Create),
        Err(Errno::EEXIST)
    );
    s.setxattr(&f, "user.a", b"2", XattrFlags::Replace).unwrap();
    assert_eq!(s.getxattr(&f, "user.a").unwrap(), b"2");
    s.setxattr(&f, "user.a", b"", XattrFlags::Any).unwrap();
    assert_eq!(s.getxattr(&f, "user.a").unwrap(), b"");
    s.setxattr(&f, "user.b", b"", XattrFlags::Any).unwrap();
    s.setxattr(&f, "trusted.c", b"", XattrFlags::Any).unwrap();
    s.setxattr(&f, "security.d", b"", XattrFlags::Any).unwrap();
    assert_eq!(
        s.listxattr(&f).unwrap(),
        vec!["security.d", "trusted.c", "user.a", "user.b"]
    );
    s.removexattr(&f, "user.a").unwrap();
    assert_eq!(s.getxattr(&f, "user.a"), Err(Errno::ENODATA));

    // Names and values.
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(
        s.setxattr(&f, &long, b"", XattrFlags::Any),
        Err(Errno::ERANGE)
    );
    s.setxattr(&f, &long[..255], b"", XattrFlags::Any).unwrap();
    assert_eq!(s.getxattr(&f, ""), Err(Errno::ERANGE));
    assert_eq!(
        s.setxattr(&f, "user.v", &vec![0; (64 << 10) + 1], XattrFlags::Any),
        Err(Errno::ERANGE)
    );
    s.setxattr(&f, "user.v", &vec![7; 64 << 10], XattrFlags::Any)
        .unwrap();
    assert_eq!(s.getxattr(&f, "user.v").unwrap().len(), 64 << 10);
    assert_eq!(
        s.setxattr(&f, "plain", b"", XattrFlags::Any),
        Err(Errno::EOPNOTSUPP)
    );
    assert_eq!(s.getxattr(&f, "system.x"), Err(Errno::EOPNOTSUPP));
    assert_eq!(
        s.setxattr(&f, "user.", b"", XattrFlags::Any),
        Err(Errno::EINVAL)
    );
    // Name checks come before the final lookup, as in the kernel.
    assert_eq!(s.getxattr(&bp("nope"), ""), Err(Errno::ERANGE));
    assert_eq!(s.getxattr(&bp("nope"), "user.a"), Err(Errno::ENOENT));
    assert_eq!(s.getxattr(&bp("nope/x"), ""), Err(Errno::ENOENT));

    // user.* lives only on regular files and directories.
    s.mkfifo(&bp("p"), 0o600).unwrap();
    assert_eq!(
        s.setxattr(&bp("p"), "user.a", b"", XattrFlags::Any),
        Err(Errno::EPERM)
    );
    assert_eq!(s.getxattr(&bp("p"), "user.a"), Err(Errno::ENODATA));
    s.setxattr(&bp("p"), "trusted.a", b"x", XattrFlags::Any)
        .unwrap();
    s.setxattr(&BrickPath::root(), "trusted.root", b"r", XattrFlags::Any)
        .unwrap();
    assert_eq!(
        s.getxattr(&BrickPath::root(), "trusted.root").unwrap(),
        b"r"
    );

    // One inode's xattrs are bounded.
    let mut i = 0;
    let err = loop {
        match s.setxattr(
            &f,
            &format!("user.big{i}"),
            &vec![1; 64 << 10],
            XattrFlags::Any,
        ) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, Errno::ENOSPC);
    assert!(i < 8);
    check_consistent(&disk);
}

#[test]
fn attributes_and_times() {
    let (_disk, s) = fresh();
    s.mkdir(&bp("d"), 0o2775).unwrap();
    s.set_owner(&bp("d"), 10, 20).unwrap();
    s.set_mode(&bp("d"), 0o2775).unwrap();
    write_file(&s, "d/f", b"x");
    // A set-gid directory hands on its group, and the bit to subdirs.
    assert_eq!(s.lstat(&bp("d/f")).unwrap().gid, 20);
    s.mkdir(&bp("d/sub"), 0o755).unwrap();
    let sub = s.lstat(&bp("d/sub")).unwrap();
    assert_eq!((sub.gid, sub.mode), (20, 0o2755));

    let f = bp("d/f");
    s.set_mode(&f, 0o6755).unwrap();
    assert_eq!(s.lstat(&f).unwrap().mode, 0o6755);
    s.set_owner(&f, 1, 2).unwrap();
    let st = s.lstat(&f).unwrap();
    assert_eq!(
        (st.uid, st.gid, st.mode),
        (1, 2, 0o0755),
        "chown clears set-id bits"
    );
    s.set_mode(&f, 0o12644).unwrap();
    assert_eq!(
        s.lstat(&f).unwrap().mode,
        0o2644,
        "only permission bits are kept"
    );
    assert_eq!(s.set_mode(&bp("nope"), 0o644), Err(Errno::ENOENT));

    let old = Timespec {
        secs: 1000,
        nsecs: 5,
    };
    s.set_times(&f, Some(old), None).unwrap();
    let st = s.lstat(&f).unwrap();
    assert_eq!(st.atime, old);
    assert_ne!(st.mtime, old);
    s.set_times(&f, None, Some(old)).unwrap();
    let st = s.lstat(&f).unwrap();
    assert_eq!((st.atime, st.mtime), (old, old));
    assert!(st.ctime > old);
    assert_eq!(
        s.set_times(&bp("nope"), None, None),
        Ok(()),
        "nothing to do, no lookup"
    );
    assert_eq!(
        s.set_times(&bp("nope"), Some(old), None),
        Err(Errno::ENOENT)
    );
    let bad = Timespec {
        secs: 0,
        nsecs: 1_000_000_000,
    };
    assert_eq!(s.set_times(&f, Some(bad), None), Err(Errno::EINVAL));

    // Data changes move mtime; entry changes move the directory's.
    s.write(&f, 0, b"y").unwrap();
    assert!(s.lstat(&f).unwrap().mtime > old);
    s.set_times(&bp("d"), Some(old), Some(old)).unwrap();
    s.create(&bp("d/g"), 0o644).unwrap();
    assert!(s.lstat(&bp("d")).unwrap().mtime > old);
    s.set_times(&f, None, Some(old)).unwrap();
    s.truncate(&f, 1).unwrap();
    assert!(
        s.lstat(&f).unwrap().mtime > old,
        "truncate to the same size still touches"
    );

    let fs = s.statfs().unwrap();
    assert_eq!(
        (fs.block_size, fs.blocks, fs.files, fs.name_max),
        (4096, 1 << 28, 1 << 32, 255)
    );
    assert!(fs.blocks_free < fs.blocks && fs.files_free < fs.files);
}

#[test]
fn crash_keeps_fsynced_data_byte_exact() {
    let disk = SimDisk::new(5);
    let s = disk.storage("brick").unwrap();
    let mut rng = DetRng::from_seed(17);
    let mut expected = vec![0u8; 20_000];
    rng.fill(&mut expected);
    s.mkdir(&bp("d"), 0o755).unwrap();
    write_file(&s, "d/keep", &expected);
    s.setxattr(&bp("d/keep"), "trusted.k", b"v1", XattrFlags::Any)
        .unwrap();
    s.fsync(&bp("d/keep"), true).unwrap();
    let mut crashes_changed_something = 0;
    for round in 0..200u64 {
        assert_eq!(read_all(&s, "d/keep"), expected, "round {round}");
        assert_eq!(s.getxattr(&bp("d/keep"), "trusted.k").unwrap(), b"v1");

        // New synced data, which must survive from here on.
        let off = rng.below(25_000) as usize;
        let mut chunk = vec![0u8; rng.range_inclusive(1, 3000) as usize];
        rng.fill(&mut chunk);
        s.write(&bp("d/keep"), off as u64, &chunk).unwrap();
        if expected.len() < off + chunk.len() {
            expected.resize(off + chunk.len(), 0);
        }
        expected[off..off + chunk.len()].copy_from_slice(&chunk);
        s.fsync(&bp("d/keep"), round % 2 == 0).unwrap();

        // Unsynced work elsewhere, which the crash may keep or not.
        let name = format!("d/tmp{round}");
        s.create(&bp(&name), 0o644).unwrap();
        s.write(&bp(&name), 0, &chunk).unwrap();
        s.setxattr(
            &bp("d"),
            "trusted.round",
            &round.to_be_bytes(),
            XattrFlags::Any,
        )
        .unwrap();
        if round % 3 == 0 {
            let _ = s.rename(&bp(&name), &bp("d/renamed"));
        }
        let before = disk.stats();
        disk.crash(&mut DetRng::from_seed(round));
        if exists(&s, &name) != (round % 3 != 0) || exists(&s, "d/renamed") {
            crashes_changed_something += 1;
        }
        assert_eq!(disk.stats().crashes, round + 1);
        assert!(before.pending_meta_ops > 0);
        check_quiescent_after_crash(&disk);
    }
    assert_eq!(read_all(&s, "d/keep"), expected);
    assert!(crashes_changed_something > 0);
}

#[test]
fn crash_leaves_unsynced_writes_absent_whole_or_torn_at_sectors() {
    const SIZE: usize = 16_384;
    const W1: (usize, usize) = (1000, 9000);
    const W2LEN: usize = 3000;
    let a = pattern(SIZE, 0);
    // Differs from `a` at every position, so each byte tells its origin.
    let b: Vec<u8> = a[W1.0..W1.0 + W1.1].iter().map(|x| !x).collect();
    let c: Vec<u8> = pattern(W2LEN, 0x5a).iter().map(|x| x | 1).collect();
    let (mut w1_none, mut w1_torn, mut w1_full, mut w2_torn, mut w2_full) = (0, 0, 0, 0, 0);
    for seed in 0..200u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        write_file(&s, "f", &a);
        s.fsync(&bp("f"), false).unwrap();
        s.write(&bp("f"), W1.0 as u64, &b).unwrap();
        s.write(&bp("f"), SIZE as u64, &c).unwrap();
        assert_eq!(disk.stats().pending_data_ops, 2);
        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);

        let got = read_all(&s, "f");
        assert!(got.len() >= SIZE, "seed {seed}: the synced size is kept");
        assert_eq!(got[..W1.0], a[..W1.0], "seed {seed}");
        let t1 = got[W1.0..W1.0 + W1.1]
            .iter()
            .zip(&b)
            .take_while(|(g, w)| g == w)
            .count();
        assert_eq!(
            got[W1.0 + t1..SIZE],
            a[W1.0 + t1..],
            "seed {seed}: after the new bytes, the old ones"
        );
        assert!(t1 == W1.1 || t1 % 512 == 0, "seed {seed}: torn at {t1}");
        let t2 = got.len() - SIZE;
        assert_eq!(
            got[SIZE..],
            c[..t2],
            "seed {seed}: the extension holds written bytes only"
        );
        assert!(
            t2 == W2LEN || t2 % 512 == 0,
            "seed {seed}: extension torn at {t2}"
        );
        assert!(
            t2 == 0 || t1 == W1.1,
            "seed {seed}: a later write never survives an earlier lost one"
        );
        match t1 {
            0 => w1_none += 1,
            t if t == W1.1 => w1_full += 1,
            _ => w1_torn += 1,
        }
        match t2 {
            0 => {}
            t if t == W2LEN => w2_full += 1,
            _ => w2_torn += 1,
        }
    }
    for (what, n) in [
        ("absent", w1_none),
        ("torn", w1_torn),
        ("whole", w1_full),
        ("extension torn", w2_torn),
        ("extension whole", w2_full),
    ] {
        assert!(n > 5, "outcome {what} seen {n} times in 200");
    }
}

/// A punched hole is a data operation like a write: gone or whole after a
/// crash unless fsynced (never torn), frees its pages, and clears latent
/// errors in its range.
#[test]
fn punched_holes_survive_crashes_whole_or_not_at_all() {
    const SIZE: usize = 64 << 10;
    let a = pattern(SIZE, 0x11)
        .iter()
        .map(|x| x | 1)
        .collect::<Vec<u8>>();
    let (mut kept, mut lost) = (0, 0);
    for seed in 0..60u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        write_file(&s, "f", &a);
        s.fsync(&bp("f"), false).unwrap();
        s.punch_hole(&bp("f"), 8192, 16_384).unwrap();
        assert_eq!(
            s.lstat(&bp("f")).unwrap().blocks,
            (SIZE as u64 - 16_384) / 512
        );
        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);
        let got = read_all(&s, "f");
        assert_eq!(
            got.len(),
            SIZE,
            "seed {seed}: a hole never changes the size"
        );
        if got == a {
            lost += 1;
        } else {
            let mut want = a.clone();
            want[8192..24_576].fill(0);
            assert_eq!(got, want, "seed {seed}: the hole is whole");
            kept += 1;
        }
    }
    assert!(kept > 5 && lost > 5, "kept {kept}, lost {lost} in 60");

    let disk = SimDisk::new(3);
    let s = disk.storage("b").unwrap();
    write_file(&s, "f", &a);
    disk.add_latent_error("b/f", 4096, 100).unwrap();
    assert_eq!(s.read(&bp("f"), 4096, 1), Err(Errno::EIO));
    s.punch_hole(&bp("f"), 4096, 4096).unwrap();
    assert_eq!(s.read(&bp("f"), 4096, 100).unwrap().to_vec(), vec![0; 100]);
}

#[test]
fn crash_keeps_creates_made_durable_by_a_directory_fsync() {
    let (mut kept, mut lost) = (0, 0);
    for seed in 0..60u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        s.mkdir(&bp("d"), 0o755).unwrap();
        s.create(&bp("d/durable"), 0o644).unwrap();
        s.fsync(&bp("d"), false).unwrap();
        s.create(&bp("d/maybe"), 0o644).unwrap();
        s.write(&bp("d/maybe"), 0, b"unsynced").unwrap();
        s.mkdir(&bp("d/maybe-dir"), 0o755).unwrap();
        s.create(&bp("d/maybe-dir/inner"), 0o644).unwrap();
        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);
        assert!(exists(&s, "d/durable"), "seed {seed}");
        if exists(&s, "d/maybe") {
            kept += 1;
            let data = read_all(&s, "d/maybe");
            assert!(
                data.is_empty() || data == b"unsynced",
                "seed {seed}: {data:?}"
            );
        } else {
            lost += 1;
            assert!(
                !exists(&s, "d/maybe-dir"),
                "seed {seed}: journal order is kept"
            );
        }
    }
    assert!(kept > 0 && lost > 0, "kept {kept}, lost {lost}");

    // fsync of a file commits the journal too, its creation included.
    let disk = SimDisk::new(3);
    let s = disk.storage("").unwrap();
    write_file(&s, "f", b"synced");
    s.fsync(&bp("f"), true).unwrap();
    disk.crash(&mut DetRng::from_seed(3));
    assert_eq!(read_all(&s, "f"), b"synced");
}

#[test]
fn crash_can_bring_back_an_unsynced_unlink_with_its_data() {
    let (mut back, mut gone) = (0, 0);
    for seed in 0..40u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        write_file(&s, "f", b"durable");
        s.fsync(&bp("f"), false).unwrap();
        s.write(&bp("f"), 0, b"DUR").unwrap();
        s.unlink(&bp("f")).unwrap();
        assert_eq!(disk.stats().data_bytes, 0);
        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);
        if exists(&s, "f") {
            back += 1;
            let data = read_all(&s, "f");
            assert!(
                data == b"durable" || data == b"DURable",
                "seed {seed}: {data:?}"
            );
        } else {
            gone += 1;
            assert!(
                disk.lock().files.is_empty(),
                "the data of a freed inode is dropped"
            );
        }
    }
    assert!(back > 0 && gone > 0, "back {back}, gone {gone}");
}

#[test]
fn crash_makes_a_cross_directory_rename_all_or_nothing() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..100u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        s.mkdir(&bp("a"), 0o755).unwrap();
        s.mkdir(&bp("b"), 0o755).unwrap();
        write_file(&s, "a/f", b"moving");
        write_file(&s, "a/g", b"new");
        write_file(&s, "b/g", b"old");
        for p in ["a/f", "a/g", "b/g", "a", "b"] {
            s.fsync(&bp(p), false).unwrap();
        }
        // Other journal entries around the renames, so the cut falls
        // before, between and after them.
        s.setxattr(&bp("a"), "trusted.x", b"1", XattrFlags::Any)
            .unwrap();
        s.rename(&bp("a/f"), &bp("b/f")).unwrap();
        s.create(&bp("a/between"), 0o644).unwrap();
        s.rename(&bp("a/g"), &bp("b/g")).unwrap();
        s.create(&bp("b/after"), 0o644).unwrap();
        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);

        let (in_a, in_b) = (exists(&s, "a/f"), exists(&s, "b/f"));
        assert!(in_a != in_b, "seed {seed}: in a {in_a}, in b {in_b}");
        let moved = if in_a { "a/f" } else { "b/f" };
        assert_eq!(read_all(&s, moved), b"moving", "seed {seed}");
        // The replacing rename: either both old names or the new file
        // under the old name, never a missing `b/g`.
        let second = match (exists(&s, "a/g"), read_all(&s, "b/g").as_slice()) {
            (true, b"old") => false,
            (false, b"new") => true,
            (a, g) => panic!("seed {seed}: a/g exists {a}, b/g holds {g:?}"),
        };
        assert!(!second || in_b, "seed {seed}: journal order is kept");
        assert_eq!(
            s.readdir(&bp("b"))
                .unwrap()
                .iter()
                .filter(|e| e.name == "g")
                .count(),
            1
        );
        outcomes.insert((in_b, second));
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[test]
fn lost_xattr_updates_are_visible_then_gone_after_a_crash() {
    for seed in 0..10u64 {
        let disk = SimDisk::new(seed);
        let s = disk.storage("").unwrap();
        write_file(&s, "f", b"");
        let f = bp("f");
        s.setxattr(&f, "trusted.k", b"v1", XattrFlags::Any).unwrap();
        s.setxattr(&f, "trusted.gone", b"g", XattrFlags::Any)
            .unwrap();
        s.fsync(&f, false).unwrap();

        disk.set_faults(SimFaults {
            lose_xattr_updates: 3,
            ..SimFaults::default()
        });
        s.setxattr(&f, "trusted.k", b"v2", XattrFlags::Any).unwrap();
        s.removexattr(&f, "trusted.gone").unwrap();
        s.setxattr(&f, "trusted.new", b"n", XattrFlags::Any)
            .unwrap();
        assert_eq!(disk.faults().lose_xattr_updates, 0);
        // The fourth update is an ordinary one.
        s.setxattr(&f, "trusted.kept", b"y", XattrFlags::Any)
            .unwrap();
        assert_eq!(s.getxattr(&f, "trusted.k").unwrap(), b"v2");
        assert_eq!(s.getxattr(&f, "trusted.gone"), Err(Errno::ENODATA));
        assert_eq!(s.getxattr(&f, "trusted.new").unwrap(), b"n");
        s.fsync(&f, false).unwrap();
        s.fsync(&BrickPath::root(), false).unwrap();
        assert_eq!(
            s.getxattr(&f, "trusted.k").unwrap(),
            b"v2",
            "still visible before the crash"
        );

        disk.crash(&mut DetRng::from_seed(seed));
        check_quiescent_after_crash(&disk);
        assert_eq!(s.getxattr(&f, "trusted.k").unwrap(), b"v1", "seed {seed}");
        assert_eq!(s.getxattr(&f, "trusted.gone").unwrap(), b"g", "seed {seed}");
        assert_eq!(
            s.getxattr(&f, "trusted.new"),
            Err(Errno::ENODATA),
            "seed {seed}"
        );
        assert_eq!(s.getxattr(&f, "trusted.kept").unwrap(), b"y", "seed {seed}");
    }
}

#[test]
fn read_and_write_errors_are_injected() {
    let (disk, s) = fresh();
    write_file(&s, "f", b"contents");
    let f = bp("f");
    disk.set_faults(SimFaults {
        read_eio: 1.0,
        ..SimFaults::default()
    });
    assert_eq!(s.read(&f, 0, 8), Err(Errno::EIO));
    assert!(s.lstat(&f).is_ok(), "metadata reads are not data reads");
    disk.set_faults(SimFaults {
        write_eio: 1.0,
        ..SimFaults::default()
    });
    assert_eq!(s.write(&f, 0, b"XXXX"), Err(Errno::EIO));
    assert_eq!(s.truncate(&f, 2), Err(Errno::EIO));
    assert_eq!(s.write(&f, 100, b"grow"), Err(Errno::EIO));
    assert_eq!(
        read_all(&s, "f"),
        b"contents",
        "a failed write changes nothing"
    );
    assert_eq!(disk.stats().data_bytes, 8);

    disk.set_faults(SimFaults {
        read_eio: 0.5,
        write_eio: 0.5,
        ..SimFaults::default()
    });
    let reads: Vec<bool> = (0..100).map(|_| s.read(&f, 0, 8).is_ok()).collect();
    let writes: Vec<bool> = (0..100).map(|_| s.write(&f, 0, b"c").is_ok()).collect();
    assert!(reads.iter().any(|ok| *ok) && reads.iter().any(|ok| !*ok));
    assert!(writes.iter().any(|ok| *ok) && writes.iter().any(|ok| !*ok));
    check_consistent(&disk);
}

#[test]
fn capacity_gives_enospc() {
    let (disk, s) = fresh();
    disk.set_faults(SimFaults {
        capacity_bytes: Some(10_000),
        ..SimFaults::default()
    });
    let f = bp("f");
    write_file(&s, "f", &[1; 8000]);
    assert_eq!(s.write(&f, 8000, &[2; 3000]), Err(Errno::ENOSPC));
    assert_eq!(s.lstat(&f).unwrap().size, 8000);
    s.write(&f, 0, &[3; 8000]).unwrap();
    assert_eq!(s.truncate(&f, 20_000), Err(Errno::ENOSPC));
    s.truncate(&f, 10_000).unwrap();
    assert_eq!(s.create(&bp("g"), 0o644), Err(Errno::ENOSPC));
    assert_eq!(s.mkdir(&bp("d"), 0o755), Err(Errno::ENOSPC));
    assert_eq!(s.symlink("t", &bp("l")), Err(Errno::ENOSPC));
    assert_eq!(
        s.create(&f, 0o644),
        Err(Errno::EEXIST),
        "EEXIST before ENOSPC"
    );
    let fs = s.statfs().unwrap();
    assert_eq!((fs.blocks, fs.blocks_free), (2, 0));
    s.truncate(&f, 5000).unwrap();
    s.create(&bp("g"), 0o644).unwrap();
    s.write(&bp("g"), 0, &[4; 5000]).unwrap();
    assert_eq!(s.write(&bp("g"), 5000, b"x"), Err(Errno::ENOSPC));
    s.unlink(&f).unwrap();
    s.write(&bp("g"), 5000, b"x").unwrap();
    assert_eq!(disk.stats().data_bytes, 5001);
    check_consistent(&disk);
}

#[test]
fn latent_errors_fail_overlapping_reads_until_rewritten() {
    let disk = SimDisk::new(2);
    let s = disk.storage("bricks/b1").unwrap();
    write_file(&s, "f", &[9; 10_000]);
    let f = bp("f");
    disk.add_latent_error("bricks/b1/f", 4096, 100).unwrap();
    assert_eq!(disk.add_latent_error("bricks/b1", 0, 1), Err(Errno::EISDIR));
    assert_eq!(
        disk.add_latent_error("bricks/b1/nope", 0, 1),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        disk.add_latent_error("bricks/b1/f", u64::MAX, 2),
        Err(Errno::EINVAL)
    );

    assert_eq!(s.read(&f, 0, 4096).unwrap().len(), 4096);
    assert_eq!(s.read(&f, 4196, 1000).unwrap().len(), 1000);
    assert_eq!(s.read(&f, 4000, 200), Err(Errno::EIO));
    assert_eq!(s.read(&f, 4195, 1), Err(Errno::EIO));
    assert_eq!(s.read(&f, 0, 20_000), Err(Errno::EIO));
    // Survives a crash: it is the medium's, not the cache's.
    s.fsync(&f, false).unwrap();
    disk.crash(&mut DetRng::from_seed(1));
    assert_eq!(s.read(&f, 4096, 1), Err(Errno::EIO));

    // Rewriting part of the range heals only that part.
    s.write(&f, 4096, &[1; 50]).unwrap();
    assert_eq!(s.read(&f, 4096, 50).unwrap().len(), 50);
    assert_eq!(s.read(&f, 4100, 100), Err(Errno::EIO));
    s.write(&f, 4146, &[2; 50]).unwrap();
    let all = read_all(&s, "f");
    assert_eq!(all.len(), 10_000);
    assert_eq!((all[4096], all[4146], all[4196]), (1, 2, 9));

    // Truncating the range away clears it too.
    disk.add_latent_error("bricks/b1/f", 9000, 500).unwrap();
    assert_eq!(s.read(&f, 8999, 2), Err(Errno::EIO));
    s.truncate(&f, 9000).unwrap();
    s.truncate(&f, 10_000).unwrap();
    assert_eq!(s.read(&f, 8999, 2).unwrap().to_vec(), vec![9, 0]);
}

#[test]
fn views_are_isolated_and_durable() {
    let disk = SimDisk::new(4);
    let whole = disk.storage("").unwrap();
    let b1 = disk.storage("bricks/b1").unwrap();
    let b2 = disk.storage("bricks/b2").unwrap();
    assert_eq!(b1.describe(), "simdisk:/bricks/b1");
    write_file(&b1, "x", b"one");
    write_file(&b2, "x", b"two");
    assert_eq!(read_all(&b1, "x"), b"one");
    assert_eq!(read_all(&b2, "x"), b"two");
    assert_eq!(read_all(&whole, "bricks/b1/x"), b"one");
    assert!(
        !exists(&b1, "bricks"),
        "paths are relative to the view's root"
    );
    assert_eq!(b1.rmdir(&BrickPath::root()), Err(Errno::EINVAL));
    assert_eq!(b1.rename(&BrickPath::root(), &bp("y")), Err(Errno::EINVAL));
    assert_eq!(b1.readdir(&BrickPath::root()).unwrap().len(), 1);

    // The view roots were made durably; nothing else was synced.
    disk.crash(&mut DetRng::from_seed(0));
    assert!(b1.lstat(&BrickPath::root()).is_ok() && b2.lstat(&BrickPath::root()).is_ok());
    assert!(b1.statfs().is_ok());
    // Opening an existing view again creates nothing.
    let again = disk.storage("bricks/b1").unwrap();
    assert_eq!(disk.stats().pending_meta_ops, 0);
    assert_eq!(
        again.lstat(&BrickPath::root()).unwrap().ino,
        b1.lstat(&BrickPath::root()).unwrap().ino
    );

    // A view whose root went away fails, and roots are never followed
    // through symlinks or files.
    let _ = b2.unlink(&bp("x"));
    whole.rmdir(&bp("bricks/b2")).unwrap();
    assert_eq!(b2.lstat(&BrickPath::root()), Err(Errno::ENOENT));
    assert_eq!(b2.create(&bp("y"), 0o644), Err(Errno::ENOENT));
    assert_eq!(b2.statfs(), Err(Errno::ENOENT));
    whole.symlink("bricks", &bp("ln")).unwrap();
    assert!(matches!(disk.storage("ln/b1"), Err(Errno::ELOOP)));
    write_file(&whole, "file", b"");
    assert!(matches!(disk.storage("file/b"), Err(Errno::ENOTDIR)));
    assert!(matches!(disk.storage("/abs"), Err(Errno::EINVAL)));
    check_consistent(&disk);
}

#[test]
fn random_workload_with_crashes_keeps_the_tree_consistent() {
    let disk = SimDisk::new(11);
    let s = disk.storage("").unwrap();
    let mut rng = DetRng::from_seed(23);
    let names = [
        "a", "b", "c", "d/a", "d/b", "d/e/a", "e", "d/e", "d", "d/e/b",
    ];
    let mut ok = 0;
    for step in 0..3000u32 {
        let p = bp(names[rng.below(names.len() as u64) as usize]);
        let q = bp(names[rng.below(names.len() as u64) as usize]);
        let r = match rng.below(12) {
            0 => s.mkdir(&p, 0o755),
            1 | 2 => s.create(&p, 0o644),
            3 => s.unlink(&p),
            4 => s.rmdir(&p),
            5 | 6 => s.rename(&p, &q),
            7 => s.link(&p, &q),
            8 => s.symlink("d", &p),
            9 => s.write(&p, rng.below(10_000), &[step as u8; 700]),
            10 => s.truncate(&p, rng.below(10_000)),
            _ => s.fsync(&p, false),
        };
        ok += r.is_ok() as u32;
        if step % 100 == 99 {
            check_consistent(&disk);
            disk.crash(&mut DetRng::from_seed(u64::from(step)));
            check_quiescent_after_crash(&disk);
        }
    }
    assert!(
        ok > 300,
        "the workload must mostly do things: {ok} succeeded"
    );
}

#[test]
fn one_seed_gives_one_history() {
    /// Every call's result, then what survived the crash.
    struct History {
        results: Vec<SResult<()>>,
        listing: SResult<Vec<DirEntry>>,
        contents: Vec<SResult<Bytes>>,
    }
    let run = |seed: u64| -> History {
        let disk = SimDisk::new(seed);
        let s = disk.storage("b").unwrap();
        disk.set_faults(SimFaults {
            write_eio: 0.3,
            ..SimFaults::default()
        });
        let mut results = Vec::new();
        for i in 0..50u8 {
            let p = bp(&format!("f{}", i % 7));
            results.push(s.create(&p, 0o644));
            results.push(s.write(&p, u64::from(i) * 100, &[i; 1500]));
            if i % 5 == 0 {
                results.push(s.fsync(&p, false));
            }
        }
        disk.crash(&mut DetRng::from_seed(seed ^ 0xfeed));
        History {
            results,
            listing: s.readdir(&BrickPath::root()),
            contents: (0..7)
                .map(|i| s.read(&bp(&format!("f{i}")), 0, 1 << 20))
                .collect(),
        }
    };
    let (a, b, c) = (run(8), run(8), run(9));
    assert_eq!(
        (&a.results, &a.listing, &a.contents),
        (&b.results, &b.listing, &b.contents)
    );
    assert_ne!((&a.results, &a.contents), (&c.results, &c.contents));
    assert!(a.results.iter().any(|r| r.is_err()) && a.results.iter().any(|r| r.is_ok()));
}

#[test]
fn pending_queues_are_bounded() {
    let (disk, s) = fresh();
    write_file(&s, "f", b"");
    s.fsync(&bp("f"), false).unwrap();
    for i in 0..5000u64 {
        s.write(&bp("f"), i, &[1]).unwrap();
    }
    let st = disk.stats();
    assert_eq!(st.pending_data_ops, PENDING_DATA_OPS_MAX as u64);
    assert_eq!(
        st.pending_meta_ops, 1,
        "one file's writes share one journal entry"
    );
    disk.crash(&mut DetRng::from_seed(0));
    let size = s.lstat(&bp("f")).unwrap().size;
    assert!(
        size >= 5000 - PENDING_DATA_OPS_MAX as u64,
        "written back early: {size}"
    );

    // Bytes bound too: one big write is written back at once.
    s.write(&bp("f"), 0, &vec![2; (PENDING_DATA_BYTES_MAX + 1) as usize])
        .unwrap();
    assert_eq!(disk.stats().pending_data_ops, 0);
    s.truncate(&bp("f"), 0).unwrap();
    s.fsync(&bp("f"), false).unwrap();

    for i in 0..(META_LOG_OPS_MAX as u32 + 10) {
        s.set_mode(&bp("f"), 0o600 | (i & 0o77)).unwrap();
    }
    assert!(disk.stats().pending_meta_ops <= META_LOG_OPS_MAX as u64);
    assert!(
        disk.stats().pending_meta_ops < 100,
        "the journal was committed on its own"
    );
}

#[test]
fn sim_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimDisk>();
    assert_send_sync::<SimStorage>();
    let _: Box<dyn Storage> = Box::new(fresh().1);
}
