//! Run every scenario over a range of seeds and report each failure with
//! the command that replays it; shrink failing `cluster` cases; soak; and
//! replay one case with full tracing.
//!
//! Usage:
//!   sim-seeds [--seeds N] [--from SEED] [--scenario NAME] [--jobs J]
//!             [--shrink-runs R] [--for SECONDS] [--require-marks]
//!   sim-seeds --case TEXT|--case-file PATH [--from SEED] [--trace]
//!   sim-seeds --list
//!
//! Seeds run on `--jobs` threads at once (default: the machine's cores);
//! each run is its own simulation on its own thread, so the outcome of a
//! seed does not depend on what runs beside it. Log lines of runs that
//! overlap interleave: `--jobs 1`, or the replay command, gives one run's
//! log alone.
//!
//! `--for SECONDS` soaks: it takes seeds from `--from` upward until the
//! time is up (0: until stopped) and saves every failure, shrunk, as a
//! case file under `target/sim-failures/`.
#![allow(clippy::print_stdout)] // --list prints scenario names for scripts.

#[cfg(madsim)]
mod runner {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use mortar_scenarios::plan::{self, Case};
    use mortar_scenarios::Scenario;

    /// Runs a failing `cluster` case may spend shrinking, by default.
    const SHRINK_RUNS_DEFAULT: usize = 40;
    /// Where a soak saves the cases it found failing.
    const FAILURES_DIR: &str = "target/sim-failures";

    struct Args {
        seeds: u64,
        jobs: usize,
        from: u64,
        only: Option<String>,
        shrink_runs: usize,
        soak_s: Option<u64>,
        case: Option<String>,
        trace: bool,
        require_marks: bool,
    }

