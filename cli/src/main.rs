//! `mortar`: every Mortar daemon and the command line, in one binary.
//!
//! It owns argument parsing, output (text and `--json`) and the production
//! launcher (OS processes). It must hold no logic a daemon needs: each
//! subcommand hands its parsed arguments to the crate that does the work.

// Printing results is this binary's job; libraries log instead.
#![allow(clippy::print_stdout)]

mod args;
mod heal_cmds;
mod launch;
mod mgmt_cmds;
mod render;
mod split_brain_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use args::{Args, UsageError};
use mortar_net::rpc::echo::{EchoService, PROGRAM_ECHO};
use mortar_net::rpc::{RpcClient, RpcConfig, RpcServer};
use mortar_net::{Endpoint, Runtime};

const USAGE: &str = "\
usage: mortar <command> [options]

management (talks to the local mgmtd; --remote-host HOST to use another):
  mgmtd [--workdir DIR] [--listen HOST:PORT] [--hostname NAME]... [--cli-socket PATH] [--pidfile PATH]
  peer probe HOST | peer detach HOST [force] | peer status | peer sync HOST
  pool list
  volume create NAME [replica N [arbiter 1]] [disperse N [redundancy M]]
                [transport tcp|rdma] HOST:/PATH... [force]
  volume start|stop NAME [force] | volume delete NAME
  volume info [NAME|all] | volume status [NAME|all] | volume list
  volume set NAME KEY VALUE | volume get NAME KEY|all | volume reset NAME [KEY]
  volume add-brick NAME [replica N] HOST:/PATH... [force]
  volume remove-brick NAME HOST:/PATH... start|status|commit|force
  volume replace-brick NAME OLD NEW commit force
  volume volfile NAME [HOST:/BRICK]
  volume heal NAME           every self-heal daemon of the volume crawls now
  volume heal NAME enable|disable   the volume's self-heal daemons on or off
  volume heal NAME info [summary | split-brain]
        pending heal entries of every brick (each brick asked at once, 5 s
        deadline each; an unreachable brick shows why)
  volume heal NAME split-brain bigger-file FILE | latest-mtime FILE
  volume heal NAME split-brain source-brick HOST:/PATH [FILE]
        resolve a replicate split-brain: the chosen copy heals the others
        (FILE is a path in the volume or gfid:UUID; source-brick without
        FILE resolves every split-brain file of that brick's set)
  mount HOST:/VOLUME MOUNTPOINT [--mgmt-port PORT]
        FUSE-mount a volume (runs in the foreground; SIGINT/SIGTERM unmounts)
  options: --json  --xml (heal info only)  --mode=script  --remote-host HOST[:PORT]  --socket PATH  --timeout-ms MS

daemons and tools:
  ping ADDRESS [--count N] [--timeout-ms MS] [--json]
        round trip to any Mortar daemon's messenger (ADDRESS is HOST:PORT,
        tcp:HOST:PORT or unix:/path)
  brick --brick DIR --volume-id ID [--listen HOST:PORT] [--mgmt ADDRESS]
        [--pidfile PATH] [--port-file PATH] [--auth-allow PATTERNS]
        [--auth-reject PATTERNS] [--ping-timeout SECS] [--no-fsync-namespace]
        serve one brick directory (port 0, the default, picks a free port;
        --port-file records it); stops cleanly on SIGTERM/SIGINT
  shd [--mgmt HOST:PORT] [--hostname NAME]... [--pidfile PATH]
        the self-heal daemon (mgmtd starts one per server when a replicated
        volume has a brick there); stops on SIGTERM/SIGINT
  migrate --volume NAME [--mgmt HOST:PORT]
        move files off a volume's bricks being removed (what 'remove-brick
        start' runs; progress goes to that mgmtd, read it with 'status')
  locks ADDRESS --volume-id ID [--json] [--timeout-ms MS]
        list the locks a brick holds and awaits (who, what, since when)
  echo-server [--listen ADDRESS]... [--pidfile PATH]
        a diagnostic messenger server (echo program); stops on SIGTERM/SIGINT
  version
        print the version

