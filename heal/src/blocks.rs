//! Replicate data heal by block checksums (issue 11): rather than empty a
//! stale copy and rewrite the whole file, ask the good copy and the stale
//! ones at once for checksums of the same blocks (`Rchecksum`, a batch of
//! [`RCHECKSUM_BLOCKS_MAX`] blocks of [`HEAL_BLOCK_BYTES`] at a time) and
//! move only the blocks that differ. A 1 GiB file with a few blocks
//! changed while a brick was down costs reading both copies once and
//! writing those blocks, not 1 GiB of writes.
//!
//! What each stale copy needs for a block is the pure rule [`need`]:
//! * the same length and SHA-256 digest: keep it;
//! * zeros on the good copy: keep it if the stale copy is zeros there too
//!   or ends before it (the final cut to length makes that a hole); else
//!   punch a hole (`Discard`), so a hole on the good copy is a hole on
//!   the stale one, not allocated zeros. A brick that cannot punch holes
//!   (`EOPNOTSUPP`: its filesystem; `EPROTO`: an older brick) gets zeros
//!   written instead, said once in the log;
//! * anything else: copy the good copy's bytes. Consecutive blocks to copy
//!   are read once, up to [`CHUNK_BYTES_MAX`], and written to each stale
//!   copy that needs them.
//!
//! Blocks past the end of every stale copy are not compared (nothing
//! there can match): they are copied as before, zero chunks left as
//! holes. Then the stale copies are cut to the good copy's length and
//! fsynced by the caller. Memory per file is one batch of checksums per
//! brick and one chunk of data, whatever the file's size.
//!
//! A brick that cannot give checksums (an older brick answers `EPROTO`
//! for a procedure it does not know; or an error reading a stale copy,
//! which a full rewrite repairs) makes the caller fall back to the full
//! copy; see `steps::copy_data`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use bytes::Bytes;
use mortar_client::copy::copy_range_keeping_holes;
use mortar_client::fop::{Child, Fop, FopOut, FopResult, CHUNK_BYTES_MAX};
use mortar_proto::brick::{
    self as bp, BlockChecksum, RchecksumReply, HEAL_BLOCK_BYTES, RCHECKSUM_BLOCKS_MAX,
};
use mortar_proto::{Errno, FopError, Gfid};

/// File bytes one batch of checksums covers (8 MiB): per file, heal
/// holds one batch of checksums per brick at a time.
const BATCH_BYTES: u64 = HEAL_BLOCK_BYTES * RCHECKSUM_BLOCKS_MAX;
/// Most blocks copied with one read of the good copy.
const RUN_BLOCKS_MAX: usize = (CHUNK_BYTES_MAX / HEAL_BLOCK_BYTES) as usize;
const _: () = assert!(RUN_BLOCKS_MAX >= 1);

/// What a stale copy needs for one block to hold the good copy's bytes
/// once it is cut to the good copy's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Keep,
    Copy,
    Zero,
}

/// The rule for one block: `src` is the good copy's checksum, `sink` the
/// stale copy's (`None`: the stale copy ends before this block).
pub(crate) fn need(src: &BlockChecksum, sink: Option<&BlockChecksum>) -> Need {
    match sink {
        // Zeros either way; lengths may differ only at a copy's end, and
        // the cut to length settles that with zeros (a hole) too.
        None if src.zero => Need::Keep,
        Some(s) if src.zero && s.zero => Need::Keep,
        Some(_) if src.zero => Need::Zero,
        Some(s) if s.len == src.len && s.sha256 == src.sha256 => Need::Keep,
        _ => Need::Copy,
    }
}

/// Maximal runs of consecutive `true`s, as (first index, length), none
/// longer than `max`.
pub(crate) fn runs(flags: &[bool], max: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        match out.last_mut() {
            Some((first, len)) if *first + *len == i && *len < max => *len += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

/// What a block heal did, for the log (and, summed by a test's counting
/// child, what the tests check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BlockHealReport {
    pub blocks_compared: u64,
    /// Bytes written, summed over the stale copies.
    pub bytes_written: u64,
    /// Bytes made zeros (holes punched or zeros written), summed likewise.
    pub bytes_zeroed: u64,
}

/// Why a block heal stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A brick gave no checksums: copy the whole file instead.
    NoChecksums { brick: String, err: FopError },
    /// Reading the good copy or writing a stale one failed.
    Failed(FopError),
}

impl From<FopError> for Stop {
    fn from(e: FopError) -> Self {
        Stop::Failed(e)
    }
}

/// Did the brick refuse because it cannot do this at all (its filesystem
/// cannot, or it is an older brick that does not know the procedure)?
pub(crate) fn unsupported(e: &FopError) -> bool {
    e.errno == Errno::EOPNOTSUPP || e.errno == Errno::EPROTO
}

/// Say something once per process: a brick that cannot do something
/// will not learn it between files, and the log should not fill with it.
pub(crate) fn log_once(flag: &AtomicBool, say: impl FnOnce()) {
    if !flag.swap(true, Ordering::Relaxed) {
        say();
    }
}

