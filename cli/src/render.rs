//! Text output of the management commands, shaped like the original
//! system's so operators (and their scripts) find things where they
//! expect. Pure functions of the replies; snapshot-tested.

use mortar_mgmt::api::{CliReply, OptionView, PeerView, VolumeStatusView};
use mortar_mgmt::volume::Volume;

pub fn reply(r: &CliReply) -> String {
    match r {
        CliReply::Done(msg) => format!("{msg}\n"),
        CliReply::Peers(p) => peers(p),
        CliReply::Volumes(v) => volume_info(v),
        CliReply::Status(s) => volume_status(s),
        CliReply::Options(o) => options(o),
        CliReply::Names(n) => {
            if n.is_empty() {
                "No volumes present in cluster\n".into()
            } else {
                n.iter().map(|x| format!("{x}\n")).collect()
            }
        }
        CliReply::Volfile(text) => text.clone(),
        CliReply::VolfileUnchanged => "volfile unchanged\n".into(),
        CliReply::Migration(m) => migration(m),
        CliReply::HealStatistics(rows) => heal_statistics(rows),
        CliReply::ListenPort(p) => format!("{p}\n"),
        CliReply::HealRequests(h) => h
            .iter()
            .map(|c| {
                format!(
                    "{}: index {} full {}\n",
                    c.volume, c.counts.index, c.counts.full
                )
            })
            .collect(),
    }
}

pub fn volume_info(vols: &[Volume]) -> String {
    if vols.is_empty() {
        return "No volumes present\n".into();
    }
    let mut s = String::new();
    for v in vols {
        s.push_str(&format!(
            "\nVolume Name: {}\nType: {}\nVolume ID: {}\nStatus: {}\nNumber of Bricks: {}\nTransport-type: {}\nBricks:\n",
            v.name,
            v.type_name(),
            v.id,
            v.status.as_str(),
            v.brick_count_text(),
            v.transport.as_str()
        ));
        let set = v.layout.set_size() as usize;
        for (i, b) in v.bricks.iter().enumerate() {
            let arbiter = matches!(
                v.layout,
                mortar_mgmt::volume::Layout::Replicate { arbiter: true, .. }
            ) && (i + 1) % set == 0;
            s.push_str(&format!(
                "Brick{}: {b}{}\n",
                i + 1,
                if arbiter { " (arbiter)" } else { "" }
            ));
        }
        if !v.options.is_empty() {
            s.push_str("Options Reconfigured:\n");
            for (k, val) in &v.options {
                s.push_str(&format!("{k}: {val}\n"));
            }
        }
    }
    s
}

pub fn volume_status(vols: &[VolumeStatusView]) -> String {
    let mut s = String::new();
    for v in vols {
        s.push_str(&format!("Status of volume: {}\n", v.name));
        if v.status != "Started" {
            s.push_str(&format!("Volume {} is not started\n\n", v.name));
            continue;
        }
        s.push_str(&format!(
            "{:<50} {:<9} {:<8} {}\n",
            "Brick", "TCP Port", "Pid", "Online"
        ));
        s.push_str(&format!("{}\n", "-".repeat(76)));
        for b in &v.bricks {
            let port = b.port.map_or("N/A".to_string(), |p| p.to_string());
            let pid = b.pid.map_or("N/A".to_string(), |p| p.to_string());
            let row = format!(
                "{:<50} {:<9} {:<8} {}",
                format!("Brick {}", b.brick),
                port,
                pid,
                if b.online { "Y" } else { "N" }
            );
            s.push_str(row.trim_end());
            s.push('\n');
        }
        for (host, up) in &v.shd {
            s.push_str(&format!(
                "{:<50} {:<9} {:<8} {}\n",
                format!("Self-heal Daemon on {host}"),
                "N/A",
                "N/A",
                if *up { "Y" } else { "N" }
            ));
        }
        s.push('\n');
    }
    if vols.is_empty() {
        s.push_str("No volumes present\n");
    }
    s
}