options for every command:
  --log-level error|warn|info|debug|trace
        (default: $MORTAR_LOG, else info for daemons and error for commands)
  --log-file PATH   append logs to PATH instead of stderr

The self-heal daemon and the FUSE mount are added as they are built (see
ARCHITECTURE.md).";

/// What went wrong, and the exit code it maps to.
pub(crate) enum Failure {
    Usage(UsageError),
    Runtime(String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

fn main() -> ExitCode {
    let mut args = Args::new(std::env::args().skip(1));
    let level = match args.option("--log-level") {
        Ok(l) => l.or_else(|| std::env::var("MORTAR_LOG").ok()),
        Err(e) => return usage_error(&e),
    };
    let log_file = match args.option("--log-file") {
        Ok(f) => f.map(PathBuf::from),
        Err(e) => return usage_error(&e),
    };
    const COMMANDS: &[&str] = &[
        "mgmtd",
        "peer",
        "pool",
        "volume",
        "mount",
        "migrate",
        "shd",
        "brick",
        "locks",
        "ping",
        "echo-server",
        "version",
        "--version",
        "help",
        "--help",
        "-h",
    ];
    let cmd = match args.take_command(COMMANDS) {
        Some(c) => c,
        None => match args.next() {
            Some(w) if !w.starts_with("--") => {
                return usage_error(&UsageError(format!("unknown command {w:?}")))
            }
            _ => return usage_error(&UsageError("no command given".into())),
        },
    };
    let daemon = matches!(
        cmd.as_str(),
        "echo-server" | "brick" | "mgmtd" | "mount" | "migrate" | "shd"
    );
    let default_level = if daemon { "info" } else { "error" };
    if let Err(e) = init_logging(
        level.as_deref().unwrap_or(default_level),
        log_file.as_deref(),
    ) {
        return usage_error(&e);
    }
    let result = match cmd.as_str() {
        "ping" => run(ping(args)),
        "echo-server" => run(echo_server(args)),
        "brick" => run(brick(args)),
        "locks" => run(locks(args)),
        "mgmtd" => run(mgmt_cmds::mgmtd(args)),
        "peer" => run(mgmt_cmds::peer(args)),
        "pool" => run(mgmt_cmds::pool(args)),
        "volume" => run(mgmt_cmds::volume(args)),
        "mount" => run(mount(args)),
        "migrate" => run(migrate(args)),
        "shd" => run(shd(args)),
        "version" | "--version" => {
            println!("mortar {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::Usage(UsageError(format!(
            "unknown command {other:?}"
        )))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => usage_error(&e),
        Err(Failure::Runtime(msg)) => {
            eprintln!("mortar {cmd}: {msg}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(e: &UsageError) -> ExitCode {
    eprintln!("mortar: {e}\n\n{USAGE}");
    ExitCode::from(2)
}

fn init_logging(level: &str, file: Option<&std::path::Path>) -> Result<(), UsageError> {
    use tracing_subscriber::filter::LevelFilter;
    let filter = match level {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        other => {
            return Err(UsageError(format!(
                "log level {other:?} is not one of error, warn, info, debug, trace"
            )))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_ansi(false);
    match file {
        None => builder.with_writer(std::io::stderr).init(),
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| UsageError(format!("cannot open log file {}: {e}", path.display())))?;
            builder.with_writer(std::sync::Mutex::new(f)).init()
        }
    }
    Ok(())
}

fn run(fut: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))?;
    let out = rt.block_on(fut);
    // A name lookup stuck in getaddrinfo (hung DNS) cannot be cancelled
    // and would hold the process until glibc gives up (30 s and more) if
    // the runtime waited for its blocking threads: the answer is already
    // out, so give them a moment and go.
    rt.shutdown_timeout(std::time::Duration::from_millis(RUNTIME_EXIT_GRACE_MS));
    out
}

/// How long the process waits at exit for blocking work still running.
const RUNTIME_EXIT_GRACE_MS: u64 = 1_000;

fn endpoint(s: &str) -> Result<Endpoint, UsageError> {
    s.parse()
        .map_err(|e: mortar_net::addr::AddrError| UsageError(e.to_string()))
}

async fn ping(mut args: Args) -> Result<(), Failure> {
    let count = args.number("--count", 1u32, 1..=100_000)?;
    let timeout = Duration::from_millis(args.number("--timeout-ms", 5_000u64, 1..=600_000)?);
    let json = args.flag("--json");
    let ep = endpoint(&args.required("ADDRESS")?)?;
    args.finish()?;
    let rt = Runtime::production("mortar-ping");
    let cfg = RpcConfig {
        connect_timeout: timeout,
        ..RpcConfig::default()
    };
    let client = RpcClient::new(&rt, ep.clone(), cfg);
    client
        .wait_connected(timeout)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot reach {ep}: {e}")))?;
    let mut out = std::io::stdout().lock();
    for i in 1..=count {
        let rtt = client
            .ping(timeout)
            .await
            .map_err(|e| Failure::Runtime(format!("ping {i} to {ep} failed: {e}")))?;
        let ms = rtt.as_secs_f64() * 1e3;
        let _ = if json {
            writeln!(
                out,
                "{{\"endpoint\":\"{}\",\"seq\":{i},\"time_ms\":{ms:.3}}}",
                ep.to_string().replace('\\', "\\\\").replace('"', "\\\"")
            )
        } else {
            writeln!(out, "reply from {ep}: seq={i} time={ms:.3} ms")
        };
    }
    client.close();
    Ok(())
}

async fn mount(mut args: Args) -> Result<(), Failure> {
    let port = args.number("--mgmt-port", mgmt_cmds::DEFAULT_PORT, 1..=65535)?;
    let spec = args.required("HOST:/VOLUME")?;
    let mountpoint = PathBuf::from(args.required("MOUNTPOINT")?);
    args.finish()?;
    let (host, volume) = spec
        .split_once(':')
        .map(|(h, v)| (h.to_string(), v.trim_start_matches('/').to_string()))
        .filter(|(h, v)| !h.is_empty() && !v.is_empty())
        .ok_or_else(|| UsageError(format!("{spec:?} is not HOST:/VOLUME")))?;
    if !mountpoint.is_dir() {
        return Err(Failure::Runtime(format!(
            "mount point {} does not exist or is not a directory",
            mountpoint.display()
        )));
    }
    let mgmt = endpoint(&format!("{host}:{port}"))?;
    let rt = Runtime::production(format!("mount {volume}"));
    let client = mortar_client::api::Client::mount(&rt, &mgmt, &volume)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot mount {spec}: {e}")))?;
    let (up, total) = client.bricks_up();
    let session = mortar_client::fuse::mount(
        client.clone(),
        tokio::runtime::Handle::current(),
        &mountpoint,
    )
    .map_err(|e| {
        Failure::Runtime(format!(
            "cannot mount {spec} on {}: {e}",
            mountpoint.display()
        ))
    })?;
    tracing::info!(volume = %volume, mountpoint = %mountpoint.display(), bricks_up = up, bricks = total, "mounted");
    let why = shutdown_signal().await?;
    tracing::info!(signal = why, "unmounting");
    drop(session);
    client.unmount();
    Ok(())
}

async fn shd(mut args: Args) -> Result<(), Failure> {
    let mgmt = endpoint(
        &args
            .option("--mgmt")?
            .unwrap_or_else(|| format!("127.0.0.1:{}", mgmt_cmds::DEFAULT_PORT)),
    )?;
    let mut hostnames = Vec::new();
    while let Some(h) = args.option("--hostname")? {
        hostnames.push(h);
    }
    let pidfile = args.option("--pidfile")?.map(PathBuf::from);
    args.finish()?;
    if hostnames.is_empty() {
        if let Endpoint::Tcp(hp) = &mgmt {
            hostnames.push(hp.host.to_string());
        }
    }
    if let Some(p) = &pidfile {
        write_atomic(p, &format!("{}\n", std::process::id()))
            .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", p.display())))?;
    }
    let rt = Runtime::production("shd");
    let run = {
        let rt = rt.clone();
        async move { mortar_heal::daemon::run_shd(&rt, &mgmt, hostnames).await }
    };
    tokio::select! {
        _ = run => {}
        why = shutdown_signal() => {
            tracing::info!(signal = ?why.ok(), "self-heal daemon stopping");
        }
    }
    rt.scope().kill();
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

async fn migrate(mut args: Args) -> Result<(), Failure> {
    let volume = args
        .option("--volume")?
        .ok_or_else(|| UsageError("--volume NAME is required".into()))?;
    let mgmt = endpoint(
        &args
            .option("--mgmt")?
            .unwrap_or_else(|| format!("127.0.0.1:{}", mgmt_cmds::DEFAULT_PORT)),
    )?;
    args.finish()?;
    let rt = Runtime::production(format!("migrate {volume}"));
    let st = mortar_client::migrate::run_migration(&rt, &mgmt, &volume)
        .await
        .map_err(|e| Failure::Runtime(format!("migrating {volume}: {e}")))?;
    if st.failures > 0 {
        return Err(Failure::Runtime(format!(
            "migrating {volume}: {} files moved, {} failed (last: {})",
            st.files,
            st.failures,
            st.last_error.unwrap_or_default()
        )));
    }
    Ok(())
}

async fn locks(mut args: Args) -> Result<(), Failure> {
    use mortar_client::remote::RemoteBrick;
    use mortar_proto::brick::{LockDump, LockKind, LockTarget};

    let json = args.flag("--json");
    let timeout = Duration::from_millis(args.number("--timeout-ms", 5_000u64, 1..=600_000)?);
    let volume = args
        .option("--volume-id")?
        .ok_or_else(|| UsageError("--volume-id ID is required".into()))?;
    let ep = endpoint(&args.required("ADDRESS")?)?;
    args.finish()?;
    let rt = Runtime::production("mortar-locks");
    let client = RpcClient::new(&rt, ep.clone(), RpcConfig::default());
    client
        .wait_connected(timeout)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot reach brick {ep}: {e}")))?;
    let brick = RemoteBrick::new(client);
    let me = format!("mortar-locks-{}", std::process::id());
    brick
        .connect(&volume, "", &me, &me, timeout)
        .await
        .map_err(|e| Failure::Runtime(format!("brick {ep} refused: {e}")))?;
    let locks = brick
        .call(&LockDump {}, timeout)
        .await
        .map_err(|e| Failure::Runtime(format!("lock dump from {ep} failed: {e}")))?;
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string_pretty(&locks)
            .map_err(|e| Failure::Runtime(format!("cannot format JSON: {e}")))?;
        let _ = writeln!(out, "{text}");
        return Ok(());
    }
    if locks.is_empty() {
        let _ = writeln!(out, "no locks held or awaited on {ep}");
        return Ok(());
    }
    for l in &locks {
        let what = match &l.target {
            LockTarget::Inode { gfid, start, len } => {
                let end = if *len == 0 {
                    "EOF".to_string()
                } else {
                    (start + len).to_string()
                };
                format!("inode {gfid} bytes {start}..{end}")
            }
            LockTarget::Entry { parent, name } => match name {
                Some(n) => format!("entry {parent}/{n}"),
                None => format!("entry {parent}/*"),
            },
        };
        let kind = match l.kind {
            LockKind::Read => "read",
            LockKind::Write => "write",
            LockKind::Unlock => "unlock",
        };
        let state = if l.granted { "held" } else { "waiting" };
        let _ = writeln!(
            out,
            "{state:<7} {kind:<5} domain {} {what} by {} (client {}, owner {}) since {}",
            l.domain, l.client_name, l.owner.client_id, l.owner.owner, l.since
        );
    }
    Ok(())
}

async fn echo_server(mut args: Args) -> Result<(), Failure> {
    let mut listen = Vec::new();
    while let Some(a) = args.option("--listen")? {
        listen.push(endpoint(&a)?);
    }
    if listen.is_empty() {
        listen.push(endpoint("127.0.0.1:24007")?);
    }
    let pidfile = args.option("--pidfile")?.map(PathBuf::from);
    args.finish()?;
    let rt = Runtime::production("echo-server");
    let echo = EchoService::new();
    let mut servers = Vec::new();
    for ep in &listen {
        let mut s = RpcServer::new(rt.clone(), RpcConfig::default());
        s.register(PROGRAM_ECHO, Arc::new(echo.clone()));
        let h = s
            .listen(ep)
            .await
            .map_err(|e| Failure::Runtime(format!("{e} (is another daemon using it?)")))?;
        tracing::info!(listen = %h.local_addr(), "echo server ready");
        servers.push(h);
    }
    if let Some(p) = &pidfile {
        write_atomic(p, &format!("{}\n", std::process::id()))
            .map_err(|e| Failure::Runtime(format!("cannot write pidfile {}: {e}", p.display())))?;
    }
    let why = shutdown_signal().await?;
    tracing::info!(signal = why, "shutting down");
    for h in servers {
        h.shutdown().await;
    }
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

async fn brick(mut args: Args) -> Result<(), Failure> {
    use mortar_node::brick::BrickConfig;
    use mortar_node::server::{start_brick, BrickServerConfig};
    use mortar_node::service::AuthRules;
    use mortar_storage::posix::PosixStorage;

    let dir = PathBuf::from(
        args.option("--brick")?
            .ok_or_else(|| UsageError("--brick DIR is required".into()))?,
    );
    let volume_id = args
        .option("--volume-id")?
        .ok_or_else(|| UsageError("--volume-id ID is required".into()))?;
    let listen = endpoint(
        &args
            .option("--listen")?
            .unwrap_or_else(|| "0.0.0.0:0".into()),
    )?;
    let mgmt = args.option("--mgmt")?.map(|m| endpoint(&m)).transpose()?;
    let pidfile = args.option("--pidfile")?.map(PathBuf::from);
    let port_file = args.option("--port-file")?.map(PathBuf::from);
    let allow = args.option("--auth-allow")?.unwrap_or_default();
    let reject = args.option("--auth-reject")?.unwrap_or_default();
    let ping = args.number("--ping-timeout", 42u64, 1..=3600)?;
    let fsync_namespace = !args.flag("--no-fsync-namespace");
    args.finish()?;
    if !dir.is_absolute() {
        return Err(UsageError(format!(
            "--brick {} must be an absolute path",
            dir.display()
        ))
        .into());
    }
    if dir == std::path::Path::new("/") {
        return Err(Failure::Runtime(
            "refusing to serve / as a brick: use a dedicated directory".into(),
        ));
    }
    if !dir.is_dir() {
        return Err(Failure::Runtime(format!(
            "brick directory {} does not exist or is not a directory: create it (mkdir -p) or fix the path",
            dir.display()
        )));
    }
    let auth = AuthRules::parse(&allow, &reject).map_err(|e| Failure::Usage(UsageError(e)))?;
    let storage = PosixStorage::open(&dir).map_err(Failure::Runtime)?;
    let rt = Runtime::production(format!("brick {}", dir.display()));
    let mut brick = BrickConfig::new(volume_id);
    brick.fsync_namespace = fsync_namespace;
    let cfg = BrickServerConfig {
        brick,
        brick_path: dir.display().to_string(),
        listen,
        mgmt,
        auth,
        rpc: RpcConfig::with_ping_timeout(Duration::from_secs(ping)),
    };
    let running = start_brick(&rt, storage, cfg)
        .await
        .map_err(Failure::Runtime)?;
    if let (Some(p), mortar_net::Addr::Inet(sa)) = (&port_file, &running.local) {
        write_atomic(p, &format!("{}\n", sa.port())).map_err(|e| {
            Failure::Runtime(format!("cannot write port file {}: {e}", p.display()))
        })?;
    }
    if let Some(p) = &pidfile {
        write_atomic(p, &format!("{}\n", std::process::id()))
            .map_err(|e| Failure::Runtime(format!("cannot write pidfile {}: {e}", p.display())))?;
    }
    let why = shutdown_signal().await?;
    tracing::info!(signal = why, "brick shutting down");
    running.shutdown().await;
    for p in [&pidfile, &port_file].into_iter().flatten() {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Wait for SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() -> Result<&'static str, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::Runtime(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::Runtime(format!("cannot watch SIGINT: {e}")))?;
    tokio::select! {
        biased;
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

/// Write a small file (pidfile, port file) so that a reader never sees it
/// empty or half-written: write a temporary beside it, then rename.
pub(crate) fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
