//! The original system's field failure, at process level: on a
//! 12 x (4+1) distributed-disperse volume, `heal info` stalled for minutes
//! because every child-up event resolved an address through getaddrinfo
//! while DNS was slow, one subvolume after another.
//!
//! Here the whole pool runs in a network namespace whose resolver points at
//! an address nobody holds: every DNS query is sent and dropped, so
//! each lookup hangs until glibc gives up (30 s). The servers' names come
//! from the namespace's own hosts file. `heal info` must answer in a few
//! seconds with exact per-brick counts, and, once the names of two servers
//! can only be found through that DNS, still answer within the same bound,
//! showing those bricks' resolver errors and the third server's counts.
#![allow(clippy::disallowed_methods)] // real processes, real time

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mortar_tests::{mortar_bin, pool_port, scratch, wait, Mgmtd};

/// Sets and bricks per set of the seed case.
const SETS: usize = 12;
const SET_BRICKS: usize = 5;
/// `heal info`'s bound here: its own per-brick deadline is 5 s and the
/// volfile fetch 10 s at most; a lookup in this namespace hangs 30 s, so
/// any lookup on the path without a deadline blows through it.
const HEAL_INFO_BOUND: Duration = Duration::from_secs(12);

/// A network namespace with a hung resolver; removed when dropped.
struct Netns {
    name: String,
    etc: PathBuf,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (this test needs network namespaces: `ip netns` as root)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new() -> Netns {
        let name = format!("mortar-dns-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // The resolver's address sits across a veth pair whose far end
        // has no address, behind a permanent neighbour entry with a MAC
        // nobody has: queries are sent and silently dropped, never
        // answered, never refused (no ARP failure, no ICMP).
        ip(&[
            "-n", &name, "link", "add", "dns0", "type", "veth", "peer", "name", "dns1",
        ]);
        ip(&["-n", &name, "addr", "add", "10.213.0.1/24", "dev", "dns0"]);
        ip(&["-n", &name, "link", "set", "dns0", "up"]);
        ip(&["-n", &name, "link", "set", "dns1", "up"]);
        ip(&[
            "-n",
            &name,
            "neigh",
            "add",
            "10.213.0.53",
            "lladdr",
            "02:00:00:00:00:53",
            "dev",
            "dns0",
            "nud",
            "permanent",
        ]);
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 10.213.0.53\noptions timeout:30 attempts:1\n",
        )
        .unwrap();
        let ns = Netns { name, etc };
        ns.hosts(&["srv1", "srv2", "srv3"]);
        ns
    }

    /// The namespace's hosts file names these servers (srvN = 127.0.0.N);
    /// any other name goes to the hung DNS.
    fn hosts(&self, known: &[&str]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for n in known {
            let i = n.trim_start_matches("srv");
            text.push_str(&format!("127.0.0.{i} {n}\n"));
        }
        std::fs::write(self.etc.join("hosts"), text).unwrap();
    }

    fn wrap(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// Kill the brick processes of `dir`'s pool left behind by a failed run.
fn kill_bricks(dir: &Path) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &dir.display().to_string()])
        .status();
}

/// Kills the pool's brick processes (which outlive their mgmtd by
/// design) and removes the scratch directory when the test ends, passed
/// or not.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        kill_bricks(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn json(s: &Mgmtd, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&s.ok(args)).expect("json")
}

