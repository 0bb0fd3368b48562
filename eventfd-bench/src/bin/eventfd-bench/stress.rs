//! `eventfd-bench stress`: passes of the selected scenarios of
//! `eventfd_bench::stress` (how many, and when fds and RSS are sampled:
//! [`StressArgs`]), one row per scenario adding up its passes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eventfd_bench::rng::Rng;
use eventfd_bench::stress::{self, Config, Report, Sample};
#[cfg(test)]
use eventfd_bench::stress::{Tally, Verdict};
use serde::Serialize;

use crate::options::StressArgs;

/// `eventfd-bench stress`: runs the selected scenarios and prints the table
/// (or `--json`); status 0 if no scenario failed (a SKIP or an INCONCLUSIVE,
/// which the summary counts apart, is not a failure) and the open fds did
/// not grow, else 1.
pub(crate) fn run(args: &StressArgs) -> ExitCode {
    let run = run_selected(args);
    if args.json {
        print!("{}", json(&run));
    } else {
        print!("{}", table(&run));
    }
    if run.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One sample of the process: when, and its open fds and RSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Point {
    t_ms: u128,
    fds: usize,
    rss: u64,
}

impl Point {
    fn take(start: Instant) -> Point {
        let Sample { fds, rss } = stress::sample();
        Point {
            t_ms: start.elapsed().as_millis(),
            fds,
            rss,
        }
    }

    /// The line printed as the sample is taken.
    fn line(&self) -> String {
        format!(
            "t={:.1}s fds={} rss={:.1}MiB",
            self.t_ms as f64 / 1e3,
            self.fds,
            self.rss as f64 / (1024.0 * 1024.0)
        )
    }
}

/// What a run found: a report per scenario (its passes added up), the
/// samples, and the run's own failure (fds that grew).
#[derive(Debug)]
struct Run {
    reports: Vec<Report>,
    passes: u64,
    samples: Vec<Point>,
    elapsed: Duration,
    seed: u64,
    failure: Option<String>,
}

impl Run {
    fn count(&self, verdict: &str) -> usize {
        self.reports
            .iter()
            .filter(|r| r.verdict.word() == verdict)
            .count()
    }

    fn ok(&self) -> bool {
        self.failure.is_none() && !self.reports.iter().any(Report::failed)
    }
}

/// The engine's configuration for `args`: what the options leave out comes
/// from the environment (`Config::from_env`), but the threads, which only
/// `--threads` sets here. One round per scenario and pass: the passes make
/// the duration.
fn config(args: &StressArgs) -> Config {
    let env = Config::from_env();
    #[allow(
        clippy::needless_update,
        reason = "a field the engine adds takes its value from the environment"
    )]
    Config {
        scale: args.scale.unwrap_or(env.scale),
        threads: args.threads.map(usize::from),
        liveness: args.liveness.unwrap_or(env.liveness),
        // One seed for every scenario of a pass, so that one number replays it.
        seed: Some(args.seed.or(env.seed).unwrap_or_else(Rng::fresh_seed)),
        ..env
    }
}

/// Runs passes of the selected scenarios (until `--duration`, or the first
/// pass with a failure), sampling fds and RSS between scenarios; progress
/// on stderr when it is a terminal, sample lines as they are taken (on
/// stderr with `--json`, which keeps stdout one JSON document).
fn run_selected(args: &StressArgs) -> Run {
    let scenarios = args.selected();
    let mut config = config(args);
    let seed = config.seed.unwrap_or_default();
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let say = |point: &Point| {
        if args.json {
            eprintln!("{}", point.line());
        } else {
            println!("{}", point.line());
        }
    };
    let mut samples = vec![Point::take(start)];
    say(&samples[0]);
    let mut reports: Vec<Report> = Vec::with_capacity(scenarios.len());
    let mut passes = 0;
    loop {
        // Each pass takes the next seed, so that a failed pass replays on its
        // own; the same choices every pass would test one schedule over and over.
        config.seed = Some(seed.wrapping_add(passes));
        for (i, sc) in scenarios.iter().enumerate() {
            if progress {
                let failed = reports.iter().filter(|r| r.failed()).count();
                eprint!(
                    "\r\x1b[K[pass {}, {}/{}] {} {} ... ({:.0?} elapsed, {failed} failed)",
                    passes + 1,
                    i + 1,
                    scenarios.len(),
                    sc.id,
                    sc.name,
                    start.elapsed()
                );
                let _ = std::io::stderr().flush();
            }
            let report = stress::run(sc.id, &config);
            match reports.get_mut(i) {
                Some(total) => total.add_pass(report),
                None => reports.push(report),
            }
            let last = samples.last().map_or(0, |p| p.t_ms);
            if start.elapsed().as_millis() >= last + args.sample_every.as_millis() {
                if progress {
                    eprint!("\r\x1b[K");
                }
                samples.push(Point::take(start));
                say(&samples[samples.len() - 1]);
            }
        }
        passes += 1;
        let more_time = args.duration.is_some_and(|d| start.elapsed() < d);
        if !more_time || reports.iter().any(Report::failed) {
            break;
        }
    }
    if progress {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    // The last sample is the end of the run, even if one was just taken.
    let end = Point::take(start);
    say(&end);
    samples.push(end);
    let first = samples[0].fds;
    let failure = (end.fds != first).then(|| {
        format!(
            "open fds grew from {first} before the first pass to {} after the last ({passes} passes)",
            end.fds
        )
    });
    Run {
        reports,
        passes,
        samples,
        elapsed: start.elapsed(),
        seed,
        failure,
    }
}

fn fmt_wait(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2}s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{}us", d.as_micros())
    }
}

