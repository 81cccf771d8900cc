//! `mortar-tests`: process-level tests of the `mortar` binary, and helpers
//! to locate it and run it against loopback addresses.
//!
//! It talks to Mortar only as an operator does (processes, the CLI,
//! sockets, mounts) and must never link the daemon crates' internals; it
//! depends on `mortar-net` alone, for the messenger the checks use.

use std::path::PathBuf;

/// Path of the `mortar` binary in the same target directory as the running
/// test (`target/<profile>/mortar`). `scripts/test` builds it before the
/// tests run; run `cargo build -p mortar-cli` first when testing by hand.
pub fn mortar_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/mortar
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("mortar");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p mortar-cli` (scripts/test does this)",
        bin.display()
    );
    bin
}

/// A fresh scratch directory for one test (removed first if left over).
pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mortar-tests-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch directory");
    d
}

/// Poll `cond` every 20 ms for at most `limit`. These tests drive real
/// processes in real time, so polling with a deadline is the only way to
/// wait for them.
pub fn wait(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let step = std::time::Duration::from_millis(20);
    let mut waited = std::time::Duration::ZERO;
    while !cond() {
        assert!(waited < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(step);
        waited += step;
    }
}

/// A management daemon started by a test; killed when dropped.
pub struct Mgmtd {
    pub child: std::process::Child,
    pub socket: PathBuf,
    /// A command the daemon and its CLI calls run under (e.g.
    /// `ip netns exec NAME`); empty: run directly.
    pub wrap: Vec<String>,
}

/// A command for the `mortar` binary, run under `wrap` when not empty.
pub fn mortar_command(wrap: &[String]) -> std::process::Command {
    match wrap.split_first() {
        None => std::process::Command::new(mortar_bin()),
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(mortar_bin());
            c
        }
    }
}

impl Drop for Mgmtd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port for one test binary's mgmtds (all of them use the same port on
/// their own loopback address, as servers in a pool do). `salt` keeps test
/// binaries apart (0 or 1; ports stay below the brick range at 49152).
pub fn pool_port(salt: u16) -> u16 {
    assert!(salt < 2, "pool_port salt must be 0 or 1");
    if let Some(p) = std::env::var("MORTAR_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        return p;
    }
    20_000 + salt * 10_000 + (std::process::id() % 10_000) as u16
}

impl Mgmtd {
    /// Start `mortar mgmtd` on 127.0.0.`n`:`port` with its workdir and log
    /// under `dir`; returns once its CLI socket exists.
    pub fn start(dir: &std::path::Path, n: u8, port: u16) -> Mgmtd {
        Self::start_wrapped(dir, n, port, Vec::new(), &[])
    }

    /// [`Mgmtd::start`] under `wrap` (see [`Mgmtd::wrap`]), with `extra`
    /// arguments for `mortar mgmtd`.
    pub fn start_wrapped(
        dir: &std::path::Path,
        n: u8,
        port: u16,
        wrap: Vec<String>,
        extra: &[&str],
    ) -> Mgmtd {
        use std::process::Stdio;
        let work = dir.join(format!("m{n}"));
        std::fs::create_dir_all(&work).expect("create mgmtd workdir");
        let socket = work.join("mgmtd.sock");
        let log = std::fs::File::create(dir.join(format!("m{n}.log"))).expect("create log");
        let child = mortar_command(&wrap)
            .arg("mgmtd")
            .arg("--workdir")
            .arg(&work)
            .arg("--listen")
            .arg(format!("127.0.0.{n}:{port}"))
            .args(extra)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mortar mgmtd");
        let s = socket.clone();
        wait("mgmtd socket", std::time::Duration::from_secs(20), || {
            s.exists()
        });
        Mgmtd {
            child,
            socket,
            wrap,
        }
    }

    /// Run a CLI command against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        mortar_command(&self.wrap)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--mode=script")
            .args(args)
            .output()
            .expect("run mortar")
    }

    /// Run a CLI command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "mortar {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Run a CLI command that must fail with `code` and say `reason`.
    pub fn fails(&self, args: &[&str], code: i32, reason: &str) {
        let out = self.cli(args);
        assert_eq!(out.status.code(), Some(code), "mortar {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "mortar {args:?}: {err}");
    }
}
