//! The kernel as the writer: io_uring completions (`IORING_REGISTER_EVENTFD`)
//! and KVM doorbells (`KVM_IOEVENTFD`) signal the counter from inside the
//! kernel (`eventfd_signal`), which also saturates a full counter to
//! `u64::MAX`, a state no `write(2)` can reach.
//!
//! Every test runs on both runtime flavors, one at a time (`serial`): the
//! overflow tests measure the CPU time of the whole process while an add
//! waits, which other tests running beside them would inflate. Where
//! io_uring or `/dev/kvm` is missing, a test prints one line saying it
//! skipped and returns, which the harness counts as a pass: the two
//! `*_is_present_where_required` tests are the ones that fail, where
//! `EVENTFD_REQUIRE_IO_URING=1` or `EVENTFD_REQUIRE_KVM=1` says this run must
//! check the facility (see `util/kernel.rs`).

// io_uring and KVM are Linux's (the crate also builds for Android).
#![cfg(target_os = "linux")]
#![cfg(all(feature = "stream", feature = "vmm-sys-util"))]

#[macro_use]
mod util;

use std::future::poll_fn;
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, MAX_COUNT};
use futures::StreamExt;
use io_uring::{opcode, types, IoUring};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use util::kernel;
use util::{assert_kind, finish, new_efd};

/// NOPs a plain thread completes on its ring in the wake tests.
const NOPS: u64 = 2_000;
/// The NOPs come in bursts this long, a short pause after each, so that the
/// reader both sleeps (and is woken by the kernel) and finds counts that
/// coalesced while it was busy.
const BURST: u64 = 100;
/// The doorbell port of the KVM guest (x86 only, as the guest is).
#[cfg(target_arch = "x86_64")]
const PORT: u16 = 0x10;

/// One test of this file at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A plain thread with its own ring, registered on `efd`, completing
/// [`NOPS`] NOPs in bursts; joined, it returns how many it reaped. `None`
/// (after one line saying why) without io_uring.
fn nop_thread(efd: &AsyncEventFd, test: &str) -> Option<std::thread::JoinHandle<u64>> {
    let mut ring = kernel::ring_for(efd, 8, test)?;
    Some(std::thread::spawn(move || {
        let mut reaped = 0;
        for _ in 0..NOPS / BURST {
            reaped += kernel::complete_nops(&mut ring, BURST);
            std::thread::sleep(Duration::from_micros(500));
        }
        reaped
    }))
}

/// Joins `thread` without blocking the runtime's thread.
async fn join<T: Send + 'static>(thread: std::thread::JoinHandle<T>) -> T {
    finish(tokio::task::spawn_blocking(move || thread.join()))
        .await
        .expect("spawn_blocking")
        .expect("the kernel-writer thread panicked")
}

