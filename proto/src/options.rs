//! Volume options: one typed table with defaults, ranges and help.
//!
//! `volume set` checks a value against the table and stores it in its
//! normalised form; unknown keys and bad values are refused with what is
//! allowed. `volume get` reports every option with its effective value.

use std::collections::BTreeMap;

/// What values an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Whole number within the inclusive range.
    Int {
        min: i64,
        max: i64,
    },
    /// Seconds, within the inclusive range.
    Seconds {
        min: u64,
        max: u64,
    },
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// Comma-separated address patterns (digits, '.', ':', '*', '?', `unix`).
    AddressList,
}

#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every option Mortar knows. Keys follow the original system's names.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "network.ping-timeout",
        kind: Kind::Seconds { min: 1, max: 1800 },
        default: "42",
        help: "Seconds without an answer before a client declares a brick (or a brick a client) dead.",
    },
    OptionSpec {
        key: "cluster.quorum-type",
        kind: Kind::Enum(&["none", "auto", "fixed"]),
        default: "auto",
        help: "Write quorum of a replica set: auto = more than half (or exactly half including the first brick); fixed = cluster.quorum-count.",
    },
    OptionSpec {
        key: "cluster.quorum-count",
        kind: Kind::Int { min: 1, max: 16 },
        default: "1",
        help: "Bricks that must be up for writes when cluster.quorum-type is fixed.",
    },
    OptionSpec {
        key: "cluster.heal-timeout",
        kind: Kind::Seconds { min: 5, max: 86_400 },
        default: "600",
        help: "Seconds between index crawls of the self-heal daemon.",
    },
    OptionSpec {
        key: "cluster.shd-max-threads",
        kind: Kind::Int { min: 1, max: 64 },
        // 16, not the original's 1: a small file's heal is a dozen or two
        // round trips of waiting (claim, locks, reads, copy, fsync,
        // counters), so one at a time leaves bricks and disks idle; 16 per
        // brick keeps them busy while bounding what a crawl holds to 16
        // claims and 16 copy buffers of 1 MiB per brick.
        default: "16",
        help: "Files the self-heal daemon heals in parallel per brick.",
    },
    OptionSpec {
        key: "cluster.favorite-child-policy",
        kind: Kind::Enum(&["none", "size", "ctime", "mtime", "majority"]),
        default: "none",
        help: "How the self-heal daemon resolves a replicate split-brain by itself: none = left for the operator (reads and writes get EIO); size = the largest copy (data only); ctime / mtime = the copy changed last; majority = the copy more than half of the set's bricks do not blame.",
    },
    OptionSpec {
        key: "cluster.self-heal-daemon",
        kind: Kind::Bool,
        default: "on",
        help: "Run the self-heal daemon for this volume.",
    },
    OptionSpec {
        key: "auth.allow",
        kind: Kind::AddressList,
        default: "*",
        help: "Client addresses allowed to connect to the bricks (comma-separated patterns).",
    },
    OptionSpec {
        key: "auth.reject",
        kind: Kind::AddressList,
        default: "",
        help: "Client addresses refused by the bricks; wins over auth.allow.",
    },
    OptionSpec {
        key: "client.event-threads",
        kind: Kind::Int { min: 1, max: 32 },
        default: "2",
        help: "Threads a client uses for network events.",
    },
    OptionSpec {
        key: "server.event-threads",
        kind: Kind::Int { min: 1, max: 32 },
        default: "2",
        help: "Threads a brick uses for network events.",
    },
    OptionSpec {
        key: "storage.fsync-namespace",
        kind: Kind::Bool,
        default: "on",
        help: "Bricks make creates, renames and unlinks durable before replying.",
    },
];

