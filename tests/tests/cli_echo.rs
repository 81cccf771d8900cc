//! The `mortar` binary as an operator runs it: a daemon with a pidfile
//! that stops cleanly on SIGTERM, a command that talks to it, and clear
//! errors with exit code 2 for wrong usage.

use std::process::{Command, Stdio};
use std::time::Duration;

use mortar_tests::{mortar_bin, scratch, wait};

#[test]
fn echo_server_ping_and_clean_sigterm() {
    let dir = scratch("echo");
    let sock = dir.join("echo.sock");
    let pidfile = dir.join("echo.pid");
    let mut daemon = Command::new(mortar_bin())
        .args(["echo-server", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--pidfile")
        .arg(&pidfile)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait("pidfile", Duration::from_secs(10), || pidfile.exists());
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, daemon.id());

    let out = Command::new(mortar_bin())
        .args(["ping", "--count", "3"])
        .arg(format!("unix:{}", sock.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("reply from")).count(),
        3,
        "{text}"
    );

    let out = Command::new(mortar_bin())
        .args(["ping", "--json"])
        .arg(format!("unix:{}", sock.display()))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("{\"endpoint\":\"unix:") && text.contains("\"seq\":1"),
        "{text}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    wait("daemon exit", Duration::from_secs(15), || {
        daemon.try_wait().unwrap().is_some()
    });
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exited with {status}");
    assert!(!pidfile.exists(), "pidfile left behind after a clean stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_usage_exits_2_with_a_reason() {
    for (argv, reason) in [
        (vec![], "no command given"),
        (vec!["frobnicate"], "unknown command \"frobnicate\""),
        (vec!["ping"], "missing ADDRESS"),
        (vec!["ping", "server"], "has no port"),
        (
            vec!["ping", "h:1", "--count", "0"],
            "--count must be between 1 and 100000",
        ),
        (
            vec!["ping", "h:1", "--bogus"],
            "unexpected argument \"--bogus\"",
        ),
        (vec!["--log-level", "loud", "version"], "log level \"loud\""),
    ] {
        let out = Command::new(mortar_bin()).args(&argv).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{argv:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{argv:?}: {err}");
        assert!(err.contains("usage: mortar"), "{argv:?}: usage not shown");
    }
}

#[test]
fn unreachable_address_fails_with_exit_1_and_says_why() {
    let dir = scratch("unreach");
    let out = Command::new(mortar_bin())
        .args(["ping", "--timeout-ms", "300"])
        .arg(format!("unix:{}", dir.join("nobody.sock").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("not connected"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