pub fn peers(p: &[PeerView]) -> String {
    // `pool list` puts this server first as "localhost".
    if p.first().is_some_and(|x| x.hostname == "localhost") {
        let mut s = format!("{:<38}{:<24}{}\n", "UUID", "Hostname", "State");
        for x in p {
            s.push_str(&format!(
                "{:<38}{:<24}{}\n",
                x.uuid,
                x.hostname,
                if x.connected {
                    "Connected"
                } else {
                    "Disconnected"
                }
            ));
        }
        return s;
    }
    let mut s = format!("Number of Peers: {}\n", p.len());
    for x in p {
        s.push_str(&format!(
            "\nHostname: {}\nUuid: {}\nState: Peer in Cluster ({})\n",
            x.hostname,
            x.uuid,
            if x.connected {
                "Connected"
            } else {
                "Disconnected"
            }
        ));
        if !x.other_names.is_empty() {
            s.push_str("Other names:\n");
            for n in &x.other_names {
                s.push_str(&format!("{n}\n"));
            }
        }
        for d in &x.divergence {
            s.push_str(&format!("Diverged: {d}\n"));
        }
    }
    s
}

pub fn options(o: &[OptionView]) -> String {
    let mut s = format!("{:<40} {}\n", "Option", "Value");
    s.push_str(&format!("{:<40} {}\n", "------", "-----"));
    for x in o {
        s.push_str(&format!(
            "{:<40} {}{}\n",
            x.key,
            x.value,
            if x.set { "" } else { " (default)" }
        ));
    }
    s
}

/// `remove-brick status`, shaped like the original's table.
/// `volume heal NAME statistics`: per brick, the last crawl its server's
/// self-heal daemon made and the totals since that daemon started.
fn heal_statistics(rows: &[mortar_mgmt::api::HealStatsView]) -> String {
    use mortar_mgmt::txnlock::utc;
    let Some(first) = rows.first() else {
        return "No self-heal daemon has reported a crawl for this volume yet (one runs within 3 s of a brick coming back, on 'volume heal NAME', and every cluster.heal-timeout)\n".into();
    };
    let mut out = format!(
        "Gathering crawl statistics on volume {} has been successful\n------------------------------------------------\n",
        first.volume
    );
    for (n, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "\nCrawl statistics for brick no {n}\nBrick {}\n",
            r.brick
        ));
        match &r.last_crawl {
            Some(c) => {
                let secs = (c.took_ms as f64 / 1000.0).max(0.001);
                out.push_str(&format!(
                    "Starting time of crawl: {}\nEnding time of crawl: {}\nType of crawl: {}\nNo. of entries listed at start: {}\nNo. of entries left: {}\nNo. of entries healed: {}\nNo. of entries in split-brain: {}\nNo. of heal failed entries: {}\nBytes healed: {}\nRate: {:.0} entries/s, {}/s\n",
                    utc(c.started_unix_ms / 1000),
                    utc((c.started_unix_ms + c.took_ms) / 1000),
                    c.kind,
                    c.listed,
                    c.left.map_or_else(|| "- (brick did not answer)".into(), |l| l.to_string()),
                    c.healed,
                    c.split_brain,
                    c.failed,
                    human_bytes(c.bytes),
                    c.healed as f64 / secs,
                    human_bytes((c.bytes as f64 / secs) as u64),
                ));
            }
            None => out.push_str("No crawl yet\n"),
        }
        out.push_str(&format!(
            "Crawls since the daemon started: {}\nTotal entries healed: {}\nTotal bytes healed: {}\n",
            r.crawls,
            r.entries_healed,
            human_bytes(r.bytes_healed)
        ));
    }
    out
}

/// The self-heal lines `volume status` adds for volume `name`: per brick,
/// its last crawl (kind, start, length, entries healed and left, bytes,
/// rate) and the totals since its daemon started.
pub fn heal_in_status(name: &str, rows: &[mortar_mgmt::api::HealStatsView]) -> String {
    use mortar_mgmt::txnlock::utc;
    if rows.is_empty() {
        return format!("Self-heal of {name}: no crawl reported yet\n\n");
    }
    let mut out =
        format!("Self-heal of {name} (last crawl per brick; totals since its daemon started):\n");
    for r in rows {
        let last = match &r.last_crawl {
            Some(c) => {
                let secs = (c.took_ms as f64 / 1000.0).max(0.001);
                format!(
                    "{} at {}, {:.2} s: {} healed, {} left, {} ({:.0} entries/s)",
                    c.kind,
                    utc(c.started_unix_ms / 1000),
                    c.took_ms as f64 / 1000.0,
                    c.healed,
                    c.left.map_or_else(|| "?".into(), |l| l.to_string()),
                    human_bytes(c.bytes),
                    c.healed as f64 / secs,
                )
            }
            None => "no crawl yet".into(),
        };
        out.push_str(&format!(
            "Brick {}  {last}; total {} crawls, {} entries, {}\n",
            r.brick,
            r.crawls,
            r.entries_healed,
            human_bytes(r.bytes_healed)
        ));
    }
    out.push('\n');
    out
}