static DISCARD_REFUSED: AtomicBool = AtomicBool::new(false);

/// Wait for every future of `futs`, polled together in this task (their
/// requests go out at once), and return their outputs in order.
pub(crate) async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(done.iter_mut().filter_map(Option::take).collect())
    })
    .await
}

/// Bring `sinks` to `src`'s bytes (`size` of them) block by block; the
/// caller then cuts them to `size` and fsyncs them.
pub(crate) async fn heal_blocks(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
    size: u64,
) -> Result<BlockHealReport, Stop> {
    let stats = join_all(
        sinks
            .iter()
            .map(|&s| children[s].fop(Fop::Stat(bp::Stat { gfid })))
            .collect(),
    )
    .await;
    let mut longest = 0;
    for st in stats {
        longest = longest.max(st.and_then(FopOut::attr)?.size);
    }
    // Past every stale copy's end nothing can match: copied plainly.
    let compared_end = size.min(longest.next_multiple_of(HEAL_BLOCK_BYTES));
    let mut report = BlockHealReport::default();
    let mut off = 0;
    while off < compared_end {
        let len = BATCH_BYTES.min(compared_end - off);
        let (src_sums, sink_sums) = batch_checksums(children, gfid, src, sinks, off, len).await?;
        report.blocks_compared += src_sums.len() as u64;
        apply_batch(
            children,
            gfid,
            (src, sinks),
            off,
            &src_sums,
            &sink_sums,
            &mut report,
        )
        .await?;
        off += len;
    }
    let dsts: Vec<&Child> = sinks.iter().map(|&s| &children[s]).collect();
    let written = copy_range_keeping_holes(&children[src], &dsts, gfid, compared_end..size)
        .await
        .map_err(|f| f.err)?;
    report.bytes_written += written * sinks.len() as u64;
    Ok(report)
}

/// The checksums of `len` bytes at `off` on the good copy and on every
/// stale one, asked at once.
async fn batch_checksums(
    children: &[Child],
    gfid: Gfid,
    src: usize,
    sinks: &[usize],
    off: u64,
    len: u64,
) -> Result<(Vec<BlockChecksum>, Vec<Vec<BlockChecksum>>), Stop> {
    let q = bp::Rchecksum {
        gfid,
        offset: off,
        len,
        block_size: HEAL_BLOCK_BYTES,
    };
    let bricks: Vec<usize> = std::iter::once(src).chain(sinks.iter().copied()).collect();
    let answers = join_all(
        bricks
            .iter()
            .map(|&i| children[i].fop(Fop::Rchecksum(q.clone())))
            .collect(),
    )
    .await;
    let mut replies: Vec<RchecksumReply> = Vec::with_capacity(bricks.len());
    for (i, a) in bricks.iter().zip(answers) {
        match a.and_then(FopOut::checksums) {
            Ok(r) => replies.push(r),
            Err(err) => {
                return Err(Stop::NoChecksums {
                    brick: children[*i].name().to_string(),
                    err,
                })
            }
        }
    }
    let src_sums = replies.remove(0).blocks;
    let covered: u64 = src_sums.iter().map(|b| b.len).sum();
    if covered != len {
        // Heal holds the file's write lock on every brick: nothing should
        // change it. Give up on this heal; the next one starts over.
        return Err(Stop::Failed(FopError::new(
            Errno::EIO,
            format!(
                "{gfid} on {} changed during heal: {covered} of {len} bytes at {off}",
                children[src].name()
            ),
        )));
    }
    Ok((src_sums, replies.into_iter().map(|r| r.blocks).collect()))
}

/// Give each stale copy what [`need`] says for the blocks of one batch
/// (starting at byte `off`).
async fn apply_batch(
    children: &[Child],
    gfid: Gfid,
    (src, sinks): (usize, &[usize]),
    off: u64,
    src_sums: &[BlockChecksum],
    sink_sums: &[Vec<BlockChecksum>],
    report: &mut BlockHealReport,
) -> Result<(), Stop> {
    let needs: Vec<Vec<Need>> = sink_sums
        .iter()
        .map(|theirs| {
            src_sums
                .iter()
                .enumerate()
                .map(|(b, s)| need(s, theirs.get(b)))
                .collect()
        })
        .collect();
    let at = |b: usize| off + b as u64 * HEAL_BLOCK_BYTES;
    let any_copy: Vec<bool> = (0..src_sums.len())
        .map(|b| needs.iter().any(|n| n[b] == Need::Copy))
        .collect();
    for (first, count) in runs(&any_copy, RUN_BLOCKS_MAX) {
        let bytes: u64 = src_sums[first..first + count].iter().map(|b| b.len).sum();
        let data = read_exact(&children[src], gfid, at(first), bytes).await?;
        for (j, &s) in sinks.iter().enumerate() {
            let mine: Vec<bool> = needs[j][first..first + count]
                .iter()
                .map(|n| *n == Need::Copy)
                .collect();
            for (a, n) in runs(&mine, RUN_BLOCKS_MAX) {
                let from = a as u64 * HEAL_BLOCK_BYTES;
                let upto = (from + n as u64 * HEAL_BLOCK_BYTES).min(bytes);
                let piece = data.slice(from as usize..upto as usize);
                write(&children[s], gfid, at(first) + from, piece).await?;
                report.bytes_written += upto - from;
            }
        }
    }
    for (j, &s) in sinks.iter().enumerate() {
        let zero: Vec<bool> = needs[j].iter().map(|n| *n == Need::Zero).collect();
        for (first, count) in runs(&zero, usize::MAX) {
            let len = count as u64 * HEAL_BLOCK_BYTES;
            make_zeros(&children[s], gfid, at(first), len).await?;
            report.bytes_zeroed += len;
        }
    }
    Ok(())
}

