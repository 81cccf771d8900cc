//! One suite, every backend: each test body is generic over `Storage` and
//! runs on a real directory (POSIX backend, this machine's filesystem) and
//! on the simulated disk. A difference between the two is a bug in one.
//!
//! The brick's own logic on both backends is checked in
//! `node/tests/brick_on_backends.rs`, which instantiates its bodies the same
//! way.

use mortar_proto::brick::XattrFlags;
use mortar_proto::{Errno, FileKind, Timespec};
use mortar_storage::{BrickPath, Storage};

mortar_storage::both_backends!(
    namespace_and_errnos,
    symlinks_are_never_followed,
    rename_semantics,
    data_holes_and_truncate,
    punched_holes_read_as_zeros_and_free_blocks,
    xattrs_on_every_kind,
    attributes_change,
);

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

fn punched_holes_read_as_zeros_and_free_blocks<S: Storage>(s: S) {
    const MIB: u64 = 1 << 20;
    let f = p("f");
    s.create(&f, 0o644).unwrap();
    let data: Vec<u8> = (0..MIB as u32).map(|i| (i % 251) as u8 + 1).collect();
    s.write(&f, 0, &data).unwrap();
    s.fsync(&f, false).unwrap();
    let full = s.lstat(&f).unwrap().blocks;
    assert!(
        full >= MIB / 512,
        "1 MiB written allocates it: {full} blocks"
    );

    // Aligned: the range reads as zeros, its blocks are freed, the size
    // and every other byte stay.
    s.punch_hole(&f, 128 << 10, 256 << 10).unwrap();
    let mut want = data.clone();
    want[128 << 10..384 << 10].fill(0);
    assert_eq!(&s.read(&f, 0, MIB as usize).unwrap()[..], &want[..]);
    let st = s.lstat(&f).unwrap();
    assert_eq!(st.size, MIB);
    assert!(
        st.blocks + (256 << 10) / 512 <= full,
        "256 KiB punched frees 512 blocks: {full} -> {}",
        st.blocks
    );

    // Unaligned, inside one block: only those bytes change.
    s.punch_hole(&f, 1000, 10).unwrap();
    want[1000..1010].fill(0);
    // Up to and past the end of the file: the size stays.
    s.punch_hole(&f, MIB - 4096, MIB).unwrap();
    want[(MIB - 4096) as usize..].fill(0);
    // Wholly past the end: nothing changes.
    s.punch_hole(&f, 2 * MIB, 4096).unwrap();
    assert_eq!(&s.read(&f, 0, 2 * MIB as usize).unwrap()[..], &want[..]);
    assert_eq!(s.lstat(&f).unwrap().size, MIB);
    // Durable like any data change.
    s.fsync(&f, true).unwrap();

    assert_eq!(s.punch_hole(&f, 0, 0), Err(Errno::EINVAL));
    assert_eq!(s.punch_hole(&f, 1 << 63, 1), Err(Errno::EINVAL));
    assert_eq!(s.punch_hole(&f, 1 << 62, 1 << 62), Err(Errno::EFBIG));
    assert_eq!(s.punch_hole(&p("missing"), 0, 1), Err(Errno::ENOENT));
    s.mkdir(&p("d"), 0o755).unwrap();
    assert_eq!(s.punch_hole(&p("d"), 0, 1), Err(Errno::EISDIR));
    s.mkfifo(&p("q"), 0o600).unwrap();
    assert_eq!(s.punch_hole(&p("q"), 0, 1), Err(Errno::EINVAL));
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
