//! The messenger's wire format.
//!
//! Every message on a stream transport is one frame:
//!
//! ```text
//! offset size field
//!      0    4 magic        b"MRTR"
//!      4    1 version      FRAME_VERSION
//!      5    1 flags        REPLY | ERROR (other bits must be zero)
//!      6    2 program      which service (0 = the messenger itself)
//!      8    2 procedure    which call within the program
//!     10    2 reserved     must be zero
//!     12    8 request id   chosen by the caller, echoed in the reply
//!     20    4 body length  serde body (postcard)
//!     24    4 payload len  raw bytes carried without re-encoding
//!     28    4 header crc   CRC32C of bytes 0..28
//!     32    . body
//!      .    . payload
//!      .    4 frame crc    CRC32C of header, body and payload
//! ```
//!
//! All integers are little-endian. The header has its own checksum so that a
//! corrupted length is rejected before the reader waits for (or buffers) the
//! bytes it announces; the trailing checksum covers everything.
//!
//! Decoding works on a byte buffer, not a socket, so it is tested without
//! any I/O, and it never allocates: the caller's read loop grows its buffer
//! only as bytes actually arrive (see [`FrameDecoder::bytes_wanted`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::checksum::{crc32c, Crc32c};

/// `b"MRTR"` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"MRTR");
/// The only frame version this build speaks.
pub const FRAME_VERSION: u8 = 1;
/// Size of the fixed header, including its checksum.
pub const HEADER_LEN: usize = 32;
/// Size of the trailing frame checksum.
pub const TRAILER_LEN: usize = 4;

/// Frame flag bits.
pub mod flags {
    /// The frame answers a request with the same request id.
    pub const REPLY: u8 = 0b0000_0001;
    /// The reply carries a messenger-level error instead of a result.
    pub const ERROR: u8 = 0b0000_0010;
    /// Every bit this version defines; anything else is rejected.
    pub const KNOWN: u8 = REPLY | ERROR;
}

/// The fixed part of a frame that callers choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub program: u16,
    pub procedure: u16,
    pub request_id: u64,
}

impl Header {
    pub fn is_reply(&self) -> bool {
        self.flags & flags::REPLY != 0
    }
    pub fn is_error(&self) -> bool {
        self.flags & flags::ERROR != 0
    }
}

/// One decoded frame. `body` and `payload` are slices of the receive buffer:
/// no byte is copied between the socket and the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub body: Bytes,
    pub payload: Bytes,
}

/// Why a byte sequence is not a frame. Each of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {found:#010x} (expected {FRAME_MAGIC:#010x}): the peer is not a Mortar messenger or the stream is out of sync")]
    BadMagic { found: u32 },
    #[error("unsupported frame version {found} (this build speaks {FRAME_VERSION}): upgrade the older side")]
    UnsupportedVersion { found: u8 },
    #[error(
        "unknown flag bits {found:#04x}: the peer speaks a newer protocol or the frame is corrupt"
    )]
    UnknownFlags { found: u8 },
    #[error("reserved header field is {found}, expected 0: the frame is corrupt")]
    ReservedNonZero { found: u16 },
    #[error("header checksum mismatch (computed {computed:#010x}, frame says {stored:#010x}): data corrupted in transit")]
    BadHeaderCrc { computed: u32, stored: u32 },
    #[error("frame checksum mismatch (computed {computed:#010x}, frame says {stored:#010x}): data corrupted in transit")]
    BadCrc { computed: u32, stored: u32 },
    #[error("{what} length {len} exceeds the configured maximum {max}: raise the limit on both sides if such messages are intended")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
}

/// Size limits a decoder enforces. Both sides should agree on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub body_bytes_max: u32,
    pub payload_bytes_max: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        // Bodies are metadata (a readdir page, a volfile); payloads are file
        // data. 16 MiB covers the largest read/write the client issues with
        // room to spare, while bounding what one connection can make us hold.
        FrameLimits {
            body_bytes_max: 4 << 20,
            payload_bytes_max: 16 << 20,
        }
    }
}

/// Fields of a validated header that the decoder keeps while the rest of
/// the frame arrives.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    header: Header,
    body_len: usize,
    payload_len: usize,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for a whole header in the buffer.
    Header,
    /// Header valid; waiting for the body behind it.
    Body(Parsed),
    /// Collecting the payload into its own buffer. `crc` covers header,
    /// body and the first `crc_done` payload bytes.
    Payload {
        p: Parsed,
        head: Bytes,
        payload: BytesMut,
        crc: Crc32c,
        crc_done: usize,
    },
    /// Payload complete; waiting for the 4-byte trailer.
    Trailer {
        p: Parsed,
        head: Bytes,
        payload: Bytes,
        crc: Crc32c,
    },
}