fn migration(views: &[mortar_mgmt::api::MigrationView]) -> String {
    let mut out = format!(
        "{:>20} {:>16} {:>12} {:>8} {:>9} {:>12}\n",
        "Node", "Rebalanced-files", "size", "scanned", "failures", "status"
    );
    out.push_str(&format!(
        "{:>20} {:>16} {:>12} {:>8} {:>9} {:>12}\n",
        "-".repeat(20),
        "-".repeat(16),
        "-".repeat(12),
        "-".repeat(8),
        "-".repeat(9),
        "-".repeat(12)
    ));
    for m in views {
        out.push_str(&format!(
            "{:>20} {:>16} {:>12} {:>8} {:>9} {:>12}\n",
            m.node,
            m.files,
            human_bytes(m.bytes),
            m.dirs,
            m.failures,
            m.status
        ));
        if let Some(e) = &m.last_error {
            out.push_str(&format!("last failure on {}: {e}\n", m.node));
        }
    }
    out
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["Bytes", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}{}", UNITS[0])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_mgmt::api::BrickStatus;
    use mortar_mgmt::volume::{parse_brick, Layout, Transport, VolumeStatus};
    use std::collections::BTreeMap;

    fn vol(layout: Layout, bricks: &[&str], status: VolumeStatus) -> Volume {
        let mut options = BTreeMap::new();
        options.insert("network.ping-timeout".to_string(), "10".to_string());
        Volume {
            name: "vol1".into(),
            id: "6b8e1f3a-22c4-4d1e-9a7b-0c5d2e4f6a81".into(),
            layout,
            transport: Transport::Tcp,
            bricks: bricks.iter().map(|b| parse_brick(b).unwrap()).collect(),
            status,
            options,
            version: 3,
            removing: Vec::new(),
        }
    }

    #[test]
    fn heal_statistics_text() {
        use mortar_mgmt::api::{CrawlView, HealStatsView};
        let crawled = HealStatsView {
            volume: "vol1".into(),
            brick: "server1:/b1".into(),
            crawls: 4,
            entries_healed: 1002,
            bytes_healed: 2_048_000,
            last_crawl: Some(CrawlView {
                kind: "INDEX".into(),
                started_unix_ms: 1_763_700_000_250,
                took_ms: 1_500,
                listed: 1002,
                left: Some(0),
                healed: 1002,
                bytes: 2_048_000,
                split_brain: 0,
                failed: 0,
            }),
        };
        let unanswered = HealStatsView {
            brick: "server2:/b1".into(),
            crawls: 1,
            entries_healed: 0,
            bytes_healed: 0,
            last_crawl: Some(CrawlView {
                kind: "FULL".into(),
                left: None,
                healed: 0,
                bytes: 0,
                split_brain: 2,
                failed: 3,
                ..crawled.last_crawl.clone().unwrap()
            }),
            ..crawled.clone()
        };
        let idle = HealStatsView {
            brick: "server3:/b1".into(),
            crawls: 0,
            entries_healed: 0,
            bytes_healed: 0,
            last_crawl: None,
            ..crawled.clone()
        };
        let rows = vec![crawled, unanswered, idle];
        insta::assert_snapshot!(
            "heal_statistics",
            reply(&CliReply::HealStatistics(rows.clone()))
        );
        assert!(reply(&CliReply::HealStatistics(Vec::new())).starts_with("No self-heal daemon"));
        insta::assert_snapshot!("heal_in_status", heal_in_status("vol1", &rows));
        assert!(heal_in_status("vol1", &[]).contains("no crawl reported yet"));
    }

    #[test]
    fn remove_brick_status_text() {
        let m = mortar_mgmt::api::MigrationView {
            volume: "vol1".into(),
            node: "server1".into(),
            status: "completed".into(),
            dirs: 3,
            files: 52,
            bytes: 53_760,
            failures: 0,
            last_error: None,
            bricks: vec![parse_brick("server1:/b1").unwrap()],
        };
        let failed = mortar_mgmt::api::MigrationView {
            node: "server2".into(),
            status: "failed".into(),
            files: 7,
            bytes: 3 << 30,
            failures: 1,
            last_error: Some("\"a\" exists on both vol1-replicate-0 and vol1-replicate-1 as different files; left in place".into()),
            ..m.clone()
        };
        insta::assert_snapshot!(
            "remove_brick_status",
            reply(&CliReply::Migration(vec![m, failed]))
        );
    }

    #[test]
    fn volume_info_text() {
        let r3 = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            &["s1:/b/1", "s2:/b/1", "s3:/b/1"],
            VolumeStatus::Started,
        );
        let ec = vol(
            Layout::Disperse {
                data: 4,
                redundancy: 2,
            },
            &["s1:/e", "s2:/e", "s3:/e", "s4:/e", "s5:/e", "s6:/e"],
            VolumeStatus::Created,
        );
        let arb = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: true,
            },
            &["s1:/a", "s2:/a", "s3:/a"],
            VolumeStatus::Stopped,
        );
        insta::assert_snapshot!("volume_info", volume_info(&[r3, ec, arb]));
        insta::assert_snapshot!("volume_info_empty", volume_info(&[]));
    }

    #[test]
    fn volume_status_text() {
        let b = |s: &str, port, pid, online| BrickStatus {
            brick: parse_brick(s).unwrap(),
            port,
            pid,
            online,
        };
        let v = VolumeStatusView {
            name: "vol1".into(),
            status: "Started".into(),
            bricks: vec![
                b("127.0.0.1:/srv/b1", Some(49152), Some(4101), true),
                b("127.0.0.2:/srv/b1", Some(49153), Some(4102), true),
                b("127.0.0.3:/srv/b1", None, None, false),
            ],
            shd: vec![("localhost".into(), false)],
        };
        let stopped = VolumeStatusView {
            name: "vol2".into(),
            status: "Stopped".into(),
            bricks: vec![],
            shd: vec![],
        };
        insta::assert_snapshot!("volume_status", volume_status(&[v, stopped]));
    }

    #[test]
    fn peer_status_and_pool_list_text() {
        let p = |h: &str, u: &str, c| PeerView {
            uuid: u.into(),
            hostname: h.into(),
            other_names: vec![],
            connected: c,
            divergence: vec![],
        };
        let mut diverged = p("127.0.0.3", "c3c3c3c3-0000-4000-8000-000000000003", true);
        diverged.divergence =
            vec!["volume vol1: both at version 4 but different (status Started vs Stopped)".into()];
        let peers = vec![
            p("127.0.0.2", "b2b2b2b2-0000-4000-8000-000000000002", true),
            diverged,
        ];
        insta::assert_snapshot!("peer_status", reply(&CliReply::Peers(peers.clone())));
        let mut pool = peers;
        pool.insert(
            0,
            p("localhost", "a1a1a1a1-0000-4000-8000-000000000001", true),
        );
        pool[2].connected = false;
        insta::assert_snapshot!("pool_list", reply(&CliReply::Peers(pool)));
    }

    #[test]
    fn volume_get_text() {
        let o = vec![
            OptionView {
                key: "network.ping-timeout".into(),
                value: "10".into(),
                set: true,
            },
            OptionView {
                key: "cluster.quorum-type".into(),
                value: "auto".into(),
                set: false,
            },
        ];
        insta::assert_snapshot!("volume_get", reply(&CliReply::Options(o)));
    }

    #[test]
    fn json_replies_are_stable() {
        let r3 = vol(
            Layout::Replicate {
                replica: 3,
                arbiter: false,
            },
            &["s1:/b", "s2:/b", "s3:/b"],
            VolumeStatus::Created,
        );
        insta::assert_snapshot!(
            "volume_info_json",
            serde_json::to_string_pretty(&CliReply::Volumes(vec![r3])).unwrap()
        );
    }
}
