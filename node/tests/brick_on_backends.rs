//! The brick on every backend: each test body is generic over `Storage`
//! and runs on a real directory (POSIX backend) and on the simulated disk,
//! as the storage conformance suite (`storage/tests/conformance.rs`) does
//! for the backends themselves. A difference between the two is a bug in
//! a backend that the brick's use of it exposes.

use mortar_node::brick::{block_checksum, Brick, BrickConfig, INDEX_KEPT_MAX};
use mortar_proto::brick::xattr as xa;
use mortar_proto::brick::{self as bp, CounterDelta, NewObject, XattrFlags};
use mortar_proto::{Errno, FileKind, Gfid};
use mortar_storage::posix::PosixStorage;
use mortar_storage::sim::SimDisk;
use mortar_storage::{BrickPath, Storage};

use mortar_storage::testing::posix;

mortar_storage::both_backends!(
    brick_entry_operations,
    brick_handles_survive_renames,
    brick_directory_rename_and_deep_trees,
    brick_readdir_pages,
    brick_hostile_input,
    brick_xattr_rules,
    brick_xattrop_and_heal_index,
    brick_links_and_unlink_of_last_name,
    brick_block_checksums,
    brick_discard_punches_holes,
    brick_reads_many_xattrs_at_once,
    brick_says_the_kinds_of_many_gfids,
    brick_reads_the_xattrs_of_many_files_at_once,
    brick_reads_and_makes_a_file_whole,
    brick_applies_many_xattrops_at_once,
    brick_keeps_clean_index_entries_for_the_next_write,
);

#[test]
fn posix_brick_refuses_another_volume() {
    let (s, keep) = posix();
    drop(Brick::init(s, BrickConfig::new("vol-a")).unwrap());
    let reopen = || PosixStorage::open(&keep.0).unwrap();
    refuses_another_volume(reopen);
}

#[test]
fn sim_brick_refuses_another_volume() {
    let disk = SimDisk::new(7);
    drop(Brick::init(disk.storage("b").unwrap(), BrickConfig::new("vol-a")).unwrap());
    refuses_another_volume(|| disk.storage("b").unwrap());
}

fn brick<S: Storage>(s: S) -> Brick<S> {
    Brick::init(s, BrickConfig::new("vol-test")).unwrap()
}

fn g(n: u128) -> Gfid {
    Gfid::from_u128(0x1000 + n)
}

