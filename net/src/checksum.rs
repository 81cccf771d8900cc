//! CRC32C (Castagnoli), the frame checksum.
//!
//! crc-fast folds with carry-less multiplication (VPCLMULQDQ/AVX-512 where
//! the CPU has it). Measured on this project's machine (AMD EPYC, 1 MiB
//! buffers): 64 GB/s against 32 GB/s for the SSE4.2 `crc32` instruction
//! path of the crc32c crate. The checksum was the largest cost the
//! messenger added over raw TCP for 1 MiB messages, so the faster one is
//! used; both give identical values.

use crc_fast::{CrcAlgorithm, Digest};

/// An incremental CRC32C.
#[derive(Clone)]
pub struct Crc32c(Digest);

impl std::fmt::Debug for Crc32c {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crc32c({:#010x})", self.value())
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    pub fn new() -> Self {
        Crc32c(Digest::new(CrcAlgorithm::Crc32Iscsi))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.finalize() as u32
    }
}

/// CRC32C of one buffer.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value_and_incremental_equals_one_shot() {
        // The catalogue check value of CRC-32/ISCSI over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut c = Crc32c::new();
        for chunk in data.chunks(4093) {
            c.update(chunk);
        }
        assert_eq!(c.value(), crc32c(&data));
    }
}
