//! Split-brain resolution policies for replicate sets, as plain functions:
//! which copy of a file becomes the only good one when its copies blame
//! each other ([`choose`]), and the changelog rewrite that makes it so
//! ([`rewrite_plan`]). The procedure that applies them, under the heal
//! claim and the whole-file lock, is [`crate::resolve`].
//!
//! The policies (`kind` is the counter in split-brain: data or metadata):
//!
//! * `bigger-file` (CLI): the data copy with the largest size. Data only
//!   (a size says nothing about mode or owner): a metadata split-brain is
//!   refused, use `source-brick`.
//! * `latest-mtime` (CLI): the data copy with the latest mtime. Data only.
//! * `source-brick B` (CLI): brick B, whatever it holds. For data it must
//!   not be the arbiter.
//! * `cluster.favorite-child-policy size`: as `bigger-file`.
//! * `... ctime` / `... mtime`: the copy with the latest ctime / mtime,
//!   for data and metadata alike.
//! * `... majority`: let `n` be the number of bricks of the set (the
//!   arbiter included: its changelog is a witness). A copy's supporters
//!   are the copies that do not blame it for `kind` (itself included). A
//!   copy is a majority copy when its supporters are more than `n / 2`.
//!   The source is the majority copy with the most supporters; if several
//!   have as many, they must not blame one another (they are one side,
//!   and no changelog says they differ), and the lowest brick is taken;
//!   if two of them blame each other, or there is no majority copy, the
//!   policy refuses. So a replica 2 set never has a majority in
//!   split-brain (each copy has one supporter of two), nor the two data
//!   bricks of an arbiter set when the arbiter blames both or neither.
//!
//! For data the arbiter is never a source (it holds no data); for
//! metadata it is a copy like any other, as [`afr::examine`] treats it.
//!
//! Ties are never broken by a guess: when the best copies by size or time
//! are equal, the policy refuses and says which bricks tie (as the
//! original system does: "no bigger file"). The file stays in split-brain
//! until the operator names a source (`source-brick`). The one
//! deterministic pick is among majority copies that agree (lowest
//! brick), where every candidate is the same side.
//!
//! [`afr::examine`]: mortar_client::afr::examine

use std::fmt;

use mortar_client::afr::{BrickView, Kind};
use mortar_proto::Timespec;

/// `cluster.favorite-child-policy`: how the self-heal daemon resolves a
/// split-brain by itself (`None`: it does not; reads keep getting EIO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FavoriteChild {
    #[default]
    None,
    Size,
    Ctime,
    Mtime,
    Majority,
}

impl FavoriteChild {
    /// The option's value (checked by the option table at `volume set`;
    /// anything else, as in a hand-edited store, is `none`).
    pub fn from_option(value: &str) -> FavoriteChild {
        match value {
            "size" => FavoriteChild::Size,
            "ctime" => FavoriteChild::Ctime,
            "mtime" => FavoriteChild::Mtime,
            "majority" => FavoriteChild::Majority,
            _ => FavoriteChild::None,
        }
    }

    /// The policy it resolves by, if any.
    pub fn policy(self) -> Option<Policy> {
        match self {
            FavoriteChild::None => None,
            FavoriteChild::Size => Some(Policy::Size),
            FavoriteChild::Ctime => Some(Policy::Ctime),
            FavoriteChild::Mtime => Some(Policy::Mtime),
            FavoriteChild::Majority => Some(Policy::Majority),
        }
    }
}

impl fmt::Display for FavoriteChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.policy() {
            Some(p) => p.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// How the source copy is chosen (see the module's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    BiggerFile,
    LatestMtime,
    /// The brick with this index in its set.
    SourceBrick(usize),
    Size,
    Ctime,
    Mtime,
    Majority,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::BiggerFile => f.write_str("bigger-file"),
            Policy::LatestMtime => f.write_str("latest-mtime"),
            Policy::SourceBrick(b) => write!(f, "source-brick {b}"),
            Policy::Size => f.write_str("size"),
            Policy::Ctime => f.write_str("ctime"),
            Policy::Mtime => f.write_str("mtime"),
            Policy::Majority => f.write_str("majority"),
        }
    }
}

/// One copy of the file as the policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyState {
    /// The brick's index in its set.
    pub brick: usize,
    pub size: u64,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub arbiter: bool,
    /// This copy's counter of the kind in split-brain against each brick
    /// of the set (index = brick): "this copy blames brick j".
    pub blames: Vec<i64>,
}