/// A sum of counts: exact while it fits the column, else in powers of ten
/// (scenarios that add `MAX_COUNT` reach 10^21).
fn fmt_sum(sum: u128) -> String {
    if sum < 10u128.pow(14) {
        sum.to_string()
    } else {
        format!("{:.4e}", sum as f64)
    }
}

fn table(run: &Run) -> String {
    let reports = &run.reports;
    let mut out = format!(
        "{:<4} {:<32} {:>6} {:>9} {:>9} {:>14} {:>9} {:>9} {:>12} {:>8}  {}\n",
        "id",
        "scenario",
        "rounds",
        "adds",
        "reads",
        "sum read",
        "wakeups",
        "spurious",
        "max pending",
        "time",
        "verdict"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<4} {:<32} {:>6} {:>9} {:>9} {:>14} {:>9} {:>9} {:>12} {:>8}  {}\n",
            r.id,
            r.name,
            r.rounds,
            r.tally.add_calls,
            r.tally.read_calls,
            fmt_sum(r.tally.reads),
            r.tally.wakeups,
            r.tally.spurious,
            fmt_wait(r.tally.max_pending_wait),
            format!("{:.2}s", r.elapsed.as_secs_f64()),
            r.verdict.word()
        ));
    }
    for r in reports.iter().filter(|r| !r.passed()) {
        out.push_str(&format!("\n{} {}", r.id, r.verdict));
    }
    if let Some(msg) = &run.failure {
        out.push_str(&format!("\nFAIL: {msg}"));
    }
    if let (Some(first), Some(last)) = (run.samples.first(), run.samples.last()) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        out.push_str(&format!(
            "\nfds {} -> {}, RSS {:.1} -> {:.1} MiB over {} samples",
            first.fds,
            last.fds,
            mib(first.rss),
            mib(last.rss),
            run.samples.len()
        ));
    }
    let machine = stress::calibration();
    out.push_str(&format!(
        "\nmachine: eventfd round trip {:?} ({:.1}x the reference: deadlines scale by it), an \
         honest overflow wait costs {:?} of CPU in 200ms",
        Duration::from_nanos(machine.round_trip_ns),
        machine.slowness,
        Duration::from_micros(machine.idle_wait_cpu_us)
    ));
    out.push_str(&format!(
        "\n{} scenarios: {} PASS, {} FAIL, {} SKIP, {} INCONCLUSIVE; {} {} in {:.1}s",
        reports.len(),
        run.count("PASS"),
        run.count("FAIL"),
        run.count("SKIP"),
        run.count("INCONCLUSIVE"),
        run.passes,
        if run.passes == 1 { "pass" } else { "passes" },
        run.elapsed.as_secs_f64()
    ));
    let seed = run.seed;
    if run.passes == 1 {
        out.push_str(&format!("; seed {seed} (replay: --seed {seed})\n"));
    } else {
        out.push_str(&format!(
            "; seeds {seed} to {} (pass k: --seed {seed}+k-1; a failure names its own)\n",
            seed.wrapping_add(run.passes - 1)
        ));
    }
    out
}

