//! Group commit of heal's durable steps on one brick: the counter clears
//! of a window of files (and a barrier that makes copies just made
//! durable) go to the brick as one [`bp::XattropMany`], made durable by one
//! sync of its filesystem, instead of one fsync per file and step. A step
//! that arrives while a batch is on its way waits for the next one; the
//! task that finds no batch under way sends it (and every batch queued
//! behind it).
//!
//! Every user of one [`Committer`] runs inside one future (a directory's
//! entry heal): they end, or are dropped, together.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mortar_client::fop::{Child, Fop, FopOut, FopResult};
use mortar_proto::brick as bp;
use mortar_proto::{Errno, FopError, Gfid};
use tokio::sync::oneshot;

/// One step waiting for its batch: an xattrop, or (`None`) a barrier for
/// the file `gfid`.
struct Waiting {
    gfid: Gfid,
    op: Option<bp::Xattrop>,
    done: oneshot::Sender<FopResult<()>>,
}

pub(crate) struct Committer {
    child: Child,
    queue: Mutex<Vec<Waiting>>,
    leading: AtomicBool,
}

/// Lets go of the lead however the leading task ends.
struct Lead<'a>(&'a AtomicBool);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Committer {
    pub(crate) fn new(child: Child) -> Committer {
        Committer {
            child,
            queue: Mutex::new(Vec::new()),
            leading: AtomicBool::new(false),
        }
    }

    /// Make what was written to the brick so far durable (a copy of
    /// `gfid` just made without an fsync among it).
    pub(crate) async fn barrier(&self, gfid: Gfid) -> FopResult<()> {
        self.submit(gfid, None).await
    }

    /// Apply `op` durably.
    pub(crate) async fn xattrop(&self, op: bp::Xattrop) -> FopResult<()> {
        self.submit(op.gfid, Some(op)).await
    }

    async fn submit(&self, gfid: Gfid, op: Option<bp::Xattrop>) -> FopResult<()> {
        let (done, rx) = oneshot::channel();
        self.queue
            .lock()
            .expect("commit queue")
            .push(Waiting { gfid, op, done });
        self.lead().await;
        rx.await.unwrap_or_else(|_| {
            Err(FopError::new(
                Errno::EIO,
                format!(
                    "the batch of durable steps on {} was given up",
                    self.child.name()
                ),
            ))
        })
    }

    /// Send the queued batches unless another task already does.
    async fn lead(&self) {
        loop {
            if self.leading.swap(true, Ordering::AcqRel) {
                return;
            }
            let lead = Lead(&self.leading);
            while let Some(batch) = self.next_batch() {
                self.commit(batch).await;
            }
            drop(lead);
            // A step queued after the last look but before the lead was
            // let go: take the lead again for it.
            if self.queue.lock().expect("commit queue").is_empty() {
                return;
            }
        }
    }

    /// The queued steps, oldest first, up to [`bp::XATTROP_MANY_MAX`] and
    /// up to the first gfid seen twice (one batch holds a gfid once).
    fn next_batch(&self) -> Option<Vec<Waiting>> {
        let mut q = self.queue.lock().expect("commit queue");
        let mut seen = BTreeSet::new();
        let n = q
            .iter()
            .take(bp::XATTROP_MANY_MAX)
            .take_while(|w| w.op.is_none() || seen.insert(w.gfid))
            .count();
        (n > 0).then(|| q.drain(..n).collect())
    }

    async fn commit(&self, batch: Vec<Waiting>) {
        let ops: Vec<bp::Xattrop> = batch.iter().filter_map(|w| w.op.clone()).collect();
        let asked = ops.len();
        match self
            .child
            .fop(Fop::XattropMany(bp::XattropMany { ops }))
            .await
        {
            Ok(FopOut::XattropResults(results)) if results.len() == asked => {
                let mut results = results.into_iter();
                for w in batch {
                    let r = match w.op {
                        Some(_) => results.next().expect("one result per op").map(drop),
                        None => Ok(()),
                    };
                    let _ = w.done.send(r);
                }
            }
            Err(e) if e.errno == Errno::EPROTO => {
                // An older brick: each step on its own, durably.
                for w in batch {
                    let r = self.one_by_one(w.gfid, w.op).await;
                    let _ = w.done.send(r);
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.done.send(Err(e.clone()));
                }
            }
            Ok(other) => {
                let e = mortar_client::fop::shape_error("xattrop many", &other);
                for w in batch {
                    let _ = w.done.send(Err(e.clone()));
                }
            }
        }
    }

