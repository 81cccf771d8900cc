//! Bodies on bare links: what [`FrameSource`] and [`FrameSink`] promise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{frame, link_pair, pattern, raw, recv, send_all, TransportUnderTest, PROMPT};
use crate::frame::{self as wire, flags, FrameError, FrameLimits, Header};
use crate::transport::{FrameSource, LinkError};
use crate::Runtime;

/// What one frame carried: request id, body, payload.
type Sent = (u64, Bytes, Bytes);

/// Frames with the given body and payload sizes, numbered from `first_id`.
fn frames_of(sizes: &[(usize, usize)], first_id: u64) -> Vec<Sent> {
    sizes
        .iter()
        .zip(first_id..)
        .map(|(&(body, payload), id)| (id, pattern(!id, body), pattern(id, payload)))
        .collect()
}

fn encoded(frames: &[Sent]) -> Vec<wire::EncodedFrame> {
    frames
        .iter()
        .map(|(id, body, payload)| frame(*id, body, payload.clone()))
        .collect()
}

/// Receive exactly `expected`, in order.
async fn expect_frames(
    name: &'static str,
    rt: &Runtime,
    source: &mut Box<dyn FrameSource>,
    expected: &[Sent],
) {
    for (id, body, payload) in expected {
        let f = recv(name, rt, source)
            .await
            .unwrap_or_else(|e| panic!("{name}: frame {id}: {e}"))
            .unwrap_or_else(|| panic!("{name}: the stream ended before frame {id}"));
        assert_eq!(f.header.request_id, *id, "{name}: frames out of order");
        // Not assert_eq!: a megabyte of bytes is no failure message.
        assert!(f.body == *body, "{name}: body of frame {id} corrupted");
        assert!(
            f.payload == *payload,
            "{name}: payload of frame {id} ({} bytes) corrupted",
            payload.len()
        );
    }
}

async fn expect_end(name: &'static str, rt: &Runtime, source: &mut Box<dyn FrameSource>) {
    let end = recv(name, rt, source).await;
    assert!(
        matches!(end, Ok(None)),
        "{name}: expected a clean end of stream, got {end:?}"
    );
}

/// Payloads of 0 B, a few bytes, around a page and well over 1 MiB, with
/// bodies of every size too, cross in order, and a clean close is seen as
/// the end of the stream (while the closing end still holds its read half,
/// where the transport half-closes).
pub async fn frames_of_every_size_arrive_intact_and_in_order(t: &impl TransportUnderTest) {
    let mut p = link_pair(t).await;
    let frames = frames_of(
        &[
            (0, 0),
            (1, 0),
            (0, 1),
            (16, 100),
            (100, 4096),
            (0, 70_000),
            (100 << 10, 0),
            (5, 1 << 20),
            (0, (1 << 20) + 4097),
            (3, 3 << 20),
            (0, 0),
        ],
        1,
    );
    let name = t.name();
    let out = encoded(&frames);
    let mut dialed = p.dialed;
    let half_closes = t.half_closes();
    let writer = p.rt.spawn(async move {
        send_all(name, &mut dialed.sink, out).await;
        half_closes.then_some(dialed)
    });
    expect_frames(name, &p.rt, &mut p.accepted.source, &frames).await;
    expect_end(name, &p.rt, &mut p.accepted.source).await;
    writer
        .await
        .expect("writer task")
        .expect("writer scope alive");
}

/// Both ends write and read at the same time; each direction arrives
/// intact and in order, neither end's writing holds up the other, and
/// (where the transport half-closes) each end's close ends one direction
/// while the other still flows.
pub async fn both_directions_flow_at_once(t: &impl TransportUnderTest) {
    let p = link_pair(t).await;
    let name = t.name();
    let half_closes = t.half_closes();
    let sizes: Vec<(usize, usize)> = (0..32)
        .map(|i| (i % 3 * 40, [0, 10, 5000, 300_000, 1 << 20][i % 5]))
        .collect();
    let mut tasks = Vec::new();
    for (i, (mut source, mut sink)) in [
        (p.dialed.source, p.accepted.sink),
        (p.accepted.source, p.dialed.sink),
    ]
    .into_iter()
    .enumerate()
    {
        let frames = frames_of(&sizes, 1000 * i as u64);
        let out = encoded(&frames);
        tasks.push(p.rt.spawn(async move {
            send_all(name, &mut sink, out).await;
        }));
        let reader_rt = p.rt.clone();
        tasks.push(p.rt.spawn(async move {
            expect_frames(name, &reader_rt, &mut source, &frames).await;
            if half_closes {
                expect_end(name, &reader_rt, &mut source).await;
            }
        }));
    }
    for task in tasks {
        p.rt.clock()
            .timeout(PROMPT * 3, task)
            .await
            .unwrap_or_else(|e| panic!("{name}: both ways at once did not finish: {e}"))
            .expect("task")
            .expect("scope alive");
    }
}

