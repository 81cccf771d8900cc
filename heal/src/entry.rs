//! Entry heal's decision: what a directory's stale copies must gain, lose
//! or report, as a pure function of every brick's listing of it, of which
//! copies are good, and of which stale copies the set's marks show missed
//! entry operations. The set kinds differ only in how they tell those
//! (replicate: the entry changelog, `afr::examine` and a good copy's blame;
//! disperse: the directory's version generation and its entry dirty marks,
//! `disperse_entry::directory_copies`); the plan is the same for both.
//!
//! The rules, in the order they protect data:
//! * A name is removed from a stale copy only when that copy is *blamed*
//!   (the set's marks say it missed operations here) and no good copy has
//!   the name with that gfid. Without that evidence an extra name is left
//!   alone and reported: never delete on a guess.
//! * A name whose gfid (or kind) differs between good copies, or between a
//!   good copy and a stale copy that is not blamed, is a split-brain:
//!   reported, not guessed.
//! * A name a stale copy lacks is made there with the good copy's gfid: as
//!   a new name of an object the copy already holds (a hard link, or a
//!   directory renamed within this directory) or as a new object.
//! * Names are added to free slots first, then removed, then added where a
//!   removed name was, so an object renamed away from a replaced name
//!   keeps its data.

use std::collections::{BTreeMap, BTreeSet};

use mortar_proto::{FileKind, Gfid};

/// One name of a directory as one brick holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub gfid: Gfid,
    pub kind: FileKind,
}

/// One brick's listing of the directory: name -> what it names.
pub type Listing = BTreeMap<String, Entry>;

/// What the entry plan judges: every brick's listing (index = brick),
/// the good and stale copies, per brick whether it is blamed (the set's
/// marks show it missed entry operations here, so names only it holds may
/// be removed from it), and per brick the gfids it is known to hold
/// outside this directory (so a missing name of one of them is a link,
/// not a new object).
#[derive(Debug, Clone, Copy)]
pub struct EntryState<'a> {
    pub listings: &'a [Listing],
    pub good: &'a [usize],
    pub stale: &'a [usize],
    pub blamed: &'a [bool],
    pub held_elsewhere: &'a [BTreeSet<Gfid>],
}

/// One change to one stale copy of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make `name` on `sink` as a new object like the one on `source`
    /// (same gfid, kind, mode, owner, times, symlink target, data).
    Create {
        sink: usize,
        name: String,
        entry: Entry,
        source: usize,
    },
    /// Give the object `gfid`, which `sink` already holds, the new name
    /// `name` (a hard link, or a file renamed while the brick was down).
    Link {
        sink: usize,
        name: String,
        gfid: Gfid,
    },
    /// Move the directory `gfid` on `sink` from `from` to `name`, both in
    /// this directory (a directory has one name, so it is moved, not
    /// linked).
    Rename {
        sink: usize,
        from: String,
        name: String,
        gfid: Gfid,
    },
    /// Remove `name` from `sink` (a directory with what it holds).
    Remove {
        sink: usize,
        name: String,
        entry: Entry,
    },
}

/// Why a name was not healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealed {
    /// Split-brain: copies that cannot both be right.
    SplitBrain { name: String, why: String },
    /// Left alone for now (the directory stays pending heal): a name only
    /// a stale copy has, which it is not blamed for; or a directory
    /// that the stale copy holds in another directory.
    LeftAlone { name: String, why: String },
}

/// What entry heal does to one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order to apply them.
    pub actions: Vec<Action>,
    pub unhealed: Vec<Unhealed>,
}

impl Plan {
    /// The new directories the plan makes, per sink: each is then itself
    /// in need of entry heal (its names are still to be made).
    pub fn new_directories(&self) -> Vec<(usize, Gfid)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { sink, entry, .. } if entry.kind == FileKind::Directory => {
                    Some((*sink, entry.gfid))
                }
                _ => None,
            })
            .collect()
    }

    pub fn is_split_brain(&self) -> bool {
        self.unhealed
            .iter()
            .any(|u| matches!(u, Unhealed::SplitBrain { .. }))
    }
}

