//! `mortar volume heal NAME ...`: the heal commands. Built: `info` (with
//! `summary` and `split-brain`; the work is `mortar_heal::info`'s, this
//! file parses the words and shapes the text like the original's), a bare
//! `volume heal NAME [full]` (every self-heal daemon crawls, or sweeps,
//! now), `enable` / `disable` (the volume's `cluster.self-heal-daemon`
//! option) and `split-brain bigger-file | latest-mtime | source-brick`
//! (run in this process against the bricks, [`crate::split_brain_cmd`]),
//! and `statistics` (what each server's self-heal daemon reported to its
//! mgmtd after its crawls).

use std::io::Write;

use mortar_heal::info::{counts, split_brain_entries, BrickInfo, BrickStatus, HealInfo};
use mortar_heal::resolve::Choice;
use mortar_mgmt::api::CliRequest;
use mortar_mgmt::options;
use mortar_net::Runtime;

use crate::args::UsageError;
use crate::mgmt_cmds::Target;
use crate::Failure;

pub const USAGE: &str = "usage: mortar volume heal NAME [full | enable | disable | info [summary | split-brain] | statistics [heal-count]]
       mortar volume heal NAME split-brain {bigger-file FILE | latest-mtime FILE | source-brick HOST:/PATH [FILE]}
       (FILE: a path within the volume, or gfid:UUID)";

/// Which `heal info` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Entries,
    Summary,
    SplitBrain,
    /// `statistics heal-count`: entries to heal per brick.
    HealCount,
}

/// A parsed `volume heal` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealCmd {
    Info {
        volume: String,
        view: View,
    },
    /// `volume heal NAME [full]`: crawl the pending-heal indices (or
    /// sweep the whole volume) now.
    Start {
        volume: String,
        full: bool,
    },
    /// `volume heal NAME enable|disable`.
    Daemon {
        volume: String,
        on: bool,
    },
    /// `volume heal NAME split-brain ...`: resolve `file` (or, with
    /// `source-brick` and no file, every split-brain file of that brick's
    /// set) by `choice`.
    SplitBrain {
        volume: String,
        choice: Choice,
        file: Option<String>,
    },
    /// `volume heal NAME statistics`: what each brick's self-heal daemon
    /// crawled, healed and wrote.
    Statistics {
        volume: String,
    },
}

/// Read the words after `volume heal`.
pub fn parse(rest: &[String]) -> Result<HealCmd, UsageError> {
    let usage = || UsageError(USAGE.into());
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => Err(usage()),
        [volume] => Ok(HealCmd::Start {
            volume: volume.to_string(),
            full: false,
        }),
        [volume, "full"] => Ok(HealCmd::Start {
            volume: volume.to_string(),
            full: true,
        }),
        [volume, on @ ("enable" | "disable")] => Ok(HealCmd::Daemon {
            volume: volume.to_string(),
            on: *on == "enable",
        }),
        [volume, "info", tail @ ..] => {
            let view = match tail {
                [] => View::Entries,
                ["summary"] => View::Summary,
                ["split-brain"] => View::SplitBrain,
                _ => return Err(usage()),
            };
            Ok(HealCmd::Info {
                volume: volume.to_string(),
                view,
            })
        }
        [volume, "split-brain", tail @ ..] => {
            let (choice, file) = match tail {
                ["bigger-file", file] => (Choice::BiggerFile, Some(file)),
                ["latest-mtime", file] => (Choice::LatestMtime, Some(file)),
                ["source-brick", brick] => (source_brick(brick)?, None),
                ["source-brick", brick, file] => (source_brick(brick)?, Some(file)),
                _ => return Err(usage()),
            };
            Ok(HealCmd::SplitBrain {
                volume: volume.to_string(),
                choice,
                file: file.map(|f| file_arg(f)).transpose()?,
            })
        }
        [volume, "statistics", "heal-count"] => Ok(HealCmd::Info {
            volume: volume.to_string(),
            view: View::HealCount,
        }),
        [volume, "statistics"] => Ok(HealCmd::Statistics {
            volume: volume.to_string(),
        }),
        [_, "statistics", ..] => Err(usage()),
        _ => Err(usage()),
    }
}