/// A peer that goes away without closing (as a killed process does)
/// still ends the stream: what it sent arrives, then the end, never a hang.
pub async fn a_dropped_peer_is_an_end_of_stream(t: &impl TransportUnderTest) {
    let mut p = link_pair(t).await;
    let name = t.name();
    let last = pattern(9, 5000);
    p.accepted
        .sink
        .send(frame(9, b"last words", last.clone()))
        .await
        .unwrap_or_else(|e| panic!("{name}: send: {e}"));
    p.accepted
        .sink
        .flush()
        .await
        .unwrap_or_else(|e| panic!("{name}: flush: {e}"));
    drop(p.accepted);
    let f = recv(name, &p.rt, &mut p.dialed.source)
        .await
        .unwrap_or_else(|e| panic!("{name}: the frame sent before going away: {e}"))
        .unwrap_or_else(|| panic!("{name}: the frame sent before going away was lost"));
    assert!(
        f.header.request_id == 9 && f.payload == last,
        "{name}: wrong frame"
    );
    match recv(name, &p.rt, &mut p.dialed.source).await {
        // A clean end, or a reset: either way the stream is over.
        Ok(None) | Err(LinkError::Io(_)) => {}
        other => panic!("{name}: expected the end of the stream, got {other:?}"),
    }
}

/// What the throttle test offers a reader that reads nothing: more than
/// any transport here buffers (Linux socket buffers grow to 32 MiB of
/// receive and 4 MiB of send buffer by default; turmoil holds 64 segments;
/// the RDMA pump its two channels and registered buffers, a few MiB).
const STALL_TOTAL_BYTES: u64 = 64 << 20;
const STALL_FRAME_BYTES: usize = 256 << 10;
const STALL_FRAMES: u64 = STALL_TOTAL_BYTES / STALL_FRAME_BYTES as u64;
const _: () = assert!(STALL_FRAMES * STALL_FRAME_BYTES as u64 == STALL_TOTAL_BYTES);
/// The writer counts as stalled when it sends nothing for this long.
const STALL_QUIET: Duration = Duration::from_millis(200);

/// How many frames `sent` reached when it stopped growing (or all of them).
async fn wait_until_stalled(rt: &Runtime, sent: &AtomicU64) -> u64 {
    let poll = Duration::from_millis(20);
    let mut last = u64::MAX;
    let mut quiet = Duration::ZERO;
    let started = rt.clock().now();
    loop {
        rt.clock().sleep(poll).await;
        let now = sent.load(Ordering::Acquire);
        if now == STALL_FRAMES || started.elapsed() > PROMPT {
            return now;
        }
        quiet = if now == last {
            quiet + poll
        } else {
            Duration::ZERO
        };
        if quiet >= STALL_QUIET {
            return now;
        }
        last = now;
    }
}

