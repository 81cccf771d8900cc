//! The verbs behind the pump: ibverbs reliable-connected queue pairs.
#![allow(unsafe_code)] // ibverbs posts work requests through unsafe calls; see SAFETY notes.
#![allow(clippy::disallowed_methods)] // The seam's door: one OS thread owns each connection's verbs objects.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::pump::{self, Completion, PumpConfig, Verbs};
use super::{channel_link, Hello, RdmaConfig};
use crate::addr::Addr;
use crate::frame::{encode, Frame, FrameLimits, Header};
use crate::transport::{Link, Listener, SocketTransport, Transport};
use crate::BoxFuture;

/// Frames of the TCP bootstrap carry this program number.
const BOOTSTRAP_PROGRAM: u16 = 0x5244; // "RD"
const PROC_HELLO: u16 = 1;
const PROC_READY: u16 = 2;
/// Deadline for the whole bootstrap exchange.
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(10);

fn no_device(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "RDMA is not available on this machine ({why}): it needs an InfiniBand, RoCE or \
             iWARP adapter with its kernel driver and rdma-core; use transport tcp"
        ),
    )
}

/// Is there an RDMA device to use? Returns its name, or an error saying
/// what is missing and what to do.
pub fn device_check() -> io::Result<String> {
    let list = ibverbs::devices().map_err(|e| no_device(format!("listing devices: {e}")))?;
    let dev = list
        .iter()
        .next()
        .ok_or_else(|| no_device("no RDMA devices found"))?;
    Ok(dev
        .name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".into()))
}

/// RDMA connections, bootstrapped over TCP at the same address.
pub struct RdmaTransport {
    tcp: Arc<dyn Transport>,
    config: RdmaConfig,
}

impl RdmaTransport {
    pub fn shared() -> Arc<dyn Transport> {
        Arc::new(RdmaTransport {
            tcp: SocketTransport::shared(),
            config: RdmaConfig::default(),
        })
    }
}

struct IbVerbs<'a> {
    cq: &'a ibverbs::CompletionQueue<'a>,
    qp: ibverbs::QueuePair<'a>,
    send: ibverbs::MemoryRegion<u8>,
    recv: ibverbs::MemoryRegion<u8>,
    slot: usize,
    send_slots: usize,
    recv_slots: usize,
    wc: Vec<ibverbs::ibv_wc>,
}

const RECV_TAG: u64 = 1 << 32;

impl Verbs for IbVerbs<'_> {
    fn slot_bytes(&self) -> usize {
        self.slot
    }
    fn send_slots(&self) -> usize {
        self.send_slots
    }
    fn recv_slots(&self) -> usize {
        self.recv_slots
    }
    fn send_buf(&mut self, slot: usize) -> &mut [u8] {
        &mut self.send[slot * self.slot..(slot + 1) * self.slot]
    }
    fn recv_buf(&self, slot: usize) -> &[u8] {
        &self.recv[slot * self.slot..(slot + 1) * self.slot]
    }
    fn post_send(&mut self, slot: usize, len: usize) -> io::Result<()> {
        let start = slot * self.slot;
        // SAFETY: the pump does not touch this slot again until its send
        // completion has been polled (it is off the free list until then).
        unsafe {
            self.qp
                .post_send(&mut self.send, start..start + len, slot as u64)
        }
    }
    fn post_recv(&mut self, slot: usize) -> io::Result<()> {
        let start = slot * self.slot;
        // SAFETY: the pump reads this slot only after its receive
        // completion and reposts it only after copying the bytes out.
        unsafe {
            self.qp.post_receive(
                &mut self.recv,
                start..start + self.slot,
                RECV_TAG | slot as u64,
            )
        }
    }
    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let done = self.cq.poll(&mut self.wc)?;
        for wc in done.iter() {
            let id = wc.wr_id();
            if let Some((status, vendor)) = wc.error() {
                out.push(Completion::Failed(format!(
                    "work request {id:#x}: status {status:?}, vendor error {vendor}"
                )));
                continue;
            }
            if id & RECV_TAG != 0 {
                out.push(Completion::Received {
                    slot: (id & !RECV_TAG) as usize,
                    len: wc.len(),
                });
            } else {
                out.push(Completion::Sent { slot: id as usize });
            }
        }
        Ok(())
    }
}

