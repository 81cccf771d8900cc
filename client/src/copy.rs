//! Copying a file's data between bricks as migration and heal do it: a
//! bounded chunk at a time, with all-zero chunks left unwritten so holes
//! stay holes (a sparse 5 GiB file costs its data, not 5 GiB).

use mortar_proto::brick as bp;
use mortar_proto::{FopError, Gfid};

use crate::fop::{Child, Fop, FopOut, CHUNK_BYTES_MAX};

/// Which side of a copy failed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFailure {
    /// True when reading the source failed, false for a destination write.
    pub reading: bool,
    /// The brick (child layer) that failed.
    pub brick: String,
    pub err: FopError,
}

/// Does this chunk need writing (holds a non-zero byte)?
pub fn has_data(chunk: &[u8]) -> bool {
    chunk.iter().any(|b| *b != 0)
}

/// Copy `size` bytes of `gfid` from `src` to every child in `dsts`, up to
/// [`CHUNK_BYTES_MAX`] at a time, skipping all-zero chunks. Stops at a
/// short source (end of file) and at the first failure.
pub async fn copy_keeping_holes(
    src: &Child,
    dsts: &[&Child],
    gfid: Gfid,
    size: u64,
) -> Result<(), CopyFailure> {
    copy_range_keeping_holes(src, dsts, gfid, 0..size)
        .await
        .map(|_| ())
}

/// [`copy_keeping_holes`] of the bytes in `range` only (heal copies the
/// part of a file past the end of every stale copy this way). Returns the
/// bytes written to each destination.
pub async fn copy_range_keeping_holes(
    src: &Child,
    dsts: &[&Child],
    gfid: Gfid,
    range: std::ops::Range<u64>,
) -> Result<u64, CopyFailure> {
    let (mut off, end) = (range.start, range.end);
    let mut written = 0;
    while off < end {
        let len = CHUNK_BYTES_MAX.min(end - off);
        let data = src
            .fop(Fop::Read(bp::Read {
                gfid,
                offset: off,
                len,
            }))
            .await
            .and_then(FopOut::data)
            .map_err(|err| CopyFailure {
                reading: true,
                brick: src.name().to_string(),
                err,
            })?;
        if data.is_empty() {
            break;
        }
        let got = data.len() as u64;
        if has_data(&data) {
            for dst in dsts {
                dst.fop(Fop::Write(bp::Write { gfid, offset: off }, data.clone()))
                    .await
                    .map_err(|err| CopyFailure {
                        reading: false,
                        brick: dst.name().to_string(),
                        err,
                    })?;
            }
            written += got;
        }
        off += got;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunks_with_a_non_zero_byte_are_written() {
        assert!(!has_data(&[]));
        assert!(!has_data(&[0; 4096]));
        let mut c = vec![0u8; 4096];
        c[4095] = 1;
        assert!(has_data(&c));
    }
}
