//! Syscalls per round trip, counted by `perf stat` around a re-run of this
//! binary (hidden `--one` mode) for one row at a time.
//!
//! Setup (runtime, threads, registrations) also makes syscalls, so each
//! row runs twice, with [`SHORT`] and [`LONG`] round trips, and the
//! difference is divided by `LONG - SHORT`: the steady-state cost per RT.

use std::process::Command;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::latency::PingPong;
use crate::pinning::Pin;
use crate::rows::Row;
use crate::runtime::Flavor;

pub(crate) const SHORT: usize = 2_000;
pub(crate) const LONG: usize = 22_000;
const WARMUP: usize = 500;

/// The tracepoints counted, in column order: (perf event, perf filter, table
/// column, `--json` key). EAGAIN is `sys_exit_read` filtered on ret == -11.
#[rustfmt::skip]
const EVENTS: [(&str, Option<&str>, &str, &str); 6] = [
    ("raw_syscalls:sys_enter",        None,               "sys/RT",     "all"),
    ("syscalls:sys_enter_read",       None,               "read",       "read"),
    ("syscalls:sys_enter_write",      None,               "write",      "write"),
    ("syscalls:sys_enter_epoll_wait", None,               "epoll_wait", "epoll_wait"),
    ("syscalls:sys_exit_read",        Some("ret == -11"), "EAGAIN",     "read_eagain"),
    ("syscalls:sys_enter_futex",      None,               "futex",      "futex"),
];

/// The table columns of [`Counts::cells`].
pub(crate) fn columns() -> impl Iterator<Item = &'static str> {
    EVENTS.iter().map(|e| e.2)
}

/// Syscalls per round trip, one per tracepoint of [`EVENTS`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counts([f64; EVENTS.len()]);

impl Counts {
    #[cfg(test)]
    pub(crate) fn from_per_rt(values: [f64; EVENTS.len()]) -> Counts {
        Counts(values)
    }

    pub(crate) fn cells(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|v| format!("{:.2}", if v.abs() < 0.005 { 0.0 } else { *v }))
            .collect()
    }
}

/// For `--json`: an object with one key per tracepoint of [`EVENTS`].
impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(EVENTS.len()))?;
        for (e, v) in EVENTS.iter().zip(self.0) {
            map.serialize_entry(e.3, &v)?;
        }
        map.end()
    }
}

/// The `perf stat` command line that counts `row` of `shape` for `rts`
/// round trips.
fn command_line(exe: &str, shape: &PingPong, row: Row, pin: Pin, rts: usize) -> Vec<String> {
    let mut args = vec!["stat".to_string(), "-x,".to_string()];
    for (event, filter, _, _) in EVENTS {
        args.push("-e".into());
        args.push(event.into());
        if let Some(f) = filter {
            args.push("--filter".into());
            args.push(f.into());
        }
    }
    let (key, rts, warmup) = (shape.key(row), rts.to_string(), WARMUP.to_string());
    let flavor = row.flavor().unwrap_or(Flavor::Ct).name();
    args.extend(
        [
            "--",
            exe,
            "latency",
            "--one",
            &key,
            "--flavor",
            flavor,
            "--pin",
            pin.name(),
            "--rts",
            &rts,
            "--warmup",
            &warmup,
        ]
        .map(String::from),
    );
    args
}

fn run_perf(args: &[String]) -> Result<[f64; EVENTS.len()], String> {
    let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let shown = format!("perf {}", quoted.join(" "));
    let out = Command::new("perf")
        .args(args)
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
    let mut values = [f64::NAN; EVENTS.len()];
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
    if seen < values.len() {
        return Err(format!(
            "unexpected perf output:\n{stderr}\n  command: {shown}"
        ));
    }
    Ok(values)
}

fn shell_quote(s: &str) -> String {
    if s.contains(|c: char| !(c.is_ascii_alphanumeric() || "-_./:,=".contains(c))) {
        format!("'{s}'")
    } else {
        s.to_string()
    }
}

/// Counts the steady-state syscalls per RT of `row` of `shape`.
pub(crate) fn count(shape: &PingPong, row: Row, pin: Pin) -> Result<Counts, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let exe = exe.to_string_lossy().into_owned();
    let short = run_perf(&command_line(&exe, shape, row, pin, SHORT))?;
    let long = run_perf(&command_line(&exe, shape, row, pin, LONG))?;
    let rts = (LONG - SHORT) as f64;
    Ok(Counts(std::array::from_fn(|i| (long[i] - short[i]) / rts)))
}