/// The names every good copy agrees on (with the first good copy holding
/// each), and the names they disagree about (split-brain).
fn agreed_names(st: &EntryState<'_>) -> (BTreeMap<String, (Entry, usize)>, BTreeSet<String>) {
    let mut agreed = BTreeMap::new();
    let mut disputed = BTreeSet::new();
    let names: BTreeSet<&String> = st
        .good
        .iter()
        .flat_map(|&g| st.listings[g].keys())
        .collect();
    for name in names {
        let held: Vec<Option<&Entry>> = st.good.iter().map(|&g| st.listings[g].get(name)).collect();
        match held.first().copied().flatten() {
            Some(e) if held.iter().all(|h| *h == Some(e)) => {
                agreed.insert(name.clone(), (*e, st.good[0]));
            }
            _ => {
                disputed.insert(name.clone());
            }
        }
    }
    (agreed, disputed)
}

/// Decide what entry heal does (see the module's rules).
pub fn plan(st: &EntryState<'_>) -> Plan {
    let mut plan = Plan::default();
    let (agreed, disputed) = agreed_names(st);
    for name in &disputed {
        plan.unhealed.push(Unhealed::SplitBrain {
            name: name.clone(),
            why: "the good copies hold different objects under this name".into(),
        });
    }
    let agreed_gfids: BTreeSet<Gfid> = agreed.values().map(|(e, _)| e.gfid).collect();
    for &s in st.stale {
        plan_sink(st, s, &agreed, &disputed, &agreed_gfids, &mut plan);
    }
    plan
}

/// The plan for one stale copy `s`.
fn plan_sink(
    st: &EntryState<'_>,
    s: usize,
    agreed: &BTreeMap<String, (Entry, usize)>,
    disputed: &BTreeSet<String>,
    agreed_gfids: &BTreeSet<Gfid>,
    plan: &mut Plan,
) {
    let sink = &st.listings[s];
    let mut p = SinkPlan {
        s,
        sink,
        blamed: st.blamed[s],
        held: sink.values().map(|e| e.gfid).collect(),
        moved: BTreeSet::new(),
        first: Vec::new(),
        last: Vec::new(),
        unhealed: Vec::new(),
    };
    p.held.extend(st.held_elsewhere[s].iter().copied());
    for (name, (e, source)) in agreed {
        let replaces = match sink.get(name) {
            Some(x) if x == e => continue,
            Some(x) if !p.blamed || !replaceable(x, agreed_gfids) => {
                p.unhealed.push(Unhealed::SplitBrain {
                    name: name.clone(),
                    why: mismatch(s, x, e, p.blamed),
                });
                continue;
            }
            Some(_) => true,
            None => false,
        };
        p.add(name, *e, *source, replaces);
    }
    let removals = p.removals(agreed, disputed);
    plan.unhealed.append(&mut p.unhealed);
    plan.actions.extend(p.first);
    plan.actions.extend(removals);
    plan.actions.extend(p.last);
}

/// May the sink's `x`, under a name the good copies give another object,
/// be replaced? A file may (its data lives on if it has another name; if
/// not, it is made again from a good copy); a directory only when it is
/// moved to another name of this directory, never removed for this.
fn replaceable(x: &Entry, agreed_gfids: &BTreeSet<Gfid>) -> bool {
    x.kind != FileKind::Directory || agreed_gfids.contains(&x.gfid)
}

fn mismatch(s: usize, x: &Entry, e: &Entry, blamed: bool) -> String {
    let why = if blamed {
        "it is a directory, which is never removed for this".to_string()
    } else {
        format!("nothing shows that brick {s} missed entry operations here")
    };
    format!(
        "brick {s} holds {} here and the good copies hold {}; {why}",
        x.gfid, e.gfid
    )
}

/// The plan for one stale copy as it is built.
struct SinkPlan<'a> {
    s: usize,
    sink: &'a Listing,
    blamed: bool,
    /// The gfids the sink holds (here, elsewhere, or made by this plan).
    held: BTreeSet<Gfid>,
    /// Directories of the sink this plan moves to another name here.
    moved: BTreeSet<Gfid>,
    /// Names added to free slots (before the removals).
    first: Vec<Action>,
    /// Names added where a removed name was (after the removals).
    last: Vec<Action>,
    unhealed: Vec<Unhealed>,
}

