//! Volumes: `volume create` syntax and the checks a new or grown volume
//! must pass. Pure functions of data; the daemon calls them. The model
//! itself ([`Volume`], [`BrickSpec`], ...) is a wire type in
//! `mortar_proto::volume`, re-exported here.

use std::collections::BTreeMap;

pub use mortar_proto::volume::*;

pub const VOLUME_NAME_BYTES_MAX: usize = 64;
pub const SET_SIZE_MAX: u32 = 16;

pub fn check_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > VOLUME_NAME_BYTES_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || name == "all"
    {
        return Err(format!(
            "invalid volume name {name:?}: use 1 to {VOLUME_NAME_BYTES_MAX} letters, digits, '-' or '_' (and not \"all\")"
        ));
    }
    Ok(())
}

/// Parse `HOST:/PATH`, normalising the path (no `.`/`..`, no duplicate or
/// trailing slashes).
pub fn parse_brick(s: &str) -> Result<BrickSpec, String> {
    let (host, path) = s
        .split_once(':')
        .ok_or_else(|| format!("brick {s:?} must be HOST:/PATH"))?;
    if host.is_empty()
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "brick {s:?}: {host:?} is not a host name or address"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("brick {s:?}: the path must be absolute"));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("brick {s:?}: the path must not contain '..'")),
            c if c.contains('\0') => return Err(format!("brick {s:?}: NUL in path")),
            c => parts.push(c),
        }
    }
    Ok(BrickSpec {
        host: host.to_ascii_lowercase(),
        path: format!("/{}", parts.join("/")),
    })
}

fn number(word: Option<&String>, what: &str) -> Result<u32, String> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("{what} needs a number"))
}

/// Parse `NAME [replica N [arbiter 1]] [disperse N [redundancy M]]
/// [transport tcp|rdma] HOST:/PATH... [force]`.
pub fn parse_create(args: &[String]) -> Result<CreateRequest, String> {
    let mut it = args.iter().peekable();
    let name = it
        .next()
        .ok_or("volume create needs a volume name")?
        .clone();
    check_volume_name(&name)?;
    let mut req = CreateRequest {
        name,
        replica: None,
        arbiter: false,
        disperse: None,
        redundancy: None,
        transport: Transport::Tcp,
        bricks: Vec::new(),
        force: false,
    };
    while let Some(w) = it.next() {
        match w.as_str() {
            "replica" => req.replica = Some(number(it.next(), "replica")?),
            "arbiter" => {
                if number(it.next(), "arbiter")? != 1 {
                    return Err("arbiter count must be 1".into());
                }
                req.arbiter = true;
            }
            "disperse" => req.disperse = Some(number(it.next(), "disperse")?),
            "redundancy" => req.redundancy = Some(number(it.next(), "redundancy")?),
            "transport" => {
                req.transport = match it.next().map(String::as_str) {
                    Some("tcp") => Transport::Tcp,
                    Some("rdma") => Transport::Rdma,
                    other => return Err(format!("transport must be tcp or rdma, not {other:?}")),
                }
            }
            "force" if it.peek().is_none() => req.force = true,
            b => req.bricks.push(parse_brick(b)?),
        }
    }
    if req.bricks.is_empty() {
        return Err("volume create needs at least one brick (HOST:/PATH)".into());
    }
    Ok(req)
}

/// What the checks need to know about the cluster.
pub trait Pool {
    /// Is `host` this server or a peer in the pool? Returns its identity
    /// (peer uuid) so that two names of one server are recognised.
    fn identify(&self, host: &str) -> Option<String>;
}

/// Decide the layout of a new volume and check its bricks.
pub fn plan_create(
    req: &CreateRequest,
    volumes: &BTreeMap<String, Volume>,
    pool: &dyn Pool,
) -> Result<Layout, String> {
    if volumes.contains_key(&req.name) {
        return Err(format!("volume {} already exists", req.name));
    }
    let layout = match (req.replica, req.disperse) {
        (Some(_), Some(_)) => {
            return Err("a volume is either replicated or dispersed, not both".into())
        }
        (Some(r), None) => {
            if !(2..=SET_SIZE_MAX).contains(&r) {
                return Err(format!("replica count must be 2 to {SET_SIZE_MAX}"));
            }
            if req.arbiter && r != 3 {
                return Err("arbiter needs replica 3 (two data bricks and one arbiter)".into());
            }
            if req.redundancy.is_some() {
                return Err("redundancy applies to disperse volumes".into());
            }
            Layout::Replicate {
                replica: r,
                arbiter: req.arbiter,
            }
        }
        (None, Some(n)) => {
            if !(3..=SET_SIZE_MAX).contains(&n) {
                return Err(format!("disperse count must be 3 to {SET_SIZE_MAX}"));
            }
            let m = req.redundancy.unwrap_or((n / 3).max(1));
            if m == 0 || 2 * m >= n {
                return Err(format!(
                    "redundancy {m} is invalid for disperse {n}: it must be at least 1 and less than half of {n}"
                ));
            }
            if req.arbiter {
                return Err("arbiter applies to replicate volumes".into());
            }
            Layout::Disperse {
                data: n - m,
                redundancy: m,
            }
        }
        (None, None) => {
            if req.arbiter || req.redundancy.is_some() {
                return Err("arbiter needs replica 3; redundancy needs disperse N".into());
            }
            Layout::Distribute
        }
    };
    check_bricks(&req.name, layout, &req.bricks, req.force, volumes, pool)?;
    Ok(layout)
}

