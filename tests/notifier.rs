//! `Notifier`: exact counts, one shared fd for all clones, a full counter
//! counting as notified, and no lock or allocation (usable from a signal
//! handler).

#[macro_use]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;

use async_eventfd::{EventFd, Notifier, MAX_COUNT};
use nix::errno::Errno;

use util::{assert_kind, is_cloexec, LIMIT};

// ----- a global allocator that counts, per thread -----

/// Counts the allocations of the threads that turned counting on.
struct CountingAllocator;

thread_local! {
    // `const` initialisers without destructors: reading them never
    // allocates, so the allocator may use them.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` unchanged; counting touches only
// const-initialised thread locals.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's guarantees for `alloc` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// How many allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

// ----- helpers -----

fn eventfd() -> EventFd {
    EventFd::new().expect("EventFd::new")
}

#[track_caller]
fn assert_empty(efd: &EventFd) {
    let err = assert_kind(efd.read(), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
}

// ----- counts -----

#[test]
fn each_notify_adds_exactly_one() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    for _ in 0..5 {
        notifier.notify().expect("notify");
    }
    assert_eq!(efd.read().expect("read"), 5);
    assert_empty(&efd);
}

#[test]
fn add_adds_exactly_n() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    notifier.add(40).expect("add 40");
    notifier.add(0).expect("add 0");
    notifier.add(2).expect("add 2");
    assert_eq!(efd.read().expect("read"), 42);
    notifier.add(MAX_COUNT).expect("add MAX_COUNT");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
    assert_empty(&efd);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's eventfd has no EFD_SEMAPHORE (docs/miri-notes.md)"
)]
fn notify_in_semaphore_mode_adds_one_unit() {
    let efd = EventFd::builder()
        .semaphore(true)
        .build()
        .expect("build a semaphore eventfd");
    let notifier = efd.notifier().expect("notifier");
    notifier.notify().expect("notify");
    notifier.notify().expect("notify");
    assert_eq!(efd.read().expect("read"), 1);
    assert_eq!(efd.read().expect("read"), 1);
    assert_empty(&efd);
}

#[test]
fn notifies_from_many_threads_are_all_counted() {
    const THREADS: u64 = 4;
    const NOTIFIES: u64 = 1_000;
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let notifier = notifier.clone();
            thread::spawn(move || {
                for _ in 0..NOTIFIES {
                    notifier.notify().expect("notify");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("notifying thread");
    }
    assert_eq!(efd.read().expect("read"), THREADS * NOTIFIES);
}

// ----- a full counter -----

#[test]
fn notify_on_a_full_counter_is_ok_and_leaves_max_count() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    efd.add(MAX_COUNT).expect("fill");
    notifier.notify().expect("notify on a full counter");
    notifier.notify().expect("notify again");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
    assert_empty(&efd);
}

#[test]
fn notify_one_below_full_fills_the_counter_then_is_ok() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    efd.add(MAX_COUNT - 1).expect("fill but one");
    notifier.notify().expect("the last unit fits");
    notifier.notify().expect("full: already readable");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn add_on_a_full_counter_is_would_block_and_adds_nothing() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    efd.add(MAX_COUNT).expect("fill");
    let err = assert_kind(notifier.add(1), ErrorKind::WouldBlock);
    assert_eq!(err.raw_os_error(), Some(Errno::EAGAIN as i32));
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

#[test]
fn add_u64_max_is_invalid_input_with_einval_and_counter_unchanged() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    notifier.add(3).expect("add");
    let err = assert_kind(notifier.add(u64::MAX), ErrorKind::InvalidInput);
    assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
    assert_eq!(efd.read().expect("read"), 3);
}

#[test]
fn notify_on_a_blocking_fd_with_room_returns_at_once() {
    let efd = EventFd::builder()
        .nonblocking(false)
        .build()
        .expect("build a blocking eventfd");
    let notifier = efd.notifier().expect("notifier");
    let value = util::must_return(LIMIT, move || {
        notifier.notify().expect("notify");
        efd.read().expect("read")
    });
    assert_eq!(value, 1);
}

// ----- the fd -----