/// The brick of `source-brick`, which must read `HOST:/PATH`.
fn source_brick(brick: &str) -> Result<Choice, UsageError> {
    match brick.split_once(":/") {
        Some((host, _)) if !host.is_empty() => Ok(Choice::SourceBrick(brick.to_string())),
        _ => Err(UsageError(format!(
            "source-brick takes a brick as HOST:/PATH, not {brick:?}\n{USAGE}"
        ))),
    }
}

/// A FILE of `split-brain`: an absolute path within the volume, or
/// `gfid:UUID`.
fn file_arg(file: &str) -> Result<String, UsageError> {
    let ok = match file.strip_prefix("gfid:") {
        Some(uuid) => mortar_heal::resolve::parse_gfid(uuid).is_some(),
        None => file.starts_with('/'),
    };
    if ok {
        Ok(file.to_string())
    } else {
        Err(UsageError(format!(
            "FILE is a path within the volume starting with / or gfid:UUID, not {file:?}\n{USAGE}"
        )))
    }
}

/// Run `volume heal ...` against the mgmtd `t` names.
pub async fn heal(t: &Target, rest: &[String]) -> Result<(), Failure> {
    let cmd = parse(rest)?;
    if !matches!(cmd, HealCmd::Info { .. }) {
        t.no_xml()?;
    }
    let (volume, view) = match cmd {
        HealCmd::Info { volume, view } => (volume, view),
        HealCmd::Start { volume, full } => {
            return t.send(CliRequest::HealNow { name: volume, full }).await
        }
        HealCmd::Daemon { volume, on } => {
            let req = CliRequest::VolumeSet {
                name: volume,
                key: options::SELF_HEAL_DAEMON.into(),
                value: if on { "on" } else { "off" }.into(),
            };
            return t.send(req).await;
        }
        HealCmd::SplitBrain {
            volume,
            choice,
            file,
        } => return crate::split_brain_cmd::run(t, &volume, &choice, file.as_deref()).await,
        HealCmd::Statistics { volume } => {
            return t.send(CliRequest::HealStatistics { name: volume }).await
        }
    };
    let rt = Runtime::production("mortar-cli");
    let info = mortar_heal::info::heal_info(&rt, t.endpoint(), &volume)
        .await
        .map_err(|e| Failure::Runtime(format!("heal info of {volume}: {e}")))?;
    rt.scope().kill();
    let text = if t.json() {
        serde_json::to_string_pretty(&json(&info, view))
            .map_err(|e| Failure::Runtime(e.to_string()))?
            + "\n"
    } else if t.xml() {
        xml(&info, view)
    } else {
        render(&info, view)
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// The text of one view, shaped like the original's.
pub fn render(info: &HealInfo, view: View) -> String {
    let head = match view {
        View::HealCount => format!(
            "Gathering count of entries to be healed on volume {} has been successful\n\n",
            info.volume
        ),
        _ => String::new(),
    };
    let body: String = info
        .bricks
        .iter()
        .map(|b| match view {
            View::Entries => brick_entries(b),
            View::Summary => brick_summary(b),
            View::SplitBrain => brick_split_brain(b),
            View::HealCount => brick_heal_count(b),
        })
        .collect();
    head + &body
}

/// `statistics heal-count`: a brick that cannot be asked shows its error
/// where the count would be.
fn brick_heal_count(b: &BrickInfo) -> String {
    let count = match &b.status {
        BrickStatus::Connected => format!("Number of entries: {}", counts(b).total.unwrap_or(0)),
        BrickStatus::Error(e) => format!("Status: {e}\nNumber of entries: -"),
    };
    format!("Brick {}\n{count}{}\n\n", b.brick, truncated_note(b))
}

fn status_line(b: &BrickInfo) -> String {
    match &b.status {
        BrickStatus::Connected => "Status: Connected\n".into(),
        BrickStatus::Error(e) => format!("Status: {e}\n"),
    }
}

fn number(n: Option<usize>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

fn truncated_note(b: &BrickInfo) -> &'static str {
    if b.truncated {
        " (more not listed)"
    } else {
        ""
    }
}

fn brick_entries(b: &BrickInfo) -> String {
    let mut s = format!("Brick {}\n", b.brick);
    for e in &b.entries {
        let flag = if e.split_brain == Some(true) {
            " - Is in split-brain"
        } else if e.possibly_healing == Some(true) {
            " - Possibly undergoing heal"
        } else {
            ""
        };
        s.push_str(&format!("<gfid:{}>{flag}\n", e.gfid));
    }
    s.push_str(&status_line(b));
    s.push_str(&format!(
        "Number of entries: {}{}\n\n",
        number(counts(b).total),
        truncated_note(b)
    ));
    s
}

fn brick_summary(b: &BrickInfo) -> String {
    let c = counts(b);
    format!(
        "Brick {}\n{}Total Number of entries: {}{}\nNumber of entries in heal pending: {}\nNumber of entries in split-brain: {}\nNumber of entries possibly healing: {}\n\n",
        b.brick,
        status_line(b),
        number(c.total),
        truncated_note(b),
        number(c.heal_pending),
        number(c.split_brain),
        number(c.possibly_healing),
    )
}

fn brick_split_brain(b: &BrickInfo) -> String {
    let mut s = format!("Brick {}\n", b.brick);
    let split = split_brain_entries(b);
    for e in &split {
        s.push_str(&format!("<gfid:{}>\n", e.gfid));
    }
    s.push_str(&status_line(b));
    let n = (b.status == BrickStatus::Connected).then_some(split.len());
    s.push_str(&format!(
        "Number of entries in split-brain: {}\n",
        number(n)
    ));
    let unjudged = b.entries.iter().filter(|e| e.split_brain.is_none()).count();
    if unjudged > 0 {
        s.push_str(&format!(
            "Not judged for split-brain: {unjudged} (disperse sets are not judged, or the deadline passed)\n"
        ));
    }
    s.push('\n');
    s
}

/// The same data for `--json`.
pub fn json(info: &HealInfo, view: View) -> serde_json::Value {
    let bricks: Vec<serde_json::Value> = info
        .bricks
        .iter()
        .map(|b| {
            let c = counts(b);
            let (connected, error) = match &b.status {
                BrickStatus::Connected => (true, None),
                BrickStatus::Error(e) => (false, Some(e.clone())),
            };
            let entries: Vec<serde_json::Value> = b
                .entries
                .iter()
                .filter(|e| view != View::SplitBrain || e.split_brain == Some(true))
                .map(|e| {
                    serde_json::json!({
                        "gfid": e.gfid.to_string(),
                        "possibly_healing": e.possibly_healing,
                        "split_brain": e.split_brain,
                    })
                })
                .collect();
            let mut v = serde_json::json!({
                "brick": b.brick,
                "status": if connected { "Connected".to_string() } else { error.clone().unwrap_or_default() },
                "connected": connected,
                "total": c.total,
                "heal_pending": c.heal_pending,
                "split_brain": c.split_brain,
                "possibly_healing": c.possibly_healing,
                "truncated": b.truncated,
            });
            if !matches!(view, View::Summary | View::HealCount) {
                v["entries"] = serde_json::Value::Array(entries);
            }
            v
        })
        .collect();
    serde_json::json!({ "volume": info.volume, "bricks": bricks })
}

/// The same data for `--xml`, in the original's shape: `cliOutput` /
/// `healInfo` / `bricks`, a `brick` per brick with its `name`, a `file`
/// per entry (text `<gfid:UUID>`, attribute `gfid`), `status` and the
/// counts (`numberOfEntries`; the summary's `totalNumberOfEntries`,
/// `numberOfEntriesInHealPending`, `numberOfEntriesInSplitBrain`,
/// `numberOfEntriesPossiblyHealing`; `-` where not known), then `opRet`,
/// `opErrno`, `opErrstr`. The original's `hostUuid` attribute is left out:
/// heal info here knows bricks by `HOST:/PATH`.
pub fn xml(info: &HealInfo, view: View) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<cliOutput>\n  <healInfo>\n    <bricks>\n",
    );
    for b in &info.bricks {
        let c = counts(b);
        s.push_str(&format!(
            "      <brick>\n        <name>{}</name>\n",
            xml_text(&b.brick)
        ));
        let listed = b.entries.iter().filter(|e| match view {
            View::Entries => true,
            View::SplitBrain => e.split_brain == Some(true),
            View::Summary | View::HealCount => false,
        });
        for e in listed {
            s.push_str(&format!(
                "        <file gfid=\"{g}\">&lt;gfid:{g}&gt;</file>\n",
                g = e.gfid
            ));
        }
        let status = match &b.status {
            BrickStatus::Connected => "Connected".to_string(),
            BrickStatus::Error(e) => e.clone(),
        };
        s.push_str(&format!("        <status>{}</status>\n", xml_text(&status)));
        let connected = b.status == BrickStatus::Connected;
        let tags: Vec<(&str, Option<usize>)> = match view {
            View::Entries | View::HealCount => vec![("numberOfEntries", c.total)],
            View::SplitBrain => vec![(
                "numberOfEntries",
                connected.then(|| split_brain_entries(b).len()),
            )],
            View::Summary => vec![
                ("totalNumberOfEntries", c.total),
                ("numberOfEntriesInHealPending", c.heal_pending),
                ("numberOfEntriesInSplitBrain", c.split_brain),
                ("numberOfEntriesPossiblyHealing", c.possibly_healing),
            ],
        };
        for (tag, n) in tags {
            s.push_str(&format!("        <{tag}>{}</{tag}>\n", number(n)));
        }
        if b.truncated {
            // Not in the original's shape: its listings have no bound.
            s.push_str("        <moreNotListed>1</moreNotListed>\n");
        }
        s.push_str("      </brick>\n");
    }
    s.push_str("    </bricks>\n  </healInfo>\n  <opRet>0</opRet>\n  <opErrno>0</opErrno>\n  <opErrstr/>\n</cliOutput>\n");
    s
}