/// Reads with `read_once` until [`NOPS`] have been read; returns the number
/// of reads. Each NOP is submitted alone, so the kernel signals once per NOP
/// and the sum read must be exactly the NOPs completed.
async fn read_nops<F, Fut>(
    efd: &AsyncEventFd,
    thread: std::thread::JoinHandle<u64>,
    mut read_once: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<u64>>,
{
    let (mut sum, mut reads) = (0, 0);
    while sum < NOPS {
        sum += finish(read_once()).await.expect("read");
        reads += 1;
    }
    let reaped = join(thread).await;
    assert_eq!(reaped, NOPS, "the ring completed every NOP");
    assert_eq!(
        sum, NOPS,
        "one kernel signal per completion, each read once"
    );
    assert_kind(efd.try_read(), ErrorKind::WouldBlock);
    println!("{NOPS} io_uring completions read in {reads} reads");
}

/// Where `EVENTFD_REQUIRE_IO_URING=1`, io_uring must be there: the tests
/// below that use it checked it rather than skipping.
#[test]
fn io_uring_is_present_where_required() {
    let efd = async_eventfd::EventFd::new().expect("EventFd::new");
    if kernel::ring_for(&efd, 1, "io_uring_is_present_where_required").is_some() {
        println!("io_uring: present");
    }
}

/// Where `EVENTFD_REQUIRE_KVM=1`, `/dev/kvm` must run the test guest: the
/// KVM tests below checked it rather than skipping.
#[cfg(target_arch = "x86_64")]
#[test]
fn kvm_is_present_where_required() {
    if kernel::kvm::Guest::new("kvm_is_present_where_required").is_some() {
        println!("/dev/kvm: usable");
    }
}

both_flavors! {
    serial = serial;

    async fn io_uring_completions_wake_read() {
        let efd = new_efd();
        let Some(thread) = nop_thread(&efd, "io_uring_completions_wake_read") else { return };
        read_nops(&efd, thread, || efd.read()).await;
    }

    async fn io_uring_completions_wake_poll_read() {
        let efd = new_efd();
        let Some(thread) = nop_thread(&efd, "io_uring_completions_wake_poll_read") else { return };
        read_nops(&efd, thread, || poll_fn(|cx| efd.poll_read(cx))).await;
    }

    async fn io_uring_completions_wake_the_stream() {
        let mut stream = new_efd();
        let Some(thread) = nop_thread(&stream, "io_uring_completions_wake_the_stream") else { return };
        let (mut sum, mut reads) = (0, 0);
        while sum < NOPS {
            let item = finish(stream.next()).await.expect("the stream never ends");
            sum += item.expect("read");
            reads += 1;
        }
        assert_eq!(join(thread).await, NOPS, "the ring completed every NOP");
        assert_eq!(sum, NOPS, "one kernel signal per completion, each read once");
        assert_kind(stream.try_read(), ErrorKind::WouldBlock);
        println!("{NOPS} io_uring completions read in {reads} stream items");
    }

    /// The pattern the guide teaches: the task owns the ring, and after each
    /// read it drains the whole completion queue, since one signal may stand
    /// for several completions. The timeouts expire in the kernel's timer,
    /// while the task sleeps.
    async fn io_uring_timeouts_are_all_reaped_by_draining_after_each_read() {
        const TIMEOUTS: usize = 32;
        let efd = new_efd();
        let test = "io_uring_timeouts_are_all_reaped_by_draining_after_each_read";
        let Some(mut ring) = kernel::ring_for(&efd, 64, test) else { return };
        let expiries: Vec<types::Timespec> = (1..=TIMEOUTS as u32)
            .map(|i| types::Timespec::new().nsec(i * 300_000))
            .collect();
        for (i, expiry) in expiries.iter().enumerate() {
            let timeout = opcode::Timeout::new(expiry).build().user_data(i as u64);
            // SAFETY: `expiries` outlives every completion reaped below.
            unsafe { ring.submission().push(&timeout) }.expect("the submission queue has room");
        }
        assert_eq!(ring.submit().expect("io_uring_enter"), TIMEOUTS);
        let mut seen = [false; TIMEOUTS];
        let (mut reaped, mut reads, mut read_sum) = (0, 0, 0);
        while reaped < TIMEOUTS {
            read_sum += finish(efd.read()).await.expect("read");
            reads += 1;
            for cqe in ring.completion() {
                assert_eq!(cqe.result(), -nix::libc::ETIME, "a timeout expired");
                let slot = &mut seen[cqe.user_data() as usize];
                assert!(!*slot, "completion {} reaped twice", cqe.user_data());
                *slot = true;
                reaped += 1;
            }
        }
        assert_eq!(reaped, TIMEOUTS);
        // Each signal stands for at least one new completion.
        assert!(read_sum <= TIMEOUTS as u64, "{read_sum} signals for {TIMEOUTS} completions");
        println!("{TIMEOUTS} io_uring timeouts reaped after {reads} reads (sum {read_sum})");
    }

    /// The test guest is x86 code; elsewhere this test does not exist.
    #[cfg(target_arch = "x86_64")]
    async fn kvm_doorbell_rings_wake_a_task_coalesced_none_lost() {
        const RINGS: u32 = 10_000;
        let test = "kvm_doorbell_rings_wake_a_task_coalesced_none_lost";
        let efd = new_efd();
        let Some(guest) = kernel::kvm::Guest::new(test) else { return };
        guest.doorbell(PORT, efd.get_ref()).expect("KVM_IOEVENTFD");
        let vcpu = guest.vcpu(0, PORT, RINGS, 0);
        let thread = std::thread::spawn(move || vcpu.run());
        let (mut sum, mut reads) = (0, 0);
        while sum < u64::from(RINGS) {
            sum += finish(efd.read()).await.expect("read");
            reads += 1;
        }
        join(thread).await.expect("the guest ran to its hlt");
        // The ioeventfd signals inside the `out`, so after the hlt nothing
        // more can come.
        assert_eq!(sum, u64::from(RINGS), "every ring read exactly once");
        assert_kind(efd.try_read(), ErrorKind::WouldBlock);
        println!("{RINGS} guest doorbell rings read in {reads} reads");
    }

    /// The other direction: each add by the task raises a guest interrupt
    /// (irqfd), whose handler rings the doorbell once: every read is exactly
    /// 1, and the task is woken by the kernel each time.
    #[cfg(target_arch = "x86_64")]
    async fn kvm_irqfd_interrupts_from_a_task_are_each_answered_by_one_ring() {
        const ROUND_TRIPS: u32 = 500;
        let test = "kvm_irqfd_interrupts_from_a_task_are_each_answered_by_one_ring";
        let doorbell = new_efd();
        let interrupt = new_efd();
        let Some(guest) = kernel::kvm::Guest::new(test) else { return };
        guest.doorbell(PORT, doorbell.get_ref()).expect("KVM_IOEVENTFD");
        guest.interrupt(interrupt.get_ref()).expect("KVM_IRQFD");
        let vcpu = guest.vcpu(0, PORT, 1, ROUND_TRIPS);
        let thread = std::thread::spawn(move || vcpu.run());
        assert_eq!(finish(doorbell.read()).await.expect("read"), 1, "the guest's one ring");
        for round in 0..ROUND_TRIPS {
            finish(interrupt.add(1)).await.expect("add to the irqfd");
            let rung = finish(doorbell.read()).await.expect("read");
            assert_eq!(rung, 1, "round {round}: one ring per interrupt");
        }
        join(thread).await.expect("the guest answered every interrupt");
        assert_kind(doorbell.try_read(), ErrorKind::WouldBlock);
        // KVM reads the irqfd's counter itself.
        assert_kind(interrupt.try_read(), ErrorKind::WouldBlock);
    }

    /// `eventfd_signal` on a counter at `MAX_COUNT` saturates it to
    /// `u64::MAX`: poll then reports `POLLERR`, a read returns `u64::MAX`,
    /// and the counter works as before afterwards.
    async fn kernel_signal_at_max_count_saturates_and_read_returns_u64_max() {
        let efd = new_efd();
        let test = "kernel_signal_at_max_count_saturates_and_read_returns_u64_max";
        let Some(mut ring) = kernel::ring_for(&efd, 4, test) else { return };
        saturate(&efd, &mut ring);
        let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLIN | PollFlags::POLLOUT)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).expect("poll"), 1);
        assert_eq!(
            fds[0].revents(),
            Some(PollFlags::POLLIN | PollFlags::POLLERR),
            "readable, not writable, and the overflow error"
        );
        assert_eq!(finish(efd.read()).await.expect("read"), u64::MAX);
        assert_kind(efd.try_read(), ErrorKind::WouldBlock);
        finish(efd.add(3)).await.expect("add after the overflow was read");
        assert_eq!(finish(efd.read()).await.expect("read"), 3);
    }

    async fn waiting_add_after_kernel_overflow_ends_after_a_read_without_spinning() {
        let test = "waiting_add_after_kernel_overflow_ends_after_a_read_without_spinning";
        overflow_wait(test, Adder::Add).await;
    }

    async fn waiting_poll_add_after_kernel_overflow_ends_after_a_read_without_spinning() {
        let test = "waiting_poll_add_after_kernel_overflow_ends_after_a_read_without_spinning";
        overflow_wait(test, Adder::PollAdd).await;
    }
}

