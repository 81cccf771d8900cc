//! Erasure coding for the disperse layer: a stripe of `k` data fragments
//! and `m` redundancy fragments, any `k` of which rebuild the stripe.
//!
//! A file on a disperse set of `k + m` bricks is cut into stripes of
//! `k * FRAGMENT_BYTES` bytes; brick `i` stores fragment `i` of every stripe, so
//! each brick's file is `1/k` of the data (rounded up to whole stripes).
//! Pure functions over byte buffers; no I/O.

use reed_solomon_erasure::galois_8::ReedSolomon;

/// Bytes of one fragment of one stripe (per brick).
pub const FRAGMENT_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcError {
    #[error("disperse {k} + {m} is not supported: need k >= 2, 1 <= m < k and k + m <= 32")]
    Geometry { k: usize, m: usize },
    #[error("only {have} of {k} fragments are available; the stripe cannot be rebuilt")]
    TooFew { have: usize, k: usize },
    #[error("fragments have different lengths ({a} and {b} bytes)")]
    Ragged { a: usize, b: usize },
    #[error("{len} bytes is not a whole number of {unit}-byte units")]
    Unaligned { len: usize, unit: usize },
}

/// A `k + m` Reed-Solomon code over GF(2^8).
pub struct Codec {
    k: usize,
    m: usize,
    rs: ReedSolomon,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({} + {})", self.k, self.m)
    }
}

impl Codec {
    pub fn new(k: usize, m: usize) -> Result<Codec, EcError> {
        // m < k: any two groups of k fragments overlap (n < 2k), so at
        // most one version can be held by k of them.
        if k < 2 || m == 0 || m >= k || k + m > 32 {
            return Err(EcError::Geometry { k, m });
        }
        let rs = ReedSolomon::new(k, m).map_err(|_| EcError::Geometry { k, m })?;
        Ok(Codec { k, m, rs })
    }

    pub fn data_fragments(&self) -> usize {
        self.k
    }

    pub fn redundancy(&self) -> usize {
        self.m
    }

    /// Bytes of file data in one stripe.
    pub fn stripe(&self) -> usize {
        self.k * FRAGMENT_BYTES
    }

    /// Encode `data` (a whole number of stripes) into `k + m` per-brick
    /// buffers, each `data.len() / k` bytes: fragment `i` of every stripe,
    /// in stripe order.
    pub fn encode(&self, data: &[u8]) -> Result<Vec<Vec<u8>>, EcError> {
        let stripe = self.stripe();
        if data.len() % stripe != 0 {
            return Err(EcError::Unaligned {
                len: data.len(),
                unit: stripe,
            });
        }
        let stripes = data.len() / stripe;
        let per_brick = stripes * FRAGMENT_BYTES;
        // The code is linear byte position by byte position, so coding the
        // whole per-brick buffers at once equals coding each stripe.
        let mut out = vec![vec![0u8; per_brick]; self.k + self.m];
        for (s, src) in data.chunks_exact(stripe).enumerate() {
            for (i, frag) in src.chunks_exact(FRAGMENT_BYTES).enumerate() {
                out[i][s * FRAGMENT_BYTES..(s + 1) * FRAGMENT_BYTES].copy_from_slice(frag);
            }
        }
        self.rs
            .encode(&mut out)
            .expect("k + m buffers of one length");
        Ok(out)
    }

