//! The tour, what `eventfd-bench` runs with no command: every stress
//! scenario (S1-S19) once, then the latency table, short enough for CI.

use std::process::ExitCode;

use crate::options::{self, Command};
use crate::{exit_code, latency, stress};

/// The two commands the tour runs, as a user would type them.
const STRESS: &[&str] = &["stress", "--scale", "1"];
const LATENCY: &[&str] = &[
    "latency", "--rounds", "3", "--rts", "3000", "--warmup", "500",
];

/// Runs the tour: status 0 when no scenario failed (a SKIP, where io_uring
/// or `/dev/kvm` is missing, is shown as such) and the latency table was
/// measured.
pub(crate) fn run() -> ExitCode {
    println!(
        "eventfd-bench tour: stress verdicts (one round of each scenario), then the latency table."
    );
    println!("More: `eventfd-bench --help`.\n");
    let (Command::Stress(stress_args), Command::Latency(latency_args)) =
        (options::preset(STRESS), options::preset(LATENCY))
    else {
        unreachable!("the tour's presets are a stress and a latency command");
    };
    let stress_ok = stress::run(&stress_args) == ExitCode::SUCCESS;
    let code = exit_code(latency::run(&latency_args));
    if stress_ok {
        code
    } else {
        eprintln!("eventfd-bench: a stress scenario FAILED (see above)");
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presets_parse() {
        let Command::Stress(s) = options::preset(STRESS) else {
            panic!("stress preset")
        };
        assert_eq!(s.duration, None, "one pass");
        assert_eq!((s.scale, s.threads, s.json), (Some(1), None, false));
        let Command::Latency(l) = options::preset(LATENCY) else {
            panic!("latency preset")
        };
        assert_eq!((l.rounds, l.rts, l.warmup), (3, 3_000, 500));
        assert!(!l.syscalls && !l.common.json && l.one.is_none());
    }
}