/// Fills the counter to `MAX_COUNT`, then lets the kernel signal it once (a
/// NOP completion): the counter is now `u64::MAX`, with no room for any add.
fn saturate(efd: &AsyncEventFd, ring: &mut IoUring) {
    efd.try_add(MAX_COUNT).expect("fill to MAX_COUNT");
    assert_eq!(kernel::complete_nops(ring, 1), 1);
    assert_kind(efd.try_add(1), ErrorKind::WouldBlock);
}

/// How the waiting task adds.
#[derive(Debug, Clone, Copy)]
enum Adder {
    Add,
    PollAdd,
}

/// The added value, told apart from the saturated one.
const WAITING_ADD: u64 = 5;
/// How long the add waits on the overflowed counter while the process's CPU
/// time is measured: past the first back-offs, so most steps come at their
/// steady 128 ms, and long enough to average out a loaded machine's noise.
const WAIT: Duration = Duration::from_secs(2);
/// The share of one core an honest wait may use: [`MARGIN`] times what its
/// back-off steps cost on this machine (calibrated by [`step_cost`]), but
/// never less than [`MIN_SHARE`] nor more than [`MAX_SHARE`] of one core.
///
/// A spin keeps a core busy, however slow the machine; an honest wait costs
/// its steps. Measured over [`WAIT`]: 0.4-0.5% of a core natively, where a
/// spin used 40-53% (on a loaded host); 15-36% under qemu's software
/// emulation (TCG, 40-100 times slower per step, on a loaded host), where a
/// spin used 94-106%.
fn cpu_share_bound(step: Duration) -> f64 {
    let honest = HONEST_STEPS * step.as_secs_f64() / WAIT.as_secs_f64();
    (MARGIN * honest).clamp(MIN_SHARE, MAX_SHARE)
}
/// The back-off's steps within [`WAIT`]: sleeps of 2, 4 ... 128, 128 ... ms
/// fill two seconds in 21 steps.
const HONEST_STEPS: f64 = 21.0;
/// How many times its calibrated cost an honest wait may use: up to three
/// times was measured under emulation (the runtime's own wakeups, a loaded
/// host's noise).
const MARGIN: f64 = 6.0;
/// On a fast machine the steps cost almost nothing; below a tenth of a core
/// what remains is noise, and a spin that gets a tenth of a core is still
/// caught.
const MIN_SHARE: f64 = 0.10;
/// 60% of a core is never an honest wait: a spin uses all of one.
const MAX_SHARE: f64 = 0.60;
/// Steps [`step_cost`] averages over.
const CALIBRATION_STEPS: u32 = 20;

