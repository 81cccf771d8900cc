//! A disperse set over loopback bricks (see [`super::Bricks`]) with the
//! operations the disperse tests of the client and of heal share, and a
//! random workload checked against a model of the file.

use bytes::Bytes;
use mortar_client::disperse::{Disperse, FragInfo, EC_XATTR};
use mortar_client::fop::{Fop, FopOut, FopResult, Subvolume};
use mortar_proto::brick::{self as bp, NewObject, XattrFlags};
use mortar_proto::{Attr, Gfid};

use super::Bricks;

pub struct Cluster {
    pub b: Bricks,
    pub set: Disperse,
}

impl Cluster {
    pub async fn start(tag: &str) -> Cluster {
        Cluster::with(tag, 6, 2).await
    }

    pub async fn with(tag: &str, n: usize, m: usize) -> Cluster {
        let b = Bricks::start(&format!("vol-ec-{tag}"), n).await;
        let set = Disperse::new(&b.rt, &format!("{}-disperse-0", b.vol), b.children(), m).unwrap();
        Cluster { b, set }
    }

    pub async fn create(&self, name: &str, n: u128) -> Gfid {
        let new = NewObject {
            gfid: Gfid::from_u128(0xec00 + n),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        self.set
            .fop(Fop::Create(bp::Create {
                parent: Gfid::ROOT,
                name: name.into(),
                new,
            }))
            .await
            .unwrap();
        new.gfid
    }

    pub async fn write(&self, g: Gfid, off: u64, data: &[u8]) -> FopResult<FopOut> {
        self.set
            .fop(Fop::Write(
                bp::Write {
                    gfid: g,
                    offset: off,
                },
                Bytes::copy_from_slice(data),
            ))
            .await
    }

    pub async fn read_all(&self, g: Gfid) -> FopResult<Vec<u8>> {
        let a = self
            .set
            .fop(Fop::Stat(bp::Stat { gfid: g }))
            .await?
            .attr()?;
        let d = self
            .set
            .fop(Fop::Read(bp::Read {
                gfid: g,
                offset: 0,
                len: a.size + 4096,
            }))
            .await?
            .data()?;
        assert_eq!(
            d.len() as u64,
            a.size,
            "a read stops at the size stat reports"
        );
        Ok(d.to_vec())
    }

    /// Make brick `i`'s fragment claim `info` (as a failed update might).
    pub async fn stat(&self, gfid: Gfid) -> FopResult<Attr> {
        self.set.fop(Fop::Stat(bp::Stat { gfid })).await?.attr()
    }

    pub async fn lookup(&self, name: &str) -> FopResult<Attr> {
        let q = bp::Lookup {
            parent: Gfid::ROOT,
            name: name.into(),
        };
        self.set.fop(Fop::Lookup(q)).await?.attr()
    }

    pub async fn getxattr(&self, gfid: Gfid, name: &str) -> FopResult<FopOut> {
        let q = bp::Getxattr {
            gfid,
            name: name.into(),
        };
        self.set.fop(Fop::Getxattr(q)).await
    }

    pub async fn set_info_on(&self, i: usize, g: Gfid, info: FragInfo) {
        self.b.clients[i]
            .fop(Fop::Setxattr(bp::Setxattr {
                gfid: g,
                name: EC_XATTR.into(),
                value: info.encode(),
                flags: XattrFlags::Any,
            }))
            .await
            .unwrap();
    }

    /// The version and size brick `i`'s fragment carries.
    pub async fn info_on(&self, i: usize, g: Gfid) -> FragInfo {
        match self.b.clients[i]
            .fop(Fop::Getxattr(bp::Getxattr {
                gfid: g,
                name: EC_XATTR.into(),
            }))
            .await
        {
            Ok(FopOut::Value(v)) => FragInfo::parse(&v),
            other => panic!("{other:?}"),
        }
    }
}

/// A deterministic source of offsets and bytes.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes (unaligned, across stripes, past the end leaving holes)
/// and truncates, each checked against a model of the file.
pub async fn churn(c: &Cluster, g: Gfid, model: &mut Vec<u8>, rng: &mut Rng, ops: usize) {
    for op in 0..ops {
        if rng.below(8) == 0 {
            let t = rng.below(24 * 1024) as usize;
            c.set
                .fop(Fop::Truncate(bp::Truncate {
                    gfid: g,
                    size: t as u64,
                }))
                .await
                .unwrap_or_else(|e| panic!("op {op}: truncate to {t}: {e}"));
            model.resize(t, 0);
        } else {
            let off = rng.below(20 * 1024) as usize;
            let len = 1 + rng.below(6000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let w = c
                .write(g, off as u64, &data)
                .await
                .unwrap_or_else(|e| panic!("op {op}: write {len} at {off}: {e}"));
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
            assert_eq!(
                w,
                FopOut::Written(bp::WriteReply {
                    written: len as u64,
                    size: model.len() as u64
                })
            );
        }
        let got = c.read_all(g).await.unwrap();
        assert!(
            got == *model,
            "op {op}: the file differs from the model ({} vs {} bytes)",
            got.len(),
            model.len()
        );
    }
}
