//! A plain OS thread wakes an async task: no runtime handle, no channel, just
//! a [`Notifier`] on the task's counter.
//!
//! ```sh
//! cargo run --example thread_to_runtime
//! ```
//!
//! The thread stands for a blocking library or a callback from C: code that
//! knows nothing about tokio. It gets a [`Notifier`] (one `dup` of the fd,
//! made by `notifier()`; its clones share that fd) and calls
//! [`Notifier::add`], one `write(2)`. The task awaits
//! [`AsyncEventFd::read`] on the same counter.
//!
//! Part 1 shows coalescing: four adds made while nobody reads are one count,
//! 1 + 2 + 3 + 4, and a single read takes all 10.
//!
//! Part 2 is a stream of 100 callbacks, each adding its event number, while
//! the task keeps reading. Some reads see one add, some see several that
//! landed between two reads; the total is exact: 1 + 2 + ... + 100 = 5050,
//! and nothing is left over afterwards. Its thread holds a clone of the same
//! notifier: no second fd.

use std::error::Error;
use std::io;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use async_eventfd::{AsyncEventFd, Notifier};
use tokio::time::timeout;

/// Any await that takes longer than this is a lost wakeup: fail.
const LIMIT: Duration = Duration::from_secs(5);
const CALLBACKS: u64 = 100;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let efd = AsyncEventFd::new()?;
    let notifier = efd.notifier()?;

    // Part 1: adds made while nobody reads coalesce into one count.
    let writer = notifier.clone();
    assert_eq!(
        writer.as_raw_fd(),
        notifier.as_raw_fd(),
        "clones share one fd"
    );
    let thread = thread::spawn(move || -> io::Result<()> {
        for n in 1..=4 {
            writer.add(n)?;
        }
        Ok(())
    });
    // Wait for the thread without blocking the runtime's only thread.
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| "the writer thread panicked")??;
    let value = timeout(LIMIT, efd.read()).await??;
    println!("part 1: the thread added 1, 2, 3, 4; one read returned {value}");
    assert_eq!(value, 10, "four adds coalesce into one count of 10");

    // Part 2: a thread firing callbacks while the task reads; the notifier
    // itself moves there (clones share its one fd).
    let thread = thread::spawn(move || library_with_callbacks(&notifier));

    let expected = CALLBACKS * (CALLBACKS + 1) / 2;
    let (mut total, mut reads, mut largest) = (0, 0, 0);
    while total < expected {
        let value = timeout(LIMIT, efd.read()).await??;
        total += value;
        reads += 1;
        largest = largest.max(value);
    }
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| "the callback thread panicked")??;
    println!(
        "part 2: {CALLBACKS} callbacks added 1..={CALLBACKS}; {reads} reads by the task \
         took {total} in all (largest single read: {largest})"
    );
    assert_eq!(total, expected, "every add is read exactly once");
    assert!(reads <= CALLBACKS, "a read returns at least one add");
    let left = efd.try_read().map_err(|e| e.kind());
    assert_eq!(left, Err(io::ErrorKind::WouldBlock), "nothing left over");
    println!("afterwards the counter is empty: try_read gives WouldBlock");
    Ok(())
}

/// Stands for a blocking C library that calls back on its own thread: each
/// event is announced with one `add`. Bursts of three callbacks, then a short
/// pause, so that some reads see one add and some see several.
fn library_with_callbacks(notifier: &Notifier) -> io::Result<()> {
    for event in 1..=CALLBACKS {
        notifier.add(event)?;
        if event % 3 == 0 {
            thread::sleep(Duration::from_micros(300));
        }
    }
    Ok(())
}
