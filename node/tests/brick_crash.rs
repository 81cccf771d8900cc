//! Crashes of a brick's host, on the simulated disk, over many seeds.
//!
//! What recovery must survive: data acknowledged after fsync comes back
//! byte-exact; unsynced data may be lost or torn but never reads as bytes
//! that were never written; the pending-heal index agrees with the
//! changelog counters after recovery, and even before recovery every file
//! with a non-zero counter is in the index.

use std::collections::BTreeMap;

use mortar_net::DetRng;
use mortar_node::brick::{Brick, BrickConfig};
use mortar_proto::brick::{self as bp, xattr as xa, CounterDelta, NewObject};
use mortar_proto::Gfid;
use mortar_storage::sim::{SimDisk, SimStorage};

const SEEDS: u64 = 60;

fn open(disk: &std::sync::Arc<SimDisk>) -> Brick<SimStorage> {
    Brick::init(disk.storage("brick").unwrap(), BrickConfig::new("vol")).unwrap()
}

fn gfid(i: u64) -> Gfid {
    Gfid::from_u128(0xabc0_0000 + i as u128)
}

fn new_obj(i: u64) -> NewObject {
    NewObject {
        gfid: gfid(i),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

/// Per file: bytes that were durable (fsynced) and, for every position,
/// the set of values an unsynced write may have left there.
#[derive(Default, Clone)]
struct Model {
    synced: Vec<u8>,
    /// Everything written since the last fsync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Creation made durable (fsync_namespace is on, so: acknowledged).
    exists: bool,
}

#[test]
fn fsynced_data_survives_and_unsynced_data_is_never_garbage() {
    for seed in 0..SEEDS {
        let mut rng = DetRng::from_seed(seed);
        let disk = SimDisk::new(seed);
        let mut model: BTreeMap<u64, Model> = BTreeMap::new();
        for round in 0..4 {
            let b = open(&disk);
            // Every file created and fsynced before a crash is intact.
            for (i, m) in &model {
                check_file(&b, *i, m, seed, round);
            }
            for _ in 0..rng.range_inclusive(5, 25) {
                let i = rng.below(12);
                let m = model.entry(i).or_default();
                if !m.exists {
                    b.create(&bp::Create {
                        parent: mortar_proto::Gfid::ROOT,
                        name: format!("f{i}"),
                        new: new_obj(i),
                    })
                    .unwrap();
                    m.exists = true;
                    continue;
                }
                match rng.below(3) {
                    0 | 1 => {
                        let off = rng.below(20_000);
                        let len = rng.range_inclusive(1, 9_000) as usize;
                        let byte = (rng.below(250) + 1) as u8;
                        let data = vec![byte; len];
                        b.write(
                            &bp::Write {
                                gfid: gfid(i),
                                offset: off,
                            },
                            &data,
                        )
                        .unwrap();
                        m.unsynced.push((off, data));
                    }
                    _ => {
                        b.fsync(&bp::Fsync {
                            gfid: gfid(i),
                            datasync: false,
                        })
                        .unwrap();
                        for (off, data) in std::mem::take(&mut m.unsynced) {
                            apply(&mut m.synced, off, &data);
                        }
                    }
                }
            }
            drop(b);
            disk.crash(&mut rng.fork());
            // After the crash, what survived of unsynced writes is unknown:
            // fold it in as "possible" by reading back and validating.
            let b = open(&disk);
            for (i, m) in model.iter_mut() {
                check_file(&b, *i, m, seed, round);
                // Whatever is there now is the new durable baseline.
                let now = b
                    .read(&bp::Read {
                        gfid: gfid(*i),
                        offset: 0,
                        len: 1 << 20,
                    })
                    .unwrap();
                m.synced = now.to_vec();
                m.unsynced.clear();
            }
        }
    }
}

fn apply(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off as usize..end].copy_from_slice(data);
}

/// Each byte must be the synced value or a value some unsynced write put
/// there (a lost extension reads as zeros or is cut off by the size).
fn check_file(b: &Brick<SimStorage>, i: u64, m: &Model, seed: u64, round: u32) {
    if !m.exists {
        return;
    }
    let got = b
        .read(&bp::Read {
            gfid: gfid(i),
            offset: 0,
            len: 1 << 20,
        })
        .unwrap_or_else(|e| panic!("seed {seed} round {round}: file {i} lost: {e}"));
    let mut max_len = m.synced.len();
    for (off, d) in &m.unsynced {
        max_len = max_len.max(*off as usize + d.len());
    }
    assert!(
        got.len() >= m.synced.len() && got.len() <= max_len,
        "seed {seed} round {round}: file {i} has {} bytes; synced {} max {max_len}",
        got.len(),
        m.synced.len()
    );
    for (pos, byte) in got.iter().enumerate() {
        let synced = m.synced.get(pos).copied().unwrap_or(0);
        let ok = *byte == synced
            || m.unsynced.iter().any(|(off, d)| {
                let off = *off as usize;
                pos >= off && pos < off + d.len() && d[pos - off] == *byte
            });
        assert!(
            ok,
            "seed {seed} round {round}: file {i} byte {pos} is {byte}, never written there"
        );
    }
}

fn changelog_nonzero(b: &Brick<SimStorage>, g: &Gfid) -> bool {
    let names = b.listxattr(g).unwrap();
    names.iter().filter(|n| xa::is_changelog(n)).any(|n| {
        b.getxattr(&bp::Getxattr {
            gfid: *g,
            name: n.clone(),
        })
        .map(|v| v.iter().any(|x| *x != 0))
        .unwrap_or(false)
    })
}

fn indexed(b: &Brick<SimStorage>) -> Vec<Gfid> {
    b.index_list(&bp::IndexList {
        after: None,
        max_entries: 4096,
    })
    .unwrap()
    .gfids
}

#[test]
fn heal_index_agrees_with_counters_after_every_crash() {
    const FILES: u64 = 8;
    for seed in 0..SEEDS {
        let mut rng = DetRng::from_seed(1000 + seed);
        let disk = SimDisk::new(seed);
        {
            let b = open(&disk);
            for i in 0..FILES {
                b.create(&bp::Create {
                    parent: Gfid::ROOT,
                    name: format!("f{i}"),
                    new: new_obj(i),
                })
                .unwrap();
            }
        }
        for round in 0..5 {
            let b = open(&disk);
            let files: Vec<Gfid> = (0..FILES).map(gfid).collect();
            // After recovery the index is exactly the set of files with a
            // non-zero changelog counter.
            let want: Vec<Gfid> = files
                .iter()
                .filter(|g| changelog_nonzero(&b, g))
                .copied()
                .collect();
            assert_eq!(
                indexed(&b),
                want,
                "seed {seed} round {round}: index disagrees after recovery"
            );
            for _ in 0..rng.range_inclusive(5, 40) {
                let g = files[rng.below(FILES) as usize];
                let key = format!("{}client-{}", xa::CHANGELOG_PREFIX, rng.below(3));
                let cur = b
                    .getxattr(&bp::Getxattr {
                        gfid: g,
                        name: key.clone(),
                    })
                    .ok()
                    .and_then(|v| {
                        v.get(0..4)
                            .map(|x| i32::from_be_bytes(x.try_into().unwrap()))
                    })
                    .unwrap_or(0);
                // Raise, or lower back to zero: the pre-op/post-op pattern.
                let delta = if cur > 0 && rng.chance(0.6) { -cur } else { 1 };
                b.xattrop(&bp::Xattrop {
                    gfid: g,
                    deltas: vec![(key, CounterDelta::Add32(vec![delta, 0, 0]))],
                    durable: rng.chance(0.5),
                })
                .unwrap();
                // Live, the index always matches exactly.
                assert_eq!(changelog_nonzero(&b, &g), indexed(&b).contains(&g));
            }
            drop(b);
            disk.crash(&mut rng.fork());
            // Before any recovery runs: non-zero counters imply an index
            // entry (the entry is written first). Read the raw disk.
            let raw = disk.storage("brick").unwrap();
            for g in &files {
                let nonzero = counters_on_disk(&raw, g);
                let entry = mortar_storage::Storage::lstat(
                    &raw,
                    &mortar_storage::BrickPath::new(&format!(".mortar/index/{}", g.to_hex()))
                        .unwrap(),
                )
                .is_ok();
                assert!(
                    !nonzero || entry,
                    "seed {seed} round {round}: {g} has non-zero counters but no index entry after a crash"
                );
            }
        }
    }
}

/// Read a file's changelog counters straight from storage (no brick).
fn counters_on_disk(s: &SimStorage, g: &Gfid) -> bool {
    use mortar_storage::{BrickPath, Storage};
    let h = g.to_hex();
    let p = BrickPath::new(&format!(".mortar/handles/{}/{}/{}", &h[0..2], &h[2..4], h)).unwrap();
    let Ok(names) = s.listxattr(&p) else {
        return false;
    };
    names.iter().filter(|n| xa::is_changelog(n)).any(|n| {
        s.getxattr(&p, n)
            .map(|v| v.iter().any(|x| *x != 0))
            .unwrap_or(false)
    })
}

/// A batch of xattrops made durable by one sync (`XattropMany`), and a
/// copy made whole without its own fsync followed by an empty batch (the
/// heal's barrier), survive any crash that follows: counters, index
/// entries and data as acknowledged. Before it returns, nothing of the
/// batch is promised, but a file with counters is never outside the index.
#[test]
fn a_batch_made_durable_by_one_sync_survives_a_crash() {
    let key = format!("{}vol-client-1", xa::CHANGELOG_PREFIX);
    for seed in 0..SEEDS {
        let disk = SimDisk::new(seed);
        let b = open(&disk);
        for i in 0..8 {
            b.create(&bp::Create {
                parent: Gfid::ROOT,
                name: format!("f{i}"),
                new: new_obj(i),
            })
            .unwrap();
        }
        let raise = |i: u64, by: i32| bp::Xattrop {
            gfid: gfid(i),
            deltas: vec![(key.clone(), CounterDelta::Add32(vec![by, 0, 0]))],
            durable: false,
        };
        // Files 0-3 enter the index; 4-7 are left alone.
        let r = b
            .xattrop_many(&bp::XattropMany {
                ops: (0..4).map(|i| raise(i, 1)).collect(),
            })
            .unwrap();
        assert!(r.iter().all(|x| x.is_ok()), "seed {seed}: {r:?}");
        // Files 0 and 1 are cleared again (they leave the index).
        b.xattrop_many(&bp::XattropMany {
            ops: (0..2).map(|i| raise(i, -1)).collect(),
        })
        .unwrap();
        let data = vec![5u8; 3000];
        b.create_whole(
            &bp::CreateWhole {
                parent: Gfid::ROOT,
                name: "whole".into(),
                new: new_obj(20),
                user_xattrs: Vec::new(),
                atime: mortar_proto::Timespec { secs: 1, nsecs: 0 },
                mtime: mortar_proto::Timespec { secs: 1, nsecs: 0 },
                sync_dir: false,
                sync_file: false,
            },
            &data,
        )
        .unwrap();
        b.xattrop_many(&bp::XattropMany { ops: Vec::new() })
            .unwrap();
        drop(b);
        disk.crash(&mut DetRng::from_seed(seed));
        let b = open(&disk);
        let want: Vec<Gfid> = (2..4).map(gfid).collect();
        assert_eq!(indexed(&b), want, "seed {seed}: the index as acknowledged");
        for i in 0..8 {
            assert_eq!(
                changelog_nonzero(&b, &gfid(i)),
                (2..4).contains(&i),
                "seed {seed}: counters of f{i}"
            );
        }
        let got = b
            .read(&bp::Read {
                gfid: gfid(20),
                offset: 0,
                len: 1 << 20,
            })
            .unwrap();
        assert_eq!(got.to_vec(), data, "seed {seed}: the copy made whole");
        assert_eq!(b.lookup(&Gfid::ROOT, "whole").unwrap().gfid, gfid(20));
    }
}

/// A file whose last name's removal reached the disk while its handle's
/// removal did not (the state a torn unlink or rename-over leaves, made
/// here directly on the disk): recovery drops the handle and its index
/// entry, so no gfid stays in the index that no name can reach. A file
/// with a name, and one with only a hard link left, keep theirs.
#[test]
fn recovery_drops_a_file_no_name_links() {
    let disk = SimDisk::new(7);
    let key = format!("{}client-1", xa::CHANGELOG_PREFIX);
    {
        let b = open(&disk);
        for i in 0..3 {
            b.create(&bp::Create {
                parent: Gfid::ROOT,
                name: format!("f{i}"),
                new: new_obj(i),
            })
            .unwrap();
            b.xattrop(&bp::Xattrop {
                gfid: gfid(i),
                deltas: vec![(key.clone(), CounterDelta::Add32(vec![1, 0, 0]))],
                durable: true,
            })
            .unwrap();
        }
        b.link(&bp::Link {
            gfid: gfid(2),
            new_parent: Gfid::ROOT,
            new_name: "f2-link".into(),
        })
        .unwrap();
        let path = |n: &str| mortar_storage::BrickPath::new(n).unwrap();
        // The torn unlinks: the names go, the handles stay.
        for n in ["f0", "f2"] {
            mortar_storage::Storage::unlink(b.storage(), &path(n)).unwrap();
        }
        mortar_storage::Storage::fsync(b.storage(), &mortar_storage::BrickPath::root(), false)
            .unwrap();
        assert_eq!(indexed(&b), vec![gfid(0), gfid(1), gfid(2)]);
    }
    let b = open(&disk);
    assert_eq!(
        indexed(&b),
        vec![gfid(1), gfid(2)],
        "f0's gfid left the index"
    );
    assert!(b.stat(&gfid(0)).is_err(), "f0's handle is gone");
    assert!(b.stat(&gfid(1)).is_ok(), "f1 has its name");
    assert!(b.stat(&gfid(2)).is_ok(), "f2 still has a hard link");
}

/// The entries a brick kept for files whose counters went clean (their
/// next write finds the entry in place) are removed when it restarts, and
/// by a crash too: recovery prunes every clean entry, so the disk's index
/// holds only pending files again.
#[test]
fn a_restart_prunes_the_kept_clean_index_entries() {
    let disk = SimDisk::new(11);
    let entry = |i: u64| {
        mortar_storage::BrickPath::new(&format!(".mortar/index/{}", gfid(i).to_hex())).unwrap()
    };
    for crash in [false, true] {
        {
            let b = open(&disk);
            for i in 0..3 {
                if !crash {
                    b.create(&bp::Create {
                        parent: Gfid::ROOT,
                        name: format!("f{i}"),
                        new: new_obj(i),
                    })
                    .unwrap();
                }
                for by in [1, -1] {
                    b.xattrop(&bp::Xattrop {
                        gfid: gfid(i),
                        deltas: vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![by, 0, 0]))],
                        durable: true,
                    })
                    .unwrap();
                }
            }
            // File 2 stays pending.
            b.xattrop(&bp::Xattrop {
                gfid: gfid(2),
                deltas: vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![1, 0, 0]))],
                durable: true,
            })
            .unwrap();
            let kept = |i| mortar_storage::Storage::lstat(b.storage(), &entry(i)).is_ok();
            assert!(kept(0) && kept(1), "clean entries are kept while running");
            assert_eq!(indexed(&b), vec![gfid(2)]);
            if crash {
                drop(b);
                disk.crash(&mut DetRng::from_seed(5));
            }
        }
        let b = open(&disk);
        let on_disk = |i| mortar_storage::Storage::lstat(b.storage(), &entry(i)).is_ok();
        assert!(
            !on_disk(0) && !on_disk(1),
            "crash {crash}: clean entries pruned"
        );
        assert!(
            on_disk(2),
            "crash {crash}: the pending file keeps its entry"
        );
        assert_eq!(indexed(&b), vec![gfid(2)]);
        // Leave file 2 clean for the next round.
        b.xattrop(&bp::Xattrop {
            gfid: gfid(2),
            deltas: vec![(xa::DIRTY.into(), CounterDelta::Add32(vec![-1, 0, 0]))],
            durable: true,
        })
        .unwrap();
    }
}
