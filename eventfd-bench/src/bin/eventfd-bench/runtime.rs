//! The runtime flavors, and the fresh threads and runtimes every
//! measurement runs on, so pinning and runtime state never leak from one
//! measurement to the next.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Runtime};

use crate::pinning::Pin;

/// The tokio scheduler flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `current_thread`: everything on the thread that calls `block_on`.
    Ct,
    /// `multi_thread` with 2 workers.
    Mt,
}

impl Flavor {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavor::Ct => "ct",
            Flavor::Mt => "mt",
        }
    }
}

/// Builds a runtime of `flavor` whose worker threads are pinned as `pin`
/// says (workers alternate between the two sides for `cross`).
fn runtime(flavor: Flavor, pin: Pin) -> io::Result<Runtime> {
    match flavor {
        Flavor::Ct => Builder::new_current_thread().enable_all().build(),
        Flavor::Mt => {
            let next = Arc::new(AtomicUsize::new(0));
            Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || pin.apply(next.fetch_add(1, Ordering::Relaxed)))
                .build()
        }
    }
}

/// Runs `f` on a fresh OS thread pinned to side 0 and returns its result.
pub(crate) fn on_thread<T: Send + 'static>(
    pin: Pin,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || {
        pin.apply(0);
        f()
    })
    .join()
    .map_err(|_| io::Error::other("benchmark thread panicked"))?
}

/// Runs the future that `f` makes on a fresh runtime of `flavor`, itself on a
/// fresh thread pinned to side 0 (see [`on_thread`]). The runtime, and with it
/// every task still alive, is gone before the result is returned.
pub(crate) fn on_runtime<T, F>(
    flavor: Flavor,
    pin: Pin,
    f: impl FnOnce() -> F + Send + 'static,
) -> io::Result<T>
where
    T: Send + 'static,
    F: Future<Output = io::Result<T>>,
{
    on_thread(pin, move || runtime(flavor, pin)?.block_on(f()))
}

/// The result of a task that returns an `io::Result`; a panic or
/// cancellation is an error too.
pub(crate) fn join<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.map_err(io::Error::other)?
}
