//! Production implementations of mgmtd's seams: bricks as OS processes
//! (`mortar brick ...`), and brick directory checks on the real
//! filesystem. The daemon code never spawns processes itself; this is the
//! one place that does.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use mortar_mgmt::daemon::{BrickLaunch, Launcher, LocalFs};
use mortar_net::{BoxFuture, Endpoint, Runtime};

/// How long a stopping brick gets before `force` kills it.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct ProcessLauncher {
    rt: Runtime,
    bin: PathBuf,
    run_dir: PathBuf,
    log_dir: PathBuf,
    children: Mutex<BTreeMap<u32, Child>>,
}

fn slug(volume: &str, path: &str) -> String {
    let p: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{volume}{p}")
}

/// Is `pid` a live process? A zombie (exited, not yet reaped: a brick an
/// earlier mgmtd of this process started, stopped by an adopting one) is
/// not.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

impl ProcessLauncher {
    pub fn new(rt: Runtime, bin: PathBuf, workdir: &Path) -> Result<Self, String> {
        let run_dir = workdir.join("run");
        let log_dir = workdir.join("logs");
        for d in [&run_dir, &log_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        Ok(ProcessLauncher {
            rt,
            bin,
            run_dir,
            log_dir,
            children: Mutex::new(BTreeMap::new()),
        })
    }

    /// A brick left running by a previous mgmtd, found by its pidfile.
    fn adopt(&self, pidfile: &Path) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_brick = cmdline.split(|b| *b == 0).any(|a| a == b"brick");
        is_brick.then_some(pid)
    }
}

