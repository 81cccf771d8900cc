//! `mortar-proto`: what travels between Mortar processes, and what they
//! agree on: the brick program, the management CLI program, the port map,
//! the volume model and its option table, the volfile text and its typed
//! schema, every on-disk xattr name, errno.
//!
//! It depends on no other Mortar crate and must never do I/O: every other
//! crate may depend on it, so it stays plain serde types, constants and
//! pure functions. Bodies are encoded with the
//! messenger's codec (postcard); file data travels as the frame's raw
//! payload, never inside these types.
//!
//! Versioning: a new procedure gets a new number; an existing request or
//! reply type only ever grows by appending `Option` fields at the end,
//! which older decoders reject cleanly (postcard) rather than misread, and
//! the messenger's `ProcUnavail` tells a newer client that an older brick
//! lacks a procedure.

pub mod brick;
pub mod errno;
pub mod hash;
pub mod mgmt;
pub mod options;
pub mod portmap;
pub mod volfile;
pub mod volume;
pub mod xattr;
pub mod xlator;

use serde::{Deserialize, Serialize};

pub use errno::{Errno, FopError};

/// A file's identity across renames and across the bricks of a replica
/// set: the client picks it at creation, every brick stores it.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gfid(pub [u8; 16]);

impl Gfid {
    /// The volume's root directory on every brick.
    pub const ROOT: Gfid = Gfid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    pub const NULL: Gfid = Gfid([0; 16]);

    pub fn from_u128(v: u128) -> Gfid {
        Gfid(v.to_be_bytes())
    }

    /// A random (version 4) UUID from 16 random bytes: the version and
    /// variant bits are set, the other 122 bits are the caller's. Used for
    /// gfids and for peer and volume ids.
    pub fn random_v4(mut bytes: [u8; 16]) -> Gfid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Gfid(bytes)
    }

    pub fn is_null(&self) -> bool {
        *self == Gfid::NULL
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        s
    }

    /// Parse exactly 32 hex digits (case-insensitive).
    pub fn from_hex(s: &str) -> Option<Gfid> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(Gfid(out))
    }
}

impl std::fmt::Debug for Gfid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gfid({})", self.to_hex())
    }
}

impl std::fmt::Display for Gfid {
    /// The conventional 8-4-4-4-12 form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.to_hex();
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timespec {
    pub secs: i64,
    pub nsecs: u32,
}

/// A file's attributes as a brick reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub gfid: Gfid,
    pub kind: FileKind,
    /// Permission bits (07777).
    pub mode: u32,
    /// Links to the file, not counting the brick's own handle link.
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_v4_sets_version_and_variant_only() {
        let g = Gfid::random_v4([0xff; 16]);
        let text = g.to_string();
        assert_eq!(text, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let z = Gfid::random_v4([0; 16]);
        assert_eq!(z.to_string(), "00000000-0000-4000-8000-000000000000");
        assert!(!z.is_null() && z != Gfid::ROOT);
    }

    #[test]
    fn gfid_hex_round_trip_and_display() {
        let g = Gfid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(g.to_hex(), "0123456789abcdef0011223344556677");
        assert_eq!(Gfid::from_hex(&g.to_hex()), Some(g));
        assert_eq!(Gfid::from_hex(&g.to_hex().to_uppercase()), Some(g));
        assert_eq!(g.to_string(), "01234567-89ab-cdef-0011-223344556677");
        for bad in [
            "",
            "0123",
            "../../etc/passwd/0000000000000000",
            "zz23456789abcdef0011223344556677",
        ] {
            assert_eq!(Gfid::from_hex(bad), None, "{bad}");
        }
        assert_eq!(Gfid::ROOT.to_hex(), "00000000000000000000000000000001");
    }
}
