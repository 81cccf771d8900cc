//! The management daemon's persistent state: one JSON file per object
//! under its working directory (default `/var/lib/mortar`), written
//! atomically (temporary file, fsync, rename, fsync of the directory), so
//! a crash leaves either the old or the new version of each object.
//!
//! ```text
//! node.json             this server's uuid
//! peers/<uuid>.json     a peer slot (or its tombstone)
//! volumes/<name>.json   a volume slot (or its tombstone)
//! ```
//!
//! It goes through the brick's [`Storage`] trait, so the same code runs on
//! a real directory and on the simulator's disk with its crash model.

use mortar_proto::Errno;
use mortar_storage::{BrickPath, Storage};
use serde::{Deserialize, Serialize};

use crate::state::{ClusterState, PeerSlot, VolumeSlot};

/// Version of the files' layout; a newer daemon converts older ones.
pub const STORE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeFile {
    format: u32,
    uuid: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ObjectFile<T> {
    format: u32,
    slot: T,
}

pub struct Store<S: Storage> {
    s: S,
}

fn p(s: &str) -> BrickPath {
    BrickPath::new(s).expect("store paths are valid")
}

fn err(what: &str, e: Errno) -> String {
    format!("store: {what}: {e}")
}

/// Object names become file names: keep them to safe characters.
fn file_name(key: &str) -> Result<String, String> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        || key.starts_with('.')
    {
        return Err(format!("store: {key:?} cannot be stored (unsafe name)"));
    }
    Ok(format!("{key}.json"))
}