impl SinkPlan<'_> {
    /// Give the sink the good copies' `name` -> `e` (held by `source`);
    /// `replaces`: the sink has another object under that name.
    fn add(&mut self, name: &str, e: Entry, source: usize, replaces: bool) {
        let (s, name) = (self.s, name.to_string());
        let action = if e.kind == FileKind::Directory {
            let old = self.sink.iter().find(|(n, x)| **x == e && **n != name);
            match old {
                // Moved onto a name the sink still uses (a swap): not
                // built; left for a later heal rather than risk a loss.
                Some(_) if replaces => {
                    self.unhealed.push(Unhealed::LeftAlone {
                        name,
                        why: format!("brick {s} holds another directory under this name"),
                    });
                    return;
                }
                Some((from, _)) => {
                    self.moved.insert(e.gfid);
                    let from = from.clone();
                    Action::Rename {
                        sink: s,
                        from,
                        name,
                        gfid: e.gfid,
                    }
                }
                None if self.held.contains(&e.gfid) => {
                    self.unhealed.push(Unhealed::LeftAlone {
                        name,
                        why: format!("brick {s} holds directory {} in another directory; that directory's heal removes it there first", e.gfid),
                    });
                    return;
                }
                None => Action::Create {
                    sink: s,
                    name,
                    entry: e,
                    source,
                },
            }
        } else if self.held.contains(&e.gfid) {
            Action::Link {
                sink: s,
                name,
                gfid: e.gfid,
            }
        } else {
            Action::Create {
                sink: s,
                name,
                entry: e,
                source,
            }
        };
        self.held.insert(e.gfid);
        if replaces {
            &mut self.last
        } else {
            &mut self.first
        }
        .push(action);
    }

    /// The sink's names that go: those no good copy has with that gfid,
    /// when the sink is blamed; otherwise they are left alone.
    fn removals(
        &mut self,
        agreed: &BTreeMap<String, (Entry, usize)>,
        disputed: &BTreeSet<String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for (name, x) in self.sink {
            let kept = agreed.get(name).is_some_and(|(e, _)| e == x);
            if kept || disputed.contains(name) || self.moved.contains(&x.gfid) {
                continue;
            }
            if agreed.contains_key(name) && !self.last.iter().any(|a| action_name(a) == name) {
                // A mismatch reported as split-brain or left alone above.
                continue;
            }
            if self.blamed {
                out.push(Action::Remove {
                    sink: self.s,
                    name: name.clone(),
                    entry: *x,
                });
            } else {
                self.unhealed.push(Unhealed::LeftAlone {
                    name: name.clone(),
                    why: format!("only brick {} has it and nothing shows that brick {} missed entry operations here; not removed without that evidence", self.s, self.s),
                });
            }
        }
        out
    }
}

fn action_name(a: &Action) -> &str {
    match a {
        Action::Create { name, .. }
        | Action::Link { name, .. }
        | Action::Rename { name, .. }
        | Action::Remove { name, .. } => name,
    }
}

