//! Which fragments hold a file's current generation: the per-fragment
//! `[data version, metadata version, size]` and the rule that picks the
//! group of at least `k` fragments agreeing on it.

use mortar_proto::brick::CounterDelta;

use crate::afr::Kind;

/// Per-fragment version and size: `[data version, metadata version,
/// size]` as big-endian i64s.
pub use mortar_proto::xattr::EC_VERSION as EC_XATTR;

/// What one fragment says about its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragInfo {
    pub data: i64,
    pub meta: i64,
    pub size: i64,
}

impl FragInfo {
    /// Missing values are zero (a file no update has touched yet).
    pub fn parse(raw: &[u8]) -> FragInfo {
        let mut v = [0i64; 3];
        for (k, chunk) in raw.chunks(8).take(3).enumerate() {
            if let Ok(b) = <[u8; 8]>::try_from(chunk) {
                v[k] = i64::from_be_bytes(b);
            }
        }
        FragInfo {
            data: v[0],
            meta: v[1],
            size: v[2],
        }
    }

    /// The xattr bytes [`FragInfo::parse`] reads.
    pub fn encode(&self) -> Vec<u8> {
        [self.data, self.meta, self.size]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect()
    }

    /// The values an xattrop returned for [`EC_XATTR`].
    pub fn from_delta(d: &CounterDelta) -> FragInfo {
        match d {
            CounterDelta::Add64(v) => FragInfo {
                data: v.first().copied().unwrap_or(0),
                meta: v.get(1).copied().unwrap_or(0),
                size: v.get(2).copied().unwrap_or(0),
            },
            CounterDelta::Add32(_) => FragInfo::default(),
        }
    }

    /// What must agree for two fragments to be of one generation.
    fn key(&self, kind: Kind) -> (i64, i64) {
        match kind {
            Kind::Data => (self.data, self.size),
            _ => (self.meta, 0),
        }
    }
}

/// The fragments that hold a file's current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Brick indices, ascending (data fragments first).
    pub bricks: Vec<usize>,
    pub info: FragInfo,
}

/// No version is held by `k` fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `(version, size, bricks)` per group seen, largest first.
    pub groups: Vec<(i64, i64, Vec<usize>)>,
    pub k: usize,
}

/// Pick the fragments of the current generation of `kind` (data:
/// version and size; metadata: version) from what each brick said
/// (`None`: did not answer).
pub fn current(infos: &[Option<FragInfo>], k: usize, kind: Kind) -> Result<Current, Disagreement> {
    let mut groups: Vec<((i64, i64), Vec<usize>, FragInfo)> = Vec::new();
    for (i, info) in infos.iter().enumerate() {
        let Some(info) = info else { continue };
        let key = info.key(kind);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(i),
            None => groups.push((key, vec![i], *info)),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    match groups.first() {
        Some((_, bricks, info)) if bricks.len() >= k => Ok(Current {
            bricks: bricks.clone(),
            info: *info,
        }),
        _ => Err(Disagreement {
            groups: groups.into_iter().map(|((v, s), b, _)| (v, s, b)).collect(),
            k,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data: i64, size: i64) -> Option<FragInfo> {
        Some(FragInfo {
            data,
            meta: 0,
            size,
        })
    }

    #[test]
    fn the_current_group_needs_k_fragments_of_one_version_and_size() {
        // 4 + 2: two stale fragments are left out.
        let v = [
            info(7, 100),
            info(7, 100),
            info(3, 50),
            info(7, 100),
            None,
            info(7, 100),
        ];
        let c = current(&v, 4, Kind::Data).unwrap();
        assert_eq!(c.bricks, vec![0, 1, 3, 5]);
        assert_eq!(c.info.size, 100);
        // Three of a version are not enough, whatever the others hold.
        let v = [
            info(7, 100),
            info(7, 100),
            info(3, 50),
            info(7, 100),
            None,
            info(3, 50),
        ];
        let d = current(&v, 4, Kind::Data).unwrap_err();
        assert_eq!(d.groups[0], (7, 100, vec![0, 1, 3]));
        assert_eq!(d.groups[1], (3, 50, vec![2, 5]));
        // One version with two sizes is two generations.
        let v = [
            info(7, 100),
            info(7, 100),
            info(7, 101),
            info(7, 100),
            info(7, 101),
            info(7, 101),
        ];
        assert!(current(&v, 4, Kind::Data).is_err());
        // Metadata versions are their own.
        let mut v = [info(7, 100); 6];
        v[2] = Some(FragInfo {
            data: 7,
            meta: 9,
            size: 100,
        });
        assert_eq!(
            current(&v, 4, Kind::Metadata).unwrap().bricks,
            vec![0, 1, 3, 4, 5]
        );
        assert_eq!(current(&v, 4, Kind::Data).unwrap().bricks.len(), 6);
    }

    #[test]
    fn frag_info_round_trips_through_the_xattr_bytes() {
        let mut raw = Vec::new();
        for x in [5i64, -1, 1 << 40] {
            raw.extend_from_slice(&x.to_be_bytes());
        }
        let info = FragInfo {
            data: 5,
            meta: -1,
            size: 1 << 40,
        };
        assert_eq!(FragInfo::parse(&raw), info);
        assert_eq!(info.encode(), raw);
        assert_eq!(FragInfo::parse(&[]), FragInfo::default());
        assert_eq!(FragInfo::parse(&raw[..8]).data, 5);
    }
}