    /// Rebuild the data from per-brick buffers (`None` for a brick that is
    /// missing or whose fragments cannot be trusted). All present buffers
    /// must have the same length, a whole number of fragments.
    pub fn decode(&self, bricks: &[Option<Vec<u8>>]) -> Result<Vec<u8>, EcError> {
        let present: Vec<usize> = (0..bricks.len().min(self.k + self.m))
            .filter(|i| bricks[*i].is_some())
            .collect();
        if present.len() < self.k {
            return Err(EcError::TooFew {
                have: present.len(),
                k: self.k,
            });
        }
        let len = bricks[present[0]].as_ref().map_or(0, Vec::len);
        for &i in &present {
            let l = bricks[i].as_ref().map_or(0, Vec::len);
            if l != len {
                return Err(EcError::Ragged { a: len, b: l });
            }
        }
        if len % FRAGMENT_BYTES != 0 {
            return Err(EcError::Unaligned {
                len,
                unit: FRAGMENT_BYTES,
            });
        }
        let stripes = len / FRAGMENT_BYTES;
        let rebuilt;
        let data: Vec<&Vec<u8>> = if (0..self.k).all(|i| bricks[i].is_some()) {
            // Systematic code: the data fragments are the data.
            (0..self.k)
                .map(|i| bricks[i].as_ref().expect("checked"))
                .collect()
        } else {
            let mut shards: Vec<Option<Vec<u8>>> = (0..self.k + self.m)
                .map(|i| bricks.get(i).cloned().flatten())
                .collect();
            self.rs
                .reconstruct_data(&mut shards)
                .map_err(|_| EcError::TooFew {
                    have: present.len(),
                    k: self.k,
                })?;
            rebuilt = shards;
            rebuilt
                .iter()
                .take(self.k)
                .map(|s| s.as_ref().expect("reconstructed"))
                .collect()
        };
        let mut out = vec![0u8; stripes * self.stripe()];
        for (s, dst) in out.chunks_exact_mut(self.stripe()).enumerate() {
            for (i, frag) in dst.chunks_exact_mut(FRAGMENT_BYTES).enumerate() {
                frag.copy_from_slice(&data[i][s * FRAGMENT_BYTES..(s + 1) * FRAGMENT_BYTES]);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn geometry_is_checked() {
        assert!(Codec::new(4, 2).is_ok());
        assert!(Codec::new(8, 4).is_ok());
        assert_eq!(
            Codec::new(1, 1).unwrap_err(),
            EcError::Geometry { k: 1, m: 1 }
        );
        assert!(Codec::new(4, 0).is_err());
        assert!(Codec::new(30, 3).is_err());
        assert!(Codec::new(2, 2).is_err(), "m must be less than k");
        assert!(Codec::new(3, 2).is_ok());
    }

    #[test]
    fn unaligned_and_too_few_are_errors_not_garbage() {
        let c = Codec::new(4, 2).unwrap();
        assert!(matches!(
            c.encode(&[0u8; 100]),
            Err(EcError::Unaligned { len: 100, .. })
        ));
        let frags = c.encode(&vec![7u8; c.stripe()]).unwrap();
        let mut some: Vec<Option<Vec<u8>>> = frags.into_iter().map(Some).collect();
        some[0] = None;
        some[2] = None;
        some[5] = None;
        assert_eq!(c.decode(&some), Err(EcError::TooFew { have: 3, k: 4 }));
        some[2] = Some(vec![0u8; 3 * FRAGMENT_BYTES]);
        some[5] = Some(vec![0u8; FRAGMENT_BYTES]);
        assert!(matches!(c.decode(&some), Err(EcError::Ragged { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any k of the k + m fragments give back the data, for 4 + 2
        /// and 8 + 4, whichever m are missing.
        #[test]
        fn any_k_fragments_rebuild_the_data(
            big in any::<bool>(),
            stripes in 1usize..6,
            seed in any::<u64>(),
            lost in prop::collection::btree_set(0usize..12, 0..=4),
        ) {
            let (k, m) = if big { (8, 4) } else { (4, 2) };
            let c = Codec::new(k, m).unwrap();
            let mut x = seed | 1;
            let data: Vec<u8> = (0..stripes * c.stripe()).map(|_| {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8
            }).collect();
            let frags = c.encode(&data).unwrap();
            prop_assert_eq!(frags.len(), k + m);
            prop_assert!(frags.iter().all(|f| f.len() == stripes * FRAGMENT_BYTES));
            // The first k bricks hold the data itself (systematic).
            prop_assert_eq!(&frags[0][..FRAGMENT_BYTES], &data[..FRAGMENT_BYTES]);
            let lost: Vec<usize> = lost.into_iter().filter(|i| *i < k + m).take(m).collect();
            let avail: Vec<Option<Vec<u8>>> = frags
                .into_iter()
                .enumerate()
                .map(|(i, f)| (!lost.contains(&i)).then_some(f))
                .collect();
            prop_assert_eq!(c.decode(&avail).unwrap(), data);
        }
    }
}
