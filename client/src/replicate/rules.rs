//! When a replicate transaction may go ahead, and when it may be
//! acknowledged: pure functions over what the bricks answered, called by
//! the transaction in [`super`] at each phase.
//!
//! Each rule below was forced by the `client_writes` simulator scenario
//! (commit fa76361): without it, a seed ended in split-brain or lost an
//! acknowledged write. ARCHITECTURE.md lists them under "Rules the
//! simulator forced".

use crate::afr::{self, BrickView, Kind, Quorum, Verdict};
use mortar_proto::Errno;

/// Whether a transaction may touch a changed object (the file, or a
/// parent directory), judged from the views of the locked bricks before
/// the pre-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; `good` are the good copies as the locked bricks see them
    /// (`None`: no brick could be asked, nothing to judge).
    Admit { good: Option<Vec<usize>> },
    /// Too few bricks answered to judge (EROFS): `answered` per brick.
    TooFewAnswered { answered: Vec<bool> },
    /// A copy is dirty from an unfinished transaction and not every brick
    /// answered (EIO until heal): the dirty copies, and those not asked.
    InDoubt {
        dirty: Vec<usize>,
        unasked: Vec<usize>,
    },
    /// The copies blame each other (EIO).
    SplitBrain { accused: Vec<usize> },
    /// With an arbiter, no good data copy is locked: writing now would
    /// leave the arbiter as the only witness (EROFS).
    ArbiterOnlyWitness,
}

/// Judge one changed object. `locked` marks the bricks holding the
/// transaction's lock; `views` are what each answered (`None`: did not).
///
/// Rules, in order: the good copies are judged only from a quorum of
/// answering bricks (a brick that did not answer may hold the blame that
/// shows another copy stale); a data or metadata write is refused while a
/// copy is dirty and not every brick answered ([`in_doubt`]); copies that
/// blame each other refuse; an arbiter set must write to a good data copy.
pub fn admit(
    quorum: &Quorum,
    kind: Kind,
    arbiter: Option<usize>,
    locked: &[bool],
    views: &[Option<BrickView>],
) -> Admission {
    debug_assert_eq!(locked.len(), views.len());
    let answered: Vec<bool> = views.iter().map(Option::is_some).collect();
    if !quorum.met(&answered) {
        return Admission::TooFewAnswered { answered };
    }
    if let Some((dirty, unasked)) = in_doubt(kind, views) {
        return Admission::InDoubt { dirty, unasked };
    }
    match afr::examine(views, kind, arbiter) {
        Verdict::SplitBrain { accused } => Admission::SplitBrain { accused },
        v @ Verdict::Sources { .. } => match arbiter {
            Some(a) if !afr::arbiter_allows(locked, &v, a) => Admission::ArbiterOnlyWitness,
            _ => {
                let Verdict::Sources { good, .. } = v else {
                    unreachable!("matched above")
                };
                Admission::Admit { good: Some(good) }
            }
        },
        Verdict::NoneReachable => Admission::Admit { good: None },
    }
}

/// A data or metadata transaction must not trust a partial view left
/// partly unrecorded: a copy still marked dirty (an earlier transaction
/// never finished its post-op there; none can be in flight, as the
/// writer holds the file's whole lock) may be missing the blame that
/// would show another copy stale. With every brick answering, all
/// recorded blame is in view. `Some((dirty, unasked))` refuses. Entry
/// operations lock one name, so other names' transactions may be in
/// flight on the parent: they are not judged by this.
pub fn in_doubt(kind: Kind, views: &[Option<BrickView>]) -> Option<(Vec<usize>, Vec<usize>)> {
    let unasked: Vec<usize> = (0..views.len()).filter(|i| views[*i].is_none()).collect();
    if kind == Kind::Entry || unasked.is_empty() {
        return None;
    }
    let k = kind as usize;
    let dirty: Vec<usize> = (0..views.len())
        .filter(|i| views[*i].as_ref().is_some_and(|v| v.dirty[k] > 0))
        .collect();
    (!dirty.is_empty()).then_some((dirty, unasked))
}

/// The pre-op (dirty += 1) must reach a quorum before the operation is
/// sent; otherwise its marks are taken back and the write refused
/// (EROFS). `marked` are the bricks that took it, out of `n`.
pub fn pre_op_admits(quorum: &Quorum, n: usize, marked: &[usize]) -> bool {
    quorum.met(&mask(n, marked))
}