/// The checks shared by create and add-brick.
pub fn check_bricks(
    volume: &str,
    layout: Layout,
    bricks: &[BrickSpec],
    force: bool,
    volumes: &BTreeMap<String, Volume>,
    pool: &dyn Pool,
) -> Result<(), String> {
    let set = layout.set_size() as usize;
    check_whole_sets(layout, bricks.len())?;
    let ids = identify_bricks(bricks, force, pool)?;
    check_not_nested_among(bricks, &ids)?;
    check_not_used_elsewhere(bricks, &ids, volumes, pool)?;
    if !force && set > 1 {
        check_sets_spread(volume, &ids, set)?;
    }
    Ok(())
}

fn check_whole_sets(layout: Layout, bricks: usize) -> Result<(), String> {
    let set = layout.set_size() as usize;
    if bricks % set == 0 {
        return Ok(());
    }
    let what = match layout {
        Layout::Replicate { .. } => "replica count",
        Layout::Disperse { .. } => "disperse count",
        Layout::Distribute => "set size",
    };
    Err(format!(
        "number of bricks ({bricks}) is not a multiple of the {what} ({set})"
    ))
}

/// The pool member (uuid) each brick's host is; refuses hosts outside the
/// pool and, without `force`, a brick at `/`.
fn identify_bricks(
    bricks: &[BrickSpec],
    force: bool,
    pool: &dyn Pool,
) -> Result<Vec<String>, String> {
    bricks
        .iter()
        .map(|b| {
            let id = pool.identify(&b.host).ok_or_else(|| {
                format!(
                    "host {} of brick {b} is not in the pool: run 'mortar peer probe {}' first",
                    b.host, b.host
                )
            })?;
            if b.path == "/" && !force {
                return Err(format!(
                    "brick {b} is the root directory: use a dedicated directory, or add 'force' to use it anyway"
                ));
            }
            Ok(id)
        })
        .collect()
}

/// Is one of the two directories the other or inside it?
fn nested(a: &str, b: &str) -> bool {
    a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"))
}

/// No two new bricks on one server are the same directory or nested.
fn check_not_nested_among(bricks: &[BrickSpec], ids: &[String]) -> Result<(), String> {
    for i in 0..bricks.len() {
        for j in i + 1..bricks.len() {
            if ids[i] == ids[j] && nested(&bricks[i].path, &bricks[j].path) {
                return Err(if bricks[i].path == bricks[j].path {
                    format!("brick {} is listed twice", bricks[j])
                } else {
                    format!(
                        "bricks {} and {} are nested on the same server",
                        bricks[i], bricks[j]
                    )
                });
            }
        }
    }
    Ok(())
}

/// No new brick is, contains or sits inside a brick of any volume on the
/// same server.
fn check_not_used_elsewhere(
    bricks: &[BrickSpec],
    ids: &[String],
    volumes: &BTreeMap<String, Volume>,
    pool: &dyn Pool,
) -> Result<(), String> {
    for (vname, v) in volumes {
        for old in &v.bricks {
            let Some(old_id) = pool.identify(&old.host) else {
                continue;
            };
            for (b, id) in bricks.iter().zip(ids) {
                if *id == old_id && nested(&old.path, &b.path) {
                    return Err(if old.path == b.path {
                        format!("brick {b} is already used by volume {vname}")
                    } else {
                        format!("brick {b} is nested with {old}, a brick of volume {vname}")
                    });
                }
            }
        }
    }
    Ok(())
}