/// The regular files of the arbiter's listing that no data brick holds,
/// by this name or another (`held_elsewhere`), when the arbiter is the
/// only good copy of the directory: their data is on no copy that can
/// serve it, so they are taken off the arbiter rather than made again
/// empty (or left pending for ever) on the data bricks.
///
/// Why that loses nothing: a write or a create is acknowledged only with
/// a data brick among the copies that took it (the arbiter alone is never
/// a witness), so a file no data brick holds was never acknowledged, or
/// was since removed or renamed away by operations the arbiter missed.
///
/// Regression `ARBITER_ONLY_FILE_NEVER_HEALED` (cluster seed 187): a
/// create that reached only the arbiter left the arbiter as the only good
/// copy of its directory, and entry heal refused for ever to make the file
/// (no data source); fixed by this rule.
pub fn dataless_on_arbiter(
    listings: &[Listing],
    arbiter: usize,
    good: &[usize],
    held_elsewhere: &[BTreeSet<Gfid>],
) -> Vec<(String, Entry)> {
    if good != [arbiter] {
        return Vec::new();
    }
    let data = |i: usize| i != arbiter;
    listings[arbiter]
        .iter()
        .filter(|(_, e)| e.kind == FileKind::Regular)
        .filter(|(_, e)| {
            !(0..listings.len()).filter(|&i| data(i)).any(|i| {
                listings[i].values().any(|x| x.gfid == e.gfid)
                    || held_elsewhere.get(i).is_some_and(|h| h.contains(&e.gfid))
            })
        })
        .map(|(n, e)| (n.clone(), *e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileKind = FileKind::Regular;
    const D: FileKind = FileKind::Directory;

    fn e(n: u128, kind: FileKind) -> Entry {
        Entry {
            gfid: Gfid::from_u128(n),
            kind,
        }
    }

    fn listing(names: &[(&str, Entry)]) -> Listing {
        names.iter().map(|(n, e)| (n.to_string(), *e)).collect()
    }

    #[test]
    fn files_only_the_arbiter_holds_when_it_alone_is_good() {
        let (f, g, d) = (e(1, F), e(2, F), e(3, D));
        let arb = listing(&[("f", f), ("g", g), ("d", d)]);
        let none = BTreeSet::new();
        let g_moved: BTreeSet<Gfid> = [g.gfid].into();
        #[rustfmt::skip]
        type Row<'a> = (&'a str, Vec<Listing>, &'a [usize], Vec<BTreeSet<Gfid>>, Vec<&'a str>);
        let table: Vec<Row> = vec![
            // (case, listings, good, held elsewhere, taken off the arbiter)
            (
                "no data brick holds f or g",
                vec![listing(&[]), listing(&[]), arb.clone()],
                &[2],
                vec![none.clone(), none.clone(), none.clone()],
                vec!["f", "g"],
            ),
            (
                "a data brick holds f under this name",
                vec![listing(&[("f", f)]), listing(&[]), arb.clone()],
                &[2],
                vec![none.clone(), none.clone(), none.clone()],
                vec!["g"],
            ),
            (
                "a data brick holds f under another name",
                vec![listing(&[]), listing(&[("h", f)]), arb.clone()],
                &[2],
                vec![none.clone(), none.clone(), none.clone()],
                vec!["g"],
            ),
            (
                "g was moved to another directory on a data brick",
                vec![listing(&[]), listing(&[]), arb.clone()],
                &[2],
                vec![none.clone(), g_moved.clone(), none.clone()],
                vec!["f"],
            ),
            (
                "a data brick is good too",
                vec![listing(&[]), listing(&[]), arb.clone()],
                &[1, 2],
                vec![none.clone(), none.clone(), none.clone()],
                vec![],
            ),
            (
                "the arbiter is not good",
                vec![listing(&[]), listing(&[]), arb.clone()],
                &[0, 1],
                vec![none.clone(), none.clone(), none.clone()],
                vec![],
            ),
        ];
        for (case, listings, good, held, want) in table {
            let got: Vec<String> = dataless_on_arbiter(&listings, 2, good, &held)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    /// Bricks 0 and 1 good, brick 2 stale; `blamed` says whether brick
    /// 2 is blamed for entries.
    fn run(good: &[(&str, Entry)], sink: &[(&str, Entry)], blamed: bool) -> Plan {
        run_with(good, good, sink, blamed, &[])
    }

    fn run_with(
        a: &[(&str, Entry)],
        b: &[(&str, Entry)],
        sink: &[(&str, Entry)],
        blamed: bool,
        elsewhere: &[Gfid],
    ) -> Plan {
        let listings = [listing(a), listing(b), listing(sink)];
        let held = [
            BTreeSet::new(),
            BTreeSet::new(),
            elsewhere.iter().copied().collect(),
        ];
        plan(&EntryState {
            listings: &listings,
            good: &[0, 1],
            stale: &[2],
            blamed: &[false, false, blamed],
            held_elsewhere: &held,
        })
    }

    fn create(name: &str, entry: Entry) -> Action {
        Action::Create {
            sink: 2,
            name: name.into(),
            entry,
            source: 0,
        }
    }

    fn remove(name: &str, entry: Entry) -> Action {
        Action::Remove {
            sink: 2,
            name: name.into(),
            entry,
        }
    }

    fn link(name: &str, gfid: Gfid) -> Action {
        Action::Link {
            sink: 2,
            name: name.into(),
            gfid,
        }
    }

    /// Each case: what it is, the plan, the actions it must hold in order,
    /// and how many names it must leave unhealed (none a split-brain).
    fn check(cases: Vec<(&str, Plan, Vec<Action>, usize)>) {
        for (what, got, want, unhealed) in cases {
            assert_eq!(got.actions, want, "{what}");
            assert_eq!(got.unhealed.len(), unhealed, "{what}: {:?}", got.unhealed);
            assert!(!got.is_split_brain(), "{what}");
        }
    }

    /// Names made and removed while a brick was down.
    #[test]
    fn entry_plans_for_made_and_removed_names() {
        let (a, b) = (e(1, F), e(2, F));
        let cases: Vec<(&str, Plan, Vec<Action>, usize)> = vec![
            (
                "created while down: made on the sink with the same gfid",
                run(&[("a", a), ("b", b)], &[("a", a)], true),
                vec![create("b", b)],
                0,
            ),
            (
                "removed while down: removed from the blamed sink",
                run(&[("a", a)], &[("a", a), ("b", b)], true),
                vec![remove("b", b)],
                0,
            ),
            (
                "no blame: an extra name is left alone, never removed",
                run(&[("a", a)], &[("a", a), ("b", b)], false),
                vec![],
                1,
            ),
            (
                "no blame: a missing name is still made (adding loses nothing)",
                run(&[("a", a), ("b", b)], &[("a", a)], false),
                vec![create("b", b)],
                0,
            ),
        ];
        check(cases);
    }

    /// Renames, links and subtrees.
    #[test]
    fn entry_plans_for_moved_and_linked_names() {
        let (a, b) = (e(1, F), e(2, F));
        let dir = e(9, D);
        let cases: Vec<(&str, Plan, Vec<Action>, usize)> = vec![
            (
                "renamed while down: linked under the new name, then the old removed",
                run(&[("new", a)], &[("old", a)], true),
                vec![link("new", a.gfid), remove("old", a)],
                0,
            ),
            (
                "hard link made while down: a link, not a second object",
                run(&[("a", a), ("h", a)], &[("a", a)], true),
                vec![link("h", a.gfid)],
                0,
            ),
            (
                "file and its hard link both made while down: one object, one link",
                run(&[("a", a), ("h", a)], &[], true),
                vec![create("a", a), link("h", a.gfid)],
                0,
            ),
            (
                "moved in from another directory: linked, the data kept",
                run_with(&[("a", a)], &[("a", a)], &[], true, &[a.gfid]),
                vec![link("a", a.gfid)],
                0,
            ),
            (
                "removed and made again under the same name: old removed, new made after",
                run(&[("a", b)], &[("a", a)], true),
                vec![remove("a", a), create("a", b)],
                0,
            ),
            (
                "directory renamed while down: moved, not removed and made anew",
                run(&[("d2", dir)], &[("d1", dir)], true),
                vec![Action::Rename {
                    sink: 2,
                    from: "d1".into(),
                    name: "d2".into(),
                    gfid: dir.gfid,
                }],
                0,
            ),
            (
                "subtree made while down: the directory is made (and then healed itself)",
                run(&[("d", dir), ("a", a)], &[("a", a)], true),
                vec![create("d", dir)],
                0,
            ),
            (
                "directory held elsewhere on the sink: left for its old parent's heal",
                run_with(&[("d", dir)], &[("d", dir)], &[], true, &[dir.gfid]),
                vec![],
                1,
            ),
            (
                "directories swapped while down: left alone, nothing removed",
                run(
                    &[("x", dir), ("y", e(10, D))],
                    &[("x", e(10, D)), ("y", dir)],
                    true,
                ),
                vec![],
                2,
            ),
            (
                "clean: nothing to do",
                run(&[("a", a), ("d", dir)], &[("a", a), ("d", dir)], true),
                vec![],
                0,
            ),
        ];
        check(cases);
        let p = run(&[("d", dir), ("a", a)], &[("a", a)], true);
        assert_eq!(p.new_directories(), vec![(2, dir.gfid)]);
    }

    #[test]
    fn split_brains_are_reported_not_guessed() {
        let (a, b) = (e(1, F), e(2, F));
        let (d1, d2) = (e(8, D), e(9, D));
        let cases: Vec<(&str, Plan, Vec<Action>)> = vec![
            (
                "gfid mismatch and no good copy blames the sink",
                run(&[("a", a)], &[("a", b)], false),
                vec![],
            ),
            (
                "same gfid, another kind on the sink, and no blame",
                run(&[("a", a)], &[("a", e(1, FileKind::Fifo))], false),
                vec![],
            ),
            (
                "the good copies disagree on the gfid",
                run_with(&[("a", a)], &[("a", b)], &[], true, &[]),
                vec![],
            ),
            (
                "the good copies disagree whether the name exists",
                run_with(&[("a", a)], &[], &[("a", a)], true, &[]),
                vec![],
            ),
            (
                "a different directory under the name on the sink: never removed",
                run(&[("d", d1)], &[("d", d2)], true),
                vec![],
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got.actions, want, "{what}");
            assert!(got.is_split_brain(), "{what}: {got:?}");
        }
        // A split-brain name does not stop the others from healing.
        let p = run_with(&[("a", a), ("b", b)], &[("b", b)], &[], true, &[]);
        assert_eq!(p.actions, vec![create("b", b)]);
        assert!(p.is_split_brain());
    }
}