/// Keys that code reads (every key is also in [`OPTIONS`]; a test checks).
pub const PING_TIMEOUT: &str = "network.ping-timeout";
pub const QUORUM_TYPE: &str = "cluster.quorum-type";
pub const QUORUM_COUNT: &str = "cluster.quorum-count";
pub const HEAL_TIMEOUT: &str = "cluster.heal-timeout";
pub const SHD_MAX_THREADS: &str = "cluster.shd-max-threads";
pub const SELF_HEAL_DAEMON: &str = "cluster.self-heal-daemon";
pub const FAVORITE_CHILD_POLICY: &str = "cluster.favorite-child-policy";
pub const AUTH_ALLOW: &str = "auth.allow";
pub const AUTH_REJECT: &str = "auth.reject";
pub const CLIENT_EVENT_THREADS: &str = "client.event-threads";
pub const SERVER_EVENT_THREADS: &str = "server.event-threads";
pub const FSYNC_NAMESPACE: &str = "storage.fsync-namespace";

/// The default of a key code names (one of the constants above).
///
/// # Panics
/// On a key that is not in the table: that is a typo in the code, which
/// the `named_keys_are_in_the_table` test catches.
pub fn default_of(key: &str) -> &'static str {
    match spec(key) {
        Some(s) => s.default,
        None => panic!("option {key:?} is not in the option table"),
    }
}

/// An option's effective value as a whole number: what was set, or the
/// default when nothing was set or the stored text does not parse (values
/// are checked at `volume set`, so that only happens to a hand-edited store).
pub fn get_u64(set: &BTreeMap<String, String>, key: &str) -> u64 {
    let default = default_of(key);
    set.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| default.parse().expect("numeric option default"))
}

pub fn spec(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Bool => "on or off".into(),
        Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
        Kind::Seconds { min, max } => format!("seconds from {min} to {max}"),
        Kind::Enum(words) => format!("one of {}", words.join(", ")),
        Kind::AddressList => "comma-separated address patterns (e.g. 10.0.0.*,192.168.1.5)".into(),
    }
}

/// Check `value` for `key`; return it in normal form (`on`/`off`, plain
/// numbers, trimmed lists).
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let Some(spec) = spec(key) else {
        let near: Vec<&str> = OPTIONS
            .iter()
            .map(|o| o.key)
            .filter(|k| k.split('.').next_back() == key.split('.').next_back())
            .collect();
        let hint = if near.is_empty() {
            "see 'mortar volume get VOLNAME all' for the option list".to_string()
        } else {
            format!("did you mean {}?", near.join(" or "))
        };
        return Err(format!("unknown option {key:?}: {hint}"));
    };
    let v = value.trim();
    let bad = || {
        format!(
            "invalid value {value:?} for {key}: expected {}",
            describe(&spec.kind)
        )
    };
    match spec.kind {
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "on" | "yes" | "true" | "enable" | "1" => Ok("on".into()),
            "off" | "no" | "false" | "disable" | "0" => Ok("off".into()),
            _ => Err(bad()),
        },
        Kind::Int { min, max } => {
            let n: i64 = v.parse().map_err(|_| bad())?;
            if n < min || n > max {
                return Err(bad());
            }
            Ok(n.to_string())
        }
        Kind::Seconds { min, max } => {
            let n: u64 = v.parse().map_err(|_| bad())?;
            if n < min || n > max {
                return Err(bad());
            }
            Ok(n.to_string())
        }
        Kind::Enum(words) => {
            let l = v.to_ascii_lowercase();
            if words.contains(&l.as_str()) {
                Ok(l)
            } else {
                Err(bad())
            }
        }
        Kind::AddressList => {
            let items: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            for it in &items {
                let ok = it.len() <= 64
                    && (it
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b"*?.:".contains(&b))
                        || *it == "unix");
                if !ok {
                    return Err(bad());
                }
            }
            Ok(items.join(","))
        }
    }
}

