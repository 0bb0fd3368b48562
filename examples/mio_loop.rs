//! A plain mio event loop, no tokio: one `Poll` waits on three `EventFd`s
//! registered with different tokens, each fed by its own writer thread.
//!
//! ```sh
//! cargo run --example mio_loop
//! ```
//!
//! With the `mio` feature (on by default) `EventFd` is a
//! `mio::event::Source`. mio registers edge-triggered, so on each event the
//! loop drains the fd: it reads until `WouldBlock`. In counter mode that is
//! one read (it takes the whole counter); in semaphore mode it is one read per
//! unit. Stopping early would strand the rest: no new edge comes until
//! another write.
//!
//! - token 0, counter mode: a "tick" thread adds 1, ten times;
//! - token 1, counter mode: a "data" thread adds 5, 10, 15, 20;
//! - token 2, semaphore mode: a "jobs" thread adds 3, then 4; each read is 1.
//!
//! The loop prints which token fired and what it read, and stops once every
//! token has delivered its known total (10, 50 and 7).

use std::error::Error;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use async_eventfd::EventFd;
use mio::{Events, Interest, Poll, Token};

/// The loop must be done within this time, or a wakeup was lost: fail.
const LIMIT: Duration = Duration::from_secs(5);

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Feed {
    name: &'static str,
    semaphore: bool,
    adds: &'static [u64],
    pause: Duration,
}

const FEEDS: [Feed; 3] = [
    Feed {
        name: "tick",
        semaphore: false,
        adds: &[1; 10],
        pause: Duration::from_millis(2),
    },
    Feed {
        name: "data",
        semaphore: false,
        adds: &[5, 10, 15, 20],
        pause: Duration::from_millis(5),
    },
    Feed {
        name: "jobs",
        semaphore: true,
        adds: &[3, 4],
        pause: Duration::from_millis(10),
    },
];

fn main() -> Res<()> {
    let mut poll = Poll::new()?;
    let mut fds = Vec::new();
    let mut writers = Vec::new();
    for (i, feed) in FEEDS.iter().enumerate() {
        let mut efd = EventFd::builder().semaphore(feed.semaphore).build()?;
        poll.registry()
            .register(&mut efd, Token(i), Interest::READABLE)?;
        let writer = efd.try_clone()?;
        let (adds, pause) = (feed.adds, feed.pause);
        writers.push(thread::spawn(move || -> io::Result<()> {
            for &n in adds {
                writer.add(n)?;
                thread::sleep(pause);
            }
            Ok(())
        }));
        fds.push(efd);
    }

    let expected: Vec<u64> = FEEDS.iter().map(|f| f.adds.iter().sum()).collect();
    let mut totals = vec![0u64; FEEDS.len()];
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + LIMIT;
    let mut wakeups = 0;
    while totals != expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out: read {totals:?}, expected {expected:?}").into());
        }
        poll.poll(&mut events, Some(left))?;
        wakeups += 1;
        for event in &events {
            let Token(i) = event.token();
            let values = drain(&fds[i])?;
            totals[i] += values.iter().sum::<u64>();
            println!(
                "token {i} ({}) fired: read {values:?}, total {}/{}",
                FEEDS[i].name, totals[i], expected[i]
            );
        }
    }

    for writer in writers {
        writer.join().map_err(|_| "a writer thread panicked")??;
    }
    // Everything was read: a poll that does not wait reports nothing.
    poll.poll(&mut events, Some(Duration::ZERO))?;
    assert!(events.is_empty(), "no event left after draining");
    assert_eq!(totals, expected, "each token delivered exactly its adds");
    println!("{wakeups} poll wakeups, totals {totals:?} as expected");
    Ok(())
}

/// Reads until `WouldBlock`, as edge-triggered registration requires.
fn drain(efd: &EventFd) -> io::Result<Vec<u64>> {
    let mut values = Vec::new();
    loop {
        match efd.read() {
            Ok(value) => values.push(value),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(values),
            Err(e) => return Err(e),
        }
    }
}
