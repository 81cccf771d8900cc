//! Addresses, and the split between what needs a resolver and what never does.
//!
//! The original system stalled `heal info` for minutes because a Unix socket
//! path was handed to `getaddrinfo` under slow DNS. Here that cannot be
//! written: the resolver only accepts a [`DnsName`], and a `DnsName` can only
//! be built from text that is neither an IP literal nor a path (it may not
//! contain `/`, and text that parses as an IP address is taken as one).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A host name that needs DNS: RFC 1123 labels, at most 253 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why text is not a usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0:?} is not a host name: {1}")]
    BadName(String, &'static str),
    #[error("{0:?} has no port: write HOST:PORT (for example server1:24007)")]
    MissingPort(String),
    #[error("{0:?} has a bad port: ports are 0 to 65535")]
    BadPort(String),
    #[error("{0:?} is not an absolute socket path: write unix:/path/to/socket")]
    RelativeUnixPath(String),
    #[error("unknown transport {0:?} in address: use tcp:, unix: or rdma:")]
    UnknownScheme(String),
}

impl FromStr for DnsName {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let bad = |why| Err(AddrError::BadName(s.to_string(), why));
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > 253 {
            return bad("longer than 253 bytes");
        }
        if s.parse::<IpAddr>().is_ok() {
            return bad("it is an IP address, which needs no resolution");
        }
        if s.contains('/') {
            return bad("contains '/', so it is a path, not a host");
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        for label in name.split('.') {
            if label.is_empty() {
                return bad("empty label");
            }
            if label.len() > 63 {
                return bad("label longer than 63 bytes");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return bad("label starts or ends with '-'");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad("only letters, digits, '-' and '_' are allowed");
            }
        }
        Ok(DnsName(name.to_ascii_lowercase()))
    }
}

/// The host part of an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(DnsName),
}

impl FromStr for Host {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        match unbracketed.parse::<IpAddr>() {
            Ok(ip) => Ok(Host::Ip(ip)),
            Err(_) => Ok(Host::Name(s.parse()?)),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl HostPort {
    pub fn new(host: Host, port: u16) -> Self {
        HostPort { host, port }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let (host, port) = s
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.starts_with('[')))
            .ok_or_else(|| AddrError::MissingPort(s.to_string()))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| AddrError::BadPort(s.to_string()))?;
        Ok(HostPort {
            host: host.parse()?,
            port,
        })
    }
}

/// Where a daemon listens or connects, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Tcp(HostPort),
    Unix(PathBuf),
    Rdma(HostPort),
}

impl Endpoint {
    pub fn tcp(ip: IpAddr, port: u16) -> Self {
        Endpoint::Tcp(HostPort::new(Host::Ip(ip), port))
    }

    /// The DNS name this endpoint needs resolved, if any. Unix paths and IP
    /// literals return `None`: they never reach a resolver.
    pub fn dns_name(&self) -> Option<&DnsName> {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => match &hp.host {
                Host::Name(n) => Some(n),
                Host::Ip(_) => None,
            },
            Endpoint::Unix(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) => write!(f, "tcp:{hp}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Rdma(hp) => write!(f, "rdma:{hp}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = AddrError;
    /// `unix:/path`, `/path`, `tcp:HOST:PORT`, `rdma:HOST:PORT` or `HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, AddrError> {
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(AddrError::RelativeUnixPath(s.to_string()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            return Ok(Endpoint::Tcp(rest.parse()?));
        }
        if let Some(rest) = s.strip_prefix("rdma:") {
            return Ok(Endpoint::Rdma(rest.parse()?));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(AddrError::UnknownScheme(scheme.to_string()));
        }
        Ok(Endpoint::Tcp(s.parse()?))
    }
}

/// A resolved address a transport can dial or bind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Addr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(sa) => write!(f, "{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_endpoints() {
        assert_eq!(
            "/run/mortar.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/mortar.sock".into())
        );
        assert_eq!(
            "unix:/run/x".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/x".into())
        );
        assert!("unix:rel/x".parse::<Endpoint>().is_err());
        let e: Endpoint = "127.0.0.2:24007".parse().unwrap();
        assert_eq!(e, Endpoint::tcp("127.0.0.2".parse().unwrap(), 24007));
        assert!(e.dns_name().is_none());
        let e: Endpoint = "[::1]:9".parse().unwrap();
        assert_eq!(e, Endpoint::tcp("::1".parse().unwrap(), 9));
        assert_eq!(e.to_string(), "tcp:[::1]:9");
        let e: Endpoint = "Server-1.example:24007".parse().unwrap();
        assert_eq!(e.dns_name().unwrap().as_str(), "server-1.example");
        let e: Endpoint = "rdma:node2:24008".parse().unwrap();
        assert!(matches!(e, Endpoint::Rdma(_)));
        assert!(matches!(
            "server1".parse::<Endpoint>(),
            Err(AddrError::MissingPort(_))
        ));
        assert!(matches!(
            "server1:99999".parse::<Endpoint>(),
            Err(AddrError::BadPort(_))
        ));
        assert!(matches!(
            "http://x".parse::<Endpoint>(),
            Err(AddrError::UnknownScheme(_))
        ));
    }

    #[test]
    fn socket_paths_and_ips_are_never_dns_names() {
        for s in [
            "/var/run/gluster/x.socket",
            "var/run/x.sock",
            "10.0.0.1",
            "::1",
            "",
            "a..b",
            "-a",
            "a b",
            "bad\0name",
        ] {
            assert!(s.parse::<DnsName>().is_err(), "{s:?} accepted");
        }
        assert!(format!("{}.x", "a".repeat(64)).parse::<DnsName>().is_err());
        assert_eq!(
            "Host.Example.".parse::<DnsName>().unwrap().as_str(),
            "host.example"
        );
    }
}
