//! Where file bytes fall in stripes and fragments, and how a large write
//! is cut into pieces. Pure arithmetic over a stripe size (`k * 512`
//! bytes), tested without bricks.

use crate::ec::FRAGMENT_BYTES;
use crate::fop::CHUNK_BYTES_MAX;

/// The stripe-aligned span covering `[start, end)`.
pub fn span(stripe: u64, start: u64, end: u64) -> (u64, u64) {
    (start / stripe * stripe, end.div_ceil(stripe) * stripe)
}

/// Bytes each fragment file holds for a file of `size` bytes.
pub fn fragment_len(stripe: u64, size: u64) -> u64 {
    size.div_ceil(stripe) * FRAGMENT_BYTES as u64
}

/// The most file data one piece of a large write (or one step of heal)
/// spans: the whole stripes that fit in [`CHUNK_BYTES_MAX`], and at least
/// one stripe.
pub fn piece_bytes_max(stripe: u64) -> u64 {
    (CHUNK_BYTES_MAX / stripe).max(1) * stripe
}

/// The pieces `(start, end)` a write of `len` bytes at `off` is cut
/// into, in order. Every piece but the last ends on a stripe boundary, so
/// only the first and the last stripe of the whole write can be partial
/// and no stripe is encoded by two pieces; each piece's stripe span is at
/// most [`piece_bytes_max`].
pub fn pieces(off: u64, len: u64, stripe: u64) -> Pieces {
    assert!(stripe > 0, "a stripe holds at least one fragment");
    Pieces {
        next: off,
        end: off + len,
        stripe,
        max: piece_bytes_max(stripe),
    }
}

/// The iterator [`pieces`] returns.
#[derive(Debug, Clone)]
pub struct Pieces {
    next: u64,
    end: u64,
    stripe: u64,
    max: u64,
}

impl Iterator for Pieces {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.next >= self.end {
            return None;
        }
        let start = self.next;
        let end = (start / self.stripe * self.stripe + self.max).min(self.end);
        debug_assert!(end > start, "every piece makes progress");
        self.next = end;
        Some((start, end))
    }
}

/// The stripes (their starts) of the piece `[start, end)` that must be
/// read back and merged before it is encoded: a partial head or tail
/// stripe that holds old data (below `old_size`). One stripe that is both
/// head and tail is read once.
pub fn stripes_to_merge(stripe: u64, start: u64, end: u64, old_size: u64) -> Vec<u64> {
    let (s0, s1) = span(stripe, start, end);
    let head_partial = start > s0 && s0 < old_size;
    let tail_stripe = s1 - stripe;
    let tail_partial = end < s1 && tail_stripe < old_size && !(head_partial && tail_stripe == s0);
    let mut reads = Vec::new();
    if head_partial {
        reads.push(s0);
    }
    if tail_partial {
        reads.push(tail_stripe);
    }
    reads
}