    fn parse() -> Args {
        let mut a = Args {
            seeds: 20,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            from: 1,
            only: None,
            shrink_runs: SHRINK_RUNS_DEFAULT,
            soak_s: None,
            case: None,
            trace: false,
            require_marks: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut val = |name: &str| {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{name} needs a value")))
            };
            let mut number = |name: &str| -> u64 {
                val(name)
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("{name} takes a number")))
            };
            match arg.as_str() {
                "--seeds" => a.seeds = number("--seeds"),
                "--from" => a.from = number("--from"),
                "--scenario" => a.only = Some(val("--scenario")),
                "--jobs" => match number("--jobs") {
                    0 => usage("--jobs takes a number above 0"),
                    j => a.jobs = j as usize,
                },
                "--shrink-runs" => a.shrink_runs = number("--shrink-runs") as usize,
                "--for" => a.soak_s = Some(number("--for")),
                "--case" => a.case = Some(val("--case")),
                "--case-file" => {
                    let path = val("--case-file");
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| usage(&format!("cannot read case file {path}: {e}")));
                    // The file's case is its first line that is not a comment.
                    let line = text
                        .lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty() && !l.starts_with('#'))
                        .unwrap_or_else(|| usage(&format!("case file {path} holds no case")));
                    a.case = Some(line.to_string());
                }
                "--trace" => a.trace = true,
                "--require-marks" => a.require_marks = true,
                "--list" => {
                    for s in mortar_scenarios::all() {
                        println!("{}", s.name);
                    }
                    std::process::exit(0);
                }
                "-h" | "--help" => usage(""),
                other => usage(&format!("unknown argument {other:?}")),
            }
        }
        a
    }

    /// Per scenario: runs, passed, wall time in runs, simulated time.
    #[derive(Default)]
    struct Figures {
        runs: AtomicU64,
        wall_ms: AtomicU64,
        simulated_ms: AtomicU64,
    }

    fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        // Outside every simulation: this is the machine's clock.
        #[allow(clippy::disallowed_methods)]
        let t0 = std::time::Instant::now();
        let out = f();
        (out, t0.elapsed())
    }

    /// Run one case (on the cluster runner) with `seed`, as scenario
    /// `name`; `Err` with the panic's message if it failed.
    fn run_case(name: &'static str, seed: u64, case: Case) -> Result<Duration, String> {
        catch_unwind(AssertUnwindSafe(|| {
            mortar_sim::run(name, seed, move |sim| {
                mortar_scenarios::cluster::run_case(sim, case)
            })
            .simulated
        }))
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    }

    /// The replay command of a case.
    pub fn replay_case(seed: u64, case: &Case) -> String {
        format!("scripts/sim-case {seed} '{case}'")
    }

    /// Shrink the failing case of `seed` of scenario `name` (drawn by
    /// `draw`), quietly, and print it.
    fn shrink(name: &'static str, draw: fn(u64) -> Case, seed: u64, runs_max: usize) -> Case {
        eprintln!("sim-seeds: shrinking the {name} case of seed {seed} (at most {runs_max} runs)");
        mortar_sim::set_quiet(true);
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        // A simpler case counts only if it fails the same way: shrinking
        // must not slip from one bug to another.
        let start = draw(seed);
        let steps = start.plan.steps.len();
        let original = match run_case(name, seed, start.clone()) {
            Ok(_) => {
                eprintln!("sim-seeds: seed {seed} passes when run again alone; nothing to shrink");
                String::new()
            }
            Err(m) => plan::failure_kind(&m),
        };
        let (small, runs) = plan::shrink(
            start,
            |c| run_case(name, seed, c.clone()).is_err_and(|m| plan::failure_kind(&m) == original),
            runs_max,
        );
        std::panic::set_hook(hook);
        mortar_sim::set_quiet(false);
        eprintln!(
            "sim-seeds: seed {seed} shrunk in {runs} runs from {steps} steps to {}: {small}",
            small.plan.steps.len()
        );
        small
    }

    fn save_failure(name: &str, seed: u64, case: &Case, shrunk: bool) {
        let path = format!("{FAILURES_DIR}/{name}-{seed}.case");
        let text = format!(
            "# {name} seed {seed}{}; replay: scripts/sim-case {seed} --file {path}\n{case}\n",
            if shrunk {
                ", shrunk"
            } else {
                ", not yet shrunk"
            }
        );
        match std::fs::create_dir_all(FAILURES_DIR).and_then(|_| std::fs::write(&path, text)) {
            Ok(()) => eprintln!("sim-seeds: saved {path}"),
            Err(e) => eprintln!("sim-seeds: could not save {path}: {e}"),
        }
    }

    pub fn main() {
        let a = parse();
        if let Some(text) = a.case {
            let case: Case = text
                .parse()
                .unwrap_or_else(|e| usage(&format!("the case does not parse: {e}")));
            if a.trace {
                mortar_sim::set_echo(true);
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::DEBUG)
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .init();
            }
            eprintln!("sim-seeds: case {case}");
            let (r, wall) = timed(|| run_case("cluster", a.from, case));
            if let Ok(simulated) = &r {
                eprintln!(
                    "sim-seeds: figures case: simulated {:.1} s in {:.2} s of run time: {:.0}x wall",
                    simulated.as_secs_f64(),
                    wall.as_secs_f64(),
                    simulated.as_secs_f64() / wall.as_secs_f64().max(0.001)
                );
            }
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
        let scenarios: Vec<Scenario> = mortar_scenarios::all()
            .into_iter()
            .filter(|s| a.only.as_deref().is_none_or(|o| o == s.name))
            .collect();
        if scenarios.is_empty() {
            usage("no scenario by that name");
        }
        // Every (scenario, seed) run, in the order a one-thread sweep takes.
        let soak = a.soak_s;
        let mut runs = Vec::new();
        if soak.is_none() {
            for (i, s) in scenarios.iter().enumerate() {
                let n = if a.only.is_some() {
                    a.seeds
                } else {
                    (a.seeds / s.seeds_divisor.max(1)).max(1)
                };
                runs.extend((a.from..a.from + n).map(|seed| (i, seed)));
            }
        }
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let failed = Mutex::new(Vec::new());
        let figures: Vec<Figures> = scenarios.iter().map(|_| Figures::default()).collect();
        let ((), wall) = timed(|| {
            std::thread::scope(|scope| {
                let workers = match soak {
                    Some(_) => a.jobs,
                    None => a.jobs.min(runs.len()),
                };
                for _ in 0..workers {
                    #[allow(clippy::disallowed_methods)] // Sweep workers, outside any simulation.
                    scope.spawn(|| loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let (i, seed) = match soak {
                            Some(_) if stop.load(Ordering::Relaxed) => break,
                            // A soak takes every scenario in turn, seeds upward.
                            Some(_) => (k % scenarios.len(), a.from + (k / scenarios.len()) as u64),
                            None => match runs.get(k) {
                                Some(&r) => r,
                                None => break,
                            },
                        };
                        let (name, run, draw) =
                            (scenarios[i].name, scenarios[i].run, scenarios[i].case);
                        let (r, took) = timed(|| {
                            catch_unwind(AssertUnwindSafe(|| mortar_sim::run(name, seed, run)))
                        });
                        let f = &figures[i];
                        f.runs.fetch_add(1, Ordering::Relaxed);
                        f.wall_ms
                            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
                        match r {
                            Ok(out) => {
                                f.simulated_ms
                                    .fetch_add(out.simulated.as_millis() as u64, Ordering::Relaxed);
                            }
                            Err(_) => {
                                // A soak keeps what it found even if it is
                                // stopped before it can shrink it.
                                if let (Some(_), Some(draw)) = (soak, draw) {
                                    save_failure(name, seed, &draw(seed), false);
                                }
                                failed
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((name, draw, seed))
                            }
                        }
                    });
                }
                if let Some(secs) = soak {
                    let stop = &stop;
                    #[allow(clippy::disallowed_methods)]
                    // The soak's timer, outside any simulation.
                    scope.spawn(move || {
                        if secs > 0 {
                            std::thread::sleep(Duration::from_secs(secs));
                            stop.store(true, Ordering::Relaxed);
                        }
                    });
                }
            })
        });
        let mut failures = failed.into_inner().unwrap_or_else(|p| p.into_inner());
        failures.sort_unstable_by_key(|&(name, _, seed)| (name, seed));
        eprintln!();
        for (s, f) in scenarios.iter().zip(&figures) {
            let (n, w, sim) = (
                f.runs.load(Ordering::Relaxed),
                f.wall_ms.load(Ordering::Relaxed),
                f.simulated_ms.load(Ordering::Relaxed),
            );
            if n == 0 {
                continue;
            }
            eprintln!(
                "sim-seeds: figures {:<24} {n:>5} runs, {:>8.2} s of run time, {:>7.2} seeds/s per thread, simulated {:>9.1} s: {:>7.0}x wall",
                s.name,
                w as f64 / 1000.0,
                n as f64 * 1000.0 / w.max(1) as f64,
                sim as f64 / 1000.0,
                sim as f64 / w.max(1) as f64,
            );
        }
        let total = figures
            .iter()
            .map(|f| f.runs.load(Ordering::Relaxed))
            .sum::<u64>();
        eprintln!(
            "sim-seeds: {total} runs in {:.1} s on {} threads: {:.2} seeds/s",
            wall.as_secs_f64(),
            a.jobs,
            total as f64 / wall.as_secs_f64().max(0.001)
        );
        for &(name, draw, seed) in &failures {
            if let (Some(draw), 0) = (draw, a.shrink_runs) {
                eprintln!(
                    "FAILED {name} seed {seed}: replay with {}",
                    replay_case(seed, &draw(seed))
                );
            } else if let Some(draw) = draw {
                let small = shrink(name, draw, seed, a.shrink_runs);
                eprintln!(
                    "FAILED {name} seed {seed}: replay the shrunk case with {}",
                    replay_case(seed, &small)
                );
                if soak.is_some() {
                    save_failure(name, seed, &small, true);
                }
            } else {
                eprintln!(
                    "FAILED {name} seed {seed}: replay with {}",
                    mortar_sim::replay_command(name, seed)
                );
            }
        }
        let never = mortar_net::fault::never_hit();
        let marks = mortar_net::fault::marks::ALL.len();
        eprintln!(
            "sim-seeds: coverage marks hit: {} of {marks}{}",
            marks - never.len(),
            if never.is_empty() {
                String::new()
            } else {
                format!("; never hit: {}", never.join(", "))
            }
        );
        let unmarked = a.require_marks && !never.is_empty();
        if unmarked {
            eprintln!("sim-seeds: --require-marks: every coverage mark must be hit; run more seeds or find why a path is never taken");
        }
        eprintln!(
            "sim-seeds: {} passed, {} failed",
            total as usize - failures.len(),
            failures.len()
        );
        std::process::exit(if failures.is_empty() && !unmarked {
            0
        } else {
            1
        });
    }

    pub fn usage(why: &str) -> ! {
        if !why.is_empty() {
            eprintln!("sim-seeds: {why}");
        }
        eprintln!(
            "usage: sim-seeds [--seeds N] [--from SEED] [--scenario NAME] [--jobs J] [--shrink-runs R] [--for SECONDS] [--require-marks]\n       sim-seeds --case TEXT|--case-file PATH [--from SEED] [--trace]\n       sim-seeds --list"
        );
        std::process::exit(2)
    }
}

#[cfg(madsim)]
fn main() {
    runner::main()
}

#[cfg(not(madsim))]
fn main() {
    eprintln!("sim-seeds runs only in the simulator build: use scripts/sim-seeds");
    std::process::exit(2);
}
