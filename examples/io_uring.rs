//! An [`AsyncEventFd`] as an io_uring ring's completion notifier: the kernel
//! signals the eventfd when it posts completions, a tokio task awaits
//! [`AsyncEventFd::read`] and then reaps the completion queue.
//!
//! ```sh
//! cargo run --example io_uring
//! ```
//!
//! The fd is registered with `IORING_REGISTER_EVENTFD`
//! (`submitter().register_eventfd`). Three rules follow from how the kernel
//! signals it:
//!
//! - **Drain the whole completion queue after each read.** The kernel signals
//!   once per batch of completions it posts, not once per completion: one
//!   read may stand for many completions (part 1 shows a batch of 16 NOPs
//!   announced by a single count). Counting signals undercounts; counting
//!   completions reaped is exact.
//! - A read may also find the queue already empty: a completion reaped after
//!   the previous read can have signalled after it. That is fine; just wait
//!   again.
//! - A ring takes one eventfd: registering a second is `EBUSY` (part 3).
//!
//! Part 2 submits timeouts that expire in the kernel's timer while the task
//! sleeps, so the task is woken by the kernel itself. The example exits
//! non-zero if any completion is missing or seen twice.

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("skipped: io_uring is Linux's");
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ring::main()
}

#[cfg(target_os = "linux")]
mod ring {
    use std::error::Error;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use async_eventfd::AsyncEventFd;
    use io_uring::{opcode, types, IoUring};
    use tokio::time::timeout;

    type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

    /// Any await that takes longer than this is a lost wakeup: fail.
    const LIMIT: Duration = Duration::from_secs(5);
    /// Part 1: NOPs, submitted in batches of 1, 2, ..., 16.
    const BATCHES: u64 = 16;
    /// Part 2: timeouts, expiring 0.5 ms apart.
    const TIMEOUTS: u64 = 40;

    #[tokio::main(flavor = "current_thread")]
    pub(crate) async fn main() -> Res<()> {
        let efd = AsyncEventFd::new()?;
        let mut ring = match IoUring::new(64) {
            Ok(ring) => ring,
            Err(e) => {
                // A sandbox may forbid io_uring (io_uring_disabled, seccomp).
                println!("skipped: io_uring is not available here ({e})");
                return Ok(());
            }
        };
        ring.submitter().register_eventfd(efd.as_raw_fd())?;

        // Part 1: batches of NOPs; each batch is one submit, announced by the
        // kernel with (at least) one signal.
        let mut completions = 0;
        let mut reads = 0;
        for batch in 1..=BATCHES {
            for i in 0..batch {
                let nop = opcode::Nop::new().build().user_data(i);
                // SAFETY: a NOP refers to no memory, so nothing has to outlive it.
                unsafe { ring.submission().push(&nop) }?;
            }
            ring.submit()?;
            let mut reaped = 0;
            while reaped < batch {
                let signals = timeout(LIMIT, efd.read()).await??;
                reads += 1;
                // The rule: after every read, reap everything there is.
                reaped += ring
                    .completion()
                    .map(|cqe| check(cqe.result()))
                    .sum::<Res<u64>>()?;
                if batch == BATCHES {
                    println!("part 1: a batch of {batch} NOPs: read {signals}, reaped {reaped}");
                }
            }
            if reaped != batch {
                return Err(format!("batch of {batch}: reaped {reaped} completions").into());
            }
            completions += reaped;
        }
        let expected = BATCHES * (BATCHES + 1) / 2;
        println!("part 1: {completions} NOP completions (expected {expected}) after {reads} reads");
        if completions != expected {
            return Err("part 1 lost completions".into());
        }

        // Part 2: timeouts expire in the kernel while the task waits.
        let expiries: Vec<types::Timespec> = (1..=TIMEOUTS)
            .map(|i| types::Timespec::new().nsec(i as u32 * 500_000))
            .collect();
        for (i, expiry) in expiries.iter().enumerate() {
            let op = opcode::Timeout::new(expiry).build().user_data(i as u64);
            // SAFETY: `expiries` lives until every completion is reaped below.
            unsafe { ring.submission().push(&op) }?;
        }
        ring.submit()?;
        let mut seen = vec![false; TIMEOUTS as usize];
        let (mut reaped, mut reads) = (0, 0);
        while reaped < TIMEOUTS {
            timeout(LIMIT, efd.read()).await??;
            reads += 1;
            for cqe in ring.completion() {
                // An expired timeout completes with -ETIME.
                if cqe.result() != -nix::libc::ETIME {
                    return Err(
                        format!("timeout {}: result {}", cqe.user_data(), cqe.result()).into(),
                    );
                }
                let slot = &mut seen[cqe.user_data() as usize];
                if std::mem::replace(slot, true) {
                    return Err(format!("timeout {} reaped twice", cqe.user_data()).into());
                }
                reaped += 1;
            }
        }
        println!("part 2: {reaped} timeouts (expected {TIMEOUTS}) expired in the kernel, reaped after {reads} reads");

        // Part 3: one eventfd per ring.
        let second = AsyncEventFd::new()?;
        match ring.submitter().register_eventfd(second.as_raw_fd()) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                println!("part 3: a second eventfd on the same ring: {e}");
            }
            other => return Err(format!("a second eventfd: expected EBUSY, got {other:?}").into()),
        }
        Ok(())
    }

    /// A NOP's completion: 0 on success.
    fn check(result: i32) -> Res<u64> {
        if result < 0 {
            return Err(std::io::Error::from_raw_os_error(-result).into());
        }
        Ok(1)
    }
}
