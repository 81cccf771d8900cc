//! An in-memory RDMA fabric: the production pump and channel links over
//! the fake device pair, behind the [`Transport`] trait, so the transport
//! conformance suite runs RDMA's data path on a machine without an
//! adapter. Only the TCP bootstrap and the verbs calls (`ib.rs`) are left
//! out: here a connection is a fresh device pair and two pump threads, as
//! `ib.rs` makes after its handshake. Test code (`test-support`).
#![allow(clippy::disallowed_methods)] // OS threads stand in for the pumps' device threads, as in production.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier, Mutex};

use tokio::sync::mpsc;

use super::pump::{fake, run_with_ready, PumpConfig};
use super::{channel_link, RdmaConfig};
use crate::addr::Addr;
use crate::frame::FrameLimits;
use crate::transport::{Link, Listener, Transport};
use crate::BoxFuture;

/// Ports handed to `bind` on port 0 and to dialling ends start here.
const EPHEMERAL_PORT_MIN: u16 = 40_000;

/// A listener's door: where its connections go, and its frame limits.
type Door = (mpsc::UnboundedSender<Link>, FrameLimits);

/// Listeners by address, and what went wrong in any pump.
#[derive(Default)]
struct Fabric {
    listeners: BTreeMap<SocketAddr, Door>,
    next_port: u16,
    pump_failures: Vec<String>,
}

impl Fabric {
    /// An address is taken while its listener lives (dropping the
    /// listener closes the channel).
    fn taken(&self, sa: &SocketAddr) -> bool {
        self.listeners
            .get(sa)
            .is_some_and(|(tx, _)| !tx.is_closed())
    }

    fn ephemeral(&mut self, ip: std::net::IpAddr) -> SocketAddr {
        loop {
            self.next_port = self.next_port.max(EPHEMERAL_PORT_MIN).wrapping_add(1);
            let sa = SocketAddr::new(ip, self.next_port);
            if !self.taken(&sa) {
                return sa;
            }
        }
    }
}

/// RDMA connections between runtimes that share one `MemoryRdma`.
#[derive(Clone)]
pub struct MemoryRdma {
    fabric: Arc<Mutex<Fabric>>,
    config: RdmaConfig,
}

impl MemoryRdma {
    /// A fabric whose connections register buffers as `config` says
    /// (small slots exercise fragmentation and credits hardest).
    pub fn new(config: RdmaConfig) -> Self {
        MemoryRdma {
            fabric: Arc::default(),
            config,
        }
    }

    /// Errors pumps ended with (a device error, a flow-control overrun the
    /// fake device caught); empty when every connection ended cleanly.
    pub fn pump_failures(&self) -> Vec<String> {
        self.fabric
            .lock()
            .expect("fabric lock")
            .pump_failures
            .clone()
    }

    fn inet(addr: &Addr) -> io::Result<SocketAddr> {
        match addr {
            Addr::Inet(sa) => Ok(*sa),
            Addr::Unix(p) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("RDMA has no unix sockets ({})", p.display()),
            )),
        }
    }

    /// Start the two pumps of a new connection and return its two ends.
    fn wire(
        &self,
        (dialer, dialer_limits): (SocketAddr, FrameLimits),
        (server, server_limits): (SocketAddr, FrameLimits),
    ) -> (Link, Link) {
        let c = self.config;
        let (va, vb) = fake::pair(
            c.slot_bytes as usize,
            c.send_slots as usize,
            c.recv_slots as usize,
        );
        let (dialed, d_out, d_in) =
            channel_link(Addr::Inet(server), Addr::Inet(dialer), dialer_limits);
        let (accepted, a_out, a_in) =
            channel_link(Addr::Inet(dialer), Addr::Inet(server), server_limits);
        // As after the bootstrap's Ready exchange: neither side sends
        // before both have posted their receive buffers.
        let posted = Arc::new(Barrier::new(2));
        for (verbs, out, inbound) in [(va, d_out, d_in), (vb, a_out, a_in)] {
            let (posted, fabric) = (posted.clone(), self.fabric.clone());
            std::thread::Builder::new()
                .name("rdma-pump".into())
                .spawn(move || {
                    let ready = || {
                        posted.wait();
                    };
                    let r = run_with_ready(
                        verbs,
                        c.recv_slots,
                        out,
                        inbound,
                        PumpConfig::default(),
                        ready,
                    );
                    if let Err(e) = r {
                        let mut f = fabric.lock().expect("fabric lock");
                        f.pump_failures.push(e.to_string());
                    }
                })
                .expect("spawn an RDMA pump thread");
        }
        (dialed, accepted)
    }
}

struct MemoryListener {
    rx: mpsc::UnboundedReceiver<Link>,
    local: SocketAddr,
}

impl Listener for MemoryListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::other("the in-memory fabric is gone"))
        })
    }
    fn local_addr(&self) -> Addr {
        Addr::Inet(self.local)
    }
}

impl MemoryRdma {
    fn dial(&self, addr: &Addr, limits: FrameLimits) -> io::Result<Link> {
        let server = Self::inet(addr)?;
        let ((tx, server_limits), dialer) = {
            let mut f = self.fabric.lock().expect("fabric lock");
            if !f.taken(&server) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on rdma:{server}"),
                ));
            }
            let door = f.listeners[&server].clone();
            (door, f.ephemeral(Ipv4Addr::LOCALHOST.into()))
        };
        let (dialed, accepted) = self.wire((dialer, limits), (server, server_limits));
        tx.send(accepted).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "the listener went away")
        })?;
        Ok(dialed)
    }

    fn listen(&self, addr: &Addr, limits: FrameLimits) -> io::Result<Box<dyn Listener>> {
        let mut sa = Self::inet(addr)?;
        let mut f = self.fabric.lock().expect("fabric lock");
        if sa.port() == 0 {
            sa = f.ephemeral(sa.ip());
        } else if f.taken(&sa) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("rdma:{sa} is in use"),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        f.listeners.insert(sa, (tx, limits));
        Ok(Box::new(MemoryListener { rx, local: sa }))
    }
}

/// Connecting and binding never wait here: both finish at once.
impl Transport for MemoryRdma {
    fn connect<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(std::future::ready(self.dial(addr, limits)))
    }

    fn bind<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(std::future::ready(self.listen(addr, limits)))
    }
}