impl<S: Storage> Store<S> {
    /// Open the store, creating its directories on first use.
    pub fn open(s: S) -> Result<Self, String> {
        for d in ["peers", "volumes"] {
            match s.mkdir(&p(d), 0o700) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err(&format!("create {d}/ in {}", s.describe()), e)),
            }
        }
        s.fsync(&BrickPath::root(), false)
            .map_err(|e| err("fsync working directory", e))?;
        let st = Store { s };
        st.clean_temporaries()?;
        Ok(st)
    }

    fn clean_temporaries(&self) -> Result<(), String> {
        for dir in ["", "peers", "volumes"] {
            let d = p(dir);
            for e in self.s.readdir(&d).map_err(|e| err("list", e))? {
                if e.name.ends_with(".tmp") {
                    let _ = self.s.unlink(&d.join(&e.name).map_err(|e| err("path", e))?);
                }
            }
        }
        Ok(())
    }

    /// Write `bytes` to `dir/name` so that a crash leaves the old or the
    /// new content, never a mix.
    fn write_atomic(&self, dir: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
        let d = p(dir);
        let tmp = d.join(&format!("{name}.tmp")).map_err(|e| err("path", e))?;
        let fin = d.join(name).map_err(|e| err("path", e))?;
        let _ = self.s.unlink(&tmp);
        self.s
            .create(&tmp, 0o600)
            .map_err(|e| err(&format!("create {tmp}"), e))?;
        self.s
            .write(&tmp, 0, bytes)
            .map_err(|e| err(&format!("write {tmp}"), e))?;
        self.s
            .fsync(&tmp, false)
            .map_err(|e| err(&format!("fsync {tmp}"), e))?;
        self.s
            .rename(&tmp, &fin)
            .map_err(|e| err(&format!("rename {tmp}"), e))?;
        self.s
            .fsync(&d, false)
            .map_err(|e| err(&format!("fsync {d}"), e))
    }

    fn read_file(&self, path: &BrickPath) -> Result<Vec<u8>, String> {
        let st = self
            .s
            .lstat(path)
            .map_err(|e| err(&format!("stat {path}"), e))?;
        let data = self
            .s
            .read(path, 0, st.size as usize)
            .map_err(|e| err(&format!("read {path}"), e))?;
        Ok(data.to_vec())
    }

    /// This server's identity, made (with `new_uuid`) on first start.
    pub fn node_uuid(&self, new_uuid: impl FnOnce() -> String) -> Result<String, String> {
        match self.read_file(&p("node.json")) {
            Ok(bytes) => {
                let f: NodeFile = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("store: node.json is damaged ({e}); restore it from a backup or remove it to give this server a new identity"))?;
                Ok(f.uuid)
            }
            Err(_) => {
                let f = NodeFile {
                    format: STORE_FORMAT,
                    uuid: new_uuid(),
                };
                let bytes = serde_json::to_vec_pretty(&f).map_err(|e| format!("store: {e}"))?;
                self.write_atomic("", "node.json", &bytes)?;
                Ok(f.uuid)
            }
        }
    }

    pub fn save_volume(&self, name: &str, slot: &VolumeSlot) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&ObjectFile {
            format: STORE_FORMAT,
            slot,
        })
        .map_err(|e| format!("store: {e}"))?;
        self.write_atomic("volumes", &file_name(name)?, &bytes)
    }

    pub fn save_peer(&self, uuid: &str, slot: &PeerSlot) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&ObjectFile {
            format: STORE_FORMAT,
            slot,
        })
        .map_err(|e| format!("store: {e}"))?;
        self.write_atomic("peers", &file_name(uuid)?, &bytes)
    }

    /// Save every object of `state` whose stored version differs.
    pub fn save_all(&self, state: &ClusterState) -> Result<(), String> {
        let stored = self.load()?;
        for (k, slot) in &state.volumes {
            if stored.volumes.get(k) != Some(slot) {
                self.save_volume(k, slot)?;
            }
        }
        for (k, slot) in &state.peers {
            if stored.peers.get(k) != Some(slot) {
                self.save_peer(k, slot)?;
            }
        }
        Ok(())
    }

    /// Everything stored.
    pub fn load(&self) -> Result<ClusterState, String> {
        let mut state = ClusterState::default();
        for e in self
            .s
            .readdir(&p("volumes"))
            .map_err(|e| err("list volumes", e))?
        {
            let Some(name) = e.name.strip_suffix(".json") else {
                continue;
            };
            let path = p("volumes").join(&e.name).map_err(|e| err("path", e))?;
            let f: ObjectFile<VolumeSlot> = serde_json::from_slice(&self.read_file(&path)?)
                .map_err(|e| format!("store: {path} is damaged ({e}); repair it with 'mortar peer sync' from a healthy peer"))?;
            state.volumes.insert(name.to_string(), f.slot);
        }
        for e in self
            .s
            .readdir(&p("peers"))
            .map_err(|e| err("list peers", e))?
        {
            let Some(uuid) = e.name.strip_suffix(".json") else {
                continue;
            };
            let path = p("peers").join(&e.name).map_err(|e| err("path", e))?;
            let f: ObjectFile<PeerSlot> = serde_json::from_slice(&self.read_file(&path)?)
                .map_err(|e| format!("store: {path} is damaged ({e}); repair it with 'mortar peer sync' from a healthy peer"))?;
            state.peers.insert(uuid.to_string(), f.slot);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Op;
    use crate::volume::{parse_brick, Layout, Transport, Volume, VolumeStatus};
    use mortar_net::DetRng;
    use mortar_storage::sim::SimDisk;
    use std::collections::BTreeMap;

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            id: format!("id-{name}"),
            layout: Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            transport: Transport::Tcp,
            bricks: ["s1:/b", "s2:/b", "s3:/b"]
                .iter()
                .map(|b| parse_brick(b).unwrap())
                .collect(),
            status: VolumeStatus::Created,
            options: BTreeMap::new(),
            version: 0,
            removing: Vec::new(),
        }
    }

    #[test]
    fn state_round_trips_and_node_uuid_is_stable() {
        let disk = SimDisk::new(1);
        let store = Store::open(disk.storage("var/lib/mortar").unwrap()).unwrap();
        assert_eq!(store.node_uuid(|| "u-1".into()).unwrap(), "u-1");
        assert_eq!(store.node_uuid(|| "u-2".into()).unwrap(), "u-1");
        let mut s = ClusterState::default();
        s.apply(&Op::CreateVolume(vol("v1"))).unwrap();
        s.apply(&Op::CreateVolume(vol("v2"))).unwrap();
        s.apply(&Op::DeleteVolume { name: "v2".into() }).unwrap();
        store.save_all(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        assert!(store.save_volume("../escape", &s.volumes["v1"]).is_err());
    }

    #[test]
    fn a_crash_leaves_each_object_old_or_new_never_damaged() {
        for seed in 0..100 {
            let disk = SimDisk::new(seed);
            let mut rng = DetRng::from_seed(seed);
            let mut s = ClusterState::default();
            s.apply(&Op::CreateVolume(vol("v"))).unwrap();
            let store = Store::open(disk.storage("w").unwrap()).unwrap();
            store.save_all(&s).unwrap();
            let before = s.clone();
            // Acknowledged saves survive; the next one may or may not.
            s.apply(&Op::SetStatus {
                name: "v".into(),
                status: VolumeStatus::Started,
            })
            .unwrap();
            store.save_volume("v", &s.volumes["v"]).unwrap();
            disk.crash(&mut rng);
            let store = Store::open(disk.storage("w").unwrap()).unwrap();
            assert_eq!(
                store.load().unwrap(),
                s,
                "seed {seed}: an acknowledged save was lost"
            );
            // Interrupted: only the temporary file was written, no rename.
            let raw = disk.storage("w").unwrap();
            raw.create(&p("volumes/v.json.tmp"), 0o600).unwrap();
            raw.write(&p("volumes/v.json.tmp"), 0, b"{ half a fi")
                .unwrap();
            disk.crash(&mut rng);
            let store = Store::open(disk.storage("w").unwrap()).unwrap();
            let loaded = store.load().unwrap();
            assert!(
                loaded == s || loaded == before,
                "seed {seed}: damaged state after a crash"
            );
            assert!(
                raw.lstat(&p("volumes/v.json.tmp")).is_err(),
                "leftover temporary file"
            );
        }
    }
}
