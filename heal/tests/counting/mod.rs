//! The test hook of the block heal tests and the heal bench: a brick's
//! child wrapped so the caller counts the bytes heal writes to it and the
//! holes it punches, and can make the brick answer as an older brick
//! (no `Rchecksum`, no `GetxattrMany`) or one whose filesystem cannot punch holes does.
#![allow(dead_code)] // each user takes its own part

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use mortar_client::fop::{Child, Fop, FopOut, FopResult, Subvolume};
use mortar_net::BoxFuture;
use mortar_proto::{Errno, FopError};

/// A brick's child as heal sees it, counting what heal does to it.
pub struct Counting {
    pub inner: Child,
    pub written: AtomicU64,
    pub discarded: AtomicU64,
    /// Answer `Rchecksum` as a brick without the procedure does.
    pub old_brick: AtomicBool,
    /// Answer `Discard` as a brick whose filesystem cannot punch holes.
    pub no_holes: AtomicBool,
}

impl Counting {
    /// Wrap each child; set layers built over the wrappers.
    pub fn wrap(children: Vec<Child>) -> Vec<Arc<Counting>> {
        children
            .into_iter()
            .map(|inner| {
                Arc::new(Counting {
                    inner,
                    written: AtomicU64::new(0),
                    discarded: AtomicU64::new(0),
                    old_brick: AtomicBool::new(false),
                    no_holes: AtomicBool::new(false),
                })
            })
            .collect()
    }
}

impl Subvolume for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_up(&self) -> bool {
        self.inner.is_up()
    }

    fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
        let refuse = |errno: Errno, why: &str| -> BoxFuture<'_, FopResult<FopOut>> {
            let e = FopError::new(errno, why);
            Box::pin(async move { Err(e) })
        };
        match &op {
            Fop::Write(_, data) => {
                self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Fop::Rchecksum(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 31 (unknown)")
            }
            // Nor the counters in one request: views fall back to one
            // getxattr per name.
            Fop::GetxattrMany(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 33 (unknown)")
            }
            // Nor the kinds of many gfids: the crawl heals in gfid order
            // and entry heal stats each gfid a stale copy lacks.
            Fop::GfidKinds(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 34 (unknown)")
            }
            Fop::GetxattrFiles(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 35 (unknown)")
            }
            Fop::ReadWhole(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 36 (unknown)")
            }
            Fop::CreateWhole(..) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 37 (unknown)")
            }
            Fop::XattropMany(_) if self.old_brick.load(Ordering::Relaxed) => {
                return refuse(Errno::EPROTO, "brick has no procedure 38 (unknown)")
            }
            Fop::Discard(_) if self.no_holes.load(Ordering::Relaxed) => {
                return refuse(Errno::EOPNOTSUPP, "operation not supported")
            }
            Fop::Discard(q) => {
                self.discarded.fetch_add(q.len, Ordering::Relaxed);
            }
            _ => {}
        }
        self.inner.fop(op)
    }
}
