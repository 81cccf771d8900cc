//! One suite, every backend: each test body is generic over `Storage` and
//! runs on a real directory (POSIX backend, this machine's filesystem) and
//! on the simulated disk. A difference between the two is a bug in one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use mortar_node::brick::{Brick, BrickConfig};
use mortar_node::storage::posix::PosixStorage;
use mortar_node::storage::sim::SimDisk;
use mortar_node::storage::{BrickPath, Storage};
use mortar_proto::brick::xattr as xa;
use mortar_proto::brick::{self as bp, CounterDelta, NewObject, XattrFlags};
use mortar_proto::{Errno, FileKind, Gfid, Timespec};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn posix() -> (PosixStorage, Scratch) {
    let dir = std::env::temp_dir().join(format!(
        "mortar-conformance-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (PosixStorage::open(&dir).unwrap(), Scratch(dir))
}

fn sim() -> mortar_node::storage::sim::SimStorage {
    SimDisk::new(42).storage("bricks/b1").unwrap()
}

/// Instantiate generic test bodies for both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod posix_backend {
            $(#[test] fn $name() { let (s, _keep) = super::posix(); super::$name(s); })*
        }
        mod sim_backend {
            $(#[test] fn $name() { super::$name(super::sim()); })*
        }
    };
}

conformance!(
    namespace_and_errnos,
    symlinks_are_never_followed,
    rename_semantics,
    data_holes_and_truncate,
    xattrs_on_every_kind,
    attributes_change,
    brick_entry_operations,
    brick_handles_survive_renames,
    brick_directory_rename_and_deep_trees,
    brick_readdir_pages,
    brick_hostile_input,
    brick_xattr_rules,
    brick_xattrop_and_heal_index,
    brick_links_and_unlink_of_last_name,
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

fn p(s: &str) -> BrickPath {
    BrickPath::new(s).unwrap()
}

fn namespace_and_errnos<S: Storage>(s: S) {
    s.mkdir(&p("d"), 0o755).unwrap();
    assert_eq!(s.mkdir(&p("d"), 0o755), Err(Errno::EEXIST));
    s.create(&p("d/f"), 0o644).unwrap();
    assert_eq!(s.create(&p("d/f"), 0o644), Err(Errno::EEXIST));
    assert_eq!(s.create(&p("nope/f"), 0o644), Err(Errno::ENOENT));
    assert_eq!(s.create(&p("d/f/x"), 0o644), Err(Errno::ENOTDIR));
    assert_eq!(s.lstat(&p("d/missing")), Err(Errno::ENOENT));
    s.mkfifo(&p("d/fifo"), 0o600).unwrap();
    assert_eq!(s.lstat(&p("d/fifo")).unwrap().kind, FileKind::Fifo);
    assert_eq!(s.unlink(&p("d")), Err(Errno::EISDIR));
    assert_eq!(s.rmdir(&p("d/f")), Err(Errno::ENOTDIR));
    assert_eq!(s.rmdir(&p("d")), Err(Errno::ENOTEMPTY));
    assert_eq!(s.link(&p("d"), &p("dl")), Err(Errno::EPERM));
    s.link(&p("d/f"), &p("d/g")).unwrap();
    assert_eq!(s.lstat(&p("d/f")).unwrap().nlink, 2);
    assert_eq!(
        s.lstat(&p("d/f")).unwrap().ino,
        s.lstat(&p("d/g")).unwrap().ino
    );
    assert_eq!(s.link(&p("d/f"), &p("d/g")), Err(Errno::EEXIST));
    let mut names: Vec<String> = s
        .readdir(&p("d"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["f", "fifo", "g"]);
    for n in ["f", "g", "fifo"] {
        s.unlink(&p(&format!("d/{n}"))).unwrap();
    }
    s.rmdir(&p("d")).unwrap();
    assert_eq!(s.lstat(&p("d")), Err(Errno::ENOENT));
    assert_eq!(
        s.lstat(&BrickPath::root()).unwrap().kind,
        FileKind::Directory
    );
    let fs = s.statfs().unwrap();
    assert!(
        fs.block_size > 0 && fs.blocks > 0 && fs.name_max >= 255,
        "{fs:?}"
    );
}

fn symlinks_are_never_followed<S: Storage>(s: S) {
    s.mkdir(&p("real"), 0o755).unwrap();
    s.create(&p("real/file"), 0o644).unwrap();
    // A link to a directory inside the brick, and one leading outside.
    s.symlink("real", &p("inside")).unwrap();
    s.symlink("/etc", &p("outside")).unwrap();
    s.symlink("../../../../../../etc", &p("dotdot")).unwrap();
    for l in ["inside", "outside", "dotdot"] {
        assert_eq!(s.lstat(&p(l)).unwrap().kind, FileKind::Symlink);
        assert_eq!(s.lstat(&p(&format!("{l}/file"))), Err(Errno::ELOOP), "{l}");
        assert_eq!(
            s.create(&p(&format!("{l}/new")), 0o644),
            Err(Errno::ELOOP),
            "{l}"
        );
        assert_eq!(
            s.readdir(&p(l)).map(|_| ()),
            Err(Errno::ELOOP),
            "readdir {l}"
        );
        assert_eq!(s.read(&p(l), 0, 10).map(|_| ()), Err(Errno::EINVAL), "{l}");
        assert_eq!(s.write(&p(l), 0, b"x"), Err(Errno::EINVAL), "{l}");
    }
    assert_eq!(s.readlink(&p("outside")).unwrap(), "/etc");
    assert_eq!(s.readlink(&p("real")), Err(Errno::EINVAL));
    // Removing the link removes the link, not what it points at.
    s.unlink(&p("inside")).unwrap();
    assert!(s.lstat(&p("real/file")).is_ok());
}

fn rename_semantics<S: Storage>(s: S) {
    s.mkdir(&p("a"), 0o755).unwrap();
    s.mkdir(&p("b"), 0o755).unwrap();
    s.create(&p("a/f"), 0o644).unwrap();
    s.write(&p("a/f"), 0, b"hello").unwrap();
    s.rename(&p("a/f"), &p("b/g")).unwrap();
    assert_eq!(s.lstat(&p("a/f")), Err(Errno::ENOENT));
    assert_eq!(&s.read(&p("b/g"), 0, 100).unwrap()[..], b"hello");
    // Replace a file.
    s.create(&p("a/h"), 0o644).unwrap();
    s.rename(&p("b/g"), &p("a/h")).unwrap();
    assert_eq!(&s.read(&p("a/h"), 0, 100).unwrap()[..], b"hello");
    // Kind mismatches and non-empty targets.
    s.mkdir(&p("b/d"), 0o755).unwrap();
    assert_eq!(s.rename(&p("a/h"), &p("b/d")), Err(Errno::EISDIR));
    s.create(&p("b/f2"), 0o644).unwrap();
    assert_eq!(s.rename(&p("b/d"), &p("b/f2")), Err(Errno::ENOTDIR));
    s.mkdir(&p("b/full"), 0o755).unwrap();
    s.create(&p("b/full/x"), 0o644).unwrap();
    assert_eq!(s.rename(&p("b/d"), &p("b/full")), Err(Errno::ENOTEMPTY));
    // A directory into its own subtree.
    assert_eq!(s.rename(&p("b"), &p("b/d/inside")), Err(Errno::EINVAL));
    // Directory over an empty directory.
    s.mkdir(&p("empty"), 0o755).unwrap();
    s.rename(&p("b/d"), &p("empty")).unwrap();
    assert_eq!(s.lstat(&p("empty")).unwrap().kind, FileKind::Directory);
    // Onto another name of the same file: nothing happens.
    s.link(&p("a/h"), &p("a/h2")).unwrap();
    s.rename(&p("a/h"), &p("a/h2")).unwrap();
    assert!(s.lstat(&p("a/h")).is_ok() && s.lstat(&p("a/h2")).is_ok());
}

fn data_holes_and_truncate<S: Storage>(s: S) {
    s.create(&p("f"), 0o644).unwrap();
    s.write(&p("f"), 10, b"abc").unwrap();
    let d = s.read(&p("f"), 0, 100).unwrap();
    assert_eq!(&d[..], b"\0\0\0\0\0\0\0\0\0\0abc");
    assert_eq!(s.lstat(&p("f")).unwrap().size, 13);
    assert!(s.read(&p("f"), 13, 10).unwrap().is_empty());
    assert!(s.read(&p("f"), 1 << 40, 10).unwrap().is_empty());
    s.truncate(&p("f"), 5).unwrap();
    assert_eq!(s.read(&p("f"), 0, 100).unwrap().len(), 5);
    s.truncate(&p("f"), 1 << 20).unwrap();
    assert_eq!(s.lstat(&p("f")).unwrap().size, 1 << 20);
    assert!(s.read(&p("f"), 1000, 10).unwrap().iter().all(|b| *b == 0));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    s.write(&p("f"), 4096, &big).unwrap();
    assert_eq!(&s.read(&p("f"), 4096, big.len()).unwrap()[..], &big[..]);
    s.fsync(&p("f"), false).unwrap();
    s.fsync(&p("f"), true).unwrap();
    s.fsync(&BrickPath::root(), false).unwrap();
    s.mkdir(&p("d"), 0o755).unwrap();
    assert_eq!(s.read(&p("d"), 0, 1).map(|_| ()), Err(Errno::EISDIR));
    assert_eq!(s.write(&p("d"), 0, b"x"), Err(Errno::EISDIR));
    s.mkfifo(&p("q"), 0o600).unwrap();
    assert_eq!(s.read(&p("q"), 0, 1).map(|_| ()), Err(Errno::EINVAL));
}

fn xattrs_on_every_kind<S: Storage>(s: S) {
    s.create(&p("f"), 0o644).unwrap();
    s.mkdir(&p("d"), 0o755).unwrap();
    s.symlink("f", &p("l")).unwrap();
    s.mkfifo(&p("q"), 0o600).unwrap();
    for (i, obj) in ["f", "d", "l", "q", ""].iter().enumerate() {
        let path = p(obj);
        let name = "trusted.mortar.test";
        assert_eq!(s.getxattr(&path, name), Err(Errno::ENODATA), "{obj:?}");
        s.setxattr(&path, name, &[i as u8; 3], XattrFlags::Create)
            .unwrap();
        assert_eq!(
            s.setxattr(&path, name, b"x", XattrFlags::Create),
            Err(Errno::EEXIST)
        );
        assert_eq!(s.getxattr(&path, name).unwrap(), vec![i as u8; 3]);
        s.setxattr(&path, name, b"yz", XattrFlags::Replace).unwrap();
        assert_eq!(s.getxattr(&path, name).unwrap(), b"yz");
        assert!(s.listxattr(&path).unwrap().contains(&name.to_string()));
        s.removexattr(&path, name).unwrap();
        assert_eq!(s.removexattr(&path, name), Err(Errno::ENODATA));
        assert_eq!(
            s.setxattr(&path, name, b"x", XattrFlags::Replace),
            Err(Errno::ENODATA)
        );
    }
    // The symlink's xattrs are its own, not its target's.
    s.setxattr(&p("l"), "trusted.mortar.own", b"1", XattrFlags::Any)
        .unwrap();
    assert_eq!(
        s.getxattr(&p("f"), "trusted.mortar.own"),
        Err(Errno::ENODATA)
    );
    s.setxattr(&p("f"), "user.note", b"hi", XattrFlags::Any)
        .unwrap();
    assert_eq!(s.getxattr(&p("f"), "user.note").unwrap(), b"hi");
}

fn attributes_change<S: Storage>(s: S) {
    s.create(&p("f"), 0o600).unwrap();
    s.set_mode(&p("f"), 0o640).unwrap();
    assert_eq!(s.lstat(&p("f")).unwrap().mode, 0o640);
    s.set_owner(&p("f"), 1234, 5678).unwrap();
    let st = s.lstat(&p("f")).unwrap();
    assert_eq!((st.uid, st.gid), (1234, 5678));
    let t = Timespec {
        secs: 1_000_000_000,
        nsecs: 5,
    };
    s.set_times(&p("f"), Some(t), Some(t)).unwrap();
    let st = s.lstat(&p("f")).unwrap();
    assert_eq!((st.atime, st.mtime), (t, t));
    s.set_times(&p("f"), None, Some(Timespec { secs: 7, nsecs: 0 }))
        .unwrap();
    let st = s.lstat(&p("f")).unwrap();
    assert_eq!((st.atime, st.mtime.secs), (t, 7));
    s.symlink("f", &p("l")).unwrap();
    assert_eq!(s.set_mode(&p("l"), 0o600), Err(Errno::EOPNOTSUPP));
    s.set_owner(&p("l"), 1, 1).unwrap();
    assert_eq!(
        s.lstat(&p("f")).unwrap().uid,
        1234,
        "chown followed a symlink"
    );
}

// ---- the brick on each backend ------------------------------------------

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
    assert!(err.contains("belongs to volume \"vol-a\""), "{err}");
}
