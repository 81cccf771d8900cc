//! What data heal asks of a brick besides reads and writes: checksums of
//! a file's blocks (`Rchecksum`), so only the blocks two copies hold
//! differently are moved, and holes punched (`Discard`), so a block that
//! became zeros on the good copy becomes a hole on the stale one.
//!
//! The digest is SHA-256. Heal *skips* a block whose digest matches, so a
//! false match silently keeps stale data; the digest must make that
//! practically impossible over every block of every heal, which rules out
//! CRCs (32 or 64 bits, and linear, so structured changes collide far
//! more often than chance). Of the 256-bit hashes, SHA-256 adds the least
//! to the build (the `sha2` crate and `block-buffer`; its other crates are
//! already linked for CRC32C), needs no C compiler, and uses the CPU's
//! SHA extensions where present (about 2 GB/s a core, faster than the
//! disk reads it follows). BLAKE3 would be faster still but brings more
//! crates and a build script.

use sha2::{Digest, Sha256};

use mortar_proto::brick::{BlockChecksum, RCHECKSUM_BLOCKS_MAX};

use super::*;

/// Is every byte zero? Compared a word at a time, so a hole's worth of
/// zeros costs little next to reading it.
fn all_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(64);
    let whole = words
        .by_ref()
        .all(|w| w.iter().fold(0u8, |acc, b| acc | b) == 0);
    whole && words.remainder().iter().all(|b| *b == 0)
}

/// The checksum of one block's bytes.
pub fn block_checksum(data: &[u8]) -> BlockChecksum {
    BlockChecksum {
        len: data.len() as u64,
        zero: all_zero(data),
        sha256: Sha256::digest(data).into(),
    }
}

/// Why an `Rchecksum` request is refused, if it is.
fn check_rchecksum(r: &bp::Rchecksum) -> FopResult<()> {
    if r.block_size == 0 || r.block_size > IO_BYTES_MAX {
        return Err(fop(
            Errno::EINVAL,
            format!(
                "checksum block of {} bytes: must be 1 to {IO_BYTES_MAX}",
                r.block_size
            ),
        ));
    }
    if r.len > IO_BYTES_MAX {
        return Err(fop(
            Errno::EINVAL,
            format!(
                "checksum of {} bytes exceeds the {IO_BYTES_MAX}-byte limit of one request",
                r.len
            ),
        ));
    }
    let blocks = r.len.div_ceil(r.block_size);
    if blocks > RCHECKSUM_BLOCKS_MAX {
        return Err(fop(
            Errno::EINVAL,
            format!(
                "checksum of {blocks} blocks exceeds the {RCHECKSUM_BLOCKS_MAX}-block limit of one request"
            ),
        ));
    }
    if r.offset
        .checked_add(r.len)
        .is_none_or(|end| end > FILE_BYTES_MAX)
    {
        return Err(fop(
            Errno::EINVAL,
            format!("checksum range past {FILE_BYTES_MAX} bytes, the largest file a brick stores"),
        ));
    }
    Ok(())
}

impl<S: Storage> Brick<S> {
    /// The checksums of the blocks of `r`'s range that lie inside the
    /// file, read one block at a time (one block of memory, whatever the
    /// range).
    pub fn rchecksum(&self, r: &bp::Rchecksum) -> FopResult<bp::RchecksumReply> {
        check_rchecksum(r)?;
        let _ns = self.ns.read().expect("ns lock");
        let p = self.regular_file(&r.gfid)?;
        let size = self
            .storage
            .lstat(&p)
            .ctx(|| format!("stat {}", r.gfid))?
            .size;
        let end = (r.offset + r.len).min(size);
        let mut blocks = Vec::new();
        let mut off = r.offset;
        while off < end {
            let want = r.block_size.min(end - off);
            let data = self
                .storage
                .read(&p, off, want as usize)
                .ctx(|| format!("read {} at {off} for its checksum", r.gfid))?;
            if !data.is_empty() {
                blocks.push(block_checksum(&data));
            }
            // A short read is the end of the file (it shrank since the
            // stat); later blocks would not line up, so stop here.
            if (data.len() as u64) < want {
                break;
            }
            off += want;
        }
        Ok(bp::RchecksumReply { size, blocks })
    }

    /// Punch a hole: `r`'s range reads as zeros, the size stays.
    pub fn discard(&self, r: &bp::Discard) -> FopResult<()> {
        if r.len == 0 {
            return Err(fop(Errno::EINVAL, "discard of 0 bytes"));
        }
        if r.offset
            .checked_add(r.len)
            .is_none_or(|end| end > FILE_BYTES_MAX)
        {
            return Err(fop(
                Errno::EFBIG,
                format!("discard past {FILE_BYTES_MAX} bytes, the largest file a brick stores"),
            ));
        }
        let _ns = self.ns.read().expect("ns lock");
        let p = self.regular_file(&r.gfid)?;
        self.storage
            .punch_hole(&p, r.offset, r.len)
            .ctx(|| format!("discard {} bytes of {} at {}", r.len, r.gfid, r.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_found_at_any_length() {
        for len in [0, 1, 63, 64, 65, 4096, 131_072, 131_073] {
            let mut v = vec![0u8; len];
            assert!(block_checksum(&v).zero, "{len} zeros");
            if len > 0 {
                v[len - 1] = 1;
                assert!(!block_checksum(&v).zero, "{len} with a last 1");
                v[len - 1] = 0;
                v[0] = 0x80;
                assert!(!block_checksum(&v).zero, "{len} with a first bit");
            }
        }
    }

    #[test]
    fn checksums_are_sha256_of_the_bytes() {
        // FIPS 180-2 test vector.
        let c = block_checksum(b"abc");
        let hex: String = c.sha256.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((c.len, c.zero), (3, false));
        assert_ne!(
            block_checksum(&[0; 4]).sha256,
            block_checksum(&[0; 5]).sha256
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let ok = bp::Rchecksum {
            gfid: Gfid::from_u128(1),
            offset: 0,
            len: IO_BYTES_MAX,
            block_size: mortar_proto::brick::HEAL_BLOCK_BYTES,
        };
        assert!(check_rchecksum(&ok).is_ok());
        let table = [
            (
                bp::Rchecksum {
                    block_size: 0,
                    ..ok.clone()
                },
                "must be 1 to",
            ),
            (
                bp::Rchecksum {
                    block_size: IO_BYTES_MAX + 1,
                    ..ok.clone()
                },
                "must be 1 to",
            ),
            (
                bp::Rchecksum {
                    len: IO_BYTES_MAX + 1,
                    ..ok.clone()
                },
                "byte limit",
            ),
            (
                bp::Rchecksum {
                    block_size: 4096,
                    ..ok.clone()
                },
                "block limit",
            ),
            (
                bp::Rchecksum {
                    offset: u64::MAX,
                    ..ok.clone()
                },
                "largest file",
            ),
            (
                bp::Rchecksum {
                    offset: FILE_BYTES_MAX,
                    len: 1,
                    ..ok.clone()
                },
                "largest file",
            ),
        ];
        for (q, why) in table {
            let e = check_rchecksum(&q).unwrap_err();
            assert_eq!(e.errno, Errno::EINVAL, "{q:?}");
            assert!(e.detail.contains(why), "{q:?}: {e}");
        }
    }
}
