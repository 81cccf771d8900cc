//! The typed volfile schema: one struct per layer type with the options it
//! takes. mgmtd writes graphs only through these; clients and bricks read
//! nodes only through [`Xlator::from_node`], so a key is spelled in one
//! place and a missing or malformed option is refused with the node's name.
//!
//! Options the writer always sets are required; options an older writer
//! may leave out fall back to the volume option table's default
//! ([`crate::options`]), so the default is written once.

use crate::options;
use crate::volfile::Node;
use crate::volume::Transport;

pub const PROTOCOL_CLIENT: &str = "protocol/client";
pub const PROTOCOL_SERVER: &str = "protocol/server";
pub const REPLICATE: &str = "cluster/replicate";
pub const DISPERSE: &str = "cluster/disperse";
pub const DISTRIBUTE: &str = "cluster/distribute";
pub const POSIX: &str = "storage/posix";

/// One brick as a client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLayer {
    pub remote_host: String,
    /// The brick's directory on its server (how the port map names it).
    pub remote_subvolume: String,
    pub transport: Transport,
    pub ping_timeout_secs: u64,
    pub volume_id: String,
}

/// A replica set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateLayer {
    pub arbiter: bool,
    /// `none`, `auto` or `fixed` (checked by the option table at `volume set`).
    pub quorum_type: String,
    /// Only meaningful for `fixed`.
    pub quorum_count: u32,
}

/// An erasure-coded set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisperseLayer {
    pub redundancy: u32,
}

/// Files spread over sets by name hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DistributeLayer {
    /// Subvolumes being drained by `remove-brick start`: no new files.
    pub decommissioned: Vec<String>,
}

/// A brick's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixLayer {
    pub directory: String,
    pub volume_id: String,
    pub fsync_namespace: bool,
}

/// A brick's server side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLayer {
    pub transport: Transport,
    pub auth_allow: String,
    pub auth_reject: String,
    pub ping_timeout_secs: u64,
    pub event_threads: u32,
}

