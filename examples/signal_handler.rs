//! A signal handler wakes an async task: the handler's whole body is one
//! `Notifier::notify()`, and the task awaits `AsyncEventFd::read`.
//!
//! ```sh
//! cargo run --example signal_handler
//! ```
//!
//! A signal handler may only call async-signal-safe functions: it can
//! interrupt any code, including `malloc` or a thread holding a lock, so a
//! handler that allocates or locks (a channel send, `Notify`, `println!`) can
//! deadlock or corrupt the heap. [`Notifier::notify`] is safe there: it is one
//! `write(2)` of 8 bytes from the stack, with no allocation and no lock, even
//! on its error paths, and a full counter counts as notified, so it never
//! fails for that. `write(2)` is on POSIX's list of async-signal-safe
//! functions.
//!
//! The example installs a `SIGUSR1` handler with `nix::sys::signal::sigaction`
//! that notifies through a [`Notifier`] (from `notifier()`) kept in
//! a static `OnceLock` (reading an initialized `OnceLock` is one atomic
//! load). A plain thread then sends the process `SIGUSR1` five times with
//! `kill(2)`, and the task reacts to each. Ordinary signals do not queue (two
//! sent while one is pending are delivered once), so the sender waits until
//! the handler has run before it sends the next; the eventfd itself never
//! loses a count.
//!
//! If all you need is to react to a signal in tokio, `tokio::signal::unix`
//! does this for you. Use this pattern when you own the handler: a C library
//! installs it, other work happens in it, or the runtime is not tokio.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::error::Error;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, Notifier};
use nix::errno::Errno;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;
use tokio::time::timeout;

/// Any await that takes longer than this is a lost wakeup: fail.
const LIMIT: Duration = Duration::from_secs(5);
const SIGNALS: u64 = 5;

/// The handler's notifier, set before the handler is installed.
static DOORBELL: OnceLock<Notifier> = OnceLock::new();
/// How many times the handler ran, and how many of its notifies failed.
static HANDLED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The signal handler: atomics, one `write(2)`, and `errno` put back as it
/// was, so that the code the signal interrupted sees its own `errno`.
extern "C" fn on_sigusr1(_signal: c_int) {
    let saved_errno = Errno::last_raw();
    if let Some(doorbell) = DOORBELL.get() {
        let counter = match doorbell.notify() {
            Ok(()) => &HANDLED,
            Err(_) => &FAILED,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    Errno::set_raw(saved_errno);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let efd = AsyncEventFd::new()?;
    DOORBELL
        .set(efd.notifier()?)
        .map_err(|_| "DOORBELL was already set")?;

    let action = SigAction::new(
        SigHandler::Handler(on_sigusr1),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: `on_sigusr1` calls only async-signal-safe code: an atomic load
    // (`OnceLock::get` on a lock that was set above, before installing),
    // `Notifier::notify` (one write(2), no allocation, no lock), atomic adds, and
    // reading and restoring errno. Nothing else in this program handles
    // SIGUSR1, so replacing the default action disturbs no one.
    let previous = unsafe { sigaction(Signal::SIGUSR1, &action) }?;
    println!("installed a SIGUSR1 handler that calls Notifier::notify()");

    let sender = thread::spawn(send_signals);

    let mut total = 0;
    while total < SIGNALS {
        let value = timeout(LIMIT, efd.read()).await??;
        total += value;
        println!("task woke: read {value} (total {total}/{SIGNALS})");
    }
    tokio::task::spawn_blocking(move || sender.join())
        .await?
        .map_err(|_| "the sender thread panicked")??;

    // SAFETY: puts back the action that was there before (the default), so
    // no SIGUSR1 reaches `on_sigusr1` once the program moves on.
    unsafe { sigaction(Signal::SIGUSR1, &previous) }?;

    assert_eq!(total, SIGNALS, "one count per signal");
    assert_eq!(HANDLED.load(Ordering::SeqCst), SIGNALS);
    assert_eq!(FAILED.load(Ordering::SeqCst), 0, "no notify failed");
    println!("{SIGNALS} signals sent, {SIGNALS} handled, {total} counts read");
    Ok(())
}

/// Sends this process SIGUSR1, waiting each time until the handler has run:
/// ordinary signals do not queue, so a second one sent while the first is
/// still pending would be merged with it.
fn send_signals() -> Res<()> {
    for sent in 1..=SIGNALS {
        kill(Pid::this(), Signal::SIGUSR1)?;
        let deadline = Instant::now() + LIMIT;
        while HANDLED.load(Ordering::SeqCst) < sent {
            if Instant::now() > deadline {
                return Err(format!("signal {sent} was never handled").into());
            }
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
