//! Transports: how frames get between two processes.
//!
//! The messenger above sees only [`FrameSource`] and [`FrameSink`], so a
//! message-oriented transport (RDMA, whose unit is a posted buffer, not a
//! byte stream) plugs in by implementing those two traits directly. Byte
//! streams (TCP, Unix sockets, turmoil's and madsim's simulated TCP) get
//! them from [`StreamSource`]/[`StreamSink`], which do the framing.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use crate::addr::Addr;
use crate::frame::{
    EncodedFrame, Frame, FrameDecoder, FrameError, FrameLimits, PAYLOAD_RESERVE_AHEAD_BYTES_MAX,
};
use crate::BoxFuture;

/// Why a link stopped delivering frames.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
}

/// Receives whole frames. `Ok(None)` is a clean end of stream.
pub trait FrameSource: Send + 'static {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Frame>, LinkError>>;
}

/// Sends whole frames. `send` may buffer; `flush` pushes everything out.
/// The messenger flushes whenever its send queue runs empty, so a frame is
/// never left sitting in a buffer while the sender waits for work (madsim's
/// TCP delivers only flushed bytes).
pub trait FrameSink: Send + 'static {
    fn send(&mut self, frame: EncodedFrame) -> BoxFuture<'_, io::Result<()>>;
    fn flush(&mut self) -> BoxFuture<'_, io::Result<()>>;
    /// Flush and signal end of stream to the peer.
    fn close(&mut self) -> BoxFuture<'_, io::Result<()>>;
}

/// One established connection.
pub struct Link {
    pub source: Box<dyn FrameSource>,
    pub sink: Box<dyn FrameSink>,
    pub peer: Addr,
    pub local: Addr,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .finish()
    }
}

pub trait Listener: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>>;
    fn local_addr(&self) -> Addr;
}

/// Dials and binds addresses. Daemons get one from their runtime handle.
pub trait Transport: Send + Sync + 'static {
    fn connect<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Link>>;
    fn bind<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;
}

/// Read buffers grow by at most this much beyond what has arrived, so a
/// peer announcing a large frame and sending nothing costs us nothing.
const READ_CHUNK_MIN_BYTES: usize = 64 << 10;
/// Small frames are coalesced in a buffer this large; larger writes bypass it.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Frames from any byte stream.
pub struct StreamSource<R> {
    reader: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin + Send + 'static> StreamSource<R> {
    pub fn new(reader: R, limits: FrameLimits) -> Self {
        StreamSource {
            reader,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(limits),
        }
    }

    /// Bytes the receive buffers currently have reserved (for tests that
    /// check a peer cannot make us allocate what it merely announces).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity() + self.decoder.payload_capacity()
    }

    async fn recv_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(f));
            }
            let n = if let Some((payload, missing)) = self.decoder.payload_target(&self.buf) {
                // Read the payload straight into its own buffer, never past
                // its end (the trailer and next frame go to the control
                // buffer). Reserve at most a fixed amount ahead of what
                // arrived, then grow by doubling. Grow only a full buffer:
                // reserving a little more than the spare room would make
                // the allocator double what was merely reserved.
                if payload.capacity() == payload.len() {
                    let ahead = payload.len().max(PAYLOAD_RESERVE_AHEAD_BYTES_MAX);
                    payload.reserve(missing.min(ahead));
                }
                (&mut self.reader)
                    .take(missing as u64)
                    .read_buf(payload)
                    .await?
            } else {
                // Grow geometrically with what has actually arrived (so
                // large bodies are not copied over and over) but never by
                // more than the frame still needs.
                let grow = self
                    .decoder
                    .bytes_wanted(&self.buf)
                    .min(self.buf.len().max(READ_CHUNK_MIN_BYTES));
                self.buf.reserve(grow);
                self.reader.read_buf(&mut self.buf).await?
            };
            if n == 0 {
                self.decoder.finish(&self.buf)?;
                return Ok(None);
            }
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameSource for StreamSource<R> {
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Frame>, LinkError>> {
        Box::pin(self.recv_frame())
    }
}

/// Frames onto any byte stream.
pub struct StreamSink<W: AsyncWrite> {
    writer: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> StreamSink<W> {
    pub fn new(writer: W) -> Self {
        StreamSink {
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer),
        }
    }
}

/// Frames at least this large skip the coalescing buffer and go out as one
/// vectored write of header, payload and trailer (one syscall, no copy).
const DIRECT_WRITE_BYTES_MIN: usize = 16 << 10;

impl<W: AsyncWrite + Unpin + Send + 'static> StreamSink<W> {
    async fn send_frame(&mut self, frame: EncodedFrame) -> io::Result<()> {
        if frame.len() < DIRECT_WRITE_BYTES_MIN {
            self.writer.write_all(&frame.head).await?;
            self.writer.write_all(&frame.payload).await?;
            return self.writer.write_all(&frame.trailer).await;
        }
        // Keep order: whatever small frames are buffered go first.
        self.writer.flush().await?;
        let inner = self.writer.get_mut();
        let parts: [&[u8]; 3] = [&frame.head, &frame.payload, &frame.trailer];
        let total = frame.len();
        let mut sent = 0;
        while sent < total {
            // Rebuild the slices past what has been written; at most three.
            let mut slices = Vec::with_capacity(3);
            let mut skip = sent;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                slices.push(io::IoSlice::new(&p[skip..]));
                skip = 0;
            }
            let n = inner.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection accepted no more bytes",
                ));
            }
            sent += n;
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSink for StreamSink<W> {
    fn send(&mut self, frame: EncodedFrame) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.send_frame(frame))
    }

    fn flush(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.writer.flush())
    }

    fn close(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.writer.flush().await?;
            self.writer.shutdown().await
        })
    }
}