/// Through a FUSE mount made inside the namespace (it lives in that
/// command's own mount namespace), write `files` files of 32 MiB at once
/// and, once 8 MiB has gone through, kill the brick processes `victims`: the writes in
/// flight then finish on the four bricks left in each set (k of them
/// took it) and leave pending-heal entries; later ones are refused
/// (a 4 + 1 set takes changes only with all five up), which is expected.
fn write_while_killing(
    ns: &Netns,
    dir: &Path,
    port: u16,
    files: usize,
    victims: &[u64],
    round: usize,
) -> String {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let kill: Vec<String> = victims.iter().map(u64::to_string).collect();
    let script = format!(
        r#"
"{bin}" mount 127.0.0.1:/ec "{mnt}" --mgmt-port {port} >/dev/null 2>"{dir}/mount.log" &
pid=$!
trap 'kill -TERM $pid; wait $pid' EXIT
i=0
until grep -q " {mnt} " /proc/self/mounts; do
  i=$((i+1)); [ $i -lt 300 ] || {{ cat "{dir}/mount.log"; exit 3; }}
  sleep 0.1
done
writers=""
for n in $(seq 1 {files}); do
  dd if=/dev/zero of="{mnt}/r{round}f$n" bs=128k count=256 2>/dev/null &
  writers="$writers $!"
done
# Kill once the writes are under way (8 MiB through the mount), not
# after a fixed pause: on a loaded machine the first writes may not have
# reached the bricks a second in, and then nothing is in flight.
i=0
until [ "$(ls -l "{mnt}" | awk '{{s+=$5}} END {{print s+0}}')" -ge 8388608 ]; do
  i=$((i+1)); [ $i -lt 600 ] || {{ echo "writes did not start in 60 s"; ls -l "{mnt}"; cat "{dir}/mount.log"; exit 4; }}
  sleep 0.1
done
kill -KILL {kill}
failed=0
for w in $writers; do wait $w || failed=$((failed+1)); done
echo "writers failed: $failed"
ls -l "{mnt}"
cat "{dir}/mount.log"
exit 0
"#,
        bin = mortar_bin().display(),
        mnt = mnt.display(),
        dir = dir.display(),
        kill = kill.join(" "),
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "writing through the mount: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entries in each brick's pending-heal index on disk, by `HOST:/PATH`.
fn on_disk_counts(bricks: &[(String, PathBuf)]) -> Vec<(String, usize)> {
    bricks
        .iter()
        .map(|(spec, path)| {
            let n = std::fs::read_dir(path.join(".mortar/index"))
                .map(|d| d.count())
                .unwrap_or(0);
            (spec.clone(), n)
        })
        .collect()
}

/// Run `heal info --json` through `s`, timed.
fn heal_info(s: &Mgmtd) -> (serde_json::Value, Duration) {
    let t0 = Instant::now();
    let v = json(s, &["volume", "heal", "ec", "info", "--json"]);
    (v, t0.elapsed())
}

#[test]
fn heal_info_of_a_12_x_4_plus_1_volume_does_not_wait_on_hung_dns() {
    let dir = scratch("heal-dns");
    let _cleanup = Scratch(dir.clone());
    let ns = Netns::new();
    // The namespace's DNS hangs: a lookup of an unknown name is still
    // waiting when `timeout` kills it.
    let probe = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            "2",
            "getent",
            "hosts",
            "ghost.invalid",
        ])
        .status()
        .unwrap();
    assert_eq!(probe.code(), Some(124), "DNS in the namespace must hang");

    let port = pool_port(1);
    let s: Vec<Mgmtd> = (1..=3)
        .map(|n| {
            let name = format!("srv{n}");
            Mgmtd::start_wrapped(&dir, n, port, ns.wrap(), &["--hostname", &name])
        })
        .collect();
    s[0].ok(&["peer", "probe", "srv2"]);
    s[0].ok(&["peer", "probe", "srv3"]);
    wait("peers connected", Duration::from_secs(30), || {
        s[0].ok(&["peer", "status"]).matches("(Connected)").count() == 2
    });
    // Brick j of set i on server (j mod 3) + 1.
    let mut bricks = Vec::new();
    for i in 0..SETS {
        for j in 0..SET_BRICKS {
            let n = j % 3 + 1;
            let path = dir.join(format!("bricks/s{i}b{j}"));
            bricks.push((format!("srv{n}:{}", path.display()), path));
        }
    }
    let mut create: Vec<String> = ["volume", "create", "ec", "disperse", "5", "redundancy", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    create.extend(bricks.iter().map(|(spec, _)| spec.clone()));
    create.push("force".into());
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    s[0].ok(&create);
    assert!(s[0]
        .ok(&["volume", "info", "ec"])
        .contains("12 x (4 + 1) = 60"));
    s[0].ok(&["volume", "heal", "ec", "disable"]);
    s[0].ok(&["volume", "start", "ec"]);
    wait_online(&s[0]);
    // One brick of every set killed while files are written: the other
    // four of each set list what it missed. Only a write caught between
    // its pre-op and post-op leaves an entry (one that has not started is
    // refused, one being recorded goes clean on the four), and the kernel
    // keeps only a few writes in flight: a round with none caught is
    // written again, a bounded number of times, with the bricks back.
    let mut round = 0;
    let (expected, reported) = loop {
        round += 1;
        let (expected, reported, listed, info, wrote) =
            kill_round(&ns, &dir, port, &s, &bricks, round);
        if listed > 0 {
            break (expected, reported);
        }
        assert!(
            round < KILL_ROUNDS_MAX,
            "no write was mid-flight at the kill in {round} rounds: heal info lists nothing: {info}\n{wrote}"
        );
        eprintln!("round {round}: no write mid-flight at the kill; bricks back, writing again");
        s[0].ok(&["volume", "start", "ec", "force"]);
        wait_online(&s[0]);
    };
    // Now srv2 and srv3 can only be found through the hung DNS.
    ns.hosts(&["srv1"]);
    let (info, took) = heal_info(&s[0]);
    eprintln!("heal info, two servers' names behind hung DNS: {took:?}");
    assert!(took < HEAL_INFO_BOUND, "heal info took {took:?}");
    let bricks = info["bricks"].as_array().unwrap();
    for ((b, (spec, _)), before) in bricks.iter().zip(&expected).zip(&reported) {
        if spec.starts_with("srv1:") {
            assert_eq!(b["total"].as_u64(), *before, "{spec}: {b}");
        } else {
            let status = b["status"].as_str().unwrap_or_default();
            assert!(
                status.contains("DNS") || status.contains("resolv"),
                "{spec}: {status}"
            );
        }
    }
}

/// Rounds of writing while killing before the test gives up on catching
/// a write mid-flight.
const KILL_ROUNDS_MAX: usize = 4;

type Totals = Vec<Option<u64>>;

/// One round of [`write_while_killing`] with brick 2 of every set as the
/// victim, checked against the disk: the disk's entry counts, the totals
/// heal info reported, their sum, heal info itself and the writers' log.
fn kill_round(
    ns: &Netns,
    dir: &Path,
    port: u16,
    s: &[Mgmtd],
    bricks: &[(String, PathBuf)],
    round: usize,
) -> (Vec<(String, usize)>, Totals, u64, serde_json::Value, String) {
    let status = || json(&s[0], &["volume", "status", "ec", "--json"]);
    let victims: Vec<u64> = (0..SETS)
        .map(|i| {
            status()["Status"][0]["bricks"][i * SET_BRICKS + 2]["pid"]
                .as_u64()
                .expect("brick pid")
        })
        .collect();
    let wrote = write_while_killing(ns, dir, port, 36, &victims, round);

    let expected = on_disk_counts(bricks);
    let pending: usize = expected.iter().map(|(_, n)| n).sum();
    assert!(pending > 0, "the writes left entries to heal");
    let (info, took) = heal_info(&s[0]);
    eprintln!("heal info, names from the hosts file: {took:?}");
    assert!(took < HEAL_INFO_BOUND, "heal info took {took:?}");
    let got = info["bricks"].as_array().expect("bricks").clone();
    assert_eq!(got.len(), 60);
    // The disk also holds entries a brick keeps for files whose counters
    // went clean (node/src/brick/kept.rs), which heal info does not count:
    // the disk's count bounds each brick's total, and the totals of this
    // run are what the run behind hung DNS must report.
    let mut reported = Vec::new();
    for (b, (spec, n)) in got.iter().zip(&expected) {
        assert_eq!(b["brick"].as_str(), Some(spec.as_str()));
        reported.push(b["total"].as_u64());
        if b["connected"].as_bool() == Some(true) {
            let total = b["total"].as_u64().expect("total");
            assert!(
                total <= *n as u64,
                "{spec}: {total} pending, {n} on disk: {b}"
            );
        } else {
            assert!(
                spec.contains("/s") && spec.ends_with("b2"),
                "only the killed bricks are down: {b}"
            );
        }
    }

    let listed: u64 = reported.iter().flatten().sum();
    (expected, reported, listed, info, wrote)
}

/// Wait (bounded) until all 60 bricks of `ec` are online.
fn wait_online(s: &Mgmtd) {
    let mut last = serde_json::Value::Null;
    let online = Instant::now();
    while online.elapsed() < Duration::from_secs(120) {
        last = json(s, &["volume", "status", "ec", "--json"]);
        let up = last["Status"][0]["bricks"].as_array().is_some_and(|b| {
            b.len() == 60 && b.iter().all(|b| b["online"].as_bool() == Some(true))
        });
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("60 bricks not online in 120 s: {last}");
}
