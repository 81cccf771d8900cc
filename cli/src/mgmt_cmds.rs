//! `mortar mgmtd` and the management commands (`peer`, `pool`, `volume`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mortar_mgmt::api::{CliReply, CliRequest, RemoveBrickAction, PROC_CLI, PROGRAM_MGMT_CLI};
use mortar_mgmt::daemon::{Mgmtd, MgmtdConfig};
use mortar_mgmt::volume::{parse_brick, parse_create};
use mortar_net::rpc::{RpcClient, RpcConfig};
use mortar_net::{Endpoint, Runtime};
use mortar_storage::posix::PosixStorage;

use crate::args::{Args, UsageError};
use crate::launch::{PosixFs, ProcessLauncher};
use crate::{render, shutdown_signal, Failure};

pub const DEFAULT_WORKDIR: &str = "/var/lib/mortar";
pub const DEFAULT_PORT: u16 = 24007;

pub async fn mgmtd(mut args: Args) -> Result<(), Failure> {
    let workdir = PathBuf::from(
        args.option("--workdir")?
            .unwrap_or_else(|| DEFAULT_WORKDIR.into()),
    );
    let listen: Endpoint = args
        .option("--listen")?
        .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"))
        .parse()
        .map_err(|e: mortar_net::addr::AddrError| UsageError(e.to_string()))?;
    let mut hostnames = Vec::new();
    while let Some(h) = args.option("--hostname")? {
        hostnames.push(h);
    }
    let socket = args.option("--cli-socket")?.map(PathBuf::from);
    let pidfile = args.option("--pidfile")?.map(PathBuf::from);
    args.finish()?;
    std::fs::create_dir_all(&workdir).map_err(|e| {
        Failure::Runtime(format!(
            "cannot create working directory {}: {e}",
            workdir.display()
        ))
    })?;
    if let Endpoint::Tcp(hp) = &listen {
        let ip = hp.host.to_string();
        if ip != "0.0.0.0" && ip != "[::]" && !hostnames.contains(&ip) {
            hostnames.push(ip);
        }
    }
    if hostnames.is_empty() {
        let uname = rustix::system::uname();
        hostnames.push(uname.nodename().to_string_lossy().into_owned());
    }
    let socket = socket.unwrap_or_else(|| workdir.join("mgmtd.sock"));
    let rt = Runtime::production("mgmtd");
    let storage = PosixStorage::open(&workdir).map_err(Failure::Runtime)?;
    let bin = std::env::current_exe()
        .map_err(|e| Failure::Runtime(format!("cannot find the mortar binary: {e}")))?;
    let launcher =
        Arc::new(ProcessLauncher::new(rt.clone(), bin, &workdir).map_err(Failure::Runtime)?);
    let mut cfg = MgmtdConfig::new(hostnames, listen);
    cfg.cli_socket = Some(Endpoint::Unix(socket.clone()));
    let d = Mgmtd::start(&rt, storage, cfg, launcher, Arc::new(PosixFs))
        .await
        .map_err(Failure::Runtime)?;
    if let Some(p) = &pidfile {
        crate::write_atomic(p, &format!("{}\n", std::process::id()))
            .map_err(|e| Failure::Runtime(format!("cannot write pidfile {}: {e}", p.display())))?;
    }
    tracing::info!(uuid = d.uuid(), socket = %socket.display(), "mgmtd serving");
    let why = shutdown_signal().await?;
    tracing::info!(signal = why, "mgmtd shutting down (bricks keep running)");
    d.shutdown().await;
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// How long `volume status` waits for each volume's self-heal statistics.
const HEAL_STATS_WAIT_SECS: u64 = 5;

/// Options every management command takes.
pub struct Target {
    endpoint: Endpoint,
    json: bool,
    /// `--xml`: only `volume heal NAME info` has that shape.
    xml: bool,
    script: bool,
    timeout: Duration,
}

impl Target {
    pub fn from_args(args: &mut Args) -> Result<Target, UsageError> {
        let json = args.flag("--json");
        let xml = args.flag("--xml");
        if json && xml {
            return Err(UsageError("give --json or --xml, not both".into()));
        }
        let script = match args.option("--mode")?.as_deref() {
            None => false,
            Some("script") => true,
            Some(m) => return Err(UsageError(format!("--mode takes 'script', not {m:?}"))),
        };
        let timeout =
            Duration::from_millis(args.number("--timeout-ms", 120_000u64, 1..=3_600_000)?);
        let socket = args.option("--socket")?;
        let endpoint = match args.option("--remote-host")? {
            Some(h) => {
                let with_port = if h.contains(':') && !h.starts_with('[') {
                    h
                } else {
                    format!("{h}:{DEFAULT_PORT}")
                };
                with_port
                    .parse()
                    .map_err(|e: mortar_net::addr::AddrError| UsageError(e.to_string()))?
            }
            None => {
                let p = socket
                    .or_else(|| std::env::var("MORTAR_SOCKET").ok())
                    .unwrap_or_else(|| format!("{DEFAULT_WORKDIR}/mgmtd.sock"));
                Endpoint::Unix(PathBuf::from(p))
            }
        };
        Ok(Target {
            endpoint,
            json,
            xml,
            script,
            timeout,
        })
    }

    /// The mgmtd this command talks to.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    /// `--xml` was given.
    pub(crate) fn xml(&self) -> bool {
        self.xml
    }

    /// Refuse `--xml` for a command that has no XML shape.
    pub(crate) fn no_xml(&self) -> Result<(), UsageError> {
        if self.xml {
            return Err(UsageError(
                "--xml is only for 'volume heal NAME info [summary | split-brain]' and 'statistics heal-count'; use --json".into(),
            ));
        }
        Ok(())
    }

    /// How long a request may take (`--timeout-ms`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn confirm(&self, question: &str) -> Result<(), Failure> {
        if self.script || !std::io::stdin().is_terminal() {
            return Ok(());
        }
        eprint!("{question} (y/n) ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if line.trim().eq_ignore_ascii_case("y") {
            Ok(())
        } else {
            Err(Failure::Runtime("cancelled".into()))
        }
    }

    pub(crate) async fn send(&self, req: CliRequest) -> Result<(), Failure> {
        self.no_xml()?;
        let out = self.ask(&req, self.timeout).await?;
        self.print(out, String::new())
    }

    /// `volume status`, and for each started volume with self-heal
    /// daemons, what their last crawls did per brick (the volume's
    /// `volume heal NAME statistics`, asked with a short deadline; text
    /// only: `--json` keeps the status reply alone, the statistics have
    /// their own command).
    async fn status(&self, name: Option<String>) -> Result<(), Failure> {
        self.no_xml()?;
        let out = self
            .ask(&CliRequest::VolumeStatus { name }, self.timeout)
            .await?;
        let mut extra = String::new();
        if let (Ok(CliReply::Status(vols)), false) = (&out, self.json) {
            for v in vols
                .iter()
                .filter(|v| v.status == "Started" && !v.shd.is_empty())
            {
                let req = CliRequest::HealStatistics {
                    name: v.name.clone(),
                };
                let wait = self.timeout.min(Duration::from_secs(HEAL_STATS_WAIT_SECS));
                extra.push_str(&match self.ask(&req, wait).await {
                    Ok(Ok(CliReply::HealStatistics(rows))) => {
                        render::heal_in_status(&v.name, &rows)
                    }
                    Ok(Err(e)) | Err(Failure::Runtime(e)) => {
                        format!("Self-heal of {}: statistics not available: {e}\n\n", v.name)
                    }
                    _ => String::new(),
                });
            }
        }
        self.print(out, extra)
    }

    /// One request to the mgmtd, waiting at most `wait`: its reply, or
    /// the error it answered with.
    async fn ask(
        &self,
        req: &CliRequest,
        wait: Duration,
    ) -> Result<Result<CliReply, String>, Failure> {
        let rt = Runtime::production("mortar-cli");
        let client = RpcClient::new(&rt, self.endpoint.clone(), RpcConfig::default());
        client.wait_connected(Duration::from_secs(10)).await.map_err(|e| {
            Failure::Runtime(format!(
                "cannot reach mgmtd at {}: {e}; is 'mortar mgmtd' running (or use --remote-host / --socket)?",
                self.endpoint
            ))
        })?;
        let res: Result<(Result<CliReply, String>, Bytes), _> = client
            .call_typed(PROGRAM_MGMT_CLI, PROC_CLI, req, Bytes::new(), wait)
            .await;
        client.close();
        Ok(res
            .map_err(|e| Failure::Runtime(format!("mgmtd at {}: {e}", self.endpoint)))?
            .0)
    }

    /// Print a reply (text, with `extra` after it, or `--json`).
    fn print(&self, out: Result<CliReply, String>, extra: String) -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        match out {
            Ok(r) => {
                let text = if self.json {
                    serde_json::to_string_pretty(&r).map_err(|e| Failure::Runtime(e.to_string()))?
                        + "\n"
                } else {
                    render::reply(&r) + &extra
                };
                let _ = stdout.write_all(text.as_bytes());
                Ok(())
            }
            Err(e) => {
                if self.json {
                    let _ = writeln!(stdout, "{}", serde_json::json!({ "error": e }));
                }
                Err(Failure::Runtime(e))
            }
        }
    }
}