/// Build a link from the two halves of a byte stream.
pub fn stream_link<R, W>(reader: R, writer: W, peer: Addr, local: Addr, limits: FrameLimits) -> Link
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Link {
        source: Box::new(StreamSource::new(reader, limits)),
        sink: Box::new(StreamSink::new(writer)),
        peer,
        local,
    }
}

/// TCP and Unix sockets through `tokio::net` (madsim's simulated TCP under
/// `--cfg madsim`).
#[derive(Debug, Default, Clone)]
pub struct SocketTransport {
    _private: (),
}

impl SocketTransport {
    /// The transport every production daemon shares.
    pub fn shared() -> Arc<dyn Transport> {
        Arc::new(SocketTransport { _private: () })
    }
}

#[allow(clippy::disallowed_types, clippy::disallowed_methods)] // The seam is the one door to sockets.
mod sockets {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    fn tcp_link(s: TcpStream, limits: FrameLimits) -> io::Result<Link> {
        // Small request/reply frames must not wait for Nagle.
        s.set_nodelay(true)?;
        let peer = Addr::Inet(s.peer_addr()?);
        let local = Addr::Inet(s.local_addr()?);
        // madsim's simulated stream has no owned halves; tokio's generic
        // split works on both (its lock is uncontended: one reader task,
        // one writer task).
        #[cfg(not(madsim))]
        let (r, w) = s.into_split();
        #[cfg(madsim)]
        let (r, w) = tokio::io::split(s);
        Ok(stream_link(r, w, peer, local, limits))
    }

    pub(super) async fn connect(addr: &Addr, limits: FrameLimits) -> io::Result<Link> {
        match addr {
            Addr::Inet(sa) => tcp_link(TcpStream::connect(*sa).await?, limits),
            Addr::Unix(path) => unix::connect(path, limits).await,
        }
    }

    struct TcpAcceptor {
        l: TcpListener,
        limits: FrameLimits,
        local: Addr,
    }

    impl Listener for TcpAcceptor {
        fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>> {
            Box::pin(async move {
                let (s, _) = self.l.accept().await?;
                tcp_link(s, self.limits)
            })
        }
        fn local_addr(&self) -> Addr {
            self.local.clone()
        }
    }

    pub(super) async fn bind(addr: &Addr, limits: FrameLimits) -> io::Result<Box<dyn Listener>> {
        match addr {
            Addr::Inet(sa) => {
                let l = TcpListener::bind(*sa).await?;
                let local = Addr::Inet(l.local_addr()?);
                Ok(Box::new(TcpAcceptor { l, limits, local }))
            }
            Addr::Unix(path) => unix::bind(path, limits).await,
        }
    }

    #[cfg(not(madsim))]
    mod unix {
        use super::*;
        use std::path::Path;
        use tokio::net::{UnixListener, UnixStream};

        pub(super) async fn connect(path: &Path, limits: FrameLimits) -> io::Result<Link> {
            let s = UnixStream::connect(path).await?;
            let (r, w) = s.into_split();
            let peer = Addr::Unix(path.to_path_buf());
            Ok(stream_link(r, w, peer.clone(), peer, limits))
        }

        struct UnixAcceptor {
            l: UnixListener,
            limits: FrameLimits,
            path: std::path::PathBuf,
        }

        impl Listener for UnixAcceptor {
            fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>> {
                Box::pin(async move {
                    let (s, _) = self.l.accept().await?;
                    let (r, w) = s.into_split();
                    let me = Addr::Unix(self.path.clone());
                    Ok(stream_link(r, w, me.clone(), me, self.limits))
                })
            }
            fn local_addr(&self) -> Addr {
                Addr::Unix(self.path.clone())
            }
        }

        pub(super) async fn bind(
            path: &Path,
            limits: FrameLimits,
        ) -> io::Result<Box<dyn Listener>> {
            // A socket file left by a dead daemon would make bind fail with
            // EADDRINUSE; remove it only if nothing answers on it.
            if path.exists() && UnixStream::connect(path).await.is_err() {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)?;
            Ok(Box::new(UnixAcceptor {
                l,
                limits,
                path: path.to_path_buf(),
            }))
        }
    }

    #[cfg(madsim)]
    mod unix {
        use super::*;
        use std::path::Path;

        fn unsupported(path: &Path) -> io::Error {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "unix socket {} is not available in the simulator: simulated hosts talk over TCP",
                    path.display()
                ),
            )
        }

        pub(super) async fn connect(path: &Path, _limits: FrameLimits) -> io::Result<Link> {
            Err(unsupported(path))
        }

        pub(super) async fn bind(
            path: &Path,
            _limits: FrameLimits,
        ) -> io::Result<Box<dyn Listener>> {
            Err(unsupported(path))
        }
    }
}

impl Transport for SocketTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(sockets::connect(addr, limits))
    }
    fn bind<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(sockets::bind(addr, limits))
    }
}