/// The effective value of every option: set values over defaults.
pub fn effective(set: &BTreeMap<String, String>) -> Vec<(&'static str, String, bool)> {
    OPTIONS
        .iter()
        .map(|o| match set.get(o.key) {
            Some(v) => (o.key, v.clone(), true),
            None => (o.key, o.default.to_string(), false),
        })
        .collect()
}

/// An option's effective value.
pub fn get(set: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let spec = spec(key)?;
    Some(
        set.get(key)
            .cloned()
            .unwrap_or_else(|| spec.default.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_values() {
        for o in OPTIONS {
            assert_eq!(
                validate(o.key, o.default).as_deref(),
                Ok(o.default),
                "{}",
                o.key
            );
        }
    }

    #[test]
    fn values_are_checked_and_normalised() {
        assert_eq!(validate("network.ping-timeout", " 10 ").unwrap(), "10");
        let e = validate("network.ping-timeout", "0").unwrap_err();
        assert!(e.contains("seconds from 1 to 1800"), "{e}");
        assert!(validate("network.ping-timeout", "ten").is_err());
        assert_eq!(
            validate("cluster.self-heal-daemon", "Enable").unwrap(),
            "on"
        );
        assert_eq!(validate("cluster.quorum-type", "FIXED").unwrap(), "fixed");
        assert_eq!(
            validate(FAVORITE_CHILD_POLICY, " Majority ").unwrap(),
            "majority"
        );
        let e = validate(FAVORITE_CHILD_POLICY, "bigger-file").unwrap_err();
        assert!(
            e.contains("one of none, size, ctime, mtime, majority"),
            "{e}"
        );
        let e = validate("cluster.quorum-type", "most").unwrap_err();
        assert!(e.contains("one of none, auto, fixed"), "{e}");
        assert_eq!(
            validate("auth.allow", "10.0.0.*, 192.168.1.5").unwrap(),
            "10.0.0.*,192.168.1.5"
        );
        assert!(validate("auth.reject", "10.0.0.1;reboot").is_err());
        let e = validate("network.ping-timout", "5").unwrap_err();
        assert!(e.contains("unknown option"), "{e}");
        let e = validate("cluster.ping-timeout", "5").unwrap_err();
        assert!(e.contains("did you mean network.ping-timeout"), "{e}");
    }

    #[test]
    fn named_keys_are_in_the_table() {
        for k in [
            PING_TIMEOUT,
            QUORUM_TYPE,
            QUORUM_COUNT,
            HEAL_TIMEOUT,
            SHD_MAX_THREADS,
            SELF_HEAL_DAEMON,
            FAVORITE_CHILD_POLICY,
            AUTH_ALLOW,
            AUTH_REJECT,
            CLIENT_EVENT_THREADS,
            SERVER_EVENT_THREADS,
            FSYNC_NAMESPACE,
        ] {
            assert!(spec(k).is_some(), "{k}");
        }
        assert_eq!(OPTIONS.len(), 12, "a new option wants a named key above");
    }

    #[test]
    fn numbers_fall_back_to_the_default() {
        let mut set = BTreeMap::new();
        assert_eq!(get_u64(&set, HEAL_TIMEOUT), 600);
        set.insert(HEAL_TIMEOUT.to_string(), "30".to_string());
        assert_eq!(get_u64(&set, HEAL_TIMEOUT), 30);
        set.insert(HEAL_TIMEOUT.to_string(), "soon".to_string());
        assert_eq!(get_u64(&set, HEAL_TIMEOUT), 600);
    }

    #[test]
    fn effective_values_prefer_what_was_set() {
        let mut set = BTreeMap::new();
        set.insert("network.ping-timeout".to_string(), "10".to_string());
        let eff = effective(&set);
        assert!(eff.contains(&("network.ping-timeout", "10".into(), true)));
        assert!(eff.contains(&("cluster.quorum-type", "auto".into(), false)));
        assert_eq!(get(&set, "cluster.shd-max-threads").as_deref(), Some("16"));
        assert_eq!(get(&set, "nope"), None);
    }
}
