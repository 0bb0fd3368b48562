//! `eventfd-bench`: what a wakeup through `async-eventfd` costs, next to the
//! ways one would otherwise do it, measured in one run so the ratios mean
//! something even on a noisy machine; and the stress scenarios (`--help`).
//!
//! One file per subcommand. What they share: [`contenders`] (the
//! implementations under test), [`rows`] (a table's row), [`runtime`],
//! [`pinning`], [`timing`], [`interleave`], [`stats`], [`table`],
//! [`syscall_count`] and [`options`].
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(rust_2018_idioms)]

mod contenders;
mod interleave;
mod kernel;
mod latency;
mod options;
mod pinning;
mod rows;
mod runtime;
mod scale;
mod stats;
mod stress;
mod syscall_count;
mod table;
mod thread_task;
mod throughput;
mod timing;
mod tour;

use std::process::ExitCode;

use crate::options::Command;

fn main() -> ExitCode {
    match options::parse().command {
        None => tour::run(),
        Some(Command::Latency(args)) => exit_code(latency::run(&args)),
        Some(Command::ThreadTask(args)) => exit_code(thread_task::run(&args)),
        Some(Command::Throughput(args)) => exit_code(throughput::run(&args)),
        Some(Command::Scale(args)) => exit_code(scale::run(&args)),
        Some(Command::Kernel(args)) => exit_code(kernel::run(&args)),
        Some(Command::Stress(args)) => stress::run(&args),
    }
}

/// The exit status of a measurement; an I/O error is printed, status 1.
fn exit_code(result: std::io::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("eventfd-bench: {e}");
        ExitCode::FAILURE
    })
}
