//! `eventfd-bench stress`: the stress scenarios S1-S16 with a duration, a
//! scenario filter and a verdict per scenario.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use eventfd_bench::stress::{self, Config, Report, Scenario, SCENARIOS};

/// What the command line asked for.
#[derive(Debug)]
struct Args {
    duration: Option<Duration>,
    scenarios: Vec<&'static Scenario>,
    threads: Option<usize>,
    scale: u32,
    liveness: Duration,
    json: bool,
}

fn usage() -> String {
    let mut text = String::from(
        "eventfd-bench stress: prove that no layer loses a wakeup or a count

USAGE:
    eventfd-bench stress [OPTIONS]

OPTIONS:
    --duration <D>      run for about D in all (e.g. 10s, 500ms, 5m, 1h), shared
                        equally by the selected scenarios; each repeats rounds
                        until its share is used. Default: one round each.
    --scenario <ID>     run only this scenario (S1..S16, or 1..16); repeat the
                        option or give a comma-separated list for several
    --threads <N>       writer/reader threads (and tokio workers) where a
                        scenario has a choice; more than the cores oversubscribes
    --scale <N>         multiply each round's work by N (default:
                        $EVENTFD_STRESS_SCALE, else 1)
    --liveness <D>      T: the longest a count may stay pending with no waiter
                        woken before it counts as a lost wakeup (default 2s)
    --json              print a JSON array instead of the table
    -h, --help          print this help

Every scenario checks conservation (the sum of all reads equals the sum of all
adds, exactly) and liveness (no count stays pending for T while nobody wakes;
a watchdog reports the count left and the waiters asleep). Per scenario the
output gives add and read calls, the sum read (always equal to the sum added when
the verdict is PASS), wakeups, spurious wakeups (woke and found nothing),
the longest wait seen while a count was pending, and PASS or FAIL. The exit
status is 0 if every scenario passed, 1 if any failed, 2 for bad arguments.

SCENARIOS:
",
    );
    for s in &SCENARIOS {
        text.push_str(&format!(
            "    {:<4} {}\n         {}\n         checks: {}\n",
            s.id, s.name, s.topology, s.checks
        ));
    }
    text
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a plain number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. 10s, 500ms, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid duration {s:?} (must be positive)"))
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut out = Args {
        duration: None,
        scenarios: Vec::new(),
        threads: None,
        scale: Config::from_env().scale,
        liveness: Config::default().liveness,
        json: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--json" => out.json = true,
            "--duration" => out.duration = Some(parse_duration(&value("--duration")?)?),
            "--liveness" => out.liveness = parse_duration(&value("--liveness")?)?,
            "--scenario" => {
                for id in value("--scenario")?.split(',').filter(|s| !s.is_empty()) {
                    let sc = stress::scenario(id)
                        .ok_or_else(|| format!("unknown scenario {id:?} (expected S1 to S16)"))?;
                    if !out.scenarios.contains(&sc) {
                        out.scenarios.push(sc);
                    }
                }
            }
            "--threads" => {
                let v = value("--threads")?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=1024).contains(&n))
                    .ok_or_else(|| format!("invalid --threads {v:?} (expected 1 to 1024)"))?;
                out.threads = Some(n);
            }
            "--scale" => {
                let v = value("--scale")?;
                out.scale = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("invalid --scale {v:?} (expected a positive integer)")
                })?;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if out.scenarios.is_empty() {
        out.scenarios = SCENARIOS.iter().collect();
    }
    Ok(Some(out))
}

/// Runs the selected scenarios, with a progress line on stderr when it is a
/// terminal.
fn run_selected(args: &Args) -> Vec<Report> {
    let share = args.duration.map(|d| {
        d / u32::try_from(args.scenarios.len())
            .unwrap_or(u32::MAX)
            .max(1)
    });
    let config = Config {
        scale: args.scale,
        duration: share,
        threads: args.threads,
        liveness: args.liveness,
    };
    let progress = std::io::stderr().is_terminal();
    let total = args.scenarios.len();
    let start = Instant::now();
    let mut reports = Vec::with_capacity(total);
    for (i, sc) in args.scenarios.iter().enumerate() {
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
        "\n{} scenarios, {} passed, {failed} failed\n",
        reports.len(),
        reports.len() - failed
    ));
    out
}

/// JSON by hand for the numbers (sums can pass u64::MAX, which serde_json's
/// `Value` cannot hold); serde_json escapes the strings.
fn json(reports: &[Report]) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    let items: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "  {{\"id\": {}, \"name\": {}, \"rounds\": {}, \"adds\": {}, \"reads\": {}, \
                 \"add_calls\": {}, \"read_calls\": {}, \"wakeups\": {}, \"spurious\": {}, \
                 \"max_pending_wait_us\": {}, \"elapsed_ms\": {}, \"passed\": {}, \"failure\": {}}}",
                quote(&r.id),
                quote(&r.name),
                r.rounds,
                r.adds,
                r.reads,
                r.add_calls,
                r.read_calls,
                r.wakeups,
                r.spurious,
                r.max_pending_wait.as_micros(),
                r.elapsed.as_millis(),
                r.passed(),
                r.failure.as_deref().map_or_else(|| "null".to_string(), quote),
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

/// `eventfd-bench stress [--duration 10s] [--scenario S3] [--threads N] [--json]`;
/// `args` is everything after `stress`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let args = match parse(args) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("eventfd-bench stress: {msg}\n(try `eventfd-bench stress --help`)");
            return ExitCode::from(2);
        }
    };
    let reports = run_selected(&args);
    if args.json {
        print!("{}", json(&reports));
    } else {
        print!("{}", table(&reports));
    }
    if reports.iter().all(Report::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every scenario briefly (one round each, or rounds filling
/// `duration` in all), prints the verdict table, and returns whether all
/// passed.
pub(crate) fn tour(duration: Duration) -> bool {
    let args = Args {
        duration: Some(duration),
        scenarios: SCENARIOS.iter().collect(),
        threads: None,
        scale: 1,
        liveness: Config::default().liveness,
        json: false,
    };
    let reports = run_selected(&args);
    print!("{}", table(&reports));
    reports.iter().all(Report::passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(
            parse_duration("0s"),
            Err("invalid duration \"0s\" (must be positive)".to_string())
        );
        assert_eq!(
            parse_duration("5x"),
            Err("invalid duration unit in \"5x\" (use ms, s, m or h)".to_string())
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse(&args(&["--scenario", "S17"])).map(|_| ()),
            Err("unknown scenario \"S17\" (expected S1 to S16)".to_string())
        );
        assert_eq!(
            parse(&args(&["--threads"])).map(|_| ()),
            Err("--threads needs a value".to_string())
        );
        assert_eq!(
            parse(&args(&["--bogus"])).map(|_| ()),
            Err("unexpected argument \"--bogus\"".to_string())
        );
        let ok = parse(&args(&["--scenario=s3,S5", "--threads", "8", "--json"]))
            .expect("valid arguments")
            .expect("not --help");
        let ids: Vec<&str> = ok.scenarios.iter().map(|s| s.id).collect();
        assert_eq!(ids, ["S3", "S5"]);
        assert_eq!(ok.threads, Some(8));
        assert!(ok.json);
    }
}