fn obj(n: u128) -> NewObject {
    NewObject {
        gfid: g(n),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

fn create<S: Storage>(b: &Brick<S>, parent: Gfid, name: &str, n: u128) -> mortar_proto::Attr {
    b.create(&bp::Create {
        parent,
        name: name.into(),
        new: obj(n),
    })
    .unwrap()
}

fn mkdir<S: Storage>(b: &Brick<S>, parent: Gfid, name: &str, n: u128) -> mortar_proto::Attr {
    b.mkdir(&bp::Mkdir {
        parent,
        name: name.into(),
        new: NewObject {
            mode: 0o755,
            ..obj(n)
        },
    })
    .unwrap()
}

fn write<S: Storage>(b: &Brick<S>, gfid: Gfid, offset: u64, data: &[u8]) {
    b.write(&bp::Write { gfid, offset }, data).unwrap();
}

fn read<S: Storage>(b: &Brick<S>, gfid: Gfid) -> Vec<u8> {
    b.read(&bp::Read {
        gfid,
        offset: 0,
        len: 1 << 20,
    })
    .unwrap()
    .to_vec()
}

fn brick_entry_operations<S: Storage>(s: S) {
    let b = brick(s);
    let a = create(&b, Gfid::ROOT, "file", 1);
    assert_eq!(
        (a.gfid, a.kind, a.nlink, a.mode),
        (g(1), FileKind::Regular, 1, 0o644)
    );
    let l = b.lookup(&Gfid::ROOT, "file").unwrap();
    assert_eq!(l.gfid, g(1));
    assert_eq!(b.stat(&g(1)).unwrap().gfid, g(1));
    let e = b
        .create(&bp::Create {
            parent: Gfid::ROOT,
            name: "file".into(),
            new: obj(2),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
    // The same gfid under another name is refused: gfids are unique.
    let e = b
        .create(&bp::Create {
            parent: Gfid::ROOT,
            name: "other".into(),
            new: obj(1),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
    let d = mkdir(&b, Gfid::ROOT, "dir", 3);
    assert_eq!(d.kind, FileKind::Directory);
    b.mknod(&bp::Mknod {
        parent: g(3),
        name: "fifo".into(),
        new: obj(4),
    })
    .unwrap();
    let sl = b
        .symlink(&bp::Symlink {
            parent: g(3),
            name: "link".into(),
            target: "../file".into(),
            new: obj(5),
        })
        .unwrap();
    assert_eq!(sl.kind, FileKind::Symlink);
    assert_eq!(b.readlink(&g(5)).unwrap(), "../file");
    assert_eq!(b.readlink(&g(1)).unwrap_err().errno, Errno::EINVAL);
    write(&b, g(1), 0, b"data");
    assert_eq!(read(&b, g(1)), b"data");
    let t = b
        .truncate(&bp::Truncate {
            gfid: g(1),
            size: 2,
        })
        .unwrap();
    assert_eq!(t.size, 2);
    let sa = b
        .setattr(&bp::Setattr {
            gfid: g(1),
            mode: Some(0o600),
            uid: Some(42),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((sa.mode, sa.uid), (0o600, 42));
    b.fsync(&bp::Fsync {
        gfid: g(1),
        datasync: false,
    })
    .unwrap();
    assert_eq!(
        b.open(&bp::Open {
            gfid: g(3),
            write: true
        })
        .unwrap_err()
        .errno,
        Errno::EISDIR
    );
    assert_eq!(
        b.open(&bp::Open {
            gfid: g(5),
            write: false
        })
        .unwrap_err()
        .errno,
        Errno::ELOOP
    );
    b.open(&bp::Open {
        gfid: g(1),
        write: true,
    })
    .unwrap();
    assert_eq!(
        b.rmdir(&bp::Rmdir {
            parent: Gfid::ROOT,
            name: "dir".into()
        })
        .unwrap_err()
        .errno,
        Errno::ENOTEMPTY
    );
    b.unlink(&bp::Unlink {
        parent: g(3),
        name: "fifo".into(),
    })
    .unwrap();
    b.unlink(&bp::Unlink {
        parent: g(3),
        name: "link".into(),
    })
    .unwrap();
    b.rmdir(&bp::Rmdir {
        parent: Gfid::ROOT,
        name: "dir".into(),
    })
    .unwrap();
    assert_eq!(b.stat(&g(3)).unwrap_err().errno, Errno::ESTALE);
    assert_eq!(b.stat(&g(4)).unwrap_err().errno, Errno::ESTALE);
    assert!(b.statfs().unwrap().blocks > 0);
    // The reserved directory is invisible and untouchable.
    let names: Vec<String> = b
        .readdir(&bp::Readdir {
            dir: Gfid::ROOT,
            after: None,
            max_entries: 100,
        })
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["file"]);
}

fn brick_handles_survive_renames<S: Storage>(s: S) {
    let b = brick(s);
    mkdir(&b, Gfid::ROOT, "a", 10);
    mkdir(&b, Gfid::ROOT, "b", 11);
    create(&b, g(10), "f", 12);
    write(&b, g(12), 0, b"before");
    b.rename(&bp::Rename {
        old_parent: g(10),
        old_name: "f".into(),
        new_parent: g(11),
        new_name: "renamed".into(),
    })
    .unwrap();
    // By gfid, the file is where it always was.
    write(&b, g(12), 6, b"+after");
    assert_eq!(read(&b, g(12)), b"before+after");
    assert_eq!(b.lookup(&g(11), "renamed").unwrap().gfid, g(12));
    assert_eq!(b.lookup(&g(10), "f").unwrap_err().errno, Errno::ENOENT);
    // Renaming over another file releases the replaced file's gfid.
    create(&b, g(10), "victim", 13);
    b.rename(&bp::Rename {
        old_parent: g(11),
        old_name: "renamed".into(),
        new_parent: g(10),
        new_name: "victim".into(),
    })
    .unwrap();
    assert_eq!(b.stat(&g(13)).unwrap_err().errno, Errno::ESTALE);
    assert_eq!(b.lookup(&g(10), "victim").unwrap().gfid, g(12));
}

fn brick_directory_rename_and_deep_trees<S: Storage>(s: S) {
    let b = brick(s);
    // A chain 60 directories deep: deeper than the kernel would follow
    // symlinks, which is why directory handles are resolved by the brick.
    let mut parent = Gfid::ROOT;
    for i in 0..60 {
        mkdir(&b, parent, &format!("d{i}"), 100 + i);
        parent = g(100 + i);
    }
    create(&b, parent, "leaf", 500);
    write(&b, g(500), 0, b"deep");
    assert_eq!(b.resolve_dir(&g(159)).unwrap().components().count(), 60);
    // Move a subtree: every directory below keeps resolving.
    mkdir(&b, Gfid::ROOT, "elsewhere", 600);
    b.rename(&bp::Rename {
        old_parent: g(110),
        old_name: "d11".into(),
        new_parent: g(600),
        new_name: "moved".into(),
    })
    .unwrap();
    let p = b.resolve_dir(&g(159)).unwrap();
    assert!(p.as_str().starts_with("elsewhere/moved/d12/"), "{p}");
    assert_eq!(b.lookup(&g(159), "leaf").unwrap().gfid, g(500));
    assert_eq!(read(&b, g(500)), b"deep");
    assert_eq!(
        b.readdir(&bp::Readdir {
            dir: g(110),
            after: None,
            max_entries: 10
        })
        .unwrap()
        .entries
        .len(),
        0
    );
}

fn brick_readdir_pages<S: Storage>(s: S) {
    let b = brick(s);
    mkdir(&b, Gfid::ROOT, "big", 1);
    for i in 0..250u128 {
        create(&b, g(1), &format!("f{i:04}"), 1000 + i);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = b
            .readdir(&bp::Readdir {
                dir: g(1),
                after: after.clone(),
                max_entries: 64,
            })
            .unwrap();
        assert!(page.entries.len() <= 64);
        for e in &page.entries {
            assert_eq!(e.attr.kind, FileKind::Regular);
            seen.push(e.name.clone());
        }
        after = page.entries.last().map(|e| e.name.clone());
        if page.eof {
            break;
        }
    }
    let want: Vec<String> = (0..250).map(|i| format!("f{i:04}")).collect();
    assert_eq!(seen, want);
}

fn brick_hostile_input<S: Storage>(s: S) {
    let b = brick(s);
    mkdir(&b, Gfid::ROOT, "d", 1);
    for (name, errno) in [
        ("a/b", Errno::EINVAL),
        ("..", Errno::EINVAL),
        (".", Errno::EINVAL),
        ("", Errno::EINVAL),
        ("x\0y", Errno::EINVAL),
        (&*"n".repeat(256), Errno::ENAMETOOLONG),
    ] {
        let e = b
            .create(&bp::Create {
                parent: g(1),
                name: name.into(),
                new: obj(50),
            })
            .unwrap_err();
        assert_eq!(e.errno, errno, "create {name:?}");
        assert_eq!(
            b.lookup(&g(1), name).unwrap_err().errno,
            errno,
            "lookup {name:?}"
        );
    }
    for op in ["lookup", "create", "mkdir"] {
        let e = match op {
            "lookup" => b.lookup(&Gfid::ROOT, ".mortar").unwrap_err(),
            "create" => b
                .create(&bp::Create {
                    parent: Gfid::ROOT,
                    name: ".mortar".into(),
                    new: obj(51),
                })
                .unwrap_err(),
            _ => b
                .mkdir(&bp::Mkdir {
                    parent: Gfid::ROOT,
                    name: ".mortar".into(),
                    new: obj(51),
                })
                .unwrap_err(),
        };
        assert_eq!(e.errno, Errno::EACCES, "{op} .mortar");
    }
    // Unknown and null gfids.
    assert_eq!(b.stat(&g(999)).unwrap_err().errno, Errno::ESTALE);
    assert_eq!(b.stat(&Gfid::NULL).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(b.lookup(&g(999), "x").unwrap_err().errno, Errno::ESTALE);
    // A file used as a directory.
    create(&b, g(1), "f", 2);
    assert_eq!(b.lookup(&g(2), "x").unwrap_err().errno, Errno::ENOTDIR);
    // Symlinks pointing anywhere are stored verbatim and never followed.
    b.symlink(&bp::Symlink {
        parent: g(1),
        name: "escape".into(),
        target: "../../../../etc/passwd".into(),
        new: obj(3),
    })
    .unwrap();
    assert_eq!(
        b.read(&bp::Read {
            gfid: g(3),
            offset: 0,
            len: 10
        })
        .unwrap_err()
        .errno,
        Errno::EINVAL
    );
    assert_eq!(b.lookup(&g(3), "x").unwrap_err().errno, Errno::ENOTDIR);
    let e = b
        .symlink(&bp::Symlink {
            parent: g(1),
            name: "long".into(),
            target: "t".repeat(5000),
            new: obj(4),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENAMETOOLONG);
    // Oversized I/O.
    let e = b
        .read(&bp::Read {
            gfid: g(2),
            offset: 0,
            len: 1 << 40,
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    assert!(b
        .read(&bp::Read {
            gfid: g(2),
            offset: u64::MAX - 5,
            len: 100
        })
        .unwrap()
        .is_empty());
    let e = b
        .write(
            &bp::Write {
                gfid: g(2),
                offset: u64::MAX - 2,
            },
            b"abc",
        )
        .unwrap_err();
    assert_eq!(e.errno, Errno::EFBIG);
    let e = b
        .write(
            &bp::Write {
                gfid: g(2),
                offset: 1 << 44,
            },
            b"a",
        )
        .unwrap_err();
    assert_eq!(e.errno, Errno::EFBIG);
    let e = b
        .truncate(&bp::Truncate {
            gfid: g(2),
            size: u64::MAX,
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EFBIG);
    // Hard links to directories, renames of the reserved directory.
    let e = b
        .link(&bp::Link {
            gfid: g(1),
            new_parent: Gfid::ROOT,
            new_name: "dl".into(),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EPERM);
    let e = b
        .rename(&bp::Rename {
            old_parent: Gfid::ROOT,
            old_name: ".mortar".into(),
            new_parent: g(1),
            new_name: "m".into(),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EACCES);
}

/// `GetxattrMany`: values in the order asked, absent names as `None`,
/// the same namespace rules as one getxattr, and a bound on the names.
fn brick_reads_many_xattrs_at_once<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    b.setxattr(&bp::Setxattr {
        gfid: g(1),
        name: "user.a".into(),
        value: b"1".to_vec(),
        flags: XattrFlags::Any,
    })
    .unwrap();
    let many = |names: &[&str]| {
        b.getxattr_many(&bp::GetxattrMany {
            gfid: g(1),
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    };
    assert_eq!(
        many(&["user.missing", "user.a", xa::DIRTY]).unwrap(),
        vec![None, Some(b"1".to_vec()), None]
    );
    assert_eq!(many(&[]).unwrap(), Vec::<Option<Vec<u8>>>::new());
    assert_eq!(
        many(&["user.a", "security.selinux"]).unwrap_err().errno,
        Errno::EOPNOTSUPP,
        "one name outside the stored namespaces refuses the request"
    );
    let too_many: Vec<String> = (0..=bp::GETXATTR_NAMES_MAX)
        .map(|i| format!("user.n{i}"))
        .collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let e = many(&refs).unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    assert!(e.to_string().contains("at most"), "{e}");
    let e = b
        .getxattr_many(&bp::GetxattrMany {
            gfid: g(77),
            names: vec!["user.a".into()],
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::ESTALE, "an unknown gfid: {e}");
}

/// `GetxattrFiles`: per file in the order asked, `None` for one the brick
/// does not hold, else each name's value (`None` where absent); the
/// namespace rules of one getxattr; bounds on files and names.
fn brick_reads_the_xattrs_of_many_files_at_once<S: Storage>(s: S) {
    let b = brick(s);
    mkdir(&b, Gfid::ROOT, "d", 1);
    create(&b, g(1), "f", 2);
    for (gfid, v) in [(g(1), b"dir"), (g(2), b"one")] {
        b.setxattr(&bp::Setxattr {
            gfid,
            name: "user.a".into(),
            value: v.to_vec(),
            flags: XattrFlags::Any,
        })
        .unwrap();
    }
    let files = |gfids: Vec<Gfid>, names: &[&str]| {
        b.getxattr_files(&bp::GetxattrFiles {
            gfids,
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    };
    assert_eq!(
        files(vec![g(2), g(77), g(1)], &["user.a", xa::DIRTY]).unwrap(),
        vec![
            Some(vec![Some(b"one".to_vec()), None]),
            None,
            Some(vec![Some(b"dir".to_vec()), None]),
        ]
    );
    assert_eq!(files(Vec::new(), &["user.a"]).unwrap(), Vec::new());
    assert_eq!(
        files(vec![g(2)], &["security.selinux"]).unwrap_err().errno,
        Errno::EOPNOTSUPP,
        "a name outside the stored namespaces refuses the request"
    );
    let e = files(vec![g(2); bp::GETXATTR_FILES_MAX + 1], &["user.a"]).unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    assert!(e.to_string().contains("at most"), "{e}");
    let names: Vec<String> = (0..=bp::GETXATTR_NAMES_MAX)
        .map(|i| format!("user.n{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(files(vec![g(2)], &refs).unwrap_err().errno, Errno::EINVAL);
}

/// `GfidKinds`: each gfid's kind in the order asked (a directory found
/// through its parent links, a file through its handle), `None` for a
/// gfid the brick does not hold or no longer holds, and a bound.
fn brick_says_the_kinds_of_many_gfids<S: Storage>(s: S) {
    let b = brick(s);
    mkdir(&b, Gfid::ROOT, "d", 1);
    create(&b, g(1), "f", 2);
    create(&b, g(1), "gone", 3);
    b.unlink(&bp::Unlink {
        parent: g(1),
        name: "gone".into(),
    })
    .unwrap();
    let kinds = |gfids: Vec<Gfid>| b.gfid_kinds(&bp::GfidKinds { gfids });
    assert_eq!(
        kinds(vec![g(2), g(77), g(1), Gfid::ROOT, g(3)]).unwrap(),
        vec![
            Some(FileKind::Regular),
            None,
            Some(FileKind::Directory),
            Some(FileKind::Directory),
            None
        ]
    );
    assert_eq!(kinds(Vec::new()).unwrap(), Vec::<Option<FileKind>>::new());
    let e = kinds(vec![g(2); bp::GFID_KINDS_MAX + 1]).unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    assert!(e.to_string().contains("at most"), "{e}");
    assert_eq!(
        kinds(vec![g(2), Gfid([0; 16])]).unwrap_err().errno,
        Errno::EINVAL,
        "a null gfid refuses the request"
    );
}

fn brick_xattr_rules<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    let set = |name: &str, value: &[u8]| {
        b.setxattr(&bp::Setxattr {
            gfid: g(1),
            name: name.into(),
            value: value.to_vec(),
            flags: XattrFlags::Any,
        })
    };
    set("user.color", b"blue").unwrap();
    set("trusted.mortar.dht", b"layout").unwrap();
    assert_eq!(
        b.getxattr(&bp::Getxattr {
            gfid: g(1),
            name: "user.color".into()
        })
        .unwrap(),
        b"blue"
    );
    assert_eq!(
        b.getxattr(&bp::Getxattr {
            gfid: g(1),
            name: xa::GFID.into()
        })
        .unwrap(),
        g(1).0
    );
    for (name, errno) in [
        (xa::GFID, Errno::EPERM),
        (xa::VOLUME_ID, Errno::EPERM),
        ("trusted.mortar.changelog.vol-client-0", Errno::EPERM),
        (xa::DIRTY, Errno::EPERM),
        ("security.selinux", Errno::EOPNOTSUPP),
        ("trusted.other", Errno::EOPNOTSUPP),
        ("system.posix_acl_access", Errno::EOPNOTSUPP),
    ] {
        assert_eq!(set(name, b"x").unwrap_err().errno, errno, "{name}");
    }
    assert_eq!(
        set(&format!("user.{}", "x".repeat(300)), b"x")
            .unwrap_err()
            .errno,
        Errno::ERANGE
    );
    assert_eq!(
        set("user.big", &vec![0u8; 70_000]).unwrap_err().errno,
        Errno::ERANGE
    );
    let e = b
        .removexattr(&bp::Removexattr {
            gfid: g(1),
            name: xa::GFID.into(),
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EPERM);
    b.removexattr(&bp::Removexattr {
        gfid: g(1),
        name: "user.color".into(),
    })
    .unwrap();
    let names = b.listxattr(&g(1)).unwrap();
    assert!(
        names.contains(&xa::GFID.to_string()) && names.contains(&"trusted.mortar.dht".to_string())
    );
    assert!(!names.contains(&"user.color".to_string()));
}

fn changelog(n: &str) -> String {
    format!("{}{n}", xa::CHANGELOG_PREFIX)
}

fn brick_xattrop_and_heal_index<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    create(&b, Gfid::ROOT, "g", 2);
    let op = |gfid: Gfid, deltas: Vec<(String, CounterDelta)>| {
        b.xattrop(&bp::Xattrop {
            gfid,
            deltas,
            durable: true,
        })
    };
    assert_eq!(b.index_count().unwrap(), 0);
    // Pre-op: raise data counters for two bricks.
    let r = op(
        g(1),
        vec![
            (changelog("c0"), CounterDelta::Add32(vec![1, 0, 0])),
            (changelog("c1"), CounterDelta::Add32(vec![1, 0, 0])),
        ],
    )
    .unwrap();
    assert_eq!(r[0].1, CounterDelta::Add32(vec![1, 0, 0]));
    assert_eq!(b.index_count().unwrap(), 1);
    // The entry is a hard link to the index base: no inode of its own.
    let base = BrickPath::new(".mortar/index-base").unwrap();
    let entry = BrickPath::new(&format!(".mortar/index/{}", g(1).to_hex())).unwrap();
    let (bs, es) = (
        b.storage().lstat(&base).unwrap(),
        b.storage().lstat(&entry).unwrap(),
    );
    assert_eq!((bs.ino, bs.nlink), (es.ino, 2), "{bs:?} {es:?}");
    // Post-op lowers c0 only: c1 still blames, the file stays pending.
    op(
        g(1),
        vec![(changelog("c0"), CounterDelta::Add32(vec![-1, 0, 0]))],
    )
    .unwrap();
    assert_eq!(
        b.index_list(&bp::IndexList {
            after: None,
            max_entries: 10
        })
        .unwrap()
        .gfids,
        vec![g(1)]
    );
    // A non-changelog counter does not enter the index.
    op(
        g(2),
        vec![(
            "trusted.mortar.ec.version".into(),
            CounterDelta::Add64(vec![5, 5]),
        )],
    )
    .unwrap();
    let r = op(
        g(2),
        vec![(
            "trusted.mortar.ec.version".into(),
            CounterDelta::Add64(vec![1, 0]),
        )],
    )
    .unwrap();
    assert_eq!(r[0].1, CounterDelta::Add64(vec![6, 5]));
    assert_eq!(b.index_count().unwrap(), 1);
    // Clearing the last non-zero counter leaves the index.
    op(
        g(1),
        vec![(changelog("c1"), CounterDelta::Add32(vec![-1, 0, 0]))],
    )
    .unwrap();
    assert_eq!(b.index_count().unwrap(), 0);
    // The dirty marker counts too; so does a directory.
    mkdir(&b, Gfid::ROOT, "d", 3);
    op(
        g(3),
        vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![0, 0, 1]))],
    )
    .unwrap();
    assert_eq!(
        b.index_list(&bp::IndexList {
            after: None,
            max_entries: 10
        })
        .unwrap()
        .gfids,
        vec![g(3)]
    );
    // The operation gives the width (as in the original system); a stored
    // value that is not a whole number of that width is refused.
    op(
        g(2),
        vec![(
            "trusted.mortar.odd".into(),
            CounterDelta::Add32(vec![1, 2, 3]),
        )],
    )
    .unwrap();
    assert_eq!(
        op(
            g(2),
            vec![("trusted.mortar.odd".into(), CounterDelta::Add64(vec![1]))]
        )
        .unwrap_err()
        .errno,
        Errno::EINVAL
    );
    // Overflow and bad keys are refused.
    assert_eq!(
        op(
            g(2),
            vec![(
                "trusted.mortar.ec.version".into(),
                CounterDelta::Add64(vec![i64::MAX])
            )]
        )
        .unwrap_err()
        .errno,
        Errno::ERANGE
    );
    assert_eq!(
        op(g(2), vec![(xa::GFID.into(), CounterDelta::Add32(vec![1]))])
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
    assert_eq!(
        op(g(2), vec![("user.x".into(), CounterDelta::Add32(vec![1]))])
            .unwrap_err()
            .errno,
        Errno::EPERM
    );
    assert_eq!(op(g(2), vec![]).unwrap_err().errno, Errno::EINVAL);
    let dup = vec![
        (changelog("c0"), CounterDelta::Add32(vec![1])),
        (changelog("c0"), CounterDelta::Add32(vec![1])),
    ];
    assert_eq!(op(g(2), dup).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(
        b.index_count().unwrap(),
        1,
        "failed xattrops must not touch the index"
    );
    // Deleting a pending file drops it from the index.
    op(
        g(2),
        vec![(changelog("c0"), CounterDelta::Add32(vec![1, 0, 0]))],
    )
    .unwrap();
    assert_eq!(b.index_count().unwrap(), 2);
    b.unlink(&bp::Unlink {
        parent: Gfid::ROOT,
        name: "g".into(),
    })
    .unwrap();
    assert_eq!(b.index_count().unwrap(), 1);
    // Without the index base (an older brick's tree), an entry is a file
    // of its own.
    b.storage()
        .unlink(&BrickPath::new(".mortar/index-base").unwrap())
        .unwrap();
    create(&b, Gfid::ROOT, "h", 4);
    op(
        g(4),
        vec![(changelog("c0"), CounterDelta::Add32(vec![1, 0, 0]))],
    )
    .unwrap();
    assert_eq!(b.index_count().unwrap(), 2);
    let entry = BrickPath::new(&format!(".mortar/index/{}", g(4).to_hex())).unwrap();
    assert_eq!(b.storage().lstat(&entry).unwrap().nlink, 1);
}

fn brick_links_and_unlink_of_last_name<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    write(&b, g(1), 0, b"shared");
    let a = b
        .link(&bp::Link {
            gfid: g(1),
            new_parent: Gfid::ROOT,
            new_name: "f2".into(),
        })
        .unwrap();
    assert_eq!(a.nlink, 2, "the handle link is not counted");
    b.unlink(&bp::Unlink {
        parent: Gfid::ROOT,
        name: "f".into(),
    })
    .unwrap();
    assert_eq!(read(&b, g(1)), b"shared", "the other name keeps the file");
    assert_eq!(b.stat(&g(1)).unwrap().nlink, 1);
    b.unlink(&bp::Unlink {
        parent: Gfid::ROOT,
        name: "f2".into(),
    })
    .unwrap();
    assert_eq!(b.stat(&g(1)).unwrap_err().errno, Errno::ESTALE);
    // The gfid is free again for a new object.
    create(&b, Gfid::ROOT, "again", 1);
}

fn refuses_another_volume<S: Storage>(open: impl Fn() -> S) {
    Brick::init(open(), BrickConfig::new("vol-a")).expect("same volume reopens");
    let err = Brick::init(open(), BrickConfig::new("vol-b"))
        .err()
        .expect("another volume is refused");
    let err = err.to_string();
    assert!(err.contains("belongs to volume \"vol-a\""), "{err}");
}

fn sums<S: Storage>(
    b: &Brick<S>,
    gfid: Gfid,
    offset: u64,
    len: u64,
    block: u64,
) -> bp::RchecksumReply {
    b.rchecksum(&bp::Rchecksum {
        gfid,
        offset,
        len,
        block_size: block,
    })
    .unwrap()
}

/// Block checksums over ranges, holes and the end of the file; the bounds
/// of one request; refusals of what is not a regular file.
fn brick_block_checksums<S: Storage>(s: S) {
    const B: u64 = bp::HEAL_BLOCK_BYTES;
    let b = brick(s);
    let f = create(&b, Gfid::ROOT, "f", 1).gfid;
    // Block 0 data, block 1 a hole, block 2 data, then 100 bytes of data
    // in a short last block.
    let data: Vec<u8> = (0..B as u32).map(|i| (i % 253) as u8 + 1).collect();
    write(&b, f, 0, &data);
    write(&b, f, 2 * B, &data);
    write(&b, f, 3 * B, &data[..100]);
    let size = 3 * B + 100;

    let r = sums(&b, f, 0, 4 * B, B);
    assert_eq!(r.size, size);
    let lens: Vec<u64> = r.blocks.iter().map(|c| c.len).collect();
    assert_eq!(lens, [B, B, B, 100]);
    let zero: Vec<bool> = r.blocks.iter().map(|c| c.zero).collect();
    assert_eq!(zero, [false, true, false, false]);
    assert_eq!(r.blocks[0], r.blocks[2], "same bytes, same checksum");
    assert_eq!(r.blocks[0], block_checksum(&data));
    assert_eq!(r.blocks[1], block_checksum(&vec![0; B as usize]));
    assert_eq!(r.blocks[3], block_checksum(&data[..100]));

    // A range starting mid-file, with blocks of another size.
    let r = sums(&b, f, B / 2, B, B / 4);
    assert_eq!(r.blocks.len(), 4);
    assert_eq!(
        r.blocks[0],
        block_checksum(&data[(B / 2) as usize..(3 * B / 4) as usize])
    );
    assert!(r.blocks[2].zero && r.blocks[3].zero);
    // Past the end of the file: fewer blocks, or none.
    assert_eq!(sums(&b, f, 3 * B, 2 * B, B).blocks.len(), 1);
    let past = sums(&b, f, 5 * B, B, B);
    assert_eq!((past.size, past.blocks.len()), (size, 0));
    assert!(sums(&b, f, 0, 0, B).blocks.is_empty());

    // One change in one block changes only that block's checksum.
    let before = sums(&b, f, 0, 4 * B, B).blocks;
    write(&b, f, 2 * B + 777, b"x");
    let after = sums(&b, f, 0, 4 * B, B).blocks;
    let changed: Vec<usize> = (0..4).filter(|&i| before[i] != after[i]).collect();
    assert_eq!(changed, [2]);

    // The bounds of one request, and what is not a regular file.
    let q = |offset: u64, len: u64, block_size: u64| bp::Rchecksum {
        gfid: f,
        offset,
        len,
        block_size,
    };
    let max = bp::RCHECKSUM_BLOCKS_MAX;
    assert_eq!(sums(&b, f, 0, max * B, B).blocks.len(), 4);
    for bad in [
        q(0, B, 0),
        q(0, B, bp::IO_BYTES_MAX + 1),
        q(0, bp::IO_BYTES_MAX + 1, bp::IO_BYTES_MAX),
        q(0, (max + 1) * 4096, 4096),
        q(u64::MAX - 10, B, B),
    ] {
        assert_eq!(
            b.rchecksum(&bad).unwrap_err().errno,
            Errno::EINVAL,
            "{bad:?}"
        );
    }
    let d = mkdir(&b, Gfid::ROOT, "d", 2).gfid;
    let e = b
        .rchecksum(&bp::Rchecksum {
            gfid: d,
            ..q(0, B, B)
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EISDIR);
    let e = b
        .rchecksum(&bp::Rchecksum {
            gfid: g(99),
            ..q(0, B, B)
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::ESTALE);
}

/// Discard makes a range zeros and frees its blocks; the size stays.
fn brick_discard_punches_holes<S: Storage>(s: S) {
    const B: u64 = bp::HEAL_BLOCK_BYTES;
    let b = brick(s);
    let f = create(&b, Gfid::ROOT, "f", 1).gfid;
    write(&b, f, 0, &vec![7u8; 4 * B as usize]);
    b.fsync(&bp::Fsync {
        gfid: f,
        datasync: false,
    })
    .unwrap();
    let st = b.stat(&f).unwrap();
    let d = |offset: u64, len: u64| bp::Discard {
        gfid: f,
        offset,
        len,
    };
    b.discard(&d(B, 2 * B)).unwrap();
    let after = b.stat(&f).unwrap();
    assert_eq!(after.size, 4 * B);
    assert!(
        after.blocks + 2 * B / 512 <= st.blocks,
        "{} -> {}",
        st.blocks,
        after.blocks
    );
    let r = sums(&b, f, 0, 4 * B, B);
    let zero: Vec<bool> = r.blocks.iter().map(|c| c.zero).collect();
    assert_eq!(zero, [false, true, true, false]);
    assert_eq!(b.discard(&d(0, 0)).unwrap_err().errno, Errno::EINVAL);
    assert_eq!(b.discard(&d(u64::MAX, 2)).unwrap_err().errno, Errno::EFBIG);
    let dir = mkdir(&b, Gfid::ROOT, "d", 2).gfid;
    let e = b
        .discard(&bp::Discard {
            gfid: dir,
            ..d(0, 1)
        })
        .unwrap_err();
    assert_eq!(e.errno, Errno::EISDIR);
}

/// `ReadWhole` gives a file's attributes, user xattrs (only those) and,
/// up to `len_max`, its data; `CreateWhole` makes a copy from them with
/// the same data, mode, owner, user xattrs and times, and refuses what
/// it must not carry.
fn brick_reads_and_makes_a_file_whole<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    // A chunk of zeros between data, and zeros at the end.
    let mut data = vec![7u8; 4096];
    data.extend(vec![0u8; 8192]);
    data.extend(vec![9u8; 100]);
    data.extend(vec![0u8; 5000]);
    write(&b, g(1), 0, &data);
    for (name, value) in [("user.b", b"two".to_vec()), ("user.a", b"one".to_vec())] {
        b.setxattr(&bp::Setxattr {
            gfid: g(1),
            name: name.into(),
            value,
            flags: XattrFlags::Any,
        })
        .unwrap();
    }
    b.setxattr(&bp::Setxattr {
        gfid: g(1),
        name: "trusted.mortar.dht".into(),
        value: b"layout".to_vec(),
        flags: XattrFlags::Any,
    })
    .unwrap();
    let when = mortar_proto::Timespec {
        secs: 1_600_000_000,
        nsecs: 5,
    };
    b.setattr(&bp::Setattr {
        gfid: g(1),
        mode: Some(0o640),
        uid: None,
        gid: None,
        atime: Some(when),
        mtime: Some(when),
    })
    .unwrap();
    let read_whole = |gfid, len_max| b.read_whole(&bp::ReadWhole { gfid, len_max });
    let (w, got) = read_whole(g(1), bp::WHOLE_BYTES_MAX).unwrap();
    assert!(w.data);
    assert_eq!(got.to_vec(), data);
    assert_eq!(
        (w.attr.size, w.attr.mode, w.attr.mtime),
        (data.len() as u64, 0o640, when)
    );
    let mut user = w.user_xattrs.clone();
    user.sort();
    assert_eq!(
        user,
        vec![
            ("user.a".into(), b"one".to_vec()),
            ("user.b".into(), b"two".to_vec())
        ],
        "user xattrs only, never the brick's own"
    );
    let (short, none) = read_whole(g(1), 100).unwrap();
    assert!(
        !short.data && none.is_empty(),
        "larger than len_max: no data"
    );
    assert_eq!(short.attr.size, data.len() as u64);
    mkdir(&b, Gfid::ROOT, "d", 2);
    assert!(!read_whole(g(2), bp::WHOLE_BYTES_MAX).unwrap().0.data);
    assert_eq!(read_whole(g(77), 100).unwrap_err().errno, Errno::ESTALE);

    let whole = |name: &str, n: u128, user_xattrs: Vec<(String, Vec<u8>)>, data: &[u8]| {
        b.create_whole(
            &bp::CreateWhole {
                parent: g(2),
                name: name.into(),
                new: NewObject {
                    mode: 0o640,
                    ..obj(n)
                },
                user_xattrs,
                atime: when,
                mtime: when,
                sync_dir: false,
                sync_file: true,
            },
            data,
        )
    };
    whole("copy", 3, w.user_xattrs.clone(), &data).unwrap();
    let a = b.lookup(&g(2), "copy").unwrap();
    assert_eq!(
        (a.gfid, a.kind, a.size, a.mode, a.mtime, a.atime),
        (
            g(3),
            FileKind::Regular,
            data.len() as u64,
            0o640,
            when,
            when
        )
    );
    assert_eq!(read(&b, g(3)), data);
    let (again, _) = read_whole(g(3), bp::WHOLE_BYTES_MAX).unwrap();
    let mut theirs = again.user_xattrs;
    theirs.sort();
    assert_eq!(theirs, user);

    let e = whole("copy", 4, Vec::new(), b"x").unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST, "the name is taken: {e}");
    let e = whole("other", 3, Vec::new(), b"x").unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST, "the gfid is in use: {e}");
    let theirs = vec![("trusted.mortar.dht".to_string(), b"x".to_vec())];
    let e = whole("bad", 5, theirs, b"x").unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL, "only user xattrs travel: {e}");
    let many: Vec<(String, Vec<u8>)> = (0..=bp::WHOLE_XATTRS_MAX)
        .map(|i| (format!("user.n{i}"), Vec::new()))
        .collect();
    assert_eq!(whole("bad", 5, many, b"x").unwrap_err().errno, Errno::E2BIG);
    let big = vec![1u8; bp::WHOLE_BYTES_MAX as usize + 1];
    assert_eq!(
        whole("bad", 5, Vec::new(), &big).unwrap_err().errno,
        Errno::EINVAL
    );
    assert_eq!(
        b.lookup(&g(2), "bad").unwrap_err().errno,
        Errno::ENOENT,
        "a refused copy leaves no name"
    );
    whole("empty", 6, Vec::new(), &[]).unwrap();
    assert_eq!(b.lookup(&g(2), "empty").unwrap().size, 0);
}

/// `XattropMany`: per op its new values or its own error (the others
/// still applied), the index kept as single xattrops keep it, and the
/// bounds (a gfid once per batch, at most `XATTROP_MANY_MAX` ops).
fn brick_applies_many_xattrops_at_once<S: Storage>(s: S) {
    let b = brick(s);
    create(&b, Gfid::ROOT, "f", 1);
    create(&b, Gfid::ROOT, "g", 2);
    let op = |gfid: Gfid, by: i32| bp::Xattrop {
        gfid,
        deltas: vec![(changelog("c0"), CounterDelta::Add32(vec![by, 0, 0]))],
        durable: false,
    };
    let many = |ops: Vec<bp::Xattrop>| b.xattrop_many(&bp::XattropMany { ops });
    let r = many(vec![op(g(1), 2), op(g(77), 1), op(g(2), 1)]).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap(),
        &vec![(changelog("c0"), CounterDelta::Add32(vec![2, 0, 0]))]
    );
    assert_eq!(
        r[1].as_ref().unwrap_err().errno,
        Errno::ESTALE,
        "an unknown gfid"
    );
    assert!(r[2].is_ok());
    assert_eq!(b.index_count().unwrap(), 2, "both files entered the index");
    let r = many(vec![op(g(1), -2), op(g(2), -1)]).unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_eq!(b.index_count().unwrap(), 0, "cleared files leave it");
    assert!(many(Vec::new()).unwrap().is_empty(), "a barrier");
    let e = many(vec![op(g(1), 1), op(g(1), 1)]).unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL, "a gfid twice: {e}");
    let e = many(vec![op(g(1), 1); bp::XATTROP_MANY_MAX + 1]).unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);
    assert_eq!(
        b.index_count().unwrap(),
        0,
        "a refused batch changes nothing"
    );
}

/// A write's post-op leaves its file's counters clean but keeps the index
/// entry, so the next pre-op finds it in place (no new link); listings pass
/// over it; past `INDEX_KEPT_MAX` kept entries the oldest is removed
/// (`brick_crash.rs` shows a restart pruning the rest).
fn brick_keeps_clean_index_entries_for_the_next_write<S: Storage>(s: S) {
    let b = brick(s);
    let entry = |n: u128| BrickPath::new(&format!(".mortar/index/{}", g(n).to_hex())).unwrap();
    let on_disk = |b: &Brick<S>, n: u128| b.storage().lstat(&entry(n)).is_ok();
    let dirty = |b: &Brick<S>, n: u128, by: i32| {
        b.xattrop(&bp::Xattrop {
            gfid: g(n),
            deltas: vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![by, 0, 0]))],
            durable: by > 0,
        })
        .unwrap()
    };
    let files = INDEX_KEPT_MAX as u128 + 1;
    for n in 0..files {
        create(&b, Gfid::ROOT, &format!("f{n}"), n);
    }
    dirty(&b, 0, 1);
    assert_eq!(b.index_count().unwrap(), 1);
    dirty(&b, 0, -1);
    assert!(on_disk(&b, 0), "the clean entry is kept");
    assert_eq!(b.index_count().unwrap(), 0, "and not counted as pending");
    let base = BrickPath::new(".mortar/index-base").unwrap();
    let links = b.storage().lstat(&base).unwrap().nlink;
    // The next write's pre-op: pending again, through the same entry.
    dirty(&b, 0, 1);
    assert_eq!(
        b.storage().lstat(&base).unwrap().nlink,
        links,
        "no new link"
    );
    let listed = b
        .index_list(&bp::IndexList {
            after: None,
            max_entries: 10,
        })
        .unwrap()
        .gfids;
    assert_eq!(listed, vec![g(0)], "pending again, listed again");
    dirty(&b, 0, -1);
    // Every file written once: the oldest kept entry (file 0) goes.
    for n in 1..files {
        dirty(&b, n, 1);
        dirty(&b, n, -1);
    }
    assert!(!on_disk(&b, 0), "let go at the bound: its entry is removed");
    assert!(on_disk(&b, 1) && on_disk(&b, files - 1));
    assert_eq!(b.index_count().unwrap(), 0);
    // A pending file among kept ones is still listed.
    dirty(&b, 7, 1);
    assert_eq!(b.index_count().unwrap(), 1);
    dirty(&b, 7, -1);
    // Unlinking a file removes its kept entry.
    b.unlink(&bp::Unlink {
        parent: Gfid::ROOT,
        name: "f5".into(),
    })
    .unwrap();
    assert!(!on_disk(&b, 5));
}