/// A JSON array with one report a line, so that a line-oriented tool can
/// pick a scenario out, and a last line `{"summary": ...}`.
fn json(run: &Run) -> String {
    let mut lines: Vec<String> = run
        .reports
        .iter()
        .map(|r| {
            serde_json::to_string(r).unwrap_or_else(|e| {
                // Unreachable for this struct of numbers and strings; still
                // valid JSON if it happens.
                serde_json::json!({ "id": r.id, "error": e.to_string() }).to_string()
            })
        })
        .collect();
    // The run as a whole; serde_json's map sorts the keys.
    let summary = serde_json::json!({ "summary": {
        "scenarios": run.reports.len(),
        "passed": run.count("PASS"),
        "failed": run.count("FAIL"),
        "skipped": run.count("SKIP"),
        "inconclusive": run.count("INCONCLUSIVE"),
        "passes": run.passes,
        "elapsed_ms": run.elapsed.as_millis(),
        // The first pass's; pass k ran with `seed + k - 1`.
        "seed": run.seed,
        // Why the run failed beyond its scenarios (open fds that grew).
        "failure": run.failure,
        // Open fds and RSS (bytes) at `t_ms` since the start.
        "samples": run.samples,
        // What the machine measured, which deadlines and budgets scale from.
        "calibration": stress::calibration(),
    }});
    lines.push(summary.to_string());
    format!("[\n  {}\n]\n", lines.join(",\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(adds: u128, failure: Option<&str>) -> Report {
        Report {
            id: "S9".to_string(),
            name: "a \"quoted\" name".to_string(),
            rounds: 2,
            tally: Tally {
                adds,
                reads: adds,
                add_calls: 3,
                read_calls: 4,
                wakeups: 5,
                spurious: 1,
                max_pending_wait: Duration::from_micros(1_500),
            },
            elapsed: Duration::from_millis(250),
            verdict: failure.map_or(Verdict::Pass, |f| Verdict::Fail(f.to_string())),
            ..stress::run("none", &Config::default())
        }
    }

    fn run_of(reports: Vec<Report>, failure: Option<&str>) -> Run {
        let point = |t_ms, fds| Point {
            t_ms,
            fds,
            rss: 4 << 20,
        };
        Run {
            reports,
            passes: 2,
            samples: vec![point(0, 5), point(61_000, 5), point(90_000, 6)],
            elapsed: Duration::from_secs(90),
            seed: 40,
            failure: failure.map(str::to_string),
        }
    }

    fn skipped() -> Report {
        Report {
            verdict: Verdict::Skip("io_uring is not available here".to_string()),
            ..report(0, None)
        }
    }

    #[test]
    fn json_keeps_the_keys_and_sums_past_u64() {
        let big = u128::from(u64::MAX) * 3;
        let run = run_of(
            vec![report(big, None), report(7, Some("lost 1")), skipped()],
            Some("open fds grew"),
        );
        let text = json(&run);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let rows = value.as_array().expect("an array");
        assert_eq!(rows.len(), 4);
        assert_eq!(text.lines().count(), 6, "one report a line:\n{text}");
        let object = rows[0].as_object().expect("an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let expected = "id name rounds adds reads add_calls read_calls wakeups spurious \
                        max_pending_wait_us elapsed_ms passed failure skipped seed fds_before \
                        fds_after rss_before rss_after";
        for key in expected.split_whitespace() {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        // The exact decimal, not a float: 3 * (2^64 - 1).
        assert!(text.contains("\"adds\":55340232221128654845,"), "{text}");
        assert_eq!(rows[0]["name"], "a \"quoted\" name");
        assert_eq!(rows[0]["max_pending_wait_us"], 1_500);
        assert_eq!(rows[0]["elapsed_ms"], 250);
        assert_eq!(rows[0]["passed"], true);
        assert_eq!(rows[0]["failure"], serde_json::Value::Null);
        assert_eq!(rows[0]["skipped"], serde_json::Value::Null);
        assert_eq!(rows[1]["passed"], false);
        assert_eq!(rows[1]["failure"], "lost 1");
        assert_eq!(rows[2]["passed"], false);
        assert_eq!(rows[2]["failure"], serde_json::Value::Null);
        assert_eq!(rows[2]["skipped"], "io_uring is not available here");
        let summary = &rows[3]["summary"];
        assert_eq!(
            (&summary["passed"], &summary["failed"], &summary["skipped"]),
            (&1.into(), &1.into(), &1.into())
        );
        assert_eq!(
            (&summary["passes"], &summary["seed"]),
            (&2.into(), &40.into())
        );
        assert_eq!(summary["failure"], "open fds grew");
        assert_eq!(
            summary["samples"][2],
            serde_json::json!({ "t_ms": 90_000, "fds": 6, "rss": 4 << 20 })
        );
    }

    #[test]
    fn the_table_counts_pass_fail_and_skip_and_names_each_reason() {
        let text = table(&run_of(
            vec![report(7, None), report(7, Some("lost 1")), skipped()],
            None,
        ));
        for line in [
            "\nS9 FAIL: lost 1",
            "\nS9 SKIP: io_uring is not available here",
            "\nfds 5 -> 6, RSS 4.0 -> 4.0 MiB over 3 samples",
            "\n3 scenarios: 1 PASS, 1 FAIL, 1 SKIP, 0 INCONCLUSIVE; 2 passes in 90.0s; seeds 40 to 41",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let verdicts: Vec<&str> = text
            .lines()
            .skip(1)
            .take(3)
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(verdicts, ["PASS", "FAIL", "SKIP"]);
    }

    #[test]
    fn passes_add_up_and_keep_the_first_failure_with_its_seed() {
        let mut total = report(10, None);
        let mut second = report(5, Some("lost 1"));
        second.seed += 1;
        second.fds_after = 9;
        total.add_pass(second.clone());
        total.add_pass(report(1, Some("later")));
        let t = total.tally;
        assert_eq!((total.rounds, t.adds, t.add_calls), (6, 16, 9));
        assert_eq!(total.elapsed, Duration::from_millis(750));
        assert_eq!(total.verdict.reason(), Some("lost 1"));
        assert_eq!(total.seed, second.seed);
        assert_eq!(total.fds_after, report(0, None).fds_after);
    }

    #[test]
    fn a_run_fails_on_a_failed_scenario_or_grown_fds_not_on_a_skip() {
        assert!(run_of(vec![report(1, None), skipped()], None).ok());
        assert!(!run_of(vec![report(1, Some("x"))], None).ok());
        assert!(!run_of(vec![report(1, None)], Some("open fds grew")).ok());
    }
}
