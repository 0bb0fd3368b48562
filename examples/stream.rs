//! `AsyncEventFd` as a `futures` `Stream` of reads, with combinators.
//!
//! ```sh
//! cargo run --example stream
//! ```
//!
//! With the `stream` feature (on by default) `AsyncEventFd` implements
//! `futures_core::Stream<Item = io::Result<u64>>`: each item is one
//! successful read. The stream never ends on its own, so bound it with
//! `take`, or stop the loop yourself. `by_ref()` borrows the stream for a
//! combinator chain and keeps the `AsyncEventFd` for later.
//!
//! Part 1: a semaphore-mode fd; a thread adds 3, then 2. In semaphore mode
//! each item is 1, so the number of items is known: `take(5)` and
//! `try_collect` give exactly `[1, 1, 1, 1, 1]`.
//!
//! Part 2: two counter-mode fds, "disk" and "net", each fed by a thread.
//! `map_ok` tags each stream's items with their source, `stream::select`
//! merges them into one, and a `while let` loop keeps per-source totals until
//! both are complete. In counter mode adds can coalesce, so the number of
//! items varies from run to run; the totals do not.

use std::error::Error;
use std::io;
use std::thread;
use std::time::Duration;

use async_eventfd::{AsyncEventFd, EventFd};
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::time::timeout;

/// Any await that takes longer than this is a lost wakeup: fail.
const LIMIT: Duration = Duration::from_secs(5);
const DISK_ADDS: [u64; 5] = [4, 4, 4, 4, 4];
const NET_ADDS: [u64; 6] = [1, 2, 3, 4, 5, 6];

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    // Part 1: a semaphore-mode stream, bounded with `take`.
    let mut jobs = AsyncEventFd::try_from(EventFd::builder().semaphore(true).build()?)?;
    let writer = jobs.get_ref().try_clone()?;
    let feeder = thread::spawn(move || add_all(&writer, &[3, 2], Duration::from_millis(5)));
    let items: Vec<u64> = timeout(LIMIT, jobs.by_ref().take(5).try_collect()).await??;
    join(feeder).await?;
    println!("part 1: adds of 3 and 2 to a semaphore-mode fd; take(5) gave {items:?}");
    assert_eq!(items, [1, 1, 1, 1, 1]);
    let left = jobs.try_read().map_err(|e| e.kind());
    assert_eq!(left, Err(io::ErrorKind::WouldBlock), "nothing left");

    // Part 2: two streams tagged with `map_ok` and merged with `select`.
    let disk = AsyncEventFd::new()?;
    let net = AsyncEventFd::new()?;
    let feeders = [
        spawn_feeder(&disk, &DISK_ADDS, Duration::from_millis(3))?,
        spawn_feeder(&net, &NET_ADDS, Duration::from_millis(2))?,
    ];
    let mut merged = stream::select(disk.map_ok(|n| ("disk", n)), net.map_ok(|n| ("net", n)));
    let expected: (u64, u64) = (DISK_ADDS.iter().sum(), NET_ADDS.iter().sum());
    let (mut disk_total, mut net_total, mut items) = (0, 0, 0);
    while (disk_total, net_total) != expected {
        let Some(item) = timeout(LIMIT, merged.next()).await? else {
            return Err("an AsyncEventFd stream never ends".into());
        };
        let (source, n) = item?;
        items += 1;
        match source {
            "disk" => disk_total += n,
            _ => net_total += n,
        }
        println!(
            "part 2: {source:>4} {n:>2}  (disk {disk_total}/{}, net {net_total}/{})",
            expected.0, expected.1
        );
    }
    for feeder in feeders {
        join(feeder).await?;
    }
    println!("part 2: {items} items, disk {disk_total}, net {net_total}: both complete");
    assert_eq!((disk_total, net_total), expected);
    Ok(())
}

fn spawn_feeder(
    efd: &AsyncEventFd,
    adds: &'static [u64],
    pause: Duration,
) -> io::Result<thread::JoinHandle<io::Result<()>>> {
    let writer = efd.get_ref().try_clone()?;
    Ok(thread::spawn(move || add_all(&writer, adds, pause)))
}

fn add_all(efd: &EventFd, adds: &[u64], pause: Duration) -> io::Result<()> {
    for &n in adds {
        efd.add(n)?;
        thread::sleep(pause);
    }
    Ok(())
}

/// Waits for a feeder thread without blocking the runtime.
async fn join(feeder: thread::JoinHandle<io::Result<()>>) -> Res<()> {
    tokio::task::spawn_blocking(move || feeder.join())
        .await?
        .map_err(|_| "a feeder thread panicked")??;
    Ok(())
}