/// What the pump thread reports to the async side while connecting.
enum Setup {
    Hello(Hello),
    Ready,
}

/// The pump thread: open the device, exchange endpoints through the async
/// side, then pump until the connection ends.
fn pump_thread(
    config: RdmaConfig,
    to_async: mpsc::Sender<io::Result<Setup>>,
    from_async: oneshot::Receiver<Hello>,
    out_rx: mpsc::Receiver<Bytes>,
    in_tx: mpsc::Sender<Bytes>,
) {
    let fail = |e: io::Error| {
        let _ = to_async.blocking_send(Err(e));
    };
    let list = match ibverbs::devices() {
        Ok(l) => l,
        Err(e) => return fail(no_device(format!("listing devices: {e}"))),
    };
    let Some(dev) = list.iter().next() else {
        return fail(no_device("no RDMA devices found"));
    };
    let ctx = match dev.open() {
        Ok(c) => c,
        Err(e) => return fail(no_device(format!("opening the device: {e}"))),
    };
    let slots = (config.send_slots + config.recv_slots) as i32;
    let result = (|| -> io::Result<()> {
        let cq = ctx.create_cq(slots, 0)?;
        let pd = ctx.alloc_pd()?;
        let prepared = pd
            .create_qp(&cq, &cq, ibverbs::ibv_qp_type::IBV_QPT_RC)
            .set_max_send_wr(config.send_slots)
            .set_max_recv_wr(config.recv_slots)
            // Receiver-not-ready retries forever: the pump's credits make
            // it rare, a slow peer makes it possible.
            .set_rnr_retry(7)
            .build()?;
        let endpoint = postcard::to_allocvec(&prepared.endpoint())
            .map_err(|e| io::Error::other(format!("encoding the endpoint: {e}")))?;
        let ours = Hello { endpoint, config };
        if to_async.blocking_send(Ok(Setup::Hello(ours))).is_err() {
            return Ok(());
        }
        let Ok(theirs) = from_async.blocking_recv() else {
            return Ok(());
        };
        let remote: ibverbs::QueuePairEndpoint = postcard::from_bytes(&theirs.endpoint)
            .map_err(|e| io::Error::other(format!("the peer's endpoint is malformed: {e}")))?;
        let qp = prepared.handshake(remote)?;
        let bytes = config.slot_bytes as usize;
        let verbs = IbVerbs {
            cq: &cq,
            qp,
            send: pd.allocate::<u8>(bytes * config.send_slots as usize)?,
            recv: pd.allocate::<u8>(bytes * config.recv_slots as usize)?,
            slot: bytes,
            send_slots: config.send_slots as usize,
            recv_slots: config.recv_slots as usize,
            wc: vec![ibverbs::ibv_wc::default(); 64],
        };
        let ready = to_async.clone();
        pump::run_with_ready(
            verbs,
            theirs.config.recv_slots,
            out_rx,
            in_tx,
            PumpConfig::default(),
            move || {
                let _ = ready.blocking_send(Ok(Setup::Ready));
            },
        )
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "RDMA connection ended");
        fail(e);
    }
}

fn bootstrap_frame(procedure: u16, body: &[u8]) -> io::Result<crate::frame::EncodedFrame> {
    let h = Header {
        flags: 0,
        program: BOOTSTRAP_PROGRAM,
        procedure,
        request_id: 0,
    };
    encode(&h, body, Bytes::new(), &FrameLimits::default())
        .map_err(|e| io::Error::other(format!("bootstrap frame: {e}")))
}

async fn expect(link: &mut Link, procedure: u16) -> io::Result<Frame> {
    match link.source.recv().await {
        Ok(Some(f)) if f.header.program == BOOTSTRAP_PROGRAM && f.header.procedure == procedure => {
            Ok(f)
        }
        Ok(Some(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the peer is not speaking the RDMA bootstrap (is it listening with transport tcp?)",
        )),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the peer closed the RDMA bootstrap connection (does it have an RDMA device?)",
        )),
        Err(e) => Err(io::Error::other(format!("RDMA bootstrap: {e}"))),
    }
}