fn word(args: &mut Args, what: &str) -> Result<String, UsageError> {
    args.required(what)
}

fn bricks_of(words: &[String]) -> Result<Vec<mortar_mgmt::volume::BrickSpec>, UsageError> {
    words
        .iter()
        .map(|w| parse_brick(w).map_err(UsageError))
        .collect()
}

pub async fn peer(mut args: Args) -> Result<(), Failure> {
    let t = Target::from_args(&mut args)?;
    let verb = word(&mut args, "a peer command (probe, detach, status, sync)")?;
    let req = match verb.as_str() {
        "probe" => CliRequest::PeerProbe {
            host: word(&mut args, "HOST")?,
        },
        "detach" => {
            let host = word(&mut args, "HOST")?;
            let force = args.next().map(|w| w == "force").unwrap_or(false);
            t.confirm(&format!(
                "Detaching {host} removes it from the pool. Continue?"
            ))?;
            CliRequest::PeerDetach { host, force }
        }
        "status" => CliRequest::PeerStatus,
        "sync" => CliRequest::PeerSync {
            host: word(&mut args, "HOST")?,
        },
        other => return Err(UsageError(format!("unknown peer command {other:?}")).into()),
    };
    args.finish()?;
    t.send(req).await
}

pub async fn pool(mut args: Args) -> Result<(), Failure> {
    let t = Target::from_args(&mut args)?;
    match word(&mut args, "a pool command (list)")?.as_str() {
        "list" => {}
        other => return Err(UsageError(format!("unknown pool command {other:?}")).into()),
    }
    args.finish()?;
    t.send(CliRequest::PoolList).await
}