#[test]
fn clones_share_one_fd() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    assert_ne!(notifier.as_raw_fd(), efd.as_raw_fd(), "a dup of its own");
    assert_eq!(notifier.as_fd().as_raw_fd(), notifier.as_raw_fd());
    // A dup would have a number of its own.
    let clones: Vec<Notifier> = (0..10).map(|_| notifier.clone()).collect();
    for clone in &clones {
        assert_eq!(clone.as_raw_fd(), notifier.as_raw_fd());
        clone.notify().expect("notify through a clone");
    }
    assert_eq!(efd.read().expect("read"), 10);
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc/self/fdinfo; Miri has no /proc")]
fn the_fd_stays_open_until_the_last_clone_is_dropped() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    let fd = notifier.as_raw_fd();
    let identity = open_file(fd).expect("the notifier's fd is open");
    let clone = notifier.clone();
    drop(notifier);
    assert_eq!(
        open_file(fd),
        Some(identity.clone()),
        "dropping one clone closed the shared fd"
    );
    clone.notify().expect("notify through the last clone");
    assert_eq!(efd.read().expect("read"), 1);
    drop(clone);
    // The number may be reused at once by a parallel test, but not for
    // this counter: nothing here dups it again.
    assert_ne!(
        open_file(fd),
        Some(identity),
        "the last clone left the fd open"
    );
}

#[test]
fn the_notifier_outlives_its_eventfd_and_other_handles_see_its_counts() {
    let efd = eventfd();
    let reader = efd.try_clone().expect("try_clone");
    let notifier = efd.notifier().expect("notifier");
    drop(efd);
    notifier.notify().expect("notify");
    assert_eq!(reader.read().expect("read"), 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's F_GETFD reports every fd close-on-exec (docs/miri-notes.md)"
)]
fn notifier_is_close_on_exec_if_and_only_if_its_eventfd_is() {
    for cloexec in [true, false] {
        let efd = EventFd::builder().cloexec(cloexec).build().expect("build");
        let notifier = efd.notifier().expect("notifier");
        assert_eq!(is_cloexec(&notifier), cloexec, "cloexec({cloexec})");
    }
}

// ----- traits -----

#[test]
fn notifier_is_clone_send_sync_debug() {
    fn assert_traits<T: Clone + Send + Sync + Debug + AsFd + AsRawFd>() {}
    assert_traits::<Notifier>();
}

#[test]
fn debug_names_the_type_and_the_fd() {
    let notifier = eventfd().notifier().expect("notifier");
    let shown = format!("{notifier:?}");
    assert_eq!(
        shown,
        format!("Notifier {{ fd: {} }}", notifier.as_raw_fd())
    );
}

// ----- no allocation -----

#[test]
fn the_counting_allocator_sees_allocations() {
    // Without this, "zero allocations" below could be a broken counter.
    let made = allocations_in(|| drop(std::hint::black_box(Box::new(7u64))));
    assert_eq!(made, 1);
}

#[test]
fn notify_add_and_clone_allocate_nothing_on_any_path() {
    let efd = eventfd();
    let notifier = efd.notifier().expect("notifier");
    let made = allocations_in(|| {
        for _ in 0..100 {
            notifier.notify().expect("notify");
        }
        notifier.add(5).expect("add");
        // The error paths, which a signal handler may hit too.
        assert_eq!(
            notifier.add(u64::MAX).map_err(|e| e.kind()),
            Err(ErrorKind::InvalidInput)
        );
        efd.add(MAX_COUNT - 105).expect("fill");
        notifier.notify().expect("notify on a full counter");
        assert_eq!(
            notifier.add(1).map_err(|e| e.kind()),
            Err(ErrorKind::WouldBlock)
        );
        drop(std::hint::black_box(notifier.clone()));
    });
    assert_eq!(made, 0, "notify, add or clone allocated");
    assert_eq!(efd.read().expect("read"), MAX_COUNT);
}

// ----- a signal handler -----

static SIGNAL_NOTIFIER: OnceLock<Notifier> = OnceLock::new();
static HANDLED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