/// A reader that stops reading holds the writer back (so what the
/// transport buffers for it is bounded), and once it reads again
/// everything arrives and the writer finishes.
pub async fn a_stalled_reader_throttles_the_writer(t: &impl TransportUnderTest) {
    let mut p = link_pair(t).await;
    let name = t.name();
    let payload = pattern(1, STALL_FRAME_BYTES);
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (sent, payload) = (sent.clone(), payload.clone());
        let mut dialed = p.dialed;
        let half_closes = t.half_closes();
        p.rt.spawn(async move {
            for id in 0..STALL_FRAMES {
                dialed
                    .sink
                    .send(frame(id, b"", payload.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: send: {e}"));
                sent.store(id + 1, Ordering::Release);
            }
            dialed
                .sink
                .close()
                .await
                .unwrap_or_else(|e| panic!("{name}: close: {e}"));
            half_closes.then_some(dialed)
        })
    };
    let stalled_at = wait_until_stalled(&p.rt, &sent).await;
    if t.throttles_writer() {
        assert!(
            stalled_at < STALL_FRAMES,
            "{name}: the writer sent all {} MiB to a reader that reads nothing: nothing bounds \
             what the transport buffers",
            STALL_TOTAL_BYTES >> 20
        );
    }
    let expected: Vec<Sent> = (0..STALL_FRAMES)
        .map(|id| (id, Bytes::new(), payload.clone()))
        .collect();
    expect_frames(name, &p.rt, &mut p.accepted.source, &expected).await;
    expect_end(name, &p.rt, &mut p.accepted.source).await;
    p.rt.clock()
        .timeout(PROMPT, writer)
        .await
        .unwrap_or_else(|e| panic!("{name}: the writer never finished: {e}"))
        .expect("writer task")
        .expect("scope alive");
}

/// Bytes that are not a well-formed request.
pub struct Malformed {
    pub what: &'static str,
    pub bytes: Vec<u8>,
    /// How a link reading them fails; `None` for a well-formed frame that
    /// only a server refuses (a reply where requests belong).
    pub link_error: Option<fn(&FrameError) -> bool>,
}

/// Every way the suite feeds a peer garbage.
pub fn malformed_inputs() -> Vec<Malformed> {
    let lim = FrameLimits::default();
    let hdr = Header {
        flags: 0,
        program: crate::rpc::echo::PROGRAM_ECHO,
        procedure: crate::rpc::echo::PROC_ECHO,
        request_id: 1,
    };
    let valid = wire::encode(&hdr, b"x", Bytes::from_static(b"yz"), &lim)
        .expect("small frame")
        .to_vec();
    let mut bad_crc = valid.clone();
    let n = bad_crc.len();
    bad_crc[n - 5] ^= 1;
    // A header announcing a 4 GiB payload, with a valid header checksum.
    let mut huge = valid.clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = wire::header_crc(&huge[..28]);
    huge[28..32].copy_from_slice(&crc.to_le_bytes());
    let reply_hdr = Header {
        flags: flags::REPLY,
        ..hdr
    };
    let reply = wire::encode(&reply_hdr, b"", Bytes::new(), &lim)
        .expect("small frame")
        .to_vec();
    vec![
        Malformed {
            // Longer than a frame header, so the decoder judges it.
            what: "not our protocol",
            bytes: b"GET / HTTP/1.1\r\nHost: mortar\r\nAccept: */*\r\n\r\n".to_vec(),
            link_error: Some(|e| matches!(e, FrameError::BadMagic { .. })),
        },
        Malformed {
            what: "a corrupted payload byte",
            bytes: bad_crc,
            link_error: Some(|e| matches!(e, FrameError::BadCrc { .. })),
        },
        Malformed {
            what: "a 4 GiB payload announced",
            bytes: huge,
            link_error: Some(|e| matches!(e, FrameError::TooLarge { .. })),
        },
        Malformed {
            what: "a frame cut off by the end of the stream",
            bytes: valid[..valid.len() - 3].to_vec(),
            link_error: Some(|e| matches!(e, FrameError::Truncated { .. })),
        },
        Malformed {
            what: "a reply frame sent to a server",
            bytes: reply,
            link_error: None,
        },
    ]
}

/// A link fed garbage reports a frame error (it does not panic, and does
/// not hand out a frame).
pub async fn malformed_bytes_end_the_link_with_an_error(t: &impl TransportUnderTest) {
    let name = t.name();
    for m in malformed_inputs() {
        let Some(expected) = m.link_error else {
            continue;
        };
        let mut p = link_pair(t).await;
        send_all(name, &mut p.dialed.sink, vec![raw(&m.bytes)]).await;
        if !t.half_closes() {
            // Only going away ends the stream (the cut-off frame's case).
            drop(p.dialed);
        }
        match recv(name, &p.rt, &mut p.accepted.source).await {
            Err(LinkError::Frame(e)) if expected(&e) => {}
            other => panic!(
                "{name}: {}: expected its frame error, got {other:?}",
                m.what
            ),
        }
    }
}
