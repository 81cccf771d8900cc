//! The messenger's transport and resolver on turmoil's simulated network,
//! shared by the turmoil fault tests and the conformance run.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use mortar_net::frame::FrameLimits;
use mortar_net::resolve::{ResolveBackend, ResolveError};
use mortar_net::transport::{stream_link, Link, Listener, Transport};
use mortar_net::{Addr, BoxFuture, DnsName, Runtime};

/// turmoil's TCP behind the seam's `Transport`.
pub struct TurmoilTransport;

struct TurmoilListener(turmoil::net::TcpListener, FrameLimits);

fn link(s: turmoil::net::TcpStream, limits: FrameLimits) -> io::Result<Link> {
    let peer = Addr::Inet(s.peer_addr()?);
    let local = Addr::Inet(s.local_addr()?);
    let (r, w) = s.into_split();
    Ok(stream_link(r, w, peer, local, limits))
}

fn tcp_only(addr: &Addr) -> io::Result<std::net::SocketAddr> {
    match addr {
        Addr::Inet(sa) => Ok(*sa),
        Addr::Unix(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "tcp only")),
    }
}

impl Listener for TurmoilListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Link>> {
        Box::pin(async move {
            let (s, _) = self.0.accept().await?;
            link(s, self.1)
        })
    }
    fn local_addr(&self) -> Addr {
        Addr::Inet(self.0.local_addr().expect("bound listener has an address"))
    }
}

async fn dial(addr: &Addr, limits: FrameLimits) -> io::Result<Link> {
    link(
        turmoil::net::TcpStream::connect(tcp_only(addr)?).await?,
        limits,
    )
}

async fn listen(addr: &Addr, limits: FrameLimits) -> io::Result<Box<dyn Listener>> {
    let l = turmoil::net::TcpListener::bind(tcp_only(addr)?).await?;
    Ok(Box::new(TurmoilListener(l, limits)))
}

impl Transport for TurmoilTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Link>> {
        Box::pin(dial(addr, limits))
    }
    fn bind<'a>(
        &'a self,
        addr: &'a Addr,
        limits: FrameLimits,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(listen(addr, limits))
    }
}

/// Host names resolve to turmoil's host addresses.
struct TurmoilDns;

impl ResolveBackend for TurmoilDns {
    fn lookup<'a>(&'a self, name: &'a DnsName) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move { Ok(vec![turmoil::lookup(name.as_str())]) })
    }
}

/// A runtime inside a turmoil host: turmoil's network and names.
pub fn runtime(name: &str, seed: u64) -> Runtime {
    Runtime::builder(name)
        .seed(seed)
        .transport(Arc::new(TurmoilTransport))
        .dns(Arc::new(TurmoilDns))
        .build()
}
