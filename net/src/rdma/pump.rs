//! The byte pump of an RDMA connection: a byte stream carried in RDMA SEND
//! messages with credit-based flow control, written against a small
//! [`Verbs`] trait so the protocol is tested without an RDMA device.
//!
//! Each side registers `send_slots` and `recv_slots` buffers of
//! `slot_bytes` each and keeps every receive buffer posted. A message is
//! an 8-byte header — data length (`u32` LE; `0` = credits only,
//! `u32::MAX` = end of stream) and credits returned (`u32` LE) — followed
//! by at most `slot_bytes - 8` bytes of stream data.
//!
//! Flow control: a sender may have at most as many messages outstanding
//! as the peer has receive buffers posted for it (its *credits*, starting
//! at the peer's `recv_slots`). The receiver reposts a buffer once its
//! bytes are handed to the reader and returns those credits in the header
//! of its next message. Data needs two credits, so one is always left for
//! a credit-only message or the end of stream. A credit-only message is
//! sent when the peer is below half its window and data buffers wait to
//! be returned, or when the peer may be down to its last credit; with at
//! least 3 receive buffers one of them does not trigger another, so an
//! idle connection goes quiet. Received data that the
//! reader has not taken keeps its buffer, so a slow reader throttles the
//! writer instead of growing a queue: memory per connection is fixed.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

/// Header bytes at the start of every message.
pub const HEADER_BYTES: usize = 8;
const END_OF_STREAM: u32 = u32::MAX;
/// Idle rounds (each up to `idle_sleep_max`) before a pump whose local
/// ends are both closed gives up on data the peer no longer takes.
const ABANDON_IDLE_ROUNDS: u32 = 2_000;

/// What the device reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Sent {
        slot: usize,
    },
    Received {
        slot: usize,
        len: usize,
    },
    /// A work request failed (peer gone, retry exceeded, ...).
    Failed(String),
}

/// The few verbs the pump needs: registered send and receive buffers
/// ("slots"), posting them, and polling for completions.
pub trait Verbs {
    fn slot_bytes(&self) -> usize;
    fn send_slots(&self) -> usize;
    fn recv_slots(&self) -> usize;
    fn send_buf(&mut self, slot: usize) -> &mut [u8];
    fn recv_buf(&self, slot: usize) -> &[u8];
    fn post_send(&mut self, slot: usize, len: usize) -> io::Result<()>;
    fn post_recv(&mut self, slot: usize) -> io::Result<()>;
    /// Append completed work to `out`; never blocks.
    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
}

/// How a pump waits when nothing happened: short spins, then sleeps
/// growing to `idle_sleep_max`.
#[derive(Debug, Clone, Copy)]
pub struct PumpConfig {
    pub idle_sleep_max: std::time::Duration,
}

impl Default for PumpConfig {
    fn default() -> Self {
        PumpConfig {
            idle_sleep_max: std::time::Duration::from_micros(200),
        }
    }
}

fn header(buf: &mut [u8], data_len: u32, credits: u32) {
    buf[..4].copy_from_slice(&data_len.to_le_bytes());
    buf[4..8].copy_from_slice(&credits.to_le_bytes());
}

fn malformed(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RDMA peer sent {why}"))
}

/// Run one connection's pump until both directions are finished: the
/// local writer closed `outbound` (end of stream sent) and the peer's end
/// of stream arrived or the local reader dropped `inbound`. `peer_recv_slots`
/// is what the peer announced in the handshake. Returns the device error
/// that ended the connection, if any.
pub fn run<V: Verbs>(
    v: V,
    peer_recv_slots: u32,
    outbound: mpsc::Receiver<Bytes>,
    inbound: mpsc::Sender<Bytes>,
    cfg: PumpConfig,
) -> io::Result<()> {
    run_with_ready(v, peer_recv_slots, outbound, inbound, cfg, || {})
}