    async fn one_by_one(&self, gfid: Gfid, op: Option<bp::Xattrop>) -> FopResult<()> {
        let fop = match op {
            Some(op) => Fop::Xattrop(bp::Xattrop {
                durable: true,
                ..op
            }),
            None => Fop::Fsync(bp::Fsync {
                gfid,
                datasync: false,
            }),
        };
        self.child.fop(fop).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_net::BoxFuture;
    use mortar_proto::brick::CounterDelta;
    use std::sync::Arc;

    /// A brick that answers each batch after a yield (so others queue
    /// behind it), or refuses the procedure as an older brick does.
    struct Brick {
        old: bool,
        sent: Mutex<Vec<String>>,
    }

    impl mortar_client::fop::Subvolume for Brick {
        fn name(&self) -> &str {
            "b"
        }
        fn is_up(&self) -> bool {
            true
        }
        fn fop(&self, op: Fop) -> BoxFuture<'_, FopResult<FopOut>> {
            Box::pin(async move {
                tokio::task::yield_now().await;
                let mut sent = self.sent.lock().unwrap();
                match op {
                    Fop::XattropMany(_) if self.old => {
                        sent.push("refused".into());
                        Err(FopError::new(Errno::EPROTO, "procedure 38 (unknown)"))
                    }
                    Fop::XattropMany(q) => {
                        sent.push(format!("many {}", q.ops.len()));
                        let r = q
                            .ops
                            .iter()
                            .map(|o| match o.gfid.0[15] {
                                9 => Err(FopError::new(Errno::ESTALE, "gone")),
                                _ => Ok(Vec::new()),
                            })
                            .collect();
                        Ok(FopOut::XattropResults(r))
                    }
                    Fop::Xattrop(q) => {
                        sent.push(format!("one durable={}", q.durable));
                        Ok(FopOut::Counters(Vec::new()))
                    }
                    Fop::Fsync(_) => {
                        sent.push("fsync".into());
                        Ok(FopOut::Done)
                    }
                    other => Err(FopError::new(
                        Errno::EINVAL,
                        format!("unexpected {other:?}"),
                    )),
                }
            })
        }
    }

    fn clear(i: u8) -> bp::Xattrop {
        let mut g = [1u8; 16];
        g[15] = i;
        bp::Xattrop {
            gfid: Gfid(g),
            deltas: vec![("k".into(), CounterDelta::Add32(vec![-1]))],
            durable: true,
        }
    }

    async fn run(old: bool) -> (Vec<FopResult<()>>, Vec<String>) {
        let brick = Arc::new(Brick {
            old,
            sent: Mutex::new(Vec::new()),
        });
        let c = Committer::new(brick.clone());
        let steps = (0..10u8).map(|i| {
            let c = &c;
            async move {
                match i {
                    3 => c.barrier(clear(i).gfid).await,
                    _ => c.xattrop(clear(i)).await,
                }
            }
        });
        let got = futures_util::future::join_all(steps).await;
        let sent = brick.sent.lock().unwrap().clone();
        (got, sent)
    }

    #[tokio::test]
    async fn steps_that_meet_share_one_request_and_keep_their_own_results() {
        let (got, sent) = run(false).await;
        // The first goes alone; the nine that queued behind it share one.
        assert_eq!(sent, vec!["many 1", "many 8"], "{sent:?}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.is_ok(), i != 9, "step {i}: {r:?}");
        }
    }

    #[tokio::test]
    async fn an_older_brick_gets_each_step_on_its_own_durably() {
        let (got, sent) = run(true).await;
        assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
        assert_eq!(sent.iter().filter(|s| *s == "one durable=true").count(), 9);
        assert_eq!(
            sent.iter().filter(|s| *s == "fsync").count(),
            1,
            "the barrier"
        );
        assert_eq!(sent.iter().filter(|s| *s == "refused").count(), 2);
    }
}