/// Without `force`, no set has two bricks on one server.
fn check_sets_spread(volume: &str, ids: &[String], set: usize) -> Result<(), String> {
    for (n, chunk) in ids.chunks(set).enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        if !chunk.iter().all(|id| seen.insert(id)) {
            return Err(format!(
                "set {} of volume {volume} has more than one brick on the same server, so one server failure loses redundancy: spread the bricks over servers, or add 'force'",
                n + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hosts(&'static [(&'static str, &'static str)]);

    impl Pool for Hosts {
        fn identify(&self, host: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(h, _)| *h == host)
                .map(|(_, id)| id.to_string())
        }
    }

    const POOL: Hosts = Hosts(&[("s1", "u1"), ("s2", "u2"), ("s3", "u3"), ("10.0.0.1", "u1")]);

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn plan(s: &str) -> Result<Layout, String> {
        plan_create(&parse_create(&args(s))?, &BTreeMap::new(), &POOL)
    }

    #[test]
    fn layouts_from_the_original_syntax() {
        assert_eq!(plan("v s1:/b"), Ok(Layout::Distribute));
        assert_eq!(
            plan("v replica 3 s1:/b s2:/b s3:/b"),
            Ok(Layout::Replicate {
                replica: 3,
                arbiter: false
            })
        );
        assert_eq!(
            plan("v replica 3 arbiter 1 s1:/b s2:/b s3:/b"),
            Ok(Layout::Replicate {
                replica: 3,
                arbiter: true
            })
        );
        assert_eq!(
            plan("v disperse 6 redundancy 2 s1:/a s2:/a s3:/a s1:/b s2:/b s3:/b force"),
            Ok(Layout::Disperse {
                data: 4,
                redundancy: 2
            })
        );
        assert_eq!(
            plan("v disperse 3 s1:/a s2:/a s3:/a"),
            Ok(Layout::Disperse {
                data: 2,
                redundancy: 1
            })
        );
        let r = parse_create(&args("v transport rdma s1:/b//x/./y/")).unwrap();
        assert_eq!(
            (r.transport, r.bricks[0].path.as_str()),
            (Transport::Rdma, "/b/x/y")
        );
    }

    #[test]
    fn every_mistake_is_refused_with_a_reason() {
        for (cmd, why) in [
            (
                "v replica 3 s1:/b s2:/b",
                "not a multiple of the replica count (3)",
            ),
            (
                "v replica 3 s1:/a s1:/b s2:/b",
                "more than one brick on the same server",
            ),
            (
                "v replica 3 s1:/a 10.0.0.1:/b s2:/b",
                "more than one brick on the same server",
            ),
            ("v s1:/data s1:/data/inner", "nested on the same server"),
            ("v s1:/d s1:/d", "listed twice"),
            ("v s9:/b", "not in the pool: run 'mortar peer probe s9'"),
            ("v s1:/", "root directory"),
            (
                "v replica 2 arbiter 1 s1:/a s2:/a",
                "arbiter needs replica 3",
            ),
            ("v replica 1 s1:/a", "replica count must be 2"),
            (
                "v disperse 4 redundancy 2 s1:/a s2:/a s3:/a s1:/b",
                "less than half",
            ),
            ("v replica 3 disperse 3 s1:/a s2:/a s3:/a", "not both"),
            ("v transport udp s1:/a", "tcp or rdma"),
            ("v s1:relative", "absolute"),
            ("v s1:/a/../b", "'..'"),
            ("v", "at least one brick"),
            ("bad/name s1:/a", "invalid volume name"),
            ("all s1:/a", "invalid volume name"),
        ] {
            let e = plan(cmd).unwrap_err();
            assert!(e.contains(why), "{cmd}: {e}");
        }
        // force accepts same-host sets and the root directory.
        assert!(plan("v replica 3 s1:/a s1:/b s2:/b force").is_ok());
        assert!(plan("v s1:/ force").is_ok());
    }

    #[test]
    fn bricks_of_other_volumes_are_protected() {
        let mut vols = BTreeMap::new();
        vols.insert(
            "old".to_string(),
            Volume {
                name: "old".into(),
                id: "x".into(),
                layout: Layout::Distribute,
                transport: Transport::Tcp,
                bricks: vec![parse_brick("s1:/srv/b1").unwrap()],
                status: VolumeStatus::Created,
                options: BTreeMap::new(),
                version: 1,
                removing: Vec::new(),
            },
        );
        let p = |s: &str| plan_create(&parse_create(&args(s)).unwrap(), &vols, &POOL);
        assert!(p("new s1:/srv/b1")
            .unwrap_err()
            .contains("already used by volume old"));
        assert!(p("new 10.0.0.1:/srv/b1/sub")
            .unwrap_err()
            .contains("nested with s1:/srv/b1"));
        assert!(
            p("new s2:/srv/b1").is_ok(),
            "same path on another server is fine"
        );
        assert!(p("old s2:/x").unwrap_err().contains("already exists"));
    }

    #[test]
    fn info_strings() {
        let mk = |layout, n: usize| Volume {
            name: "v".into(),
            id: "i".into(),
            layout,
            transport: Transport::Tcp,
            bricks: (0..n)
                .map(|i| BrickSpec {
                    host: format!("s{i}"),
                    path: "/b".into(),
                })
                .collect(),
            status: VolumeStatus::Created,
            options: BTreeMap::new(),
            version: 1,
            removing: Vec::new(),
        };
        let r = mk(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            6,
        );
        assert_eq!(
            (r.type_name(), r.brick_count_text().as_str()),
            ("Distributed-Replicate", "2 x 3 = 6")
        );
        let d = mk(
            Layout::Disperse {
                data: 4,
                redundancy: 2,
            },
            6,
        );
        assert_eq!(
            (d.type_name(), d.brick_count_text().as_str()),
            ("Disperse", "1 x (4 + 2) = 6")
        );
        let a = mk(
            Layout::Replicate {
                replica: 3,
                arbiter: true,
            },
            3,
        );
        assert_eq!(a.brick_count_text(), "1 x (2 + 1) = 3");
        assert_eq!(mk(Layout::Distribute, 3).brick_count_text(), "3");
        assert_eq!(r.sets().len(), 2);
    }
}
