//! FNV-1a: a small, stable, non-cryptographic hash for values that must be
//! the same in every process and every run (volfile watches, the
//! simulator's trace hash). Not for anything an attacker chooses keys of.

/// The FNV-1a 64-bit offset basis: the hash of no bytes.
pub const FNV1A_64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV1A_64_PRIME: u64 = 0x0100_0000_01b3;

/// Fold `bytes` into a running hash `h` (start from [`FNV1A_64_OFFSET`]).
pub fn fnv1a_64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV1A_64_PRIME);
    }
    h
}

/// The FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    fnv1a_64_extend(FNV1A_64_OFFSET, bytes)
}

/// The FNV-1a 32-bit hash of `bytes` (distribute's name hash).
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        // Reference values of the FNV-1a definition.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn extending_is_hashing_the_concatenation() {
        let h = fnv1a_64_extend(fnv1a_64(b"foo"), b"bar");
        assert_eq!(h, fnv1a_64(b"foobar"));
    }
}