impl CopyState {
    fn blames(&self, brick: usize) -> bool {
        self.blames.get(brick).is_some_and(|b| *b > 0)
    }
}

/// Why a policy picks no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The policy says nothing about this kind (size for metadata).
    NotForKind { policy: Policy, kind: Kind },
    /// The best copies by the policy's measure are equal.
    Tie { policy: Policy, bricks: Vec<usize> },
    /// `source-brick` names no copy of the set.
    NotACopy(usize),
    /// `source-brick` names the arbiter for data.
    ArbiterHoldsNoData(usize),
    /// No copy has more than half of the set's bricks on its side.
    NoMajority,
    /// Majority copies with as many supporters blame one another.
    MajorityDisagrees(Vec<usize>),
    /// No copy could be a source.
    NoCandidates,
}

impl Refusal {
    /// The reason in words, bricks named by `name`.
    pub fn explain(&self, name: &dyn Fn(usize) -> String) -> String {
        let names = |bricks: &[usize]| {
            bricks
                .iter()
                .map(|b| name(*b))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        match self {
            Refusal::NotForKind { policy, kind } => format!(
                "{policy} resolves a data split-brain only, and this is a {} split-brain; use source-brick",
                kind_word(*kind)
            ),
            Refusal::Tie { policy, bricks } => {
                let what = match policy {
                    Policy::BiggerFile | Policy::Size => "no bigger file: the largest copies",
                    Policy::LatestMtime | Policy::Mtime => {
                        "no difference in mtime: the latest copies"
                    }
                    _ => "no latest copy: the latest copies",
                };
                format!("{what} ({}) are equal; use source-brick", names(bricks))
            }
            Refusal::NotACopy(b) => format!("{} holds no copy of the file", name(*b)),
            Refusal::ArbiterHoldsNoData(b) => {
                format!("{} is the arbiter: it holds no data", name(*b))
            }
            Refusal::NoMajority => {
                "no copy is blamed by fewer than half of the set's bricks".to_string()
            }
            Refusal::MajorityDisagrees(bricks) => format!(
                "the majority copies ({}) blame one another",
                names(bricks)
            ),
            Refusal::NoCandidates => "no copy can be a source".to_string(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(&|b| format!("brick {b}")))
    }
}

/// "data", "metadata" or "entry".
pub fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Data => "data",
        Kind::Metadata => "metadata",
        Kind::Entry => "entry",
    }
}

/// The brick whose copy becomes the source of `kind`, by `policy`, among
/// `copies` (every copy of the set, in brick order), or why none is.
pub fn choose(policy: Policy, kind: Kind, copies: &[CopyState]) -> Result<usize, Refusal> {
    let eligible: Vec<&CopyState> = copies
        .iter()
        .filter(|c| kind != Kind::Data || !c.arbiter)
        .collect();
    let data_only = || {
        if kind == Kind::Data {
            Ok(())
        } else {
            Err(Refusal::NotForKind { policy, kind })
        }
    };
    match policy {
        Policy::SourceBrick(b) => {
            let c = copies
                .iter()
                .find(|c| c.brick == b)
                .ok_or(Refusal::NotACopy(b))?;
            if kind == Kind::Data && c.arbiter {
                return Err(Refusal::ArbiterHoldsNoData(b));
            }
            Ok(b)
        }
        Policy::BiggerFile | Policy::Size => {
            data_only()?;
            best_by(policy, &eligible, |c| c.size)
        }
        Policy::LatestMtime => {
            data_only()?;
            best_by(policy, &eligible, |c| c.mtime)
        }
        Policy::Mtime => best_by(policy, &eligible, |c| c.mtime),
        Policy::Ctime => best_by(policy, &eligible, |c| c.ctime),
        Policy::Majority => majority(copies, &eligible),
    }
}

/// The one copy with the greatest `key`; equal greatest ones refuse.
fn best_by<K: Ord + Copy>(
    policy: Policy,
    eligible: &[&CopyState],
    key: impl Fn(&CopyState) -> K,
) -> Result<usize, Refusal> {
    let best = eligible
        .iter()
        .map(|c| key(c))
        .max()
        .ok_or(Refusal::NoCandidates)?;
    let top: Vec<usize> = eligible
        .iter()
        .filter(|c| key(c) == best)
        .map(|c| c.brick)
        .collect();
    match top.as_slice() {
        [one] => Ok(*one),
        _ => Err(Refusal::Tie {
            policy,
            bricks: top,
        }),
    }
}