/// Spawns a task that adds [`WAITING_ADD`] on the saturated counter and
/// returns when it finished.
fn spawn_waiter(efd: &Arc<AsyncEventFd>, adder: Adder) -> tokio::task::JoinHandle<Instant> {
    let efd = Arc::clone(efd);
    tokio::spawn(async move {
        match adder {
            Adder::Add => efd.add(WAITING_ADD).await,
            Adder::PollAdd => poll_fn(|cx| efd.poll_add(cx, WAITING_ADD)).await,
        }
        .expect("the waiting add");
        Instant::now()
    })
}

/// What one back-off step of an honest wait costs the process here, in CPU:
/// the step `writer.rs` takes in the overflow state, made [`CALIBRATION_STEPS`]
/// times with tokio's public API on the saturated counter of `efd`: a 2 ms
/// sleep on a blocking thread (the back-off's own timer), then a `WRITABLE`
/// registration of a dup of the fd, which epoll reports at once as closed
/// for writing (`EPOLLERR`), dropped again.
async fn step_cost(efd: &AsyncEventFd) -> Duration {
    let step = || async {
        let sleep = || std::thread::sleep(Duration::from_millis(2));
        finish(tokio::task::spawn_blocking(sleep))
            .await
            .expect("the back-off sleep");
        let dup = OwnedFd::from(efd.get_ref().try_clone().expect("try_clone"));
        // SAFETY: the `AsyncFd` owns `dup`, so the fd stays open and the same
        // while it is registered.
        let registration = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
            .unwrap_or_else(|e| panic!("register the dup: {}", e.into_parts().1));
        let guard = finish(registration.writable()).await.expect("writable()");
        assert!(
            guard.ready().is_write_closed(),
            "a saturated counter reads as closed for writing"
        );
    };
    // The first step starts the blocking pool's thread: not a step's cost.
    step().await;
    let before = process_cpu();
    for _ in 0..CALIBRATION_STEPS {
        step().await;
    }
    (process_cpu() - before) / CALIBRATION_STEPS
}

