//! `eventfd-bench thread-task`: the latency table with a plain OS thread
//! (blocking eventfd) on one side, which wakes the task by writing to the
//! task's eventfd, in each of the ways [`Contender::THREAD_TASK`] lists.

use std::io;
use std::process::ExitCode;

use async_eventfd::EventFd;

use crate::contenders::{dispatch, Contender, End};
use crate::latency::{table, PingPong};
use crate::options::LatencyArgs;
use crate::pinning::Pin;
use crate::rows::Floor;
use crate::runtime::{join, on_runtime, Flavor};
use crate::timing::{time_each, Rts};

/// A thread and a task.
pub(crate) static THREAD_TASK: PingPong = PingPong {
    command: "thread-task",
    title: "thread <-> task ping-pong (a plain OS thread wakes a task; ns per round trip)",
    name_prefix: "thread<->",
    key_prefix: "thread-",
    task: |c, flavor, pin, n| dispatch!(c, thread_task(flavor, pin, n)),
    floors: &[Floor::Threads],
};

pub(crate) fn run(args: &LatencyArgs) -> io::Result<ExitCode> {
    let mut args = args.clone();
    args.common = args.common.or_contenders(&Contender::THREAD_TASK);
    table(&args, &THREAD_TASK)
}

fn thread_task<E: End>(c: Contender, flavor: Flavor, pin: Pin, n: Rts) -> io::Result<Vec<u64>> {
    on_runtime(flavor, pin, move || async move {
        let chan = E::chan(c)?;
        let (mut task_rx, to_task) = (chan.rx, chan.sync);
        let thread_efd = EventFd::builder().nonblocking(false).build()?;
        let to_thread = thread_efd.try_clone()?;
        let thread = std::thread::spawn(move || {
            pin.apply(1);
            for _ in 0..n.rts + n.warmup {
                thread_efd.read()?;
                to_task.fire()?;
            }
            Ok::<_, io::Error>(())
        });
        let task = tokio::spawn(async move {
            Ok::<_, io::Error>(time_each!(n, {
                to_thread.add(1)?;
                task_rx.recv().await?;
            }))
        });
        let samples = join(task.await)?;
        thread
            .join()
            .map_err(|_| io::Error::other("thread side panicked"))??;
        Ok(samples)
    })
}