/// In-flight split-brain: the operation worked (on `ok`) only on copies
/// that were already stale for some changed object whose good copies are
/// `sources`. Blaming the good copies from there would leave every copy
/// accused, so nothing is recorded and the write fails (EIO). Returns the
/// good copies it missed.
pub fn in_flight_split_brain<'a>(sources: &'a [Vec<usize>], ok: &[usize]) -> Option<&'a [usize]> {
    if ok.is_empty() {
        return None;
    }
    sources
        .iter()
        .find(|good| !good.iter().any(|i| ok.contains(i)))
        .map(Vec::as_slice)
}

/// Whether the good copies of some changed directory (`sources`, one list
/// per object) answered an entry operation differently: one took it and
/// another refused it for what its namespace holds (ENOENT, EEXIST,
/// ENOTEMPTY, ENOTDIR, EISDIR). `outcomes`: per brick asked, `None` when
/// it worked, else its errno. The copies then disagreed about the name
/// before the operation, and nothing shows which was right: blaming the
/// one that refused would make the other a source for a name it may have
/// wrongly, and can accuse every copy. Such an operation records no blame;
/// its dirty marks stay for heal, and it fails (EIO).
///
/// Regression (cluster seed 649 of an earlier generator): a rename took on
/// s1 just before s1 lost power and not on s2; both were left dirty with
/// no blame between them, and an unlink of the old name through s1 and s2
/// (the arbiter cut off) worked on s2 only; s2 blamed s1 and the arbiter,
/// and with the arbiter blaming s2 every copy was accused: a split-brain
/// under quorum. Fixed by this rule.
pub fn good_copies_disagree(sources: &[Vec<usize>], outcomes: &[(usize, Option<Errno>)]) -> bool {
    let namespace = |e: Errno| {
        [
            Errno::ENOENT,
            Errno::EEXIST,
            Errno::ENOTEMPTY,
            Errno::ENOTDIR,
            Errno::EISDIR,
        ]
        .contains(&e)
    };
    let outcome = |i: usize| outcomes.iter().find(|(b, _)| *b == i).map(|(_, o)| *o);
    sources.iter().any(|good| {
        let took = good.iter().any(|&i| outcome(i) == Some(None));
        let refused = good
            .iter()
            .any(|&i| matches!(outcome(i), Some(Some(e)) if namespace(e)));
        took && refused
    })
}

/// How a transaction ends once its post-op ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Acknowledge: a quorum took the operation and recorded its outcome.
    Acknowledge,
    /// No brick took it (its error is the answer).
    NoneTook,
    /// Too few bricks took it to meet quorum (EIO, pending heal).
    TooFewTook,
    /// It worked on a quorum, but its post-op was recorded on too few: a
    /// later quorum might not see the blame it left (EIO, pending heal).
    TooFewRecorded,
}

/// Acknowledge only what a quorum both took (`ok`) and recorded
/// (`recorded`, per brick): any later transaction sees some quorum of
/// bricks, and so the blame this one left.
pub fn acknowledge(quorum: &Quorum, n: usize, ok: &[usize], recorded: &[bool]) -> Ack {
    debug_assert_eq!(recorded.len(), n);
    if ok.is_empty() {
        Ack::NoneTook
    } else if !quorum.met(&mask(n, ok)) {
        Ack::TooFewTook
    } else if !quorum.met(recorded) {
        Ack::TooFewRecorded
    } else {
        Ack::Acknowledge
    }
}

/// May a read trust the copies' counters? Only when the bricks that
/// answered for them meet every write quorum the rule allows: every
/// acknowledged write left its blame on such a quorum, so an answering
/// set that meets them all sees it, while a set that misses one (the
/// copies a partition or crash left reachable) may all be stale without
/// knowing. `fixed C` of `n` needs `n - C + 1` answers; `auto` needs
/// `ceil(n / 2)` of an odd set, and of an even one half including the
/// first brick or more than half. Without a quorum rule (`none`, or
/// `fixed 1`) any answer is trusted, as the volume was configured to
/// allow.
///
/// Regression (cluster scenario, `regressions::STALE_READ_FROM_A_MINORITY`):
/// with s1 down and s3 cut off, a read was served by s2, which had missed
/// an acknowledged write while it was down, and returned the older bytes.
pub fn read_quorum_met(quorum: &Quorum, answered: &[bool]) -> bool {
    let n = answered.len();
    let k = answered.iter().filter(|a| **a).count();
    if k == 0 {
        return false;
    }
    match *quorum {
        Quorum::None => true,
        Quorum::Fixed(c) => {
            let c = c.clamp(1, n.max(1));
            c == 1 || k > n - c
        }
        Quorum::Auto if n % 2 == 1 => k >= n - n / 2,
        Quorum::Auto => (answered[0] && k >= n / 2) || k > n / 2,
    }
}

