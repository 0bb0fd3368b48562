//! S13: runtime shutdown with pending read/add; `Arc` clones dropped while
//! others wait; the last drop closes the fd.

use std::future::{poll_fn, Future};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::Duration;

use tokio::runtime::Runtime;

use super::{async_fd, current, multi, within};
use crate::stress::ctx::{bail, ensure, Context, Ctx, Step, Tally};
use async_eventfd::{AsyncEventFd, MAX_COUNT};

/// S13, 50 rounds (times the scale), each on a fresh runtime.
pub(in crate::stress) fn runtime_shutdown_and_drop(ctx: &Arc<Ctx>) -> Step {
    for round in 0..50 * ctx.scale() {
        ctx.begin();
        let rt = multi(2)?;
        clones_dropped_while_waiting(ctx, &rt, round)?;
        let empty = shutdown_under_pending(ctx, rt, round)?;
        last_drop_closes(empty, round)?;
    }
    Ok(())
}

/// Three readers on a semaphore fd; one is aborted and one spare clone
/// dropped while they wait; the other two still get one count each.
fn clones_dropped_while_waiting(ctx: &Ctx, rt: &Runtime, round: u64) -> Step {
    let sem = async_fd(rt, true)?;
    let writer = sem.get_ref().try_clone().context("try_clone")?;
    let mut tally = Tally::default();
    rt.block_on(async {
        let [aborted, readers @ ..] = [(); 3].map(|()| {
            let efd = Arc::clone(&sem);
            tokio::spawn(async move { efd.read().await })
        });
        let spare = Arc::clone(&sem);
        tokio::time::sleep(Duration::from_millis(1)).await;
        aborted.abort();
        drop(spare);
        writer.add(2).context("add(2)")?;
        tally.add(2);
        for (i, h) in readers.into_iter().enumerate() {
            let got = within(ctx, "a reader after a clone was dropped", h).await?;
            ensure!(
                matches!(got, Ok(Ok(1))),
                "S13: round {round}: reader {i} got {got:?}, expected Ok(1)"
            );
            tally.read(1);
        }
        match within(ctx, "the aborted reader", aborted).await? {
            Err(e) if e.is_cancelled() => Ok(()),
            other => bail!(
                "S13: round {round}: the aborted reader gave {other:?}, expected a cancellation"
            ),
        }
    })?;
    ctx.merge(&tally);
    Ok(())
}

/// A read pending on an empty fd and an add pending on a full one, both
/// polled from a second runtime while `rt1`, their own, shuts down under
/// them (from another thread): both, and later calls, fail. Returns the empty fd, still open.
fn shutdown_under_pending(ctx: &Ctx, rt1: Runtime, round: u64) -> Step<Arc<AsyncEventFd>> {
    let empty = async_fd(&rt1, false)?;
    let full = async_fd(&rt1, false)?;
    let mut tally = Tally::default();
    full.get_ref().add(MAX_COUNT).context("add(MAX_COUNT)")?;
    tally.add(MAX_COUNT);
    let rt2 = current()?;
    let mut rt1 = Some(rt1);
    let mut shutdown = None;
    let res = rt2.block_on(async {
        let mut read = pin!(empty.read());
        let mut add = pin!(full.add(1));
        let first = poll_fn(|cx| {
            let read = read.as_mut().poll(cx).is_pending();
            Poll::Ready((read, add.as_mut().poll(cx).is_pending()))
        })
        .await;
        ensure!(
            first == (true, true),
            "S13: round {round}: read/add on an empty/full fd pending: {first:?}, expected \
             (true, true)"
        );
        if let Some(rt) = rt1.take() {
            // From a thread of its own, not `shutdown_background`, so that
            // the round can wait until the runtime's threads (which hold
            // its epoll fd) are gone.
            let timeout = Duration::from_secs(1);
            shutdown = Some(thread::spawn(move || rt.shutdown_timeout(timeout)));
        }
        let what = "a read pending at runtime shutdown";
        if let Ok(v) = within(ctx, what, read).await? {
            bail!("S13: round {round}: pending read returned {v} after shutdown");
        }
        let what = "an add pending at runtime shutdown";
        if within(ctx, what, add).await?.is_ok() {
            bail!("S13: round {round}: pending add succeeded after shutdown");
        }
        if let Ok(v) = within(ctx, "a read after runtime shutdown", empty.read()).await? {
            bail!("S13: round {round}: read after shutdown returned {v}");
        }
        let added = within(ctx, "an add after runtime shutdown", full.add(1)).await?;
        if added.is_ok() {
            bail!("S13: round {round}: add after shutdown succeeded");
        }
        Ok(())
    });
    if let Some(Err(_)) = shutdown.map(thread::JoinHandle::join) {
        bail!("S13: the runtime shutdown panicked");
    }
    res?;
    drop(rt1);
    let what = "S13: reading the full fd after shutdown";
    tally.read(full.get_ref().read().context(what)?);
    ctx.merge(&tally);
    Ok(empty)
}

/// The last drop of an `AsyncEventFd` closes its fd, and only the last.
/// Checked by the eventfd-id, as the fd number may be reused at once by
/// another thread.
fn last_drop_closes(empty: Arc<AsyncEventFd>, round: u64) -> Step {
    let raw = empty.as_raw_fd();
    let id = eventfd_id(raw);
    let clone = Arc::clone(&empty);
    drop(empty);
    ensure!(
        eventfd_id(raw) == id,
        "S13: round {round}: dropping one of two clones closed the fd"
    );
    drop(clone);
    ensure!(
        id.is_none() || eventfd_id(raw) != id,
        "S13: round {round}: the last drop did not close fd {raw}"
    );
    Ok(())
}

fn eventfd_id(fd: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .map(|v| v.trim().to_string())
}