/// [`run`], calling `ready` once every receive buffer is posted (the peer
/// may send from then on).
pub fn run_with_ready<V: Verbs>(
    mut v: V,
    peer_recv_slots: u32,
    mut outbound: mpsc::Receiver<Bytes>,
    inbound: mpsc::Sender<Bytes>,
    cfg: PumpConfig,
    ready: impl FnOnce(),
) -> io::Result<()> {
    let r = v.recv_slots();
    let s = v.send_slots();
    let cap = v.slot_bytes().saturating_sub(HEADER_BYTES);
    if r < 3 || s < 1 || cap == 0 || peer_recv_slots < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "RDMA pump needs at least 3 receive slots, 1 send slot and slots over 8 bytes",
        ));
    }
    for slot in 0..r {
        v.post_recv(slot)?;
    }
    ready();
    let mut credits = peer_recv_slots;
    // Credits granted to the peer minus messages received from it: an
    // upper bound on what the peer can still send.
    let mut peer_credits = r as u64;
    let mut to_return: u32 = 0;
    // How many of `to_return` held data (the rest held credit-only or
    // end-of-stream messages).
    let mut data_returned: u32 = 0;
    let mut free_send: Vec<usize> = (0..s).rev().collect();
    let mut held: VecDeque<(usize, Bytes)> = VecDeque::new();
    let mut pending: Option<Bytes> = None;
    let mut out_closed = false;
    let mut end_sent = false;
    let mut peer_ended = false;
    let mut inbound = Some(inbound);
    // The local reader dropped its end (as opposed to having been given
    // the end of stream).
    let mut reader_gone = false;
    let mut comps = Vec::with_capacity(64);
    let mut idle_rounds = 0u32;

    loop {
        let mut progress = false;
        comps.clear();
        v.poll(&mut comps)?;
        for c in comps.drain(..) {
            progress = true;
            match c {
                Completion::Sent { slot } => free_send.push(slot),
                Completion::Failed(why) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("RDMA work request failed: {why}"),
                    ))
                }
                Completion::Received { slot, len } => {
                    peer_credits = peer_credits.saturating_sub(1);
                    if len < HEADER_BYTES {
                        return Err(malformed(format!("a {len}-byte message")));
                    }
                    let buf = v.recv_buf(slot);
                    let data_len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
                    let returned = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
                    credits = credits.saturating_add(returned);
                    if credits > peer_recv_slots {
                        return Err(malformed(format!(
                            "credits for {credits} buffers; it has {peer_recv_slots}"
                        )));
                    }
                    if data_len == END_OF_STREAM {
                        peer_ended = true;
                        v.post_recv(slot)?;
                        to_return += 1;
                    } else if data_len == 0 {
                        v.post_recv(slot)?;
                        to_return += 1;
                    } else {
                        let end = HEADER_BYTES + data_len as usize;
                        if end > len {
                            return Err(malformed(format!(
                                "a message claiming {data_len} bytes in {len}"
                            )));
                        }
                        let data = Bytes::copy_from_slice(&buf[HEADER_BYTES..end]);
                        held.push_back((slot, data));
                    }
                }
            }
        }

        // Hand received bytes to the reader; a buffer is reposted only
        // once its bytes are taken (or nobody reads any more).
        while let Some((slot, data)) = held.pop_front() {
            let delivered = match &inbound {
                Some(tx) => match tx.try_send(data) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(data)) => {
                        held.push_front((slot, data));
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        inbound = None;
                        reader_gone = true;
                        true
                    }
                },
                None => true,
            };
            if !delivered {
                break;
            }
            v.post_recv(slot)?;
            to_return += 1;
            data_returned += 1;
            progress = true;
        }
        if inbound.as_ref().is_some_and(|tx| tx.is_closed()) {
            reader_gone = true;
            inbound = None;
        }
        if peer_ended && held.is_empty() {
            // Reader gone, or everything the peer sent was delivered:
            // dropping the sender ends the reader's stream.
            inbound = None;
        }

        // Send stream data, keeping one credit in reserve.
        while !end_sent {
            if pending.is_none() && !out_closed {
                match outbound.try_recv() {
                    Ok(b) if b.is_empty() => continue,
                    Ok(b) => pending = Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => out_closed = true,
                }
            }
            if let Some(b) = pending.as_mut() {
                if credits < 2 {
                    break;
                }
                let Some(slot) = free_send.pop() else { break };
                let n = b.len().min(cap);
                let buf = v.send_buf(slot);
                header(buf, n as u32, to_return);
                buf[HEADER_BYTES..HEADER_BYTES + n].copy_from_slice(&b[..n]);
                v.post_send(slot, HEADER_BYTES + n)?;
                peer_credits += u64::from(to_return);
                to_return = 0;
                data_returned = 0;
                credits -= 1;
                b.advance(n);
                if b.is_empty() {
                    pending = None;
                }
                progress = true;
            } else if out_closed {
                if credits < 1 {
                    break;
                }
                let Some(slot) = free_send.pop() else { break };
                header(v.send_buf(slot), END_OF_STREAM, to_return);
                v.post_send(slot, HEADER_BYTES)?;
                peer_credits += u64::from(to_return);
                to_return = 0;
                data_returned = 0;
                credits -= 1;
                end_sent = true;
                progress = true;
            } else {
                break;
            }
        }

        // Return credits on their own when the peer is below half its
        // window and we hold data buffers to give back, or when it may be
        // down to its last credit. A credit-only message alone never makes
        // the peer answer with one (its view of us stays above half for
        // r >= 3) unless both readers are stalled. None once both ends
        // of stream have crossed: the peer may be gone. (While either
        // side still writes, the peer waits for our end of stream or is
        // still writing, so it is there.)
        let due = data_returned > 0 && 2 * peer_credits < r as u64;
        let urgent = peer_credits <= 1;
        if !(peer_ended && end_sent) && to_return > 0 && credits >= 1 && (due || urgent) {
            if let Some(slot) = free_send.pop() {
                header(v.send_buf(slot), 0, to_return);
                v.post_send(slot, HEADER_BYTES)?;
                peer_credits += u64::from(to_return);
                to_return = 0;
                data_returned = 0;
                credits -= 1;
                progress = true;
            }
        }

        // Done: our end of stream is out and everything sent has
        // completed; the peer's end of stream arrived (or our reader is
        // gone and the peer has been quiet for a while: it may never send
        // one). Until then buffers are still reposted and credits
        // returned, so a peer still writing can finish.
        let quiet = idle_rounds > ABANDON_IDLE_ROUNDS;
        if end_sent
            && free_send.len() == s
            && inbound.is_none()
            && (peer_ended || (reader_gone && quiet))
        {
            return Ok(());
        }
        // Both local ends are gone but what is left cannot be sent (the
        // peer returns no credits: it went away too, or stopped reading).
        // Nobody is left to wait for it.
        if outbound.is_closed() && reader_gone && !end_sent && quiet {
            return Ok(());
        }

        if progress {
            idle_rounds = 0;
        } else {
            idle_rounds = idle_rounds.saturating_add(1);
            if idle_rounds > 64 {
                let exp = (idle_rounds - 64).min(16);
                let sleep =
                    std::time::Duration::from_micros(1u64 << exp.min(10)).min(cfg.idle_sleep_max);
                std::thread::sleep(sleep);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    //! Two in-memory "devices" wired back to back. A send that finds no
    //! receive buffer posted at the peer is an error (real RC hardware
    //! would stall in receiver-not-ready retries), so the tests prove the
    //! credits never overrun the peer. Test code: the pump's own tests and
    //! the in-memory fabric (`rdma::memory`) use it.

    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Wire {
        /// Receive slots the side has posted, in order.
        posted: VecDeque<usize>,
        completions: Vec<Completion>,
        overrun: Option<String>,
    }

    pub struct FakeVerbs {
        slot: usize,
        send: Vec<Vec<u8>>,
        recv: Vec<Vec<u8>>,
        me: Arc<Mutex<Wire>>,
        peer: Arc<Mutex<Wire>>,
        peer_recv: Arc<Mutex<Vec<Vec<u8>>>>,
        my_recv_shadow: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    /// A connected pair with the given slot size and counts.
    pub fn pair(slot: usize, send_slots: usize, recv_slots: usize) -> (FakeVerbs, FakeVerbs) {
        let (wa, wb) = (
            Arc::new(Mutex::new(Wire::default())),
            Arc::new(Mutex::new(Wire::default())),
        );
        let (ra, rb) = (
            Arc::new(Mutex::new(vec![vec![0u8; slot]; recv_slots])),
            Arc::new(Mutex::new(vec![vec![0u8; slot]; recv_slots])),
        );
        let mk = |me: &Arc<Mutex<Wire>>,
                  peer: &Arc<Mutex<Wire>>,
                  mine: &Arc<Mutex<Vec<Vec<u8>>>>,
                  theirs: &Arc<Mutex<Vec<Vec<u8>>>>| FakeVerbs {
            slot,
            send: vec![vec![0u8; slot]; send_slots],
            recv: vec![vec![0u8; slot]; recv_slots],
            me: me.clone(),
            peer: peer.clone(),
            peer_recv: theirs.clone(),
            my_recv_shadow: mine.clone(),
        };
        (mk(&wa, &wb, &ra, &rb), mk(&wb, &wa, &rb, &ra))
    }

    impl Verbs for FakeVerbs {
        fn slot_bytes(&self) -> usize {
            self.slot
        }
        fn send_slots(&self) -> usize {
            self.send.len()
        }
        fn recv_slots(&self) -> usize {
            self.recv.len()
        }
        fn send_buf(&mut self, slot: usize) -> &mut [u8] {
            &mut self.send[slot]
        }
        fn recv_buf(&self, slot: usize) -> &[u8] {
            &self.recv[slot]
        }
        fn post_send(&mut self, slot: usize, len: usize) -> io::Result<()> {
            // One lock at a time: both sides post concurrently.
            let mut peer = self.peer.lock().unwrap();
            let posted = peer.posted.pop_front();
            match posted {
                Some(rslot) => {
                    self.peer_recv.lock().unwrap()[rslot][..len]
                        .copy_from_slice(&self.send[slot][..len]);
                    peer.completions
                        .push(Completion::Received { slot: rslot, len });
                }
                None => {
                    peer.overrun
                        .get_or_insert_with(|| "a send found no posted receive".into());
                }
            }
            drop(peer);
            self.me
                .lock()
                .unwrap()
                .completions
                .push(Completion::Sent { slot });
            Ok(())
        }
        fn post_recv(&mut self, slot: usize) -> io::Result<()> {
            self.me.lock().unwrap().posted.push_back(slot);
            Ok(())
        }
        fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
            let done: Vec<Completion> = {
                let mut me = self.me.lock().unwrap();
                if let Some(why) = me.overrun.take() {
                    return Err(io::Error::other(format!("flow control broken: {why}")));
                }
                me.completions.drain(..).collect()
            };
            for c in done {
                if let Completion::Received { slot, len } = c {
                    let shadow = self.my_recv_shadow.lock().unwrap();
                    self.recv[slot][..len].copy_from_slice(&shadow[slot][..len]);
                }
                out.push(c);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // OS threads stand in for the pump's device threads.
mod tests {
    use super::fake::pair;
    use super::*;

    /// Push `data` through a pair in `chunks`, with the reader taking
    /// bytes at its own pace; both directions at once.
    fn transfer(slot: usize, send_slots: usize, recv_slots: usize, seed: u64) {
        let (a, b) = pair(slot, send_slots, recv_slots);
        let mut rng = crate::DetRng::from_seed(seed);
        let data: Vec<u8> = (0..(20 * slot).clamp(20_000, 200_000))
            .map(|_| rng.below(256) as u8)
            .collect();
        let mut both = Vec::new();
        // Like the bootstrap's Ready exchange: nobody sends before both
        // sides have posted their receive buffers.
        let posted = std::sync::Arc::new(std::sync::Barrier::new(2));
        for (v, peer_slots) in [(a, recv_slots as u32), (b, recv_slots as u32)] {
            let (out_tx, out_rx) = mpsc::channel::<Bytes>(4);
            let (in_tx, in_rx) = mpsc::channel::<Bytes>(2);
            let posted = posted.clone();
            let pump = std::thread::Builder::new()
                .spawn(move || {
                    let r =
                        run_with_ready(v, peer_slots, out_rx, in_tx, PumpConfig::default(), || {
                            posted.wait();
                        });
                    if let Err(e) = &r {
                        eprintln!("pump failed: {e}");
                    }
                    r
                })
                .unwrap();
            both.push((out_tx, in_rx, pump));
        }
        let mut threads = Vec::new();
        for (i, (out_tx, mut in_rx, pump)) in both.into_iter().enumerate() {
            let data = data.clone();
            let mut rng = crate::DetRng::from_seed(seed + 1 + i as u64);
            let writer = std::thread::Builder::new()
                .spawn(move || {
                    let mut off = 0;
                    while off < data.len() {
                        let n = (1 + rng.below(3 * 4096) as usize).min(data.len() - off);
                        out_tx
                            .blocking_send(Bytes::copy_from_slice(&data[off..off + n]))
                            .unwrap();
                        off += n;
                    }
                })
                .unwrap();
            let reader = std::thread::Builder::new()
                .spawn(move || {
                    let mut got = Vec::new();
                    while let Some(b) = in_rx.blocking_recv() {
                        got.extend_from_slice(&b);
                        if got.len() % 7 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    got
                })
                .unwrap();
            threads.push((writer, reader, pump));
        }
        for (writer, reader, pump) in threads {
            writer.join().unwrap();
            let got = reader.join().unwrap();
            pump.join().unwrap().expect("pump ends cleanly");
            assert_eq!(got.len(), data.len());
            assert!(got == data, "bytes differ (slot {slot}, recv {recv_slots})");
        }
    }

    #[test]
    fn bytes_arrive_in_order_both_ways_without_overrunning_the_peer() {
        for (slot, s, r, seed) in [
            (16, 1, 3, 1),
            (64, 2, 3, 2),
            (100, 4, 4, 3),
            (4096, 8, 16, 4),
            (9, 3, 5, 5),
        ] {
            transfer(slot, s, r, seed);
        }
    }

    #[test]
    fn a_reader_that_goes_away_ends_the_pump_once_the_writer_closes() {
        let (a, b) = pair(64, 2, 4);
        let (a_out, a_out_rx) = mpsc::channel::<Bytes>(4);
        let (a_in_tx, a_in) = mpsc::channel::<Bytes>(4);
        let (b_out, b_out_rx) = mpsc::channel::<Bytes>(4);
        let (b_in_tx, b_in) = mpsc::channel::<Bytes>(4);
        let posted = std::sync::Arc::new(std::sync::Barrier::new(2));
        let p2 = posted.clone();
        let pa = std::thread::Builder::new()
            .spawn(move || {
                run_with_ready(a, 4, a_out_rx, a_in_tx, PumpConfig::default(), || {
                    posted.wait();
                })
            })
            .unwrap();
        let pb = std::thread::Builder::new()
            .spawn(move || {
                run_with_ready(b, 4, b_out_rx, b_in_tx, PumpConfig::default(), || {
                    p2.wait();
                })
            })
            .unwrap();
        // b's reader is gone; a keeps writing, then both close.
        drop(b_in);
        for _ in 0..100 {
            a_out.blocking_send(Bytes::from_static(&[7u8; 50])).unwrap();
        }
        drop(a_out);
        drop(b_out);
        drop(a_in);
        pa.join().unwrap().unwrap();
        pb.join().unwrap().unwrap();
    }

    #[test]
    fn malformed_messages_end_the_connection_with_a_reason() {
        let (a, mut b) = pair(32, 1, 3);
        let (_a_out, a_out_rx) = mpsc::channel::<Bytes>(1);
        let (a_in_tx, _a_in) = mpsc::channel::<Bytes>(1);
        let (posted_tx, posted) = std::sync::mpsc::channel();
        let pa = std::thread::Builder::new()
            .spawn(move || {
                run_with_ready(a, 3, a_out_rx, a_in_tx, PumpConfig::default(), move || {
                    posted_tx.send(()).unwrap();
                })
            })
            .unwrap();
        // Once a has posted its receives, claim 1000 bytes in 16.
        posted.recv().unwrap();
        header(b.send_buf(0), 1000, 0);
        b.post_send(0, 16).unwrap();
        let e = pa.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("claiming 1000 bytes"), "{e}");
    }
}