/// `n` flags, set for the indices in `idx`.
pub fn mask(n: usize, idx: &[usize]) -> Vec<bool> {
    (0..n).map(|i| idx.contains(&i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn good_copies_that_answer_an_entry_operation_differently() {
        let (ok, noent, eio) = (None, Some(Errno::ENOENT), Some(Errno::EIO));
        #[rustfmt::skip]
        type Row<'a> = (&'a str, Vec<Vec<usize>>, Vec<(usize, Option<Errno>)>, bool);
        let table: [Row; 6] = [
            (
                "seed 649: one good copy took it, the other had no such name",
                vec![vec![0, 1]],
                vec![(0, noent), (1, ok)],
                true,
            ),
            (
                "every good copy took it",
                vec![vec![0, 1]],
                vec![(0, ok), (1, ok)],
                false,
            ),
            (
                "every good copy refused alike",
                vec![vec![0, 1]],
                vec![(0, noent), (1, noent)],
                false,
            ),
            (
                "only a stale copy refused",
                vec![vec![0]],
                vec![(0, ok), (1, noent)],
                false,
            ),
            (
                "a good copy failed for want of its disk",
                vec![vec![0, 1]],
                vec![(0, eio), (1, ok)],
                false,
            ),
            (
                "rename: the second parent's good copies disagree",
                vec![vec![0, 1, 2], vec![1, 2]],
                vec![(0, ok), (1, Some(Errno::EEXIST)), (2, ok)],
                true,
            ),
        ];
        for (case, sources, outcomes, want) in table {
            assert_eq!(good_copies_disagree(&sources, &outcomes), want, "{case}");
        }
    }

    #[test]
    fn reads_trust_a_quorum_of_answers() {
        for (what, quorum, answered, want) in [
            ("all answered", Quorum::Auto, vec![true, true, true], true),
            ("a majority", Quorum::Auto, vec![false, true, true], true),
            (
                "a lone copy of three",
                Quorum::Auto,
                vec![false, true, false],
                false,
            ),
            (
                "replica 2: the first brick",
                Quorum::Auto,
                vec![true, false],
                true,
            ),
            (
                "replica 2: not the first alone",
                Quorum::Auto,
                vec![false, true],
                false,
            ),
            (
                "fixed 2 of 3",
                Quorum::Fixed(2),
                vec![true, false, false],
                false,
            ),
            (
                "fixed 2 of 3, two answers",
                Quorum::Fixed(2),
                vec![true, false, true],
                true,
            ),
            (
                "fixed 3 of 3: every write reached every copy",
                Quorum::Fixed(3),
                vec![false, true, false],
                true,
            ),
            (
                "replica 4: half with the first",
                Quorum::Auto,
                vec![true, true, false, false],
                true,
            ),
            (
                "replica 4: half without the first",
                Quorum::Auto,
                vec![false, true, true, false],
                false,
            ),
            (
                "fixed 1 trusts any",
                Quorum::Fixed(1),
                vec![false, false, true],
                true,
            ),
            (
                "none trusts any",
                Quorum::None,
                vec![false, true, false],
                true,
            ),
            (
                "none answered",
                Quorum::None,
                vec![false, false, false],
                false,
            ),
        ] {
            assert_eq!(read_quorum_met(&quorum, &answered), want, "{what}");
        }
    }

    const Z: [i64; 3] = [0, 0, 0];
    /// A data blame or dirty mark of one.
    const D: [i64; 3] = [1, 0, 0];

    fn v(blames: [[i64; 3]; 3], dirty: [i64; 3]) -> Option<BrickView> {
        Some(BrickView {
            blames: blames.to_vec(),
            dirty,
        })
    }

    fn clean() -> Option<BrickView> {
        v([Z, Z, Z], Z)
    }

    const ALL: [bool; 3] = [true, true, true];

    /// One row of an admission table: `admit` on a 3-brick set with
    /// automatic quorum.
    fn check(
        what: &str,
        (kind, arbiter, locked): (Kind, Option<usize>, [bool; 3]),
        views: Vec<Option<BrickView>>,
        want: Admission,
    ) {
        assert_eq!(
            admit(&Quorum::Auto, kind, arbiter, &locked, &views),
            want,
            "{what}"
        );
    }

    fn admit_all(good: &[usize]) -> Admission {
        Admission::Admit {
            good: Some(good.to_vec()),
        }
    }

    const DATA: (Kind, Option<usize>, [bool; 3]) = (Kind::Data, None, ALL);

    #[test]
    fn admission_table_quorum_and_doubt() {
        let all_clean = vec![clean(), clean(), clean()];
        check("all clean", DATA, all_clean, admit_all(&[0, 1, 2]));
        let one_down = vec![v([Z, Z, D], Z), v([Z, Z, D], Z), None];
        let locked = (Kind::Data, None, [true, true, false]);
        check("one down, blamed", locked, one_down, admit_all(&[0, 1]));
        let answered = vec![true, false, false];
        let lone = vec![clean(), None, None];
        check(
            "one answered",
            DATA,
            lone,
            Admission::TooFewAnswered { answered },
        );
        let (dirty, unasked) = (vec![0], vec![2]);
        let doubt = vec![v([Z, Z, Z], D), clean(), None];
        check(
            "dirty, one silent",
            DATA,
            doubt.clone(),
            Admission::InDoubt { dirty, unasked },
        );
        let meta = (Kind::Metadata, None, ALL);
        check(
            "dirty data, metadata write",
            meta,
            doubt,
            admit_all(&[0, 1]),
        );
        let all_answer = vec![v([Z, Z, Z], D), clean(), clean()];
        check(
            "dirty, all answered",
            DATA,
            all_answer,
            admit_all(&[0, 1, 2]),
        );
        let entry = (Kind::Entry, None, ALL);
        let entry_dirty = vec![v([Z, Z, Z], [0, 0, 1]), clean(), None];
        check(
            "entry ops are not judged in doubt",
            entry,
            entry_dirty,
            admit_all(&[0, 1]),
        );
    }

    #[test]
    fn admission_table_blame() {
        let mutual = vec![v([Z, D, Z], Z), v([D, Z, Z], Z), None];
        let accused = vec![0, 1];
        check(
            "mutual blame",
            DATA,
            mutual,
            Admission::SplitBrain { accused },
        );
        // The arbiter breaks the tie: 0 is good.
        let tie = vec![v([Z, D, Z], Z), v([D, Z, Z], Z), v([Z, D, Z], Z)];
        let arb = (Kind::Data, Some(2), ALL);
        check("arbiter tie-break", arb, tie, admit_all(&[0]));
        let arb = (Kind::Data, Some(2), [false, true, true]);
        let views = vec![v([Z, D, Z], Z), clean(), v([Z, D, Z], Z)];
        check(
            "good copy not locked",
            arb,
            views,
            Admission::ArbiterOnlyWitness,
        );
    }

    /// Postmortem (client_writes, fa76361): a transaction judged the good
    /// copies from one answering brick that lacked the blame another held,
    /// wrote to a stale copy as if good, and split the file; now fewer
    /// than a quorum of answers refuses (EROFS) before the pre-op.
    #[test]
    fn regression_good_copies_are_judged_only_from_a_quorum_of_answers() {
        // Brick 0 is stale but unaware; 1 (which blames it) is silent.
        let views = vec![clean(), None, None];
        let got = admit(&Quorum::Auto, Kind::Data, None, &ALL, &views);
        assert!(matches!(got, Admission::TooFewAnswered { .. }), "{got:?}");
    }

    /// Postmortem (client_writes, fa76361): a pre-op that reached only a
    /// minority left the write running on too few bricks; now it must
    /// reach a quorum, else its marks are taken back (EROFS).
    #[test]
    fn regression_pre_op_must_reach_a_quorum() {
        let q = Quorum::Auto;
        assert!(pre_op_admits(&q, 3, &[0, 1]));
        assert!(pre_op_admits(&q, 3, &[0, 1, 2]));
        assert!(!pre_op_admits(&q, 3, &[2]));
        assert!(!pre_op_admits(&q, 3, &[]));
        assert!(pre_op_admits(&Quorum::Fixed(1), 3, &[2]));
    }

    /// Postmortem (client_writes, fa76361): a copy left dirty by a write
    /// cut short lacked the blame that showed another copy stale; with
    /// the blaming brick down the next write trusted the stale copy and
    /// split the file. Now a dirty copy with any brick silent refuses.
    #[test]
    fn regression_a_dirty_copy_with_a_brick_silent_is_in_doubt() {
        // 0 dirty, 1 clean, 2 silent (may hold the blame on 1).
        let views = vec![v([Z, Z, Z], D), clean(), None];
        assert_eq!(in_doubt(Kind::Data, &views), Some((vec![0], vec![2])));
        // The same counters with every brick answering: nothing in doubt.
        let views = vec![v([Z, Z, Z], D), clean(), clean()];
        assert_eq!(in_doubt(Kind::Data, &views), None);
    }

    /// Postmortem (client_writes, fa76361): a write that failed on every
    /// good copy and worked on a stale one blamed the good copies from
    /// there, leaving every copy accused; now nothing is recorded (EIO).
    #[test]
    fn regression_in_flight_split_brain_records_nothing() {
        let sources = vec![vec![0, 1]];
        assert_eq!(in_flight_split_brain(&sources, &[2]), Some(&[0, 1][..]));
        assert_eq!(in_flight_split_brain(&sources, &[1, 2]), None);
        assert_eq!(in_flight_split_brain(&sources, &[]), None, "nothing worked");
        // A rename changes two directories: missing either's good copies
        // is enough.
        let sources = vec![vec![0, 1, 2], vec![2]];
        assert_eq!(in_flight_split_brain(&sources, &[0, 1]), Some(&[2][..]));
    }

    /// Postmortem (client_writes, fa76361): a write acknowledged after its
    /// post-op reached one brick left blame a later quorum could not see,
    /// and that quorum read the stale copy; now only a post-op recorded on
    /// a quorum acknowledges.
    #[test]
    fn regression_acknowledge_only_a_post_op_recorded_on_a_quorum() {
        let q = Quorum::Auto;
        let table = [
            (vec![0, 1, 2], [true, true, true], Ack::Acknowledge),
            (vec![0, 1], [true, true, false], Ack::Acknowledge),
            (vec![0, 1], [true, false, false], Ack::TooFewRecorded),
            (vec![0], [true, false, false], Ack::TooFewTook),
            (vec![], [false, false, false], Ack::NoneTook),
        ];
        for (ok, recorded, want) in table {
            assert_eq!(
                acknowledge(&q, 3, &ok, &recorded),
                want,
                "ok {ok:?} recorded {recorded:?}"
            );
        }
    }

    proptest! {
        /// Whatever the bricks answer, admitting a data write means a
        /// quorum answered and nothing is in doubt; and acknowledging
        /// means a quorum took and recorded it.
        #[test]
        fn admitted_and_acknowledged_writes_had_a_quorum(
            answered in proptest::collection::vec(any::<bool>(), 3),
            dirty in proptest::collection::vec(0i64..2, 3),
            blame in proptest::collection::vec(0i64..2, 9),
            recorded in proptest::collection::vec(any::<bool>(), 3),
            ok in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let views: Vec<Option<BrickView>> = (0..3)
                .map(|i| answered[i].then(|| BrickView {
                    blames: (0..3).map(|j| [if i == j { 0 } else { blame[3 * i + j] }, 0, 0]).collect(),
                    dirty: [dirty[i], 0, 0],
                }))
                .collect();
            let q = Quorum::Auto;
            if let Admission::Admit { .. } = admit(&q, Kind::Data, None, &ALL, &views) {
                prop_assert!(q.met(&answered));
                prop_assert!(answered.iter().all(|a| *a) || (0..3).all(|i| !answered[i] || dirty[i] == 0));
            }
            let ok: Vec<usize> = (0..3).filter(|i| ok[*i]).collect();
            if acknowledge(&q, 3, &ok, &recorded) == Ack::Acknowledge {
                prop_assert!(q.met(&mask(3, &ok)) && q.met(&recorded));
            }
        }
    }
}