/// Every layer type a volfile can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xlator {
    Client(ClientLayer),
    Server(ServerLayer),
    Replicate(ReplicateLayer),
    Disperse(DisperseLayer),
    Distribute(DistributeLayer),
    Posix(PosixLayer),
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl Xlator {
    /// The volfile `type` word.
    pub fn kind(&self) -> &'static str {
        match self {
            Xlator::Client(_) => PROTOCOL_CLIENT,
            Xlator::Server(_) => PROTOCOL_SERVER,
            Xlator::Replicate(_) => REPLICATE,
            Xlator::Disperse(_) => DISPERSE,
            Xlator::Distribute(_) => DISTRIBUTE,
            Xlator::Posix(_) => POSIX,
        }
    }

    /// The node named `name` over `subvolumes`.
    pub fn to_node(&self, name: &str, subvolumes: Vec<String>) -> Node {
        let n = Node::new(name, self.kind()).subvolumes(subvolumes);
        match self {
            Xlator::Client(c) => n
                .option("remote-host", &c.remote_host)
                .option("remote-subvolume", &c.remote_subvolume)
                .option("transport-type", c.transport.as_str())
                .option("ping-timeout", c.ping_timeout_secs)
                .option("volume-id", &c.volume_id),
            Xlator::Server(s) => n
                .option("transport-type", s.transport.as_str())
                .option("auth-allow", &s.auth_allow)
                .option("auth-reject", &s.auth_reject)
                .option("ping-timeout", s.ping_timeout_secs)
                .option("event-threads", s.event_threads),
            Xlator::Replicate(r) => {
                let n = n
                    .option("arbiter-count", u8::from(r.arbiter))
                    .option("quorum-type", &r.quorum_type);
                if r.quorum_type == "fixed" {
                    n.option("quorum-count", r.quorum_count)
                } else {
                    n
                }
            }
            Xlator::Disperse(d) => n.option("redundancy", d.redundancy),
            Xlator::Distribute(d) if d.decommissioned.is_empty() => n,
            Xlator::Distribute(d) => {
                n.option("decommissioned-subvolumes", d.decommissioned.join(","))
            }
            Xlator::Posix(p) => n
                .option("directory", &p.directory)
                .option("volume-id", &p.volume_id)
                .option("fsync-namespace", on_off(p.fsync_namespace)),
        }
    }

    /// Read a node, refusing an unknown type or a missing or malformed
    /// option with the node's name.
    pub fn from_node(n: &Node) -> Result<Xlator, String> {
        let r = Reader(n);
        Ok(match n.kind.as_str() {
            PROTOCOL_CLIENT => Xlator::Client(ClientLayer {
                remote_host: r.required("remote-host")?,
                remote_subvolume: r.required("remote-subvolume")?,
                transport: r.transport()?,
                ping_timeout_secs: r.number("ping-timeout", None)?,
                volume_id: r.required("volume-id")?,
            }),
            PROTOCOL_SERVER => Xlator::Server(ServerLayer {
                transport: r.transport()?,
                auth_allow: r.or_default("auth-allow", options::AUTH_ALLOW),
                auth_reject: r.or_default("auth-reject", options::AUTH_REJECT),
                ping_timeout_secs: r.number("ping-timeout", Some(options::PING_TIMEOUT))?,
                event_threads: r.number("event-threads", Some(options::SERVER_EVENT_THREADS))?,
            }),
            REPLICATE => Xlator::Replicate(ReplicateLayer {
                arbiter: r.0.options.get("arbiter-count").is_some_and(|a| a == "1"),
                quorum_type: r.or_default("quorum-type", options::QUORUM_TYPE),
                quorum_count: r.number("quorum-count", Some(options::QUORUM_COUNT))?,
            }),
            DISPERSE => Xlator::Disperse(DisperseLayer {
                redundancy: r
                    .0
                    .options
                    .get("redundancy")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("volfile: {} has no valid redundancy option", n.name))?,
            }),
            DISTRIBUTE => Xlator::Distribute(DistributeLayer {
                decommissioned: r
                    .0
                    .options
                    .get("decommissioned-subvolumes")
                    .map(|l| {
                        l.split(',')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            POSIX => Xlator::Posix(PosixLayer {
                directory: r.required("directory")?,
                volume_id: r.required("volume-id")?,
                fsync_namespace: r.or_default("fsync-namespace", options::FSYNC_NAMESPACE) == "on",
            }),
            other => return Err(format!("volfile: {} has unknown type {other}", n.name)),
        })
    }
}

/// Option lookups on one node, with errors naming it.
struct Reader<'a>(&'a Node);

impl Reader<'_> {
    fn required(&self, k: &str) -> Result<String, String> {
        self.0
            .options
            .get(k)
            .cloned()
            .ok_or_else(|| format!("volfile: {} has no option {k}", self.0.name))
    }

    fn or_default(&self, k: &str, option: &str) -> String {
        self.0
            .options
            .get(k)
            .cloned()
            .unwrap_or_else(|| options::default_of(option).to_string())
    }

    /// A number; absent means the volume option's default when there is
    /// one, else an error.
    fn number<T: std::str::FromStr>(&self, k: &str, option: Option<&str>) -> Result<T, String> {
        let text = match (self.0.options.get(k), option) {
            (Some(v), _) => v.clone(),
            (None, Some(o)) => options::default_of(o).to_string(),
            (None, None) => return Err(format!("volfile: {} has no option {k}", self.0.name)),
        };
        text.parse()
            .map_err(|_| format!("volfile: {}: {k} is not a number", self.0.name))
    }

    fn transport(&self) -> Result<Transport, String> {
        match self.0.options.get("transport-type").map(String::as_str) {
            None | Some("tcp") => Ok(Transport::Tcp),
            Some("rdma") => Ok(Transport::Rdma),
            Some(other) => Err(format!(
                "volfile: {}: transport-type {other:?} is not tcp or rdma",
                self.0.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_layers() -> Vec<Xlator> {
        vec![
            Xlator::Client(ClientLayer {
                remote_host: "s1".into(),
                remote_subvolume: "/b/1".into(),
                transport: Transport::Rdma,
                ping_timeout_secs: 10,
                volume_id: "id".into(),
            }),
            Xlator::Server(ServerLayer {
                transport: Transport::Tcp,
                auth_allow: "10.0.0.*".into(),
                auth_reject: "".into(),
                ping_timeout_secs: 42,
                event_threads: 2,
            }),
            Xlator::Replicate(ReplicateLayer {
                arbiter: true,
                quorum_type: "fixed".into(),
                quorum_count: 2,
            }),
            Xlator::Replicate(ReplicateLayer {
                arbiter: false,
                quorum_type: "auto".into(),
                quorum_count: 1,
            }),
            Xlator::Disperse(DisperseLayer { redundancy: 2 }),
            Xlator::Distribute(DistributeLayer::default()),
            Xlator::Distribute(DistributeLayer {
                decommissioned: vec!["v-replicate-1".into(), "v-replicate-2".into()],
            }),
            Xlator::Posix(PosixLayer {
                directory: "/b/1".into(),
                volume_id: "id".into(),
                fsync_namespace: false,
            }),
        ]
    }

    #[test]
    fn every_layer_reads_back_what_was_written() {
        for x in all_layers() {
            let n = x.to_node("n", vec![]);
            assert_eq!(n.kind, x.kind());
            assert_eq!(Xlator::from_node(&n).unwrap(), x, "{n:?}");
        }
    }

    #[test]
    fn missing_options_take_the_option_tables_default() {
        let r = Xlator::from_node(&Node::new("r", REPLICATE)).unwrap();
        assert_eq!(
            r,
            Xlator::Replicate(ReplicateLayer {
                arbiter: false,
                quorum_type: options::default_of(options::QUORUM_TYPE).into(),
                quorum_count: 1,
            })
        );
        let Xlator::Server(s) = Xlator::from_node(&Node::new("s", PROTOCOL_SERVER)).unwrap() else {
            panic!("not a server layer");
        };
        assert_eq!(s.ping_timeout_secs, 42);
        assert_eq!(s.auth_allow, "*");
    }

    #[test]
    fn bad_nodes_are_refused_with_their_name() {
        let client = all_layers()[0].to_node("v-client-0", vec![]);
        for (node, why) in [
            (
                Node::new("x", "cluster/mystery"),
                "x has unknown type cluster/mystery",
            ),
            (
                Node::new("v-client-0", PROTOCOL_CLIENT),
                "v-client-0 has no option remote-host",
            ),
            (
                client.clone().option("ping-timeout", "soon"),
                "v-client-0: ping-timeout is not a number",
            ),
            (
                client.option("transport-type", "carrier-pigeon"),
                "transport-type \"carrier-pigeon\" is not tcp or rdma",
            ),
            (Node::new("d", DISPERSE), "d has no valid redundancy option"),
        ] {
            let e = Xlator::from_node(&node).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