/// Parses frames out of a growing receive buffer.
///
/// The payload of a frame is collected in a buffer of its own, so a stream
/// reader can read it there directly ([`FrameDecoder::payload_target`]):
/// large payloads land in one exactly-sized allocation with no regrowth
/// copies, and each chunk is checksummed right after it arrives, while it is
/// still in cache.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    phase: Phase,
}

/// A stream reader may reserve at most this much payload space ahead of
/// the payload bytes that have actually arrived (beyond it, payload space
/// grows only by doubling what arrived). This bounds what a peer can make
/// us allocate by announcing a large frame and then sending nothing.
pub const PAYLOAD_RESERVE_AHEAD_BYTES_MAX: usize = 1 << 20;

impl FrameDecoder {
    pub fn new(limits: FrameLimits) -> Self {
        FrameDecoder {
            limits,
            phase: Phase::Header,
        }
    }

    /// How many more bytes the control buffer `buf` needs before the
    /// decoder can make progress (at least 1). In the payload phase the
    /// reader should read into [`FrameDecoder::payload_target`] instead.
    pub fn bytes_wanted(&self, buf: &BytesMut) -> usize {
        let need = match &self.phase {
            Phase::Header => HEADER_LEN,
            Phase::Body(p) => HEADER_LEN + p.body_len,
            Phase::Payload { p, payload, .. } => p.payload_len - payload.len(),
            Phase::Trailer { .. } => TRAILER_LEN,
        };
        need.saturating_sub(buf.len()).max(1)
    }

    /// When the decoder is collecting a payload and the control buffer is
    /// empty: the payload buffer and how many bytes it still lacks. The
    /// reader reads at most that many bytes into it, then calls `decode`.
    pub fn payload_target(&mut self, buf: &BytesMut) -> Option<(&mut BytesMut, usize)> {
        match &mut self.phase {
            Phase::Payload { p, payload, .. } if buf.is_empty() => {
                let missing = p.payload_len - payload.len();
                Some((payload, missing))
            }
            _ => None,
        }
    }

    /// Bytes reserved by the payload being collected (for tests of the
    /// allocation bound).
    pub fn payload_capacity(&self) -> usize {
        match &self.phase {
            Phase::Payload { payload, .. } => payload.capacity(),
            _ => 0,
        }
    }