extern "C" fn notify_from_a_handler(_: nix::libc::c_int) {
    let saved = Errno::last_raw();
    if let Some(notifier) = SIGNAL_NOTIFIER.get() {
        let counter = match notifier.notify() {
            Ok(()) => &HANDLED,
            Err(_) => &FAILED,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
    Errno::set_raw(saved);
}

/// The handler calls `notify`: raised on this thread (the handler runs
/// before `raise` returns) and sent to the process with `kill` (it runs on
/// whichever thread the kernel picks); the main thread then reads exactly
/// one count per signal.
#[test]
#[cfg_attr(miri, ignore = "Miri has no signal shims (sigemptyset, sigaction)")]
fn notify_works_from_a_signal_handler() {
    use nix::sys::signal::{
        kill, raise, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal,
    };
    use nix::unistd::Pid;

    let efd = eventfd();
    SIGNAL_NOTIFIER
        .set(efd.notifier().expect("notifier"))
        .expect("only this test sets it");
    let action = SigAction::new(
        SigHandler::Handler(notify_from_a_handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler loads a set `OnceLock`, calls `Notifier::notify`
    // (one write(2), no lock, no allocation), updates atomics and restores
    // errno: all async-signal-safe. No other test in this file uses SIGUSR1.
    let old = unsafe { sigaction(Signal::SIGUSR1, &action) }.expect("install the handler");

    raise(Signal::SIGUSR1).expect("raise 1");
    raise(Signal::SIGUSR1).expect("raise 2");
    assert_eq!(efd.read().expect("read after raise"), 2);

    // Ordinary signals do not queue: wait for each before the next.
    for sent in 3..=5 {
        kill(Pid::this(), Signal::SIGUSR1).expect("kill");
        let value = efd
            .wait_timeout(LIMIT)
            .expect("wait for the handler")
            .expect("the handler notified within LIMIT");
        assert_eq!(value, 1, "signal {sent}");
        // The handler may still be on its way out (on another thread).
        wait_for_handled(sent);
    }

    // A full counter in the handler: still Ok, still readable, no wait.
    efd.add(MAX_COUNT).expect("fill");
    raise(Signal::SIGUSR1).expect("raise on a full counter");
    assert_eq!(HANDLED.load(Ordering::SeqCst), 6);
    assert_eq!(efd.read().expect("read"), MAX_COUNT);

    // SAFETY: restores the action that was there before.
    unsafe { sigaction(Signal::SIGUSR1, &old) }.expect("restore the handler");
    assert_eq!(
        FAILED.load(Ordering::SeqCst),
        0,
        "notify failed in the handler"
    );
    assert_empty(&efd);
}

/// Waits (bounded) until the handler has counted `n` runs.
#[track_caller]
fn wait_for_handled(n: u64) {
    let start = std::time::Instant::now();
    while HANDLED.load(Ordering::SeqCst) < n {
        assert!(
            start.elapsed() < LIMIT,
            "the handler ran {} times, not {n}",
            HANDLED.load(Ordering::SeqCst)
        );
        thread::yield_now();
    }
    assert_eq!(HANDLED.load(Ordering::SeqCst), n);
}

// ----- fd bookkeeping -----

/// What fd `fd` names now: its `eventfd-id` (one per counter, Linux 6.0+),
/// or its `/proc/self/fd` link on older kernels; `None` if it is closed.
fn open_file(fd: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let id = info.lines().find(|line| line.starts_with("eventfd-id:"));
    match id {
        Some(id) => Some(id.to_owned()),
        None => std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(|link| link.display().to_string()),
    }
}

// ----- waking a task -----

// Not under Miri: it cannot build an `AsyncEventFd` (docs/miri-notes.md).
#[cfg(not(miri))]
#[cfg(feature = "tokio")]
both_flavors! {
    /// Plain threads notify through clones of one `Notifier` while a task
    /// awaits `AsyncEventFd::read`: every notify is read, exactly.
    async fn notifies_from_threads_wake_a_task_and_all_are_read() {
        const THREADS: u64 = 3;
        const NOTIFIES: u64 = 500;
        let efd = util::new_efd();
        let notifier = efd.get_ref().notifier().expect("notifier");
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let notifier = notifier.clone();
                thread::spawn(move || {
                    for _ in 0..NOTIFIES {
                        notifier.notify().expect("notify");
                    }
                })
            })
            .collect();
        let mut total = 0;
        while total < THREADS * NOTIFIES {
            total += util::finish(efd.read()).await.expect("read");
        }
        for thread in threads {
            thread.join().expect("notifying thread");
        }
        assert_eq!(total, THREADS * NOTIFIES);
        assert_kind(efd.try_read(), ErrorKind::WouldBlock);
    }

    /// One notify while the task is already waiting wakes it.
    async fn a_notify_wakes_a_waiting_task() {
        let efd = util::new_efd();
        let notifier = efd.get_ref().notifier().expect("notifier");
        let mut read = std::pin::pin!(efd.read());
        tokio_test::assert_pending!(futures::poll!(&mut read));
        thread::spawn(move || notifier.notify())
            .join()
            .expect("notifying thread")
            .expect("notify");
        assert_eq!(util::finish(read).await.expect("read"), 1);
    }
}
