//! Volfiles: the readable text that describes a volume's graph.
//!
//! ```text
//! # mortar volfile 1
//! # volume vol1 (client graph), version 7
//! volume vol1-client-0
//!     type protocol/client
//!     option remote-host server1
//!     option remote-subvolume /bricks/b1
//! end-volume
//!
//! volume vol1-replicate-0
//!     type cluster/replicate
//!     subvolumes vol1-client-0 vol1-client-1 vol1-client-2
//! end-volume
//! ```
//!
//! A graph is a list of nodes, each defined after the nodes it uses; the
//! last node is the top of the graph. The first line names the format
//! version; a reader refuses a version it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The format version this build writes and reads.
pub const VOLFILE_FORMAT: u32 = 1;
const MAGIC: &str = "# mortar volfile ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// `protocol/client`, `cluster/replicate`, `cluster/disperse`,
    /// `cluster/distribute`, `storage/posix`, ...
    pub kind: String,
    pub options: BTreeMap<String, String>,
    pub subvolumes: Vec<String>,
}

impl Node {
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Node {
            name: name.into(),
            kind: kind.into(),
            options: BTreeMap::new(),
            subvolumes: Vec::new(),
        }
    }

    pub fn option(mut self, k: &str, v: impl ToString) -> Self {
        self.options.insert(k.to_string(), v.to_string());
        self
    }

    pub fn subvolumes(mut self, s: impl IntoIterator<Item = String>) -> Self {
        self.subvolumes = s.into_iter().collect();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Free-text description written as a comment (volume, kind, version).
    pub description: String,
    pub nodes: Vec<Node>,
}

/// Why a volfile could not be read, with the line it stopped at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("volfile line {line}: {why}")]
pub struct VolfileError {
    pub line: usize,
    pub why: String,
}

fn valid_word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Graph {
    pub fn top(&self) -> Option<&Node> {
        self.nodes.last()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The text form.
    pub fn render(&self) -> String {
        let mut s = format!("{MAGIC}{VOLFILE_FORMAT}\n");
        for line in self.description.lines() {
            s.push_str(&format!("# {line}\n"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str(&format!("volume {}\n    type {}\n", n.name, n.kind));
            for (k, v) in &n.options {
                s.push_str(&format!("    option {k} {v}\n"));
            }
            if !n.subvolumes.is_empty() {
                s.push_str(&format!("    subvolumes {}\n", n.subvolumes.join(" ")));
            }
            s.push_str("end-volume\n");
        }
        s
    }

    /// Parse the text form, checking names, references and order.
    pub fn parse(text: &str) -> Result<Graph, VolfileError> {
        let err = |line: usize, why: String| VolfileError { line, why };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let (n, first) = lines.next().ok_or_else(|| err(1, "empty volfile".into()))?;
        let version: u32 = first
            .strip_prefix(MAGIC)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| err(n, format!("not a Mortar volfile (expected \"{MAGIC}N\")")))?;
        if version != VOLFILE_FORMAT {
            return Err(err(
                n,
                format!("volfile format {version} is not supported by this build (it reads {VOLFILE_FORMAT}); upgrade the client"),
            ));
        }
        let mut description = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut cur: Option<Node> = None;
        for (n, l) in lines {
            if l.is_empty() {
                continue;
            }
            if let Some(c) = l.strip_prefix('#') {
                if cur.is_none() && nodes.is_empty() {
                    description.push(c.trim().to_string());
                }
                continue;
            }
            let (word, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let rest = rest.trim();
            match (word, cur.as_mut()) {
                ("volume", None) => {
                    if !valid_word(rest) {
                        return Err(err(n, format!("bad volume name {rest:?}")));
                    }
                    if nodes.iter().any(|x| x.name == rest) {
                        return Err(err(n, format!("volume {rest} defined twice")));
                    }
                    cur = Some(Node::new(rest, ""));
                }
                ("type", Some(node)) if valid_word(rest) => node.kind = rest.to_string(),
                ("option", Some(node)) => {
                    let (k, v) = rest
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| err(n, "option needs a key and a value".into()))?;
                    node.options.insert(k.to_string(), v.trim().to_string());
                }
                ("subvolumes", Some(node)) => {
                    for s in rest.split_whitespace() {
                        if !nodes.iter().any(|x| x.name == s) {
                            return Err(err(n, format!("subvolume {s} is not defined above")));
                        }
                        node.subvolumes.push(s.to_string());
                    }
                }
                ("end-volume", Some(_)) => {
                    let node = cur.take().expect("inside a volume");
                    if node.kind.is_empty() {
                        return Err(err(n, format!("volume {} has no type", node.name)));
                    }
                    nodes.push(node);
                }
                (w, _) => return Err(err(n, format!("unexpected {w:?}"))),
            }
        }
        if cur.is_some() {
            return Err(err(text.lines().count(), "missing end-volume".into()));
        }
        if nodes.is_empty() {
            return Err(err(text.lines().count(), "no volumes defined".into()));
        }
        Ok(Graph {
            description: description.join("\n"),
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Graph {
        Graph {
            description: "volume v (client graph), version 3".into(),
            nodes: vec![
                Node::new("v-client-0", "protocol/client")
                    .option("remote-host", "s1")
                    .option("remote-subvolume", "/b"),
                Node::new("v-client-1", "protocol/client")
                    .option("remote-host", "s2")
                    .option("remote-subvolume", "/b"),
                Node::new("v-replicate-0", "cluster/replicate")
                    .subvolumes(["v-client-0".to_string(), "v-client-1".to_string()]),
            ],
        }
    }

    #[test]
    fn render_and_parse_round_trip() {
        let g = sample();
        let text = g.render();
        assert!(text.starts_with("# mortar volfile 1\n# volume v"));
        assert_eq!(Graph::parse(&text).unwrap(), g);
        assert_eq!(
            Graph::parse(&text).unwrap().top().unwrap().name,
            "v-replicate-0"
        );
    }

    #[test]
    fn bad_volfiles_say_where_and_why() {
        let good = sample().render();
        for (text, why) in [
            (String::new(), "empty"),
            ("volume x\n".to_string(), "not a Mortar volfile"),
            (good.replace("volfile 1", "volfile 9"), "upgrade the client"),
            (
                good.replace("v-client-0 v-client-1", "v-client-0 nowhere"),
                "not defined above",
            ),
            (
                good.replace("    type cluster/replicate\n", ""),
                "has no type",
            ),
            (
                good.trim_end().trim_end_matches("end-volume").to_string(),
                "missing end-volume",
            ),
            (
                good.replace("volume v-client-1", "volume v-client-0"),
                "defined twice",
            ),
            (
                good.replace("option remote-host s1", "option remote-host"),
                "key and a value",
            ),
        ] {
            let e = Graph::parse(&text).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }
}