/// The process's CPU time so far, user and system, every thread.
fn process_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

/// The overflow, end to end: a saturated counter, an add waiting on it for
/// [`WAIT`] within [`cpu_share_bound`] of one core, then a
/// read through the same `AsyncEventFd` that returns `u64::MAX` and lets the
/// add finish; then the same with the read made through another fd on the
/// counter. Prints how long after each read the add finished (measured, not
/// asserted).
async fn overflow_wait(test: &str, adder: Adder) {
    let efd = Arc::new(new_efd());
    let Some(mut ring) = kernel::ring_for(&*efd, 4, test) else {
        return;
    };

    saturate(&efd, &mut ring);
    let step = step_cost(&efd).await;
    let waiter = spawn_waiter(&efd, adder);
    let cpu_before = process_cpu();
    tokio::time::sleep(WAIT).await;
    let cpu = process_cpu() - cpu_before;
    assert!(
        !waiter.is_finished(),
        "{adder:?} finished on a saturated counter"
    );
    let share = cpu.as_secs_f64() / WAIT.as_secs_f64();
    let bound = cpu_share_bound(step);
    assert!(
        share < bound,
        "the process used {cpu:?} of CPU in {WAIT:?} while a {adder:?} waited: {:.0}% of a \
         core, over the {:.0}% an honest wait may use at {step:?} a back-off step: it spins",
        share * 100.0,
        bound * 100.0
    );
    let read_at = Instant::now();
    assert_eq!(finish(efd.read()).await.expect("read"), u64::MAX);
    let done_at = finish(waiter).await.expect("the waiter task");
    let same_fd = done_at.saturating_duration_since(read_at);
    assert_eq!(finish(efd.read()).await.expect("read"), WAITING_ADD);

    saturate(&efd, &mut ring);
    let other = efd.get_ref().try_clone().expect("try_clone");
    let waiter = spawn_waiter(&efd, adder);
    // Long enough to be past the first back-offs, if any.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "{adder:?} finished on a saturated counter"
    );
    let read_at = Instant::now();
    assert_eq!(other.read().expect("read through another fd"), u64::MAX);
    let done_at = finish(waiter).await.expect("the waiter task");
    let other_fd = done_at.saturating_duration_since(read_at);
    assert_eq!(finish(efd.read()).await.expect("read"), WAITING_ADD);
    assert_kind(efd.try_read(), ErrorKind::WouldBlock);

    println!(
        "{adder:?} on an overflowed counter: CPU {cpu:?} over {WAIT:?} of waiting \
         ({:.1}% of a core, bound {:.0}%, {step:?} a back-off step); \
         finished {same_fd:?} after a read through the same AsyncEventFd, \
         {other_fd:?} after a read through another fd",
        share * 100.0,
        bound * 100.0
    );
}