    /// Take one frame from the front of `buf` if a whole one is there.
    /// `Ok(None)` means "need more bytes". Errors are final for the stream.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Header) {
                Phase::Header => {
                    if buf.len() < HEADER_LEN {
                        return Ok(None);
                    }
                    self.phase = Phase::Body(self.check_header(&buf[..HEADER_LEN])?);
                }
                Phase::Body(p) => {
                    if buf.len() < HEADER_LEN + p.body_len {
                        self.phase = Phase::Body(p);
                        return Ok(None);
                    }
                    let head = buf.split_to(HEADER_LEN + p.body_len).freeze();
                    let mut crc = Crc32c::new();
                    crc.update(&head);
                    self.phase = Phase::Payload {
                        p,
                        head,
                        payload: BytesMut::new(),
                        crc,
                        crc_done: 0,
                    };
                }
                Phase::Payload {
                    p,
                    head,
                    mut payload,
                    mut crc,
                    mut crc_done,
                } => {
                    let missing = p.payload_len - payload.len();
                    let take = missing.min(buf.len());
                    if take > 0 {
                        if payload.is_empty() && take == missing {
                            // The whole payload is already here: slice it
                            // out of the buffer without copying.
                            payload = buf.split_to(take);
                        } else {
                            payload.extend_from_slice(&buf[..take]);
                            buf.advance(take);
                        }
                    }
                    crc.update(&payload[crc_done..]);
                    crc_done = payload.len();
                    if payload.len() < p.payload_len {
                        self.phase = Phase::Payload {
                            p,
                            head,
                            payload,
                            crc,
                            crc_done,
                        };
                        return Ok(None);
                    }
                    self.phase = Phase::Trailer {
                        p,
                        head,
                        payload: payload.freeze(),
                        crc,
                    };
                }
                Phase::Trailer {
                    p,
                    head,
                    payload,
                    crc,
                } => {
                    if buf.len() < TRAILER_LEN {
                        self.phase = Phase::Trailer {
                            p,
                            head,
                            payload,
                            crc,
                        };
                        return Ok(None);
                    }
                    let stored = buf.get_u32_le();
                    let computed = crc.value();
                    if stored != computed {
                        return Err(FrameError::BadCrc { computed, stored });
                    }
                    return Ok(Some(Frame {
                        header: p.header,
                        body: head.slice(HEADER_LEN..),
                        payload,
                    }));
                }
            }
        }
    }

    /// Called when the stream ends: a partly received frame is an error.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), FrameError> {
        let (have, need) = match &self.phase {
            Phase::Header if buf.is_empty() => return Ok(()),
            Phase::Header => (buf.len(), HEADER_LEN),
            Phase::Body(p) => (buf.len(), HEADER_LEN + p.body_len),
            Phase::Payload { p, payload, .. } => (
                HEADER_LEN + p.body_len + payload.len() + buf.len(),
                HEADER_LEN + p.body_len + p.payload_len + TRAILER_LEN,
            ),
            Phase::Trailer { p, .. } => (
                HEADER_LEN + p.body_len + p.payload_len + buf.len(),
                HEADER_LEN + p.body_len + p.payload_len + TRAILER_LEN,
            ),
        };
        Err(FrameError::Truncated { have, need })
    }

    /// Validate a header and return what the rest of the frame must hold.
    fn check_header(&self, hdr: &[u8]) -> Result<Parsed, FrameError> {
        debug_assert_eq!(hdr.len(), HEADER_LEN);
        let mut c = hdr;
        let magic = c.get_u32_le();
        if magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let stored = u32::from_le_bytes([hdr[28], hdr[29], hdr[30], hdr[31]]);
        let computed = header_crc(hdr);
        if stored != computed {
            return Err(FrameError::BadHeaderCrc { computed, stored });
        }
        let version = c.get_u8();
        if version != FRAME_VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        let fl = c.get_u8();
        if fl & !flags::KNOWN != 0 {
            return Err(FrameError::UnknownFlags { found: fl });
        }
        let program = c.get_u16_le();
        let procedure = c.get_u16_le();
        let reserved = c.get_u16_le();
        if reserved != 0 {
            return Err(FrameError::ReservedNonZero { found: reserved });
        }
        let request_id = c.get_u64_le();
        let body_len = c.get_u32_le();
        let payload_len = c.get_u32_le();
        if body_len > self.limits.body_bytes_max {
            return Err(FrameError::TooLarge {
                what: "body",
                len: body_len.into(),
                max: self.limits.body_bytes_max.into(),
            });
        }
        if payload_len > self.limits.payload_bytes_max {
            return Err(FrameError::TooLarge {
                what: "payload",
                len: payload_len.into(),
                max: self.limits.payload_bytes_max.into(),
            });
        }
        Ok(Parsed {
            header: Header {
                flags: fl,
                program,
                procedure,
                request_id,
            },
            body_len: body_len as usize,
            payload_len: payload_len as usize,
        })
    }
}

/// The checksum stored at bytes 28..32 of a header, computed over its
/// first 28 bytes (exposed for tools and tests that craft frames).
pub fn header_crc(first_28_bytes: &[u8]) -> u32 {
    crc32c(&first_28_bytes[..28])
}

/// A frame ready to send: the header and body in one small buffer, the
/// payload as the caller's own `Bytes` (never copied), and the trailer.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub head: Bytes,
    pub payload: Bytes,
    pub trailer: [u8; TRAILER_LEN],
}