pub async fn volume(mut args: Args) -> Result<(), Failure> {
    let t = Target::from_args(&mut args)?;
    let verb = word(&mut args, "a volume command")?;
    let mut rest: Vec<String> = Vec::new();
    while let Some(w) = args.next() {
        rest.push(w);
    }
    let need = |n: usize, usage: &str| -> Result<(), UsageError> {
        if rest.len() < n {
            Err(UsageError(format!("usage: mortar volume {usage}")))
        } else {
            Ok(())
        }
    };
    let force_last = |rest: &mut Vec<String>| -> bool {
        if rest.last().map(String::as_str) == Some("force") {
            rest.pop();
            true
        } else {
            false
        }
    };
    let req = match verb.as_str() {
        "heal" => return crate::heal_cmds::heal(&t, &rest).await,
        "create" => CliRequest::VolumeCreate(parse_create(&rest).map_err(UsageError)?),
        "start" | "stop" => {
            need(1, &format!("{verb} NAME [force]"))?;
            let force = force_last(&mut rest);
            if rest.len() != 1 {
                return Err(UsageError(format!("usage: mortar volume {verb} NAME [force]")).into());
            }
            let name = rest.remove(0);
            if verb == "start" {
                CliRequest::VolumeStart { name, force }
            } else {
                t.confirm(&format!(
                    "Stopping volume {name} makes its data inaccessible. Continue?"
                ))?;
                CliRequest::VolumeStop { name, force }
            }
        }
        "delete" => {
            need(1, "delete NAME")?;
            let name = rest.remove(0);
            t.confirm(&format!(
                "Deleting volume {name} removes its configuration (brick data stays). Continue?"
            ))?;
            CliRequest::VolumeDelete { name }
        }
        "info" => CliRequest::VolumeInfo { name: rest.pop() },
        "status" => return t.status(rest.pop()).await,
        "list" => CliRequest::VolumeList,
        "set" => {
            need(3, "set NAME KEY VALUE")?;
            CliRequest::VolumeSet {
                name: rest[0].clone(),
                key: rest[1].clone(),
                value: rest[2..].join(" "),
            }
        }
        "get" => {
            need(2, "get NAME KEY|all")?;
            CliRequest::VolumeGet {
                name: rest[0].clone(),
                key: Some(rest[1].clone()),
            }
        }
        "reset" => {
            need(1, "reset NAME [KEY]")?;
            CliRequest::VolumeReset {
                name: rest[0].clone(),
                key: rest.get(1).cloned().filter(|k| k != "all"),
            }
        }
        "add-brick" => {
            need(2, "add-brick NAME [replica N] HOST:/PATH... [force]")?;
            let force = force_last(&mut rest);
            let name = rest.remove(0);
            let replica = if rest.first().map(String::as_str) == Some("replica") {
                rest.remove(0);
                let n = rest
                    .first()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| UsageError("replica needs a number".into()))?;
                rest.remove(0);
                Some(n)
            } else {
                None
            };
            CliRequest::AddBrick {
                name,
                replica,
                bricks: bricks_of(&rest)?,
                force,
            }
        }
        "remove-brick" => {
            need(
                3,
                "remove-brick NAME HOST:/PATH... start|status|commit|force",
            )?;
            let action = match rest.pop().as_deref() {
                Some("start") => RemoveBrickAction::Start,
                Some("status") => RemoveBrickAction::Status,
                Some("commit") => RemoveBrickAction::Commit,
                Some("force") => RemoveBrickAction::Force,
                other => {
                    return Err(UsageError(format!(
                        "remove-brick ends with start, status, commit or force, not {other:?}"
                    ))
                    .into())
                }
            };
            let name = rest.remove(0);
            CliRequest::RemoveBrick {
                name,
                bricks: bricks_of(&rest)?,
                action,
            }
        }
        "replace-brick" => {
            if rest.len() != 5 || rest[3] != "commit" || rest[4] != "force" {
                return Err(UsageError(
                    "usage: mortar volume replace-brick NAME OLD NEW commit force".into(),
                )
                .into());
            }
            CliRequest::ReplaceBrick {
                name: rest[0].clone(),
                old: parse_brick(&rest[1]).map_err(UsageError)?,
                new: parse_brick(&rest[2]).map_err(UsageError)?,
            }
        }
        "volfile" => {
            need(1, "volfile NAME [HOST:/BRICK]")?;
            CliRequest::GetVolfile {
                name: rest[0].clone(),
                brick: rest
                    .get(1)
                    .map(|b| parse_brick(b))
                    .transpose()
                    .map_err(UsageError)?,
            }
        }
        other => return Err(UsageError(format!("unknown volume command {other:?}")).into()),
    };
    t.send(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(line: &str) -> Result<Target, UsageError> {
        Target::from_args(&mut Args::new(line.split_whitespace().map(String::from)))
    }

    #[test]
    fn xml_is_for_heal_info_only() {
        assert!(target("--xml").unwrap().xml());
        let e = target("--json --xml").err().expect("both refused");
        assert!(e.0.contains("not both"), "{e}");
        let e = target("--xml").unwrap().no_xml().unwrap_err();
        assert!(e.0.contains("volume heal NAME info"), "{e}");
        assert!(target("--json").unwrap().no_xml().is_ok());
    }
}