/// The stripe a truncate to `to` bytes must re-encode with zeros past
/// `to` (so a later extension reads zeros): the new last stripe, when it
/// is partial and held data before.
pub fn truncate_stripe(stripe: u64, to: u64, old_size: u64) -> Option<u64> {
    (to < old_size && to % stripe != 0).then_some(to / stripe * stripe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn spans_and_fragment_lengths() {
        // (stripe, start, end) -> span
        let table = [
            (2048, 0, 1, (0, 2048)),
            (2048, 2048, 4096, (2048, 4096)),
            (1536, 1000, 1537, (0, 3072)),
            (512, 511, 513, (0, 1024)),
        ];
        for (s, a, b, want) in table {
            assert_eq!(span(s, a, b), want, "span({s}, {a}, {b})");
        }
        assert_eq!(fragment_len(2048, 0), 0);
        assert_eq!(fragment_len(2048, 1), 512);
        assert_eq!(fragment_len(2048, 4097), 3 * 512);
    }

    #[test]
    fn pieces_table() {
        let s = 2048; // 4 + m
        let cases = [
            (0, 0, vec![]),
            (10, 100, vec![(10, 110)]),
            (0, 2 * MIB, vec![(0, MIB), (MIB, 2 * MIB)]),
            (100, MIB, vec![(100, MIB), (MIB, MIB + 100)]),
        ];
        for (off, len, want) in cases {
            assert_eq!(pieces(off, len, s).collect::<Vec<_>>(), want, "{off}+{len}");
        }
    }

    /// Postmortem: on 3 + 1 (1536-byte stripes) a large write lost 1 KiB
    /// per MiB: each piece ended 1 MiB past its stripe start, mid-stripe,
    /// and the next piece re-encoded that stripe with zeros where the
    /// bytes just written were (past the old size nothing is read back).
    /// Pieces now end on stripe boundaries for any k (commit 7f5eeb4).
    #[test]
    fn regression_3_plus_1_pieces_never_share_a_stripe() {
        let s = 3 * 512;
        let (off, len) = (1000, (5 << 19) + 777);
        let got: Vec<_> = pieces(off, len, s).collect();
        assert!(got.len() > 2);
        for w in got.windows(2) {
            assert_eq!(w[0].1 % s, 0, "piece {:?} ends mid-stripe", w[0]);
            assert_eq!(w[0].1, w[1].0);
            let (_, prev_end) = span(s, w[0].0, w[0].1);
            let (next_start, _) = span(s, w[1].0, w[1].1);
            assert!(prev_end <= next_start, "{w:?} share a stripe");
        }
        // Past the old size a piece reads nothing back: it must not need to.
        for &(a, b) in &got[1..] {
            assert!(stripes_to_merge(s, a, b, off).is_empty());
        }
    }

    #[test]
    fn stripes_to_merge_table() {
        let s = 2048;
        // (start, end, old_size) -> stripes read back
        let table: [(u64, u64, u64, Vec<u64>); 7] = [
            (0, 2048, 10_000, vec![]),
            (100, 2048, 10_000, vec![0]),
            (0, 100, 10_000, vec![0]),
            (100, 200, 10_000, vec![0]),
            (100, 4000, 10_000, vec![0, 2048]),
            (100, 4000, 0, vec![]),
            (2100, 4000, 2048, vec![]),
        ];
        for (a, b, old, want) in table {
            assert_eq!(stripes_to_merge(s, a, b, old), want, "{a}..{b} old {old}");
        }
        assert_eq!(truncate_stripe(s, 100, 5000), Some(0));
        assert_eq!(truncate_stripe(s, 2148, 5000), Some(2048));
        assert_eq!(truncate_stripe(s, 2048, 5000), None);
        assert_eq!(truncate_stripe(s, 100, 50), None);
    }

    proptest! {
        #[test]
        fn pieces_cover_the_write_on_stripe_boundaries(
            k in 1u64..=16,
            off in 0u64..(1 << 40),
            len in 0u64..(6 * MIB),
        ) {
            let s = k * FRAGMENT_BYTES as u64;
            let got: Vec<_> = pieces(off, len, s).collect();
            // Exactly the range, in order, without gaps or overlaps.
            let mut at = off;
            for &(a, b) in &got {
                prop_assert_eq!(a, at);
                prop_assert!(b > a);
                at = b;
            }
            prop_assert_eq!(at, off + len);
            for (i, &(a, b)) in got.iter().enumerate() {
                if i > 0 {
                    prop_assert_eq!(a % s, 0, "a later piece starts on a stripe");
                }
                if i + 1 < got.len() {
                    prop_assert_eq!(b % s, 0, "an earlier piece ends on a stripe");
                }
                let (s0, s1) = span(s, a, b);
                prop_assert!(s1 - s0 <= piece_bytes_max(s));
                prop_assert!(piece_bytes_max(s) <= CHUNK_BYTES_MAX.max(s));
            }
        }
    }
}