impl EncodedFrame {
    pub fn len(&self) -> usize {
        self.head.len() + self.payload.len() + TRAILER_LEN
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame as one contiguous buffer (tests and tools; the messenger
    /// writes the parts separately).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.payload);
        v.extend_from_slice(&self.trailer);
        v
    }
}

/// Encode a frame. Fails only if a part exceeds the limits, so that a sender
/// learns of an oversized message locally instead of having the peer drop
/// the connection.
pub fn encode(
    header: &Header,
    body: &[u8],
    payload: Bytes,
    limits: &FrameLimits,
) -> Result<EncodedFrame, FrameError> {
    if header.flags & !flags::KNOWN != 0 {
        return Err(FrameError::UnknownFlags {
            found: header.flags,
        });
    }
    let body_len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= limits.body_bytes_max)
        .ok_or(FrameError::TooLarge {
            what: "body",
            len: body.len() as u64,
            max: limits.body_bytes_max.into(),
        })?;
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= limits.payload_bytes_max)
        .ok_or(FrameError::TooLarge {
            what: "payload",
            len: payload.len() as u64,
            max: limits.payload_bytes_max.into(),
        })?;
    let mut head = BytesMut::with_capacity(HEADER_LEN + body.len());
    head.put_u32_le(FRAME_MAGIC);
    head.put_u8(FRAME_VERSION);
    head.put_u8(header.flags);
    head.put_u16_le(header.program);
    head.put_u16_le(header.procedure);
    head.put_u16_le(0);
    head.put_u64_le(header.request_id);
    head.put_u32_le(body_len);
    head.put_u32_le(payload_len);
    let hcrc = header_crc(&head);
    head.put_u32_le(hcrc);
    head.put_slice(body);
    let mut crc = Crc32c::new();
    crc.update(&head);
    crc.update(&payload);
    let crc = crc.value();
    Ok(EncodedFrame {
        head: head.freeze(),
        payload,
        trailer: crc.to_le_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> Header {
        Header {
            flags: flags::REPLY,
            program: 7,
            procedure: 3,
            request_id: 0xdead_beef_0042,
        }
    }

    #[test]
    fn round_trip_in_pieces() {
        let lim = FrameLimits::default();
        let f = encode(&hdr(), b"body", Bytes::from_static(b"payload!"), &lim).unwrap();
        let wire = f.to_vec();
        let mut dec = FrameDecoder::new(lim);
        let mut buf = BytesMut::new();
        // Feed one byte at a time: the decoder must never produce a frame
        // early and must produce exactly one at the end.
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let out = dec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert!(out.is_none(), "frame produced after {} bytes", i + 1);
            } else {
                let fr = out.expect("whole frame");
                assert_eq!(fr.header, hdr());
                assert_eq!(&fr.body[..], b"body");
                assert_eq!(&fr.payload[..], b"payload!");
            }
        }
        assert!(buf.is_empty());
        dec.finish(&buf).unwrap();
    }

    #[test]
    fn corrupt_payload_is_caught() {
        let lim = FrameLimits::default();
        let mut wire = encode(&hdr(), b"b", Bytes::from_static(b"data"), &lim)
            .unwrap()
            .to_vec();
        let n = wire.len();
        wire[n - 6] ^= 0x40;
        let mut buf = BytesMut::from(&wire[..]);
        let err = FrameDecoder::new(lim).decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::BadCrc { .. }), "{err}");
    }

    #[test]
    fn oversized_announcement_rejected_from_header_alone() {
        let lim = FrameLimits {
            body_bytes_max: 16,
            payload_bytes_max: 16,
        };
        let big = FrameLimits {
            body_bytes_max: 1 << 20,
            payload_bytes_max: 1 << 20,
        };
        let wire = encode(&hdr(), &[0u8; 17], Bytes::new(), &big)
            .unwrap()
            .to_vec();
        // Only the header is available: the decoder must already refuse.
        let mut buf = BytesMut::from(&wire[..HEADER_LEN]);
        let err = FrameDecoder::new(lim).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                what: "body",
                len: 17,
                max: 16
            }
        );
        assert!(encode(&hdr(), &[0u8; 17], Bytes::new(), &lim).is_err());
    }

    #[test]
    fn truncated_stream_reported() {
        let lim = FrameLimits::default();
        let wire = encode(&hdr(), b"abc", Bytes::new(), &lim).unwrap().to_vec();
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        let mut dec = FrameDecoder::new(lim);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            dec.finish(&buf),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_magic_and_version() {
        let lim = FrameLimits::default();
        let mut wire = encode(&hdr(), b"", Bytes::new(), &lim).unwrap().to_vec();
        wire[0] = b'X';
        let mut buf = BytesMut::from(&wire[..]);
        assert!(matches!(
            FrameDecoder::new(lim).decode(&mut buf),
            Err(FrameError::BadMagic { .. })
        ));
        let mut wire = encode(&hdr(), b"", Bytes::new(), &lim).unwrap().to_vec();
        wire[4] = 9;
        let crc = header_crc(&wire[..28]);
        wire[28..32].copy_from_slice(&crc.to_le_bytes());
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            FrameDecoder::new(lim).decode(&mut buf),
            Err(FrameError::UnsupportedVersion { found: 9 })
        );
    }
}
