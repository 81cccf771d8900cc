//! Three management daemons on 127.0.0.1, 127.0.0.2 and 127.0.0.3 form a
//! pool and run a replica-3 volume with real brick processes, all from the
//! command line.

use std::process::Command;
use std::time::Duration;

use mortar_tests::{mortar_bin, pool_port, scratch, wait, Mgmtd};

#[test]
fn three_servers_run_a_replica_3_volume_from_the_cli() {
    let dir = scratch("mgmt3");
    let port = pool_port(0);
    let s1 = Mgmtd::start(&dir, 1, port);
    let s2 = Mgmtd::start(&dir, 2, port);
    let s3 = Mgmtd::start(&dir, 3, port);

    assert!(s1.ok(&["peer", "probe", "127.0.0.2"]).contains("success"));
    assert!(s1.ok(&["peer", "probe", "127.0.0.3"]).contains("success"));
    assert!(s1
        .ok(&["peer", "probe", "127.0.0.2"])
        .contains("already in the pool"));
    // Every server sees the other two, connected.
    for s in [&s1, &s2, &s3] {
        wait("peers connected", Duration::from_secs(20), || {
            let t = s.ok(&["peer", "status"]);
            t.contains("Number of Peers: 2") && t.matches("(Connected)").count() == 2
        });
    }
    let pool = s2.ok(&["pool", "list"]);
    assert_eq!(pool.lines().count(), 4, "{pool}");

    let b = |n: u8| format!("127.0.0.{n}:{}", dir.join(format!("bricks/b{n}")).display());
    let create = [
        "volume",
        "create",
        "vol1",
        "replica",
        "3",
        &b(1),
        &b(2),
        &b(3),
    ];
    // Bricks on the root filesystem need force, and the reason is given.
    s1.fails(&create, 1, "on the root filesystem");
    s1.fails(
        &["volume", "create", "vol1", "replica", "3", &b(1), &b(2)],
        1,
        "not a multiple of the replica count (3)",
    );
    s1.fails(&["volume", "create"], 2, "needs a volume name");
    let mut forced = create.to_vec();
    forced.push("force");
    assert!(s1.ok(&forced).contains("success"));
    for n in 1..=3 {
        assert!(
            dir.join(format!("bricks/b{n}")).is_dir(),
            "brick directory {n} not created"
        );
    }
    // The volume is known everywhere.
    let info = s3.ok(&["volume", "info", "vol1"]);
    assert!(
        info.contains("Type: Replicate") && info.contains("Number of Bricks: 1 x 3 = 3"),
        "{info}"
    );

    assert!(s2.ok(&["volume", "start", "vol1"]).contains("success"));
    s1.fails(&["volume", "start", "vol1"], 1, "already started");
    wait("bricks online", Duration::from_secs(30), || {
        let st = s1.ok(&["volume", "status", "vol1"]);
        st.lines()
            .filter(|l| l.starts_with("Brick ") && l.trim_end().ends_with('Y'))
            .count()
            == 3
    });
    // Each brick answers on the port the status reports.
    let json = s1.ok(&["volume", "status", "vol1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let bricks = v["Status"][0]["bricks"].as_array().unwrap();
    assert_eq!(bricks.len(), 3);
    for (i, brick) in bricks.iter().enumerate() {
        let port = brick["port"].as_u64().expect("port known");
        let addr = format!("127.0.0.{}:{port}", i + 1);
        let out = Command::new(mortar_bin())
            .args(["ping", &addr])
            .output()
            .unwrap();
        assert!(out.status.success(), "brick {addr} does not answer");
    }

    // Heal: info asks every brick; a bare `volume heal` launches a crawl
    // everywhere; disable/enable switch the self-heal daemons.
    let info = s2.ok(&["volume", "heal", "vol1", "info"]);
    assert_eq!(info.matches("Status: Connected").count(), 3, "{info}");
    assert_eq!(info.matches("Number of entries: 0").count(), 3, "{info}");
    assert!(info.contains(&format!("Brick {}", b(1))), "{info}");
    let summary = s3.ok(&["volume", "heal", "vol1", "info", "summary"]);
    assert_eq!(
        summary.matches("Total Number of entries: 0").count(),
        3,
        "{summary}"
    );
    let count = s1.ok(&["volume", "heal", "vol1", "statistics", "heal-count"]);
    assert!(
        count.starts_with(
            "Gathering count of entries to be healed on volume vol1 has been successful"
        ),
        "{count}"
    );
    assert_eq!(count.matches("Number of entries: 0").count(), 3, "{count}");
    assert!(s3.ok(&["volume", "heal", "vol1"]).contains(
        "Launching heal operation to perform index self heal on volume vol1 has been successful"
    ));
    s1.fails(&["volume", "heal"], 2, "usage: mortar volume heal NAME");
    assert!(s1.ok(&["volume", "heal", "vol1", "full"]).contains(
        "Launching heal operation to perform full self heal on volume vol1 has been successful"
    ));
    let shd_up = |s: &Mgmtd| {
        let st = s.ok(&["volume", "status", "vol1"]);
        st.lines()
            .filter(|l| l.starts_with("Self-heal Daemon on") && l.trim_end().ends_with('Y'))
            .count()
    };
    wait("self-heal daemons up", Duration::from_secs(30), || {
        shd_up(&s1) == 3
    });
    s2.ok(&["volume", "heal", "vol1", "disable"]);
    wait("self-heal daemons gone", Duration::from_secs(30), || {
        shd_up(&s1) == 0
    });
    s1.fails(&["volume", "heal", "vol1"], 1, "nothing to heal");
    s2.ok(&["volume", "heal", "vol1", "enable"]);
    wait("self-heal daemons back", Duration::from_secs(30), || {
        shd_up(&s1) == 3
    });

    s1.ok(&["volume", "set", "vol1", "network.ping-timeout", "10"]);
    s1.fails(
        &["volume", "set", "vol1", "network.ping-timeout", "0"],
        1,
        "seconds from 1 to 1800",
    );
    s1.fails(
        &["volume", "set", "vol1", "no.such-option", "1"],
        1,
        "unknown option",
    );
    assert!(s3
        .ok(&["volume", "get", "vol1", "network.ping-timeout"])
        .contains("10"));

    // Grow to distributed-replicate 2 x 3, then swap one brick.
    let mut add = vec!["volume", "add-brick", "vol1"];
    let more: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.{n}:{}", dir.join(format!("bricks/c{n}")).display()))
        .collect();
    add.extend(more.iter().map(String::as_str));
    s1.fails(&add[..5], 1, "not a multiple of the replica count");
    add.push("force");
    s1.ok(&add);
    let info = s2.ok(&["volume", "info", "vol1"]);
    assert!(
        info.contains("Type: Distributed-Replicate") && info.contains("2 x 3 = 6"),
        "{info}"
    );
    let newb = format!("127.0.0.3:{}", dir.join("bricks/d3").display());
    s1.ok(&[
        "volume",
        "replace-brick",
        "vol1",
        &more[2],
        &newb,
        "commit",
        "force",
    ]);
    assert!(s3.ok(&["volume", "info", "vol1"]).contains(&newb));
    s1.fails(
        &[
            "volume",
            "replace-brick",
            "vol1",
            &more[2],
            &newb,
            "commit",
            "force",
        ],
        1,
        "is not a brick of vol1",
    );
    let volfile = s1.ok(&["volume", "volfile", "vol1"]);
    assert!(
        volfile.contains("type cluster/distribute")
            && volfile.matches("type cluster/replicate").count() == 2,
        "{volfile}"
    );

    s3.ok(&["volume", "stop", "vol1"]);
    let st = s1.ok(&["volume", "status", "vol1"]);
    assert!(st.contains("is not started"), "{st}");
    s1.ok(&["volume", "delete", "vol1"]);
    for s in [&s1, &s2, &s3] {
        wait("delete seen everywhere", Duration::from_secs(20), || {
            s.ok(&["volume", "list"]).contains("No volumes present")
        });
    }
    // transport rdma: accepted at create, refused at start on a machine
    // without an RDMA device, saying which server and what to do; the
    // volume stays stopped and can be deleted.
    let r = |n: u8| format!("127.0.0.{n}:{}", dir.join(format!("bricks/r{n}")).display());
    s1.ok(&[
        "volume",
        "create",
        "vr",
        "replica",
        "3",
        "transport",
        "rdma",
        &r(1),
        &r(2),
        &r(3),
        "force",
    ]);
    let info = s2.ok(&["volume", "info", "vr"]);
    assert!(info.contains("Transport-type: rdma"), "{info}");
    s2.fails(
        &["volume", "start", "vr"],
        1,
        "uses transport rdma, but RDMA is not available",
    );
    s2.fails(&["volume", "start", "vr"], 1, "use transport tcp");
    let st = s1.ok(&["volume", "info", "vr"]);
    assert!(st.contains("Status: Created"), "{st}");
    s1.ok(&["volume", "delete", "vr"]);

    // Detach a server; the pool shrinks everywhere.
    s1.fails(
        &["peer", "detach", "127.0.0.1"],
        1,
        "cannot detach this server from itself",
    );
    s1.ok(&["peer", "detach", "127.0.0.3"]);
    wait("detach seen", Duration::from_secs(20), || {
        s2.ok(&["peer", "status"]).contains("Number of Peers: 1")
    });

    // No brick process is left behind.
    let left = Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&left.stdout);
    let brick_pids: Vec<&str> = pids.lines().collect();
    // pgrep matches the three mgmtds (their workdirs are under `dir`).
    assert_eq!(brick_pids.len(), 3, "stray processes: {pids}");

    for mut s in [s1, s2, s3] {
        let pid = s.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        wait("mgmtd exit", Duration::from_secs(15), || {
            s.child.try_wait().unwrap().is_some()
        });
        assert!(s.child.wait().unwrap().success());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
