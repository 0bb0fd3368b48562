//! Syscalls per round trip, counted by `perf stat` around a re-run of this
//! binary (hidden `--one` mode) for one implementation at a time.
//!
//! Setup (runtime, threads, registrations) also makes syscalls, so each
//! subject runs twice, with [`SHORT`] and [`LONG`] round trips, and the
//! difference is divided by `LONG - SHORT`: the steady-state cost per RT.

use std::process::Command;

use serde_json::{json, Value};

use crate::run::{Flavor, Subject};
use crate::sys::Pin;

/// Round trips of the short run.
pub(crate) const SHORT: usize = 2_000;
/// Round trips of the long run.
pub(crate) const LONG: usize = 22_000;
const WARMUP: usize = 500;

/// The tracepoints counted, in column order; EAGAIN is `sys_exit_read` with
/// a filter (ret == -11).
const EVENTS: [(&str, Option<&str>); 6] = [
    ("raw_syscalls:sys_enter", None),
    ("syscalls:sys_enter_read", None),
    ("syscalls:sys_enter_write", None),
    ("syscalls:sys_enter_epoll_wait", None),
    ("syscalls:sys_exit_read", Some("ret == -11")),
    ("syscalls:sys_enter_futex", None),
];

/// Syscalls per round trip.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counts {
    pub(crate) all: f64,
    pub(crate) read: f64,
    pub(crate) write: f64,
    pub(crate) epoll_wait: f64,
    pub(crate) eagain: f64,
    pub(crate) futex: f64,
}

impl Counts {
    pub(crate) fn cells(&self) -> Vec<String> {
        [
            self.all,
            self.read,
            self.write,
            self.epoll_wait,
            self.eagain,
            self.futex,
        ]
        .iter()
        .map(|v| format!("{:.2}", if v.abs() < 0.005 { 0.0 } else { *v }))
        .collect()
    }

    pub(crate) fn to_json(self) -> Value {
        json!({
            "all": self.all, "read": self.read, "write": self.write,
            "epoll_wait": self.epoll_wait, "read_eagain": self.eagain, "futex": self.futex,
        })
    }
}

/// The `perf stat` command line that counts `subject` for `rts` round trips.
pub(crate) fn command_line(
    exe: &str,
    subject: Subject,
    flavor: Flavor,
    pin: Pin,
    rts: usize,
) -> Vec<String> {
    let mut args = vec!["stat".to_string(), "-x,".to_string()];
    for (event, filter) in EVENTS {
        args.push("-e".into());
        args.push(event.into());
        if let Some(f) = filter {
            args.push("--filter".into());
            args.push(f.into());
        }
    }
    args.extend(
        [
            "--",
            exe,
            "latency",
            "--one",
            &subject.key(),
            "--flavor",
            flavor.name(),
            "--pin",
            pin.name(),
            "--rts",
            &rts.to_string(),
            "--warmup",
            &WARMUP.to_string(),
        ]
        .map(String::from),
    );
    args
}

fn run_perf(
    exe: &str,
    subject: Subject,
    flavor: Flavor,
    pin: Pin,
    rts: usize,
) -> Result<[f64; 6], String> {
    let args = command_line(exe, subject, flavor, pin, rts);
    let shown = format!(
        "perf {}",
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("perf")
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run perf ({e}); count by hand with:\n  {shown}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "perf failed ({}): {}\n  command: {shown}",
            out.status,
            stderr.trim()
        ));
    }
    let mut values = [f64::NAN; 6];
    let mut seen = 0;
    for line in stderr.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 || seen >= values.len() {
            continue;
        }
        if fields[2] == EVENTS[seen].0 {
            values[seen] = fields[0].parse().map_err(|_| {
                format!(
                    "perf could not count {} (`{}`); command: {shown}",
                    fields[2], fields[0]
                )
            })?;
            seen += 1;
        }
    }
    if seen == values.len() {
        Ok(values)
    } else {
        Err(format!(
            "unexpected perf output:\n{stderr}\n  command: {shown}"
        ))
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:,=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{s}'")
    }
}

/// Counts the steady-state syscalls per RT of `subject`.
pub(crate) fn count(subject: Subject, flavor: Flavor, pin: Pin) -> Result<Counts, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let exe = exe.to_string_lossy().into_owned();
    let short = run_perf(&exe, subject, flavor, pin, SHORT)?;
    let long = run_perf(&exe, subject, flavor, pin, LONG)?;
    #[allow(clippy::cast_precision_loss, reason = "small counts")]
    let per = |i: usize| (long[i] - short[i]) / (LONG - SHORT) as f64;
    Ok(Counts {
        all: per(0),
        read: per(1),
        write: per(2),
        epoll_wait: per(3),
        eagain: per(4),
        futex: per(5),
    })
}
