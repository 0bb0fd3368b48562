//! `eventfd-bench stress`: the stress scenarios of `eventfd_bench::stress`
//! with a duration, a scenario filter and a verdict each.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eventfd_bench::rng::Rng;
use eventfd_bench::stress::{self, Config, Report};
use serde::Serialize;

use crate::options::StressArgs;

/// `eventfd-bench stress`: status 0 if every scenario passed, else 1.
pub(crate) fn run(args: &StressArgs) -> ExitCode {
    if run_and_print(args) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the selected scenarios, prints the table (or `--json`), and returns
/// whether every scenario passed.
pub(crate) fn run_and_print(args: &StressArgs) -> bool {
    let reports = run_selected(args);
    if args.json {
        print!("{}", json(&reports));
    } else {
        print!("{}", table(&reports));
    }
    reports.iter().all(Report::passed)
}

/// The engine's configuration for `args`: what the options leave out comes
/// from the environment (`Config::from_env`), but the threads, which only
/// `--threads` sets here.
fn config(args: &StressArgs, scenarios: usize) -> Config {
    let env = Config::from_env();
    #[allow(
        clippy::needless_update,
        reason = "a field the engine adds takes its value from the environment"
    )]
    Config {
        scale: args.scale.unwrap_or(env.scale),
        // The duration is shared equally by the scenarios.
        duration: args
            .duration
            .map(|d| d / u32::try_from(scenarios).unwrap_or(u32::MAX).max(1)),
        threads: args.threads.map(usize::from),
        liveness: args.liveness.unwrap_or(env.liveness),
        // One seed for every scenario of the run, so that one number replays it.
        seed: Some(args.seed.or(env.seed).unwrap_or_else(Rng::fresh_seed)),
        ..env
    }
}

/// Runs the selected scenarios, with a progress line on stderr when it is a
/// terminal.
fn run_selected(args: &StressArgs) -> Vec<Report> {
    let scenarios = args.selected();
    let config = config(args, scenarios.len());
    let progress = std::io::stderr().is_terminal();
    let total = scenarios.len();
    let start = Instant::now();
    let mut reports = Vec::with_capacity(total);
    for (i, sc) in scenarios.iter().enumerate() {
        if progress {
            let failed = reports.iter().filter(|r: &&Report| !r.passed()).count();
            eprint!(
                "\r\x1b[K[{}/{total}] {} {} ... ({:.0?} elapsed, {failed} failed)",
                i + 1,
                sc.id,
                sc.name,
                start.elapsed()
            );
            let _ = std::io::stderr().flush();
        }
        reports.push(stress::run(sc.id, &config));
    }
    if progress {
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    }
    reports
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

fn table(reports: &[Report]) -> String {
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
            r.add_calls,
            r.read_calls,
            fmt_sum(r.reads),
            r.wakeups,
            r.spurious,
            fmt_wait(r.max_pending_wait),
            format!("{:.2}s", r.elapsed.as_secs_f64()),
            if r.passed() { "PASS" } else { "FAIL" }
        ));
    }
    for r in reports {
        if let Some(msg) = &r.failure {
            out.push_str(&format!("\n{} FAIL: {msg}", r.id));
        }
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    out.push_str(&format!(
        "\n{} scenarios, {} passed, {failed} failed",
        reports.len(),
        reports.len() - failed
    ));
    let mut seeds: Vec<u64> = reports.iter().map(|r| r.seed).collect();
    seeds.dedup();
    match seeds[..] {
        [] => out.push('\n'),
        [seed] => out.push_str(&format!("; seed {seed} (replay: --seed {seed})\n")),
        _ => out.push_str(&format!("; seeds {seeds:?}\n")),
    }
    out
}

/// A report in `--json`. The sums are `u128` (scenarios that add
/// `MAX_COUNT` pass `u64::MAX`): serde_json writes them as plain numbers.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: &'a str,
    rounds: u64,
    adds: u128,
    reads: u128,
    add_calls: u64,
    read_calls: u64,
    wakeups: u64,
    spurious: u64,
    max_pending_wait_us: u128,
    elapsed_ms: u128,
    passed: bool,
    failure: Option<&'a str>,
    seed: u64,
    fds_before: usize,
    fds_after: usize,
    rss_before: u64,
    rss_after: u64,
}

impl<'a> From<&'a Report> for Row<'a> {
    fn from(r: &'a Report) -> Row<'a> {
        Row {
            id: &r.id,
            name: &r.name,
            rounds: r.rounds,
            adds: r.adds,
            reads: r.reads,
            add_calls: r.add_calls,
            read_calls: r.read_calls,
            wakeups: r.wakeups,
            spurious: r.spurious,
            max_pending_wait_us: r.max_pending_wait.as_micros(),
            elapsed_ms: r.elapsed.as_millis(),
            passed: r.passed(),
            failure: r.failure.as_deref(),
            seed: r.seed,
            fds_before: r.fds_before,
            fds_after: r.fds_after,
            rss_before: r.rss_before,
            rss_after: r.rss_after,
        }
    }
}

/// A JSON array with one report a line, so that a line-oriented tool can
/// pick a scenario out.
fn json(reports: &[Report]) -> String {
    let lines: Vec<String> = reports
        .iter()
        .map(|r| {
            let row = serde_json::to_string(&Row::from(r)).unwrap_or_else(|e| {
                // Unreachable for this struct of numbers and strings; still
                // valid JSON if it happens.
                serde_json::json!({ "id": r.id, "error": e.to_string() }).to_string()
            });
            format!("  {row}")
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(adds: u128, failure: Option<&str>) -> Report {
        #[allow(
            clippy::needless_update,
            reason = "the fields the engine adds keep a real report's values"
        )]
        Report {
            id: "S9".to_string(),
            name: "a \"quoted\" name".to_string(),
            rounds: 2,
            adds,
            reads: adds,
            add_calls: 3,
            read_calls: 4,
            wakeups: 5,
            spurious: 1,
            max_pending_wait: Duration::from_micros(1_500),
            elapsed: Duration::from_millis(250),
            failure: failure.map(str::to_string),
            ..stress::run("none", &Config::default())
        }
    }

    #[test]
    fn json_keeps_the_keys_and_sums_past_u64() {
        let big = u128::from(u64::MAX) * 3;
        let text = json(&[report(big, None), report(7, Some("lost 1"))]);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let rows = value.as_array().expect("an array");
        assert_eq!(rows.len(), 2);
        assert_eq!(text.lines().count(), 4, "one report a line:\n{text}");
        let keys: Vec<&str> = rows[0]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "id",
            "name",
            "rounds",
            "adds",
            "reads",
            "add_calls",
            "read_calls",
            "wakeups",
            "spurious",
            "max_pending_wait_us",
            "elapsed_ms",
            "passed",
            "failure",
            "seed",
            "fds_before",
            "fds_after",
            "rss_before",
            "rss_after",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        // The exact decimal, not a float: 3 * (2^64 - 1).
        assert!(text.contains("\"adds\":55340232221128654845,"), "{text}");
        assert_eq!(rows[0]["name"], "a \"quoted\" name");
        assert_eq!(rows[0]["max_pending_wait_us"], 1_500);
        assert_eq!(rows[0]["elapsed_ms"], 250);
        assert_eq!(rows[0]["passed"], true);
        assert_eq!(rows[0]["failure"], serde_json::Value::Null);
        assert_eq!(rows[1]["passed"], false);
        assert_eq!(rows[1]["failure"], "lost 1");
    }
}
