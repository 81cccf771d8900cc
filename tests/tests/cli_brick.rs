//! `mortar brick` as an operator runs it: start, answer, report locks,
//! stop cleanly on SIGTERM; refuse bad directories with a reason.

use std::process::{Command, Stdio};
use std::time::Duration;

use mortar_tests::{mortar_bin, scratch, wait};

#[test]
fn brick_serves_reports_locks_and_stops_cleanly() {
    let dir = scratch("serve");
    let brick = dir.join("b1");
    std::fs::create_dir_all(&brick).unwrap();
    let (pidfile, portfile) = (dir.join("b.pid"), dir.join("b.port"));
    let mut daemon = Command::new(mortar_bin())
        .arg("brick")
        .arg("--brick")
        .arg(&brick)
        .args(["--volume-id", "v1", "--listen", "127.0.0.1:0", "--pidfile"])
        .arg(&pidfile)
        .arg("--port-file")
        .arg(&portfile)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait("pidfile", Duration::from_secs(15), || pidfile.exists());
    let port = std::fs::read_to_string(&portfile)
        .unwrap()
        .trim()
        .to_string();
    let addr = format!("127.0.0.1:{port}");
    let out = Command::new(mortar_bin())
        .args(["ping", &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(mortar_bin())
        .args(["locks", &addr, "--volume-id", "v1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no locks"));
    let out = Command::new(mortar_bin())
        .args(["locks", &addr, "--volume-id", "v1", "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // The wrong volume is refused with the reason.
    let out = Command::new(mortar_bin())
        .args(["locks", &addr, "--volume-id", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serves \"v1\""));
    assert!(brick.join(".mortar").is_dir());
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait("brick exit", Duration::from_secs(15), || {
        daemon.try_wait().unwrap().is_some()
    });
    assert!(daemon.wait().unwrap().success());
    assert!(
        !pidfile.exists() && !portfile.exists(),
        "pid/port files left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn brick_refuses_bad_directories_with_a_reason() {
    let dir = scratch("bad");
    let missing = dir.join("missing").display().to_string();
    for (args, code, reason) in [
        (
            vec!["brick", "--volume-id", "v"],
            2,
            "--brick DIR is required",
        ),
        (
            vec!["brick", "--brick", "relative/dir", "--volume-id", "v"],
            2,
            "must be an absolute path",
        ),
        (
            vec!["brick", "--brick", &missing, "--volume-id", "v"],
            1,
            "does not exist",
        ),
        (
            vec!["brick", "--brick", "/", "--volume-id", "v"],
            1,
            "refusing to serve /",
        ),
        (
            vec![
                "brick",
                "--brick",
                "/tmp",
                "--volume-id",
                "v",
                "--auth-allow",
                "10.0.0.1;x",
            ],
            2,
            "not an address pattern",
        ),
    ] {
        let out = Command::new(mortar_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