/// Exactly `len` bytes of `src` at `off` (heal holds the file locked, so
/// a short read means it changed: give up this heal).
async fn read_exact(src: &Child, gfid: Gfid, off: u64, len: u64) -> FopResult<Bytes> {
    let data = src
        .fop(Fop::Read(bp::Read {
            gfid,
            offset: off,
            len,
        }))
        .await
        .and_then(FopOut::data)?;
    if data.len() as u64 != len {
        return Err(FopError::new(
            Errno::EIO,
            format!(
                "{gfid} on {} changed during heal: read {} of {len} bytes at {off}",
                src.name(),
                data.len()
            ),
        ));
    }
    Ok(data)
}

pub(crate) async fn write(dst: &Child, gfid: Gfid, off: u64, data: Bytes) -> FopResult<()> {
    dst.fop(Fop::Write(bp::Write { gfid, offset: off }, data))
        .await
        .map(|_| ())
}

/// Make `len` bytes at `off` zeros on `dst`: a hole where its brick can
/// punch one, else zeros written a chunk at a time.
pub(crate) async fn make_zeros(dst: &Child, gfid: Gfid, off: u64, len: u64) -> FopResult<()> {
    let punched = dst
        .fop(Fop::Discard(bp::Discard {
            gfid,
            offset: off,
            len,
        }))
        .await;
    match punched {
        Ok(_) => return Ok(()),
        Err(e) if unsupported(&e) => log_once(&DISCARD_REFUSED, || {
            tracing::info!(
                brick = dst.name(),
                error = %e,
                "brick cannot punch holes; heal writes zeros there instead (they take space)"
            )
        }),
        Err(e) => return Err(e),
    }
    let mut done = 0;
    while done < len {
        let n = CHUNK_BYTES_MAX.min(len - done);
        write(dst, gfid, off + done, Bytes::from(vec![0u8; n as usize])).await?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(len: u64, zero: bool, tag: u8) -> BlockChecksum {
        BlockChecksum {
            len,
            zero,
            sha256: [tag; 32],
        }
    }

    #[test]
    fn each_block_is_kept_copied_or_zeroed_by_the_rule() {
        const B: u64 = HEAL_BLOCK_BYTES;
        let data = sum(B, false, 1);
        let zeros = sum(B, true, 0);
        let table = [
            // (good copy, stale copy, need)
            (data, Some(data), Need::Keep),
            (data, Some(sum(B, false, 2)), Need::Copy),
            (data, Some(sum(B - 1, false, 1)), Need::Copy),
            (data, Some(zeros), Need::Copy),
            (data, None, Need::Copy),
            (zeros, Some(zeros), Need::Keep),
            // Zeros of another length: the stale copy ends inside the
            // block, and the cut to length makes the rest zeros.
            (zeros, Some(sum(100, true, 0)), Need::Keep),
            (zeros, None, Need::Keep),
            (zeros, Some(data), Need::Zero),
            (sum(100, true, 0), Some(sum(100, false, 5)), Need::Zero),
            // The good copy's short last block against a longer copy.
            (sum(100, false, 3), Some(sum(B, false, 3)), Need::Copy),
        ];
        for (src, sink, want) in table {
            assert_eq!(need(&src, sink.as_ref()), want, "{src:?} vs {sink:?}");
        }
    }

    #[test]
    fn runs_are_maximal_and_bounded() {
        let f = |s: &str| s.chars().map(|c| c == '1').collect::<Vec<_>>();
        assert_eq!(runs(&f(""), 8), vec![]);
        assert_eq!(runs(&f("000"), 8), vec![]);
        assert_eq!(runs(&f("0110111"), 8), vec![(1, 2), (4, 3)]);
        assert_eq!(runs(&f("11111"), 2), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(runs(&f("1"), usize::MAX), vec![(0, 1)]);
    }

    #[test]
    fn join_all_keeps_the_order() {
        let futs: Vec<_> = (0..5).map(|i| async move { i * 10 }).collect();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = Box::pin(join_all(futs));
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => assert_eq!(v, vec![0, 10, 20, 30, 40]),
            Poll::Pending => panic!("ready futures are ready"),
        }
    }
}
