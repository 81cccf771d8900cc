//! Property tests of the frame codec: round trips under any chunking, and
//! arbitrary input never panics and never makes the reader reserve memory
//! for bytes that have not arrived.

use bytes::{Bytes, BytesMut};
use mortar_net::frame::{self, flags, FrameDecoder, FrameLimits, Header, HEADER_LEN};
use mortar_net::transport::{FrameSource, StreamSource};
use proptest::prelude::*;

fn header() -> impl Strategy<Value = Header> {
    (0u8..=flags::KNOWN, any::<u16>(), any::<u16>(), any::<u64>()).prop_map(
        |(flags, program, procedure, request_id)| Header {
            flags,
            program,
            procedure,
            request_id,
        },
    )
}

/// Feed `wire` to a decoder in chunks of the given sizes (cycled).
fn decode_chunked(
    wire: &[u8],
    chunks: &[usize],
    lim: FrameLimits,
) -> Result<Vec<frame::Frame>, frame::FrameError> {
    let mut dec = FrameDecoder::new(lim);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < wire.len() {
        let n = chunks[i % chunks.len()].max(1).min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        i += 1;
        while let Some(f) = dec.decode(&mut buf)? {
            out.push(f);
        }
    }
    dec.finish(&buf)?;
    Ok(out)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("test runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip_under_any_chunking(
        frames in prop::collection::vec(
            (header(), prop::collection::vec(any::<u8>(), 0..512), prop::collection::vec(any::<u8>(), 0..4096)),
            1..6,
        ),
        chunks in prop::collection::vec(1usize..700, 1..8),
    ) {
        let lim = FrameLimits::default();
        let mut wire = Vec::new();
        for (h, body, payload) in &frames {
            wire.extend(frame::encode(h, body, Bytes::from(payload.clone()), &lim).unwrap().to_vec());
        }
        let got = decode_chunked(&wire, &chunks, lim).unwrap();
        prop_assert_eq!(got.len(), frames.len());
        for (f, (h, body, payload)) in got.iter().zip(&frames) {
            prop_assert_eq!(&f.header, h);
            prop_assert_eq!(&f.body[..], &body[..]);
            prop_assert_eq!(&f.payload[..], &payload[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        wire in prop::collection::vec(any::<u8>(), 0..4096),
        chunks in prop::collection::vec(1usize..300, 1..8),
    ) {
        let _ = decode_chunked(&wire, &chunks, FrameLimits::default());
    }

    #[test]
    fn mutated_frames_are_rejected_or_identical(
        h in header(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..256),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let lim = FrameLimits::default();
        let good = frame::encode(&h, &body, Bytes::from(payload.clone()), &lim).unwrap().to_vec();
        let mut bad = good.clone();
        for (ix, x) in &flips {
            let i = ix.index(bad.len());
            bad[i] ^= x;
        }
        // A corrupted frame must never decode into a *different* frame:
        // CRC32C catches every flip pattern this small.
        if let Ok(fs) = decode_chunked(&bad, &[bad.len()], lim) {
            prop_assert_eq!(&bad, &good);
            prop_assert_eq!(fs.len(), 1);
        }
    }

    #[test]
    fn reader_reserves_only_for_bytes_that_arrived(
        announced_body in 0u32..=(4 << 20),
        announced_payload in 0u32..=(16 << 20),
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        // A valid header announcing up to the maximum sizes, followed by
        // only a little data and then end of stream.
        let lim = FrameLimits::default();
        let h = Header { flags: 0, program: 1, procedure: 1, request_id: 9 };
        let mut wire = frame::encode(&h, b"", Bytes::new(), &lim).unwrap().to_vec();
        wire.truncate(HEADER_LEN);
        wire[20..24].copy_from_slice(&announced_body.to_le_bytes());
        wire[24..28].copy_from_slice(&announced_payload.to_le_bytes());
        let crc = frame::header_crc(&wire[..28]);
        wire[28..32].copy_from_slice(&crc.to_le_bytes());
        wire.extend_from_slice(&tail);
        let arrived = wire.len();
        let mut src = StreamSource::new(std::io::Cursor::new(wire), lim);
        let res = rt().block_on(src.recv());
        let announced = announced_body as usize + announced_payload as usize;
        if announced + 4 > tail.len() {
            prop_assert!(res.is_err(), "a truncated frame must be an error");
        }
        // Geometric growth over what arrived, plus one control-buffer read
        // chunk and the fixed payload reserve-ahead.
        let bound = 2 * arrived + (128 << 10) + frame::PAYLOAD_RESERVE_AHEAD_BYTES_MAX;
        prop_assert!(
            src.buffer_capacity() <= bound,
            "reserved {} bytes after receiving {}", src.buffer_capacity(), arrived
        );
    }
}

#[test]
fn header_announcing_more_than_the_limit_is_refused_before_any_body_arrives() {
    let lim = FrameLimits::default();
    let h = Header {
        flags: 0,
        program: 1,
        procedure: 1,
        request_id: 1,
    };
    let mut wire = frame::encode(&h, b"", Bytes::new(), &lim).unwrap().to_vec();
    wire.truncate(HEADER_LEN);
    wire[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = frame::header_crc(&wire[..28]);
    wire[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut src = StreamSource::new(std::io::Cursor::new(wire), lim);
    let err = rt().block_on(src.recv()).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the configured maximum"),
        "{err}"
    );
    assert!(src.buffer_capacity() < 128 << 10);
}

#[test]
fn decoder_state_is_reported_on_truncation_at_every_phase() {
    let lim = FrameLimits::default();
    let h = Header {
        flags: 0,
        program: 1,
        procedure: 1,
        request_id: 1,
    };
    let wire = frame::encode(&h, b"body", Bytes::from_static(b"payload"), &lim)
        .unwrap()
        .to_vec();
    for cut in 1..wire.len() {
        let r = decode_chunked(&wire[..cut], &[3], lim);
        assert!(
            matches!(r, Err(frame::FrameError::Truncated { .. })),
            "cut at {cut}: {r:?}"
        );
    }
    assert_eq!(decode_chunked(&wire, &[3], lim).unwrap().len(), 1);
}

/// Found by the property above: a payload one byte over the reserve-ahead
/// used to double the reservation after the first few bytes arrived.
#[test]
fn payload_just_over_the_reserve_ahead_is_not_doubled_early() {
    let lim = FrameLimits::default();
    let h = Header {
        flags: 0,
        program: 1,
        procedure: 1,
        request_id: 9,
    };
    let mut wire = frame::encode(&h, b"", Bytes::new(), &lim).unwrap().to_vec();
    wire.truncate(HEADER_LEN);
    let payload = (frame::PAYLOAD_RESERVE_AHEAD_BYTES_MAX + 1) as u32;
    wire[20..24].copy_from_slice(&0u32.to_le_bytes());
    wire[24..28].copy_from_slice(&payload.to_le_bytes());
    let crc = frame::header_crc(&wire[..28]);
    wire[28..32].copy_from_slice(&crc.to_le_bytes());
    wire.extend_from_slice(&[7u8; 666]);
    let arrived = wire.len();
    let mut src = StreamSource::new(std::io::Cursor::new(wire), lim);
    assert!(rt().block_on(src.recv()).is_err());
    let bound = 2 * arrived + (128 << 10) + frame::PAYLOAD_RESERVE_AHEAD_BYTES_MAX;
    assert!(
        src.buffer_capacity() <= bound,
        "reserved {} bytes after receiving {arrived}",
        src.buffer_capacity()
    );
}