/// `t` as XML character data.
fn xml_text(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for ch in t.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to carry these, not even as references.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_heal::info::PendingEntry;
    use mortar_proto::Gfid;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parsing() {
        let info = |view| {
            Ok(HealCmd::Info {
                volume: "vol1".into(),
                view,
            })
        };
        let cases: Vec<(&str, Result<HealCmd, ()>)> = vec![
            ("vol1 info", info(View::Entries)),
            ("vol1 info summary", info(View::Summary)),
            ("vol1 info split-brain", info(View::SplitBrain)),
            ("", Err(())),
            ("vol1 bogus", Err(())),
            ("vol1 info bogus", Err(())),
            ("vol1 info summary extra", Err(())),
        ];
        for (line, want) in cases {
            let got = parse(&words(line)).map_err(|e| assert_eq!(e.0, USAGE));
            assert_eq!(got, want, "{line:?}");
        }
        for (line, full) in [("vol1", false), ("vol1 full", true)] {
            let want = HealCmd::Start {
                volume: "vol1".into(),
                full,
            };
            assert_eq!(parse(&words(line)).unwrap(), want, "{line:?}");
        }
        assert!(parse(&words("vol1 full now")).is_err());
        for (line, on) in [("vol1 enable", true), ("vol1 disable", false)] {
            let want = HealCmd::Daemon {
                volume: "vol1".into(),
                on,
            };
            assert_eq!(parse(&words(line)).unwrap(), want);
        }
        assert!(parse(&words("vol1 enable now")).is_err());
        assert_eq!(
            parse(&words("vol1 statistics")).unwrap(),
            HealCmd::Statistics {
                volume: "vol1".into()
            }
        );
        assert_eq!(
            parse(&words("vol1 statistics heal-count")).unwrap(),
            HealCmd::Info {
                volume: "vol1".into(),
                view: View::HealCount
            }
        );
        assert!(parse(&words("vol1 statistics heal-count now")).is_err());
    }

    #[test]
    fn parsing_split_brain() {
        let sb = |choice, file: Option<&str>| HealCmd::SplitBrain {
            volume: "vol1".into(),
            choice,
            file: file.map(String::from),
        };
        let brick = || Choice::SourceBrick("s1:/bricks/b1".into());
        for (line, want) in [
            (
                "vol1 split-brain bigger-file /d/a",
                sb(Choice::BiggerFile, Some("/d/a")),
            ),
            (
                "vol1 split-brain latest-mtime gfid:8c5a8a5e-1f5d-4a7e-9c83-0b0f2f1e6b11",
                sb(
                    Choice::LatestMtime,
                    Some("gfid:8c5a8a5e-1f5d-4a7e-9c83-0b0f2f1e6b11"),
                ),
            ),
            (
                "vol1 split-brain source-brick s1:/bricks/b1",
                sb(brick(), None),
            ),
            (
                "vol1 split-brain source-brick s1:/bricks/b1 /a",
                sb(brick(), Some("/a")),
            ),
        ] {
            assert_eq!(parse(&words(line)).unwrap(), want, "{line:?}");
        }
        for line in [
            "vol1 split-brain",
            "vol1 split-brain bigger-file",
            "vol1 split-brain latest-mtime",
            "vol1 split-brain bigger-file /a /b",
            "vol1 split-brain source-brick",
            "vol1 split-brain source-brick s1:/b /a extra",
            "vol1 split-brain smallest-file /a",
        ] {
            let e = parse(&words(line)).unwrap_err();
            assert_eq!(e.0, USAGE, "{line:?}");
        }
        for bad in ["d/a", "gfid:123", "gfid:"] {
            let e = parse(&words(&format!("vol1 split-brain bigger-file {bad}"))).unwrap_err();
            assert!(e.0.contains("gfid:UUID"), "{bad}: {e}");
        }
        for bad in ["s1", "/bricks/b1", ":/b", "s1:b"] {
            let e = parse(&words(&format!("vol1 split-brain source-brick {bad} /a"))).unwrap_err();
            assert!(e.0.contains("HOST:/PATH"), "{bad}: {e}");
        }
    }

    fn sample() -> HealInfo {
        let e = |n: u8, healing, split| PendingEntry {
            gfid: Gfid([n; 16]),
            possibly_healing: healing,
            split_brain: split,
        };
        HealInfo {
            volume: "vol1".into(),
            bricks: vec![
                BrickInfo {
                    brick: "server1:/bricks/b1".into(),
                    status: BrickStatus::Connected,
                    entries: vec![
                        e(0x11, Some(false), Some(false)),
                        e(0x22, Some(true), Some(false)),
                        e(0x33, Some(false), Some(true)),
                    ],
                    truncated: false,
                },
                BrickInfo {
                    brick: "server2:/bricks/b1".into(),
                    status: BrickStatus::Error(
                        "resolving server2 took longer than 2s: DNS is slow or unreachable; check the DNS server or use an IP address".into(),
                    ),
                    entries: vec![],
                    truncated: false,
                },
                BrickInfo {
                    brick: "10.0.0.3:/bricks/b1".into(),
                    status: BrickStatus::Connected,
                    entries: vec![],
                    truncated: false,
                },
                BrickInfo {
                    brick: "10.0.0.4:/bricks/ec".into(),
                    status: BrickStatus::Connected,
                    entries: vec![e(0x44, Some(false), None)],
                    truncated: true,
                },
            ],
        }
    }

    #[test]
    fn heal_info_text() {
        let info = sample();
        insta::assert_snapshot!("heal_info", render(&info, View::Entries));
        insta::assert_snapshot!("heal_info_summary", render(&info, View::Summary));
        insta::assert_snapshot!("heal_info_split_brain", render(&info, View::SplitBrain));
        insta::assert_snapshot!("heal_statistics_heal_count", render(&info, View::HealCount));
    }

    #[test]
    fn heal_info_xml() {
        let mut info = sample();
        info.bricks[0].brick = "server<&>\"1\":/bricks/b1".into();
        insta::assert_snapshot!("heal_info_xml", xml(&info, View::Entries));
        insta::assert_snapshot!("heal_info_summary_xml", xml(&info, View::Summary));
        insta::assert_snapshot!("heal_info_split_brain_xml", xml(&info, View::SplitBrain));
        let x = xml(&info, View::Entries);
        assert!(
            x.contains("<name>server&lt;&amp;&gt;&quot;1&quot;:/bricks/b1</name>"),
            "{x}"
        );
        assert!(!x.contains("<&>"), "names are escaped: {x}");
    }

    #[test]
    fn heal_info_json() {
        let info = sample();
        insta::assert_snapshot!(
            "heal_info_json",
            serde_json::to_string_pretty(&json(&info, View::Entries)).unwrap()
        );
        insta::assert_snapshot!(
            "heal_info_summary_json",
            serde_json::to_string_pretty(&json(&info, View::Summary)).unwrap()
        );
    }
}
