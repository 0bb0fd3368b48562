//! `eventfd-bench thread-task`: the latency table with a plain OS thread
//! (blocking eventfd) on one side, which wakes the task by writing to the
//! task's eventfd. The crate's row is there three times, one per way a
//! thread writes: a raw `write(2)` on the fd, a `Notifier`, and
//! `EventFd::add(1)` on a `try_clone`.

use std::io;
use std::process::ExitCode;

use crate::impls::Impl;
use crate::latency::{table, PingPong};
use crate::options::LatencyArgs;
use crate::run::Subject;

/// A thread and a task.
const THREAD_TASK: PingPong = PingPong {
    command: "thread-task",
    title: "thread <-> task ping-pong (a plain OS thread wakes a task; ns per round trip)",
    subject: Subject::ThreadTask,
    floors: &[Subject::ThreadFloor],
};

/// `eventfd-bench thread-task`.
pub(crate) fn run(args: &LatencyArgs) -> io::Result<ExitCode> {
    let mut args = args.clone();
    args.common = args.common.or_impls(&Impl::THREAD_TASK);
    table(&args, &THREAD_TASK)
}
