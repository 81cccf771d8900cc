//! RDMA transport: frames over reliable-connected queue pairs (ibverbs).
//!
//! A connection starts on TCP at the same address (the "bootstrap"): each
//! side opens its RDMA device, creates a queue pair and sends a [`Hello`]
//! (queue pair number, LID, GID, buffer sizes) as one frame; both move
//! their queue pair to ready-to-send, post their receive buffers and say
//! `Ready`; then the TCP connection is closed and frames flow over RDMA
//! SEND messages. The byte pump ([`pump`]) does the flow control and is
//! tested against an in-memory device pair; the verbs themselves
//! (`ib.rs`, feature `rdma`) need an RDMA adapter.
//!
//! Each connection runs its pump on its own OS thread, which owns every
//! verbs object (they borrow from each other, so they cannot move into
//! async tasks); the messenger talks to it through two bounded channels.
//! Memory per connection is fixed: `send_slots + recv_slots` registered
//! buffers plus the two channels' bounds.
//!
//! Without a device (this project's CI machine has none: the kernel
//! answers ENOSYS), connect and bind fail at once with a message saying
//! so and what to do.

#[cfg(feature = "test-support")]
pub mod memory;
pub mod pump;

#[cfg(feature = "rdma")]
mod ib;
#[cfg(feature = "rdma")]
pub use ib::{device_check, RdmaTransport};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::addr::Addr;
use crate::frame::{EncodedFrame, FrameLimits};
use crate::transport::{FrameSink, Link, StreamSource};
use crate::BoxFuture;

/// Sizes of one connection's registered buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaConfig {
    /// Bytes per message buffer (header included).
    pub slot_bytes: u32,
    pub send_slots: u32,
    pub recv_slots: u32,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        // 32 x 64 KiB each way: 4 MiB registered per connection, enough
        // to keep a 1 MiB write and its neighbours in flight.
        RdmaConfig {
            slot_bytes: 64 << 10,
            send_slots: 32,
            recv_slots: 32,
        }
    }
}

/// What each side tells the other over the TCP bootstrap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// `ibverbs::QueuePairEndpoint`, postcard-encoded.
    pub endpoint: Vec<u8>,
    pub config: RdmaConfig,
}

impl Hello {
    /// Can we talk to a peer that sent `theirs`?
    pub fn compatible(&self, theirs: &Hello) -> Result<(), String> {
        if self.config.slot_bytes != theirs.config.slot_bytes {
            return Err(format!(
                "RDMA buffer sizes differ: ours {} bytes, the peer's {}; run the same mortar \
                 version on both ends",
                self.config.slot_bytes, theirs.config.slot_bytes
            ));
        }
        if theirs.config.recv_slots < 3 {
            return Err("the peer announced fewer than 3 RDMA receive buffers".into());
        }
        Ok(())
    }
}

/// Bytes from the pump, read as a stream.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.remaining());
                buf.put_slice(&self.cur[..n]);
                self.cur.advance(n);
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.cur = b,
                // End of stream: the pump dropped its sender.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Frames to the pump: the parts go as they are (no copy until the pump
/// writes them into registered memory).
struct ChannelSink {
    tx: Option<mpsc::Sender<Bytes>>,
}

impl ChannelSink {
    async fn push(&mut self, b: Bytes) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "RDMA link closed"))?;
        tx.send(b).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionReset,
                "RDMA connection ended (see the log for the device error)",
            )
        })
    }
}

impl FrameSink for ChannelSink {
    fn send(&mut self, frame: EncodedFrame) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.push(frame.head).await?;
            if !frame.payload.is_empty() {
                self.push(frame.payload).await?;
            }
            self.push(Bytes::copy_from_slice(&frame.trailer)).await
        })
    }
    fn flush(&mut self) -> BoxFuture<'_, io::Result<()>> {
        // The pump sends whatever it is given as soon as it has credits.
        Box::pin(async { Ok(()) })
    }
    fn close(&mut self) -> BoxFuture<'_, io::Result<()>> {
        self.tx = None;
        Box::pin(async { Ok(()) })
    }
}

/// Channel depth between the messenger and a pump, in chunks.
const CHANNEL_CHUNKS: usize = 64;

/// The messenger's side of a connection whose pump runs elsewhere, and
/// the pump's ends of the two channels.
pub fn channel_link(
    peer: Addr,
    local: Addr,
    limits: FrameLimits,
) -> (Link, mpsc::Receiver<Bytes>, mpsc::Sender<Bytes>) {
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (in_tx, in_rx) = mpsc::channel(CHANNEL_CHUNKS);
    let link = Link {
        source: Box::new(StreamSource::new(
            ChannelReader {
                rx: in_rx,
                cur: Bytes::new(),
            },
            limits,
        )),
        sink: Box::new(ChannelSink { tx: Some(out_tx) }),
        peer,
        local,
    };
    (link, out_rx, in_tx)
}