/// Turn an established TCP link into an RDMA link.
async fn upgrade(mut boot: Link, config: RdmaConfig, limits: FrameLimits) -> io::Result<Link> {
    let (link, out_rx, in_tx) = channel_link(boot.peer.clone(), boot.local.clone(), limits);
    let (setup_tx, mut setup_rx) = mpsc::channel(2);
    let (hello_tx, hello_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("mortar-rdma".into())
        .spawn(move || pump_thread(config, setup_tx, hello_rx, out_rx, in_tx))?;
    let step = async {
        let ours = match setup_rx.recv().await {
            Some(Ok(Setup::Hello(h))) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(io::Error::other("RDMA setup thread ended early")),
        };
        let body = postcard::to_allocvec(&ours).map_err(io::Error::other)?;
        boot.sink.send(bootstrap_frame(PROC_HELLO, &body)?).await?;
        boot.sink.flush().await?;
        let f = expect(&mut boot, PROC_HELLO).await?;
        let theirs: Hello = postcard::from_bytes(&f.body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("RDMA hello: {e}")))?;
        ours.compatible(&theirs)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let _ = hello_tx.send(theirs);
        match setup_rx.recv().await {
            Some(Ok(Setup::Ready)) => {}
            Some(Err(e)) => return Err(e),
            _ => return Err(io::Error::other("RDMA setup thread ended early")),
        }
        boot.sink.send(bootstrap_frame(PROC_READY, &[])?).await?;
        boot.sink.flush().await?;
        expect(&mut boot, PROC_READY).await?;
        let _ = boot.sink.close().await;
        Ok(())
    };
    match tokio::time::timeout(BOOTSTRAP_DEADLINE, step).await {
        Ok(Ok(())) => Ok(link),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("RDMA bootstrap did not finish within {BOOTSTRAP_DEADLINE:?}"),
        )),
    }
}

impl Transport for RdmaTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(async move {
            // Fail before touching the network when there is no device.
            device_check()?;
            let boot = self.tcp.connect(addr, FrameLimits::default()).await?;
            upgrade(boot, self.config, limits).await
        })
    }

    fn bind<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            device_check()?;
            let inner = self.tcp.bind(addr, FrameLimits::default()).await?;
            Ok(Box::new(RdmaListener {
                inner,
                config: self.config,
                limits,
            }) as Box<dyn Listener>)
        })
    }
}

struct RdmaListener {
    inner: Box<dyn Listener>,
    config: RdmaConfig,
    limits: FrameLimits,
}

impl Listener for RdmaListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>> {
        Box::pin(async move {
            loop {
                let boot = self.inner.accept().await?;
                let peer = boot.peer.clone();
                match upgrade(boot, self.config, self.limits).await {
                    Ok(link) => return Ok(link),
                    // One client's failed bootstrap must not stop the
                    // listener; log it and take the next.
                    Err(e) => tracing::warn!(%peer, error = %e, "RDMA connection refused"),
                }
            }
        })
    }
    fn local_addr(&self) -> Addr {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine has no RDMA device: connect and bind must say so
    /// clearly, and fail at once.
    #[tokio::test]
    async fn without_a_device_connect_and_bind_fail_with_a_clear_message() {
        if device_check().is_ok() {
            eprintln!("an RDMA device exists here; nothing to check");
            return;
        }
        let t = RdmaTransport::shared();
        let addr = Addr::Inet("127.0.0.1:9".parse().unwrap());
        let e = t.connect(&addr, FrameLimits::default()).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("RDMA is not available"), "{msg}");
        assert!(msg.contains("use transport tcp"), "{msg}");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let e = t.bind(&addr, FrameLimits::default()).await.err().unwrap();
        assert!(e.to_string().contains("RDMA is not available"), "{e}");
    }
}