/// The majority rule of the module's documentation.
fn majority(copies: &[CopyState], eligible: &[&CopyState]) -> Result<usize, Refusal> {
    let n = copies.len();
    let supporters = |c: &CopyState| copies.iter().filter(|d| !d.blames(c.brick)).count();
    let winners: Vec<(&CopyState, usize)> = eligible
        .iter()
        .map(|c| (*c, supporters(c)))
        .filter(|(_, s)| 2 * s > n)
        .collect();
    let most = winners
        .iter()
        .map(|(_, s)| *s)
        .max()
        .ok_or(Refusal::NoMajority)?;
    let top: Vec<&CopyState> = winners
        .iter()
        .filter(|(_, s)| *s == most)
        .map(|(c, _)| *c)
        .collect();
    let disagree = top
        .iter()
        .any(|a| top.iter().any(|b| a.blames(b.brick) || b.blames(a.brick)));
    if disagree {
        return Err(Refusal::MajorityDisagrees(
            top.iter().map(|c| c.brick).collect(),
        ));
    }
    Ok(top.iter().map(|c| c.brick).min().expect("a winner"))
}

/// One durable counter change on one brick: `(blamed brick, by)` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub brick: usize,
    pub changes: Vec<(usize, i32)>,
}

/// The changelog rewrite that makes `src` the only good copy of `kind`:
/// `src` blames every other brick (at least once), then every other brick
/// blames nobody. Each entry is one xattrop, applied durably before the
/// next; within one, the counters are separate xattrs, so a crash may
/// leave any of its changes made and not the others.
///
/// The order is what makes a crash at any point safe:
/// 1. `src` blames every other copy. Raising blame frees nobody, and
///    from then on no other copy can be free of blame again until heal
///    clears `src`'s counters, which it does only after copying from
///    `src`.
/// 2. Each other brick, in brick order, stops blaming `src` (an xattrop
///    of its own), then stops blaming the rest. That order matters for
///    the arbiter: an arbiter that still blamed `src` but no longer some
///    other data copy would make that copy the good one by the
///    arbiter's tie-break (found by the prefix test below).
///
/// So every state on the way is either the same split-brain (every copy
/// still accused) or `src` as the only good copy, which the ordinary heal
/// then finishes from `src`. Clearing the others before step 1 could free
/// a copy nobody chose.
pub fn rewrite_plan(kind: Kind, views: &[BrickView], src: usize) -> Vec<Rewrite> {
    let k = kind as usize;
    let n = views.len();
    let counter = |i: usize, j: usize| views[i].blames.get(j).map_or(0, |b| b[k]);
    let mut plan = Vec::with_capacity(2 * n);
    let mut push = |brick: usize, changes: Vec<(usize, i32)>| {
        if !changes.is_empty() {
            plan.push(Rewrite { brick, changes });
        }
    };
    let blame_all: Vec<(usize, i32)> = (0..n)
        .filter_map(|j| match (j == src, counter(src, j)) {
            (true, 0) => None,
            (true, v) => Some((j, -(v as i32))),
            (false, v) if v < 1 => Some((j, (1 - v) as i32)),
            (false, _) => None,
        })
        .collect();
    push(src, blame_all);
    for i in (0..n).filter(|i| *i != src) {
        let clear = |j: usize| (counter(i, j) != 0).then(|| (j, -(counter(i, j) as i32)));
        push(i, clear(src).into_iter().collect());
        push(i, (0..n).filter(|j| *j != src).filter_map(clear).collect());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use mortar_client::afr::{examine, Verdict};

    fn ts(secs: i64) -> Timespec {
        Timespec { secs, nsecs: 0 }
    }

    /// A copy: brick, size, mtime, ctime, its data blames.
    fn c(brick: usize, size: u64, mtime: i64, ctime: i64, blames: &[i64]) -> CopyState {
        CopyState {
            brick,
            size,
            mtime: ts(mtime),
            ctime: ts(ctime),
            arbiter: false,
            blames: blames.to_vec(),
        }
    }

    fn arb(mut copy: CopyState) -> CopyState {
        copy.arbiter = true;
        copy
    }

    type Case = (
        &'static str,
        Policy,
        Kind,
        Vec<CopyState>,
        Result<usize, Refusal>,
    );

    #[test]
    fn bigger_file_policy() {
        use Policy::*;
        let two = |a: CopyState, b: CopyState| vec![a, b];
        let cases: Vec<Case> = vec![
            (
                "bigger-file: the larger copy",
                BiggerFile,
                Kind::Data,
                two(c(0, 10, 9, 9, &[0, 1]), c(1, 20, 1, 1, &[1, 0])),
                Ok(1),
            ),
            (
                "bigger-file: equal sizes refuse",
                BiggerFile,
                Kind::Data,
                two(c(0, 20, 9, 9, &[0, 1]), c(1, 20, 1, 1, &[1, 0])),
                Err(Refusal::Tie {
                    policy: BiggerFile,
                    bricks: vec![0, 1],
                }),
            ),
            (
                "bigger-file: metadata refused",
                BiggerFile,
                Kind::Metadata,
                two(c(0, 10, 9, 9, &[0, 1]), c(1, 20, 1, 1, &[1, 0])),
                Err(Refusal::NotForKind {
                    policy: BiggerFile,
                    kind: Kind::Metadata,
                }),
            ),
            (
                "bigger-file: a tie below the largest does not matter",
                BiggerFile,
                Kind::Data,
                vec![
                    c(0, 5, 0, 0, &[0, 1, 1]),
                    c(1, 5, 0, 0, &[1, 0, 0]),
                    c(2, 6, 0, 0, &[1, 0, 0]),
                ],
                Ok(2),
            ),
            (
                "bigger-file: the arbiter is never a source",
                BiggerFile,
                Kind::Data,
                vec![
                    c(0, 5, 0, 0, &[0, 1, 0]),
                    c(1, 4, 0, 0, &[1, 0, 0]),
                    arb(c(2, 99, 0, 0, &[0, 0, 0])),
                ],
                Ok(0),
            ),
            (
                "size: as bigger-file",
                Size,
                Kind::Data,
                two(c(0, 30, 0, 0, &[0, 1]), c(1, 20, 5, 5, &[1, 0])),
                Ok(0),
            ),
            (
                "size: metadata refused",
                Size,
                Kind::Metadata,
                two(c(0, 30, 0, 0, &[0, 1]), c(1, 20, 5, 5, &[1, 0])),
                Err(Refusal::NotForKind {
                    policy: Size,
                    kind: Kind::Metadata,
                }),
            ),
        ];
        check(cases);
    }

    #[test]
    fn time_policies() {
        use Policy::*;
        let two = |a: CopyState, b: CopyState| vec![a, b];
        let cases: Vec<Case> = vec![
            (
                "latest-mtime",
                LatestMtime,
                Kind::Data,
                two(c(0, 99, 3, 1, &[0, 1]), c(1, 1, 7, 0, &[1, 0])),
                Ok(1),
            ),
            (
                "latest-mtime: equal mtimes refuse",
                LatestMtime,
                Kind::Data,
                two(c(0, 99, 7, 1, &[0, 1]), c(1, 1, 7, 0, &[1, 0])),
                Err(Refusal::Tie {
                    policy: LatestMtime,
                    bricks: vec![0, 1],
                }),
            ),
            (
                "latest-mtime: metadata refused",
                LatestMtime,
                Kind::Metadata,
                two(c(0, 99, 3, 1, &[0, 1]), c(1, 1, 7, 0, &[1, 0])),
                Err(Refusal::NotForKind {
                    policy: LatestMtime,
                    kind: Kind::Metadata,
                }),
            ),
            (
                "ctime, for metadata too",
                Ctime,
                Kind::Metadata,
                two(c(0, 30, 9, 2, &[0, 1]), c(1, 20, 0, 5, &[1, 0])),
                Ok(1),
            ),
            (
                "ctime: the arbiter's metadata counts",
                Ctime,
                Kind::Metadata,
                vec![
                    c(0, 5, 0, 1, &[0, 1, 1]),
                    c(1, 5, 0, 2, &[1, 0, 1]),
                    arb(c(2, 0, 0, 3, &[1, 1, 0])),
                ],
                Ok(2),
            ),
            (
                "ctime: but never its data",
                Ctime,
                Kind::Data,
                vec![
                    c(0, 5, 0, 1, &[0, 1, 0]),
                    c(1, 5, 0, 2, &[1, 0, 0]),
                    arb(c(2, 0, 0, 3, &[0, 0, 0])),
                ],
                Ok(1),
            ),
            (
                "ctime: equal refuse",
                Ctime,
                Kind::Metadata,
                two(c(0, 30, 9, 5, &[0, 1]), c(1, 20, 0, 5, &[1, 0])),
                Err(Refusal::Tie {
                    policy: Ctime,
                    bricks: vec![0, 1],
                }),
            ),
            (
                "mtime, nanoseconds count",
                Mtime,
                Kind::Data,
                vec![
                    CopyState {
                        mtime: Timespec { secs: 4, nsecs: 2 },
                        ..c(0, 1, 0, 0, &[0, 1])
                    },
                    CopyState {
                        mtime: Timespec { secs: 4, nsecs: 1 },
                        ..c(1, 1, 0, 0, &[1, 0])
                    },
                ],
                Ok(0),
            ),
        ];
        check(cases);
    }

    /// Brick 0 wrote alone while 1 and 2 wrote together.
    fn two_against_one() -> Vec<CopyState> {
        vec![
            c(0, 9, 9, 9, &[0, 1, 1]),
            c(1, 5, 1, 1, &[1, 0, 0]),
            c(2, 5, 1, 1, &[1, 0, 0]),
        ]
    }

    #[test]
    fn source_brick_policy() {
        use Policy::*;
        let cases: Vec<Case> = vec![
            (
                "source-brick: any data copy",
                SourceBrick(1),
                Kind::Data,
                two_against_one(),
                Ok(1),
            ),
            (
                "source-brick: not a copy of the set",
                SourceBrick(3),
                Kind::Data,
                two_against_one(),
                Err(Refusal::NotACopy(3)),
            ),
            (
                "source-brick: the arbiter holds no data",
                SourceBrick(2),
                Kind::Data,
                vec![
                    c(0, 5, 0, 0, &[0, 1, 0]),
                    c(1, 5, 0, 0, &[1, 0, 0]),
                    arb(c(2, 0, 0, 0, &[0, 0, 0])),
                ],
                Err(Refusal::ArbiterHoldsNoData(2)),
            ),
            (
                "source-brick: the arbiter's metadata may be the source",
                SourceBrick(2),
                Kind::Metadata,
                vec![
                    c(0, 5, 0, 0, &[0, 1, 1]),
                    c(1, 5, 0, 0, &[1, 0, 1]),
                    arb(c(2, 0, 0, 0, &[1, 1, 0])),
                ],
                Ok(2),
            ),
        ];
        check(cases);
    }

    #[test]
    fn majority_policy() {
        use Policy::*;
        let cases: Vec<Case> = vec![
            (
                "majority: the side of two, its lowest brick",
                Majority,
                Kind::Data,
                two_against_one(),
                Ok(1),
            ),
            (
                "majority: replica 2 has none",
                Majority,
                Kind::Data,
                vec![c(0, 9, 9, 9, &[0, 1]), c(1, 5, 1, 1, &[1, 0])],
                Err(Refusal::NoMajority),
            ),
            (
                "majority: every copy blamed by the two others",
                Majority,
                Kind::Metadata,
                vec![
                    c(0, 1, 1, 1, &[0, 1, 1]),
                    c(1, 1, 1, 1, &[1, 0, 1]),
                    c(2, 1, 1, 1, &[1, 1, 0]),
                ],
                Err(Refusal::NoMajority),
            ),
            (
                "majority: the most supporters wins",
                Majority,
                Kind::Data,
                vec![
                    c(0, 1, 1, 1, &[0, 1, 1, 1, 1]),
                    c(1, 1, 1, 1, &[1, 0, 0, 0, 0]),
                    c(2, 1, 1, 1, &[1, 0, 0, 0, 0]),
                    c(3, 1, 1, 1, &[0, 0, 1, 0, 0]),
                    c(4, 1, 1, 1, &[1, 0, 0, 0, 0]),
                ],
                Ok(1),
            ),
            (
                "majority: equal majorities that blame each other",
                Majority,
                Kind::Data,
                // 0 and 1 blame each other; 2, blamed by 0, takes no side.
                vec![
                    c(0, 1, 1, 1, &[0, 1, 1]),
                    c(1, 1, 1, 1, &[1, 0, 0]),
                    c(2, 1, 1, 1, &[0, 0, 0]),
                ],
                Err(Refusal::MajorityDisagrees(vec![0, 1, 2])),
            ),
            (
                "majority: an arbiter blaming neither data brick settles nothing",
                Majority,
                Kind::Data,
                vec![
                    c(0, 5, 0, 0, &[0, 1, 0]),
                    c(1, 5, 0, 0, &[1, 0, 0]),
                    arb(c(2, 0, 0, 0, &[0, 0, 0])),
                ],
                Err(Refusal::MajorityDisagrees(vec![0, 1])),
            ),
        ];
        check(cases);
    }

    fn check(cases: Vec<Case>) {
        for (why, policy, kind, copies, want) in cases {
            assert_eq!(choose(policy, kind, &copies), want, "{why}");
        }
    }

    #[test]
    fn refusals_name_the_bricks() {
        let name = |b: usize| format!("s{b}:/b");
        let tie = Refusal::Tie {
            policy: Policy::BiggerFile,
            bricks: vec![0, 1],
        };
        assert_eq!(
            tie.explain(&name),
            "no bigger file: the largest copies (s0:/b and s1:/b) are equal; use source-brick"
        );
        let meta = Refusal::NotForKind {
            policy: Policy::LatestMtime,
            kind: Kind::Metadata,
        };
        assert!(meta.to_string().contains("metadata split-brain"), "{meta}");
        assert_eq!(
            Refusal::ArbiterHoldsNoData(2).explain(&name),
            "s2:/b is the arbiter: it holds no data"
        );
    }

    #[test]
    fn the_option_values() {
        for (v, want) in [
            ("none", FavoriteChild::None),
            ("size", FavoriteChild::Size),
            ("ctime", FavoriteChild::Ctime),
            ("mtime", FavoriteChild::Mtime),
            ("majority", FavoriteChild::Majority),
            ("bogus", FavoriteChild::None),
        ] {
            assert_eq!(FavoriteChild::from_option(v), want, "{v}");
            if v != "bogus" {
                assert_eq!(want.to_string(), v);
            }
        }
        assert_eq!(FavoriteChild::None.policy(), None);
        let default =
            mortar_proto::options::default_of(mortar_proto::options::FAVORITE_CHILD_POLICY);
        assert_eq!(FavoriteChild::from_option(default), FavoriteChild::None);
    }

    /// Views from a blame matrix for one kind (`m[i][j]`: i blames j).
    fn views(kind: Kind, m: &[&[i64]]) -> Vec<BrickView> {
        m.iter()
            .map(|row| BrickView {
                blames: row
                    .iter()
                    .map(|b| {
                        let mut c = [0; 3];
                        c[kind as usize] = *b;
                        c
                    })
                    .collect(),
                dirty: [0; 3],
            })
            .collect()
    }

    /// The counters after the first `done` entries of `plan` and, of the
    /// next one, the changes whose bit is set in `some`.
    fn apply(
        kind: Kind,
        mut v: Vec<BrickView>,
        plan: &[Rewrite],
        done: usize,
        some: u32,
    ) -> Vec<BrickView> {
        for (e, r) in plan.iter().enumerate().take(done + 1) {
            for (bit, (j, by)) in r.changes.iter().enumerate() {
                if e < done || some & (1 << bit) != 0 {
                    v[r.brick].blames[*j][kind as usize] += i64::from(*by);
                }
            }
        }
        v
    }

    /// A crash at any point of the rewrite (after any entries, with any
    /// A split-brain, the kind, the arbiter, and the copy chosen.
    type RewriteCase = (&'static str, Kind, Option<usize>, Vec<BrickView>, usize);

    fn rewrite_cases() -> Vec<RewriteCase> {
        vec![
            (
                "replica 2",
                Kind::Data,
                None,
                views(Kind::Data, &[&[0, 1], &[1, 0]]),
                1,
            ),
            (
                "two against one, the lone copy chosen",
                Kind::Data,
                None,
                views(Kind::Data, &[&[0, 1, 1], &[1, 0, 0], &[1, 0, 0]]),
                0,
            ),
            (
                "two against one, the pair's lower copy chosen",
                Kind::Data,
                None,
                views(Kind::Data, &[&[0, 1, 1], &[1, 0, 0], &[1, 0, 0]]),
                1,
            ),
            (
                "a ring of blame, metadata",
                Kind::Metadata,
                None,
                views(Kind::Metadata, &[&[0, 1, 0], &[0, 0, 1], &[1, 0, 0]]),
                2,
            ),
            (
                "counters above one and a self-blame",
                Kind::Data,
                None,
                views(Kind::Data, &[&[2, 3, 0], &[0, 0, 5], &[4, 0, 0]]),
                0,
            ),
            (
                "an arbiter that blames both data copies",
                Kind::Data,
                Some(2),
                views(Kind::Data, &[&[0, 1, 0], &[1, 0, 0], &[1, 1, 0]]),
                1,
            ),
            (
                "an arbiter that blames neither",
                Kind::Data,
                Some(2),
                views(Kind::Data, &[&[0, 1, 0], &[1, 0, 0], &[0, 0, 0]]),
                0,
            ),
            (
                "replica 5, blame everywhere",
                Kind::Data,
                None,
                views(
                    Kind::Data,
                    &[
                        &[0, 1, 1, 0, 0],
                        &[1, 0, 0, 1, 1],
                        &[1, 1, 0, 0, 1],
                        &[0, 1, 1, 0, 0],
                        &[1, 0, 1, 1, 0],
                    ],
                ),
                3,
            ),
        ]
    }

    /// of the next entry's separate counters written) leaves the same
    /// split-brain or the chosen copy as the only good one; the whole
    /// rewrite leaves the latter with nobody but the source blaming.
    #[test]
    fn the_rewrite_never_frees_another_copy() {
        for (why, kind, arbiter, v, src) in rewrite_cases() {
            let opt = |v: &[BrickView]| v.iter().cloned().map(Some).collect::<Vec<_>>();
            assert!(
                matches!(examine(&opt(&v), kind, arbiter), Verdict::SplitBrain { .. }),
                "{why}: starts in split-brain"
            );
            let plan = rewrite_plan(kind, &v, src);
            let source_at = plan.iter().position(|r| r.brick == src);
            assert!(
                source_at.is_none_or(|at| at == 0),
                "{why}: the source is rewritten first"
            );
            for (done, next) in plan.iter().enumerate() {
                for some in 0..(1u32 << next.changes.len()) {
                    let now = apply(kind, v.clone(), &plan, done, some);
                    match examine(&opt(&now), kind, arbiter) {
                        Verdict::SplitBrain { .. } => {}
                        Verdict::Sources { good, .. } => assert_eq!(
                            good,
                            vec![src],
                            "{why}: after {done} entries and {some:b} of the next"
                        ),
                        Verdict::NoneReachable => unreachable!(),
                    }
                }
            }
            let end = apply(kind, v.clone(), &plan, plan.len(), 0);
            assert!(
                matches!(examine(&opt(&end), kind, arbiter), Verdict::Sources { good, .. } if good == vec![src]),
                "{why}: ends resolved"
            );
            let k = kind as usize;
            for (i, view) in end.iter().enumerate() {
                for (j, b) in view.blames.iter().enumerate() {
                    let b = b[k];
                    let ok = if i == src && j != src { b >= 1 } else { b == 0 };
                    assert!(ok, "{why}: {i} blames {j} by {b}");
                }
            }
        }
    }

    #[test]
    fn the_rewrite_touches_only_what_must_change() {
        let v = views(Kind::Data, &[&[0, 2, 0], &[1, 0, 0], &[0, 0, 0]]);
        assert_eq!(
            rewrite_plan(Kind::Data, &v, 0),
            vec![
                Rewrite {
                    brick: 0,
                    changes: vec![(2, 1)],
                },
                Rewrite {
                    brick: 1,
                    changes: vec![(0, -1)],
                },
            ]
        );
        // The blame of the source is taken back on its own, first.
        let v = views(Kind::Data, &[&[0, 1, 0], &[1, 0, 1], &[0, 1, 0]]);
        assert_eq!(
            rewrite_plan(Kind::Data, &v, 0),
            vec![
                Rewrite {
                    brick: 0,
                    changes: vec![(2, 1)],
                },
                Rewrite {
                    brick: 1,
                    changes: vec![(0, -1)],
                },
                Rewrite {
                    brick: 1,
                    changes: vec![(2, -1)],
                },
                Rewrite {
                    brick: 2,
                    changes: vec![(1, -1)],
                },
            ]
        );
        // Other kinds' counters are left alone.
        assert_eq!(
            rewrite_plan(Kind::Metadata, &v, 0),
            vec![Rewrite {
                brick: 0,
                changes: vec![(1, 1), (2, 1)],
            }]
        );
    }
}
