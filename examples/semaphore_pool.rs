//! Semaphore mode as a counting doorbell for a work queue: a producer pushes
//! jobs and adds one count per job; several consumer tasks each `read()` one
//! count and take one job.
//!
//! ```sh
//! cargo run --example semaphore_pool
//! ```
//!
//! In semaphore mode (`EventFd::builder().semaphore(true)`) a read takes 1
//! from the counter instead of all of it, so the counter is exactly the
//! number of jobs nobody has claimed yet. The producer pushes a job, *then*
//! adds: a consumer whose read returned 1 is sure to find a job in the queue.
//! An add of 10 is ten reads of 1, spread over whichever consumers are
//! waiting. (In counter mode one read would take all ten counts, and that
//! consumer would have to take all ten jobs or hand counts back.)
//!
//! The producer sends 10 batches of 10 jobs, then one `Stop` job per
//! consumer. Every job is taken exactly once; the example prints how many
//! each of the four consumers took and checks the sum of the job numbers.
//! Which consumer takes which job depends on scheduling; the totals do not.

use std::collections::VecDeque;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_eventfd::{AsyncEventFd, EventFd};
use tokio::time::timeout;

/// Any await that takes longer than this is a lost wakeup: fail.
const LIMIT: Duration = Duration::from_secs(5);
const CONSUMERS: usize = 4;
const BATCHES: u64 = 10;
const BATCH: u64 = 10;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Debug)]
enum Job {
    Work(u64),
    Stop,
}

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    doorbell: AsyncEventFd,
}

impl Pool {
    fn push(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.extend(jobs);
    }

    fn pop(&self) -> Option<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.pop_front()
    }
}

#[derive(Debug, Default)]
struct Tally {
    jobs: u64,
    sum: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let doorbell = EventFd::builder().semaphore(true).build()?;
    let pool = Arc::new(Pool {
        queue: Mutex::new(VecDeque::new()),
        doorbell: AsyncEventFd::try_from(doorbell)?,
    });

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|id| tokio::spawn(consume(id, Arc::clone(&pool))))
        .collect();

    for batch in 0..BATCHES {
        let first = batch * BATCH + 1;
        pool.push((first..first + BATCH).map(Job::Work));
        // Push first, then ring: a read of 1 always finds its job.
        pool.doorbell.add(BATCH).await?;
        tokio::task::yield_now().await;
    }
    pool.push((0..CONSUMERS).map(|_| Job::Stop));
    pool.doorbell.add(CONSUMERS as u64).await?;

    let mut total = Tally::default();
    for (id, consumer) in consumers.into_iter().enumerate() {
        let tally = timeout(LIMIT, consumer).await???;
        println!(
            "consumer {id} took {:>3} jobs (sum {:>4})",
            tally.jobs, tally.sum
        );
        total.jobs += tally.jobs;
        total.sum += tally.sum;
    }
    let jobs = BATCHES * BATCH;
    let sum = jobs * (jobs + 1) / 2;
    println!("all consumers: {} jobs, sum {}", total.jobs, total.sum);
    assert_eq!(total.jobs, jobs, "every job taken exactly once");
    assert_eq!(total.sum, sum, "job numbers 1..={jobs} add up to {sum}");
    assert!(pool.pop().is_none(), "the queue is empty");
    let left = pool.doorbell.try_read().map_err(|e| e.kind());
    assert_eq!(left, Err(std::io::ErrorKind::WouldBlock), "no count left");
    println!("queue empty, doorbell at 0");
    Ok(())
}

async fn consume(id: usize, pool: Arc<Pool>) -> Res<Tally> {
    let mut tally = Tally::default();
    loop {
        let unit = timeout(LIMIT, pool.doorbell.read()).await??;
        assert_eq!(unit, 1, "semaphore mode: every read takes 1");
        match pool.pop() {
            Some(Job::Work(n)) => {
                tally.jobs += 1;
                tally.sum += n;
                // The work itself: yield so others get a turn.
                tokio::task::yield_now().await;
            }
            Some(Job::Stop) => return Ok(tally),
            None => return Err(format!("consumer {id}: a count with no job").into()),
        }
    }
}