impl Launcher for ProcessLauncher {
    fn start_shd(
        &self,
        hostnames: Vec<String>,
        mgmt: Endpoint,
    ) -> BoxFuture<'_, Result<u32, String>> {
        Box::pin(async move {
            let pidfile = self.run_dir.join("shd.pid");
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"shd"))
                })
            {
                tracing::info!(pid, "adopting a running self-heal daemon");
                return Ok(pid);
            }
            let log_path = self.log_dir.join("shd.log");
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let mut cmd = Command::new(&self.bin);
            cmd.arg("shd")
                .arg("--mgmt")
                .arg(mgmt.to_string())
                .arg("--pidfile")
                .arg(&pidfile);
            for h in &hostnames {
                cmd.arg("--hostname").arg(h);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start 'mortar shd': {e}"))?;
            let pid = child.id();
            self.children.lock().expect("children").insert(pid, child);
            Ok(pid)
        })
    }

    fn start_migration(&self, volume: &str, mgmt: Endpoint) -> BoxFuture<'_, Result<(), String>> {
        let volume = volume.to_string();
        Box::pin(async move {
            let log_path = self.log_dir.join(format!("{volume}-migrate.log"));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let child = Command::new(&self.bin)
                .arg("migrate")
                .arg("--volume")
                .arg(&volume)
                .arg("--mgmt")
                .arg(mgmt.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start 'mortar migrate': {e}"))?;
            let pid = child.id();
            tracing::info!(%volume, pid, log = %log_path.display(), "migration started");
            // Reap it when it ends (it reports its outcome to mgmtd).
            let rt = self.rt.clone();
            self.rt.spawn(async move {
                let mut child = child;
                let _ = rt.blocking(move || child.wait()).await;
            });
            Ok(())
        })
    }

    fn rdma_ready(&self) -> Result<(), String> {
        #[cfg(feature = "rdma")]
        {
            mortar_net::rdma::device_check()
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "rdma"))]
        {
            Err("this mortar was built without RDMA support (build it with `--features rdma`); use transport tcp".into())
        }
    }

    fn start(&self, b: BrickLaunch) -> BoxFuture<'_, Result<u32, String>> {
        Box::pin(async move {
            let name = slug(&b.volume, &b.path);
            let pidfile = self.run_dir.join(format!("{name}.pid"));
            if let Some(pid) = self.adopt(&pidfile) {
                tracing::info!(brick = %b.path, pid, "adopting a running brick");
                return Ok(pid);
            }
            let host = match &b.mgmt {
                Endpoint::Tcp(hp) | Endpoint::Rdma(hp) => hp.host.to_string(),
                Endpoint::Unix(_) => "0.0.0.0".to_string(),
            };
            let log = std::fs::File::create(self.log_dir.join(format!("{name}.log")))
                .map_err(|e| format!("cannot create the brick log: {e}"))?;
            let mut cmd = Command::new(&self.bin);
            cmd.arg("brick")
                .arg("--brick")
                .arg(&b.path)
                .arg("--volume-id")
                .arg(&b.volume_id)
                .arg("--listen")
                .arg(if b.rdma {
                    format!("rdma:{host}:0")
                } else {
                    format!("{host}:0")
                })
                .arg("--mgmt")
                .arg(b.mgmt.to_string())
                .arg("--pidfile")
                .arg(&pidfile)
                .arg("--ping-timeout")
                .arg(b.ping_timeout_secs.to_string());
            if !b.auth_allow.is_empty() {
                cmd.arg("--auth-allow").arg(&b.auth_allow);
            }
            if !b.auth_reject.is_empty() {
                cmd.arg("--auth-reject").arg(&b.auth_reject);
            }
            if !b.fsync_namespace {
                cmd.arg("--no-fsync-namespace");
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start brick {}: {e}", b.path))?;
            let pid = child.id();
            self.children.lock().expect("children").insert(pid, child);
            // Wait until it has written its pidfile (it is serving then) or died.
            let clock = self.rt.clock().clone();
            let deadline = clock.now() + Duration::from_secs(15);
            loop {
                if pidfile.exists() {
                    return Ok(pid);
                }
                if !self.running(pid) {
                    let log = std::fs::read_to_string(self.log_dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    let last = log.lines().last().unwrap_or("no output");
                    return Err(format!("brick {} exited at start: {last}", b.path));
                }
                if clock.now() > deadline {
                    return Err(format!("brick {} did not come up within 15 s", b.path));
                }
                clock.sleep(Duration::from_millis(50)).await;
            }
        })
    }

    fn running(&self, id: u32) -> bool {
        let mut children = self.children.lock().expect("children");
        match children.get_mut(&id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => pid_alive(id),
        }
    }

    fn stop(&self, id: u32, force: bool) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let pid =
                rustix::process::Pid::from_raw(id as i32).ok_or_else(|| format!("bad pid {id}"))?;
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let clock = self.rt.clock().clone();
            let deadline = clock.now() + STOP_GRACE;
            while self.running(id) {
                if clock.now() > deadline {
                    if force {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        break;
                    }
                    return Err(format!(
                        "brick pid {id} did not stop within {STOP_GRACE:?}; use 'stop force'"
                    ));
                }
                clock.sleep(Duration::from_millis(50)).await;
            }
            if let Some(mut c) = self.children.lock().expect("children").remove(&id) {
                let _ = c.wait();
            }
            Ok(())
        })
    }
}

/// Brick directory checks on this server's real filesystem.
pub struct PosixFs;

impl LocalFs for PosixFs {
    fn check_brick(&self, path: &str, force: bool) -> Result<(), String> {
        let p = Path::new(path);
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if !m.is_dir() {
                return Err(format!("brick {path} exists and is not a directory"));
            }
        }
        // The nearest existing ancestor tells which filesystem the brick
        // would be on.
        let mut probe = p;
        while !probe.exists() {
            probe = probe.parent().unwrap_or(Path::new("/"));
        }
        let dev = std::fs::metadata(probe)
            .map_err(|e| format!("cannot stat {}: {e}", probe.display()))?
            .dev();
        let root = std::fs::metadata("/")
            .map_err(|e| format!("cannot stat /: {e}"))?
            .dev();
        if dev == root && !force {
            return Err(format!(
                "brick {path} is on the root filesystem, which fills up and takes the server down with it: use a dedicated filesystem, or add 'force'"
            ));
        }
        Ok(())
    }

    fn prepare_brick(&self, path: &str) -> Result<(), String> {
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create brick directory {path}: {e}"))
    }
}
