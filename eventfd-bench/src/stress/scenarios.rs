//! The scenario table: what each scenario is, and the function that runs it.

use std::sync::Arc;

use super::ctx::{Ctx, Step};
use super::{epoll, kernel, mio_src, plain_syscalls, rt};

/// One stress scenario: its id, a short name and what it checks.
///
/// # Examples
///
/// ```
/// let s3 = eventfd_bench::stress::scenario("s3").expect("S3 exists");
/// assert_eq!(s3.id, "S3");
/// println!("{}: {}", s3.name, s3.topology);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// `"S1"` to `"S19"`.
    pub id: &'static str,
    /// A short name, snake case, naming the topology.
    pub name: &'static str,
    /// The topology: who waits, who writes, through which layer.
    pub topology: &'static str,
    /// What the scenario checks beyond conservation and liveness.
    pub checks: &'static str,
    /// One round of the scenario: the function named after it.
    pub(super) run: fn(&Arc<Ctx>) -> Step,
}

// By id: ids are unique, and function pointers do not compare reliably.
impl PartialEq for Scenario {
    fn eq(&self, other: &Scenario) -> bool {
        self.id == other.id
    }
}

impl Eq for Scenario {}

/// Rows of id, the function that runs the scenario (its name is the
/// scenario's), topology and checks.
macro_rules! table {
    ($($id:ident $module:ident::$name:ident $topology:literal $checks:literal;)*) => {
        [$(Scenario {
            id: stringify!($id),
            name: stringify!($name),
            topology: $topology,
            checks: $checks,
            run: $module::$name,
        }),*]
    };
}

/// The nineteen scenarios, in order: S17 to S19 have the kernel as the
/// writer (io_uring, KVM) and SKIP, with the reason, where it is missing.
///
/// # Examples
///
/// ```
/// let ids: Vec<&str> = eventfd_bench::stress::SCENARIOS.iter().map(|s| s.id).collect();
/// assert_eq!(ids.len(), 19);
/// assert_eq!(ids[0], "S1");
/// assert_eq!(ids[18], "S19");
/// ```
pub const SCENARIOS: [Scenario; 19] = table! {
    S1 epoll::level_triggered_epoll
        "level-triggered epoll: N writer threads add 1, R reader threads in epoll_wait on one epfd drain to WouldBlock"
        "after draining, epoll_wait(0) reports nothing";
    S2 epoll::edge_triggered_epoll
        "edge-triggered epoll (EPOLLET): ping-pong with an ack, and two writes with no read between"
        "each write produces its own edge; a single reader sees no spurious wakeup";
    S3 self::semaphore_edge_triggered
        "semaphore mode, read-only edge-triggered registration (mio Polls and tokio tasks): one add of N, M consumers"
        "exactly N reads of 1; no count stranded after a read that left a count";
    S4 epoll::epoll_oneshot_rearm
        "EPOLLONESHOT: wait, drain, re-arm with EPOLL_CTL_MOD, writes landing between drain and re-arm"
        "a re-arm with count > 0 reports at once";
    S5 epoll::epoll_exclusive
        "EPOLLEXCLUSIVE: M threads, each with its own epoll instance on the same eventfd"
        "some waiter wakes for every write; no count stranded";
    S6 epoll::many_fds_many_sleepers
        "10 edge-triggered eventfds on one epfd, 10 threads in epoll_wait(maxevents = 1), all written at once"
        "all wake within T, every round; each fd read exactly once per round";
    S7 epoll::timeout_boundary
        "a writer writes just before (or just after) a waiter's epoll_wait timeout expires"
        "the event reaches some waiter every round";
    S8 plain_syscalls::poll_many_readers
        "poll(2) with R reader threads; POLLOUT at MAX_COUNT"
        "POLLOUT absent at MAX_COUNT, and a POLLOUT waiter wakes after a read";
    S9 plain_syscalls::blocking_syscalls
        "blocking read/write syscalls under contention, blocked writers at MAX_COUNT released by a reader"
        "every blocked call returns";
    S10 mio_src::mio_source_churn
        "EventFd as a mio Source, with reregister/deregister churn during writes"
        "no event for a deregistered or replaced token; a re-registration with a count reports it";
    S11 rt::tokio_multi_thread_cancellation
        "tokio multi-thread runtime (2, 4, 8 workers): add tasks, plain-thread writers through try_clone, read tasks (counter and semaphore mode) cancelled at random by select!"
        "conservation under cancellation";
    S12 rt::tokio_current_thread_ping_pong
        "tokio current-thread runtime; writes only from another OS thread (eventfd -> epoll -> parked driver); ping-pong"
        "every round's wake arrives; each read takes exactly that round's add";
    S13 rt::runtime_shutdown_and_drop
        "runtime shutdown with pending read/add, Arc clones dropped while others wait, last drop"
        "pending and later read/add return errors; dropping a clone never hangs the others; the last drop closes the fd";
    S14 rt::stale_readiness_guard
        "a tokio readiness guard kept across exactly 256 and 16,384 reactor events for its fd (one per round, counted), then cleared"
        "clearing the stale guard does not drop live readiness (tokio >= 1.54: a 15-bit readiness tick, which still wraps at 32,768 events); the fd still wakes";
    S15 plain_syscalls::bad_input_under_load
        "u64::MAX adds, short buffers and adds at MAX_COUNT while writers and an epoll reader run"
        "exact errors (InvalidInput, EINVAL, WouldBlock); conservation; no spurious wakeup for the single reader";
    S16 rt::ten_thousand_fds
        "10,000 AsyncEventFds in one runtime, a reader task each, writer threads adding round-robin"
        "every reader gets its exact share";
    S17 kernel::io_uring_rings
        "kernel writer: 3 io_uring rings (a thread each) with the same eventfd registered complete NOPs; tokio readers (read, poll_read) on both flavors"
        "completions reaped == sum read; liveness after the last completion; SKIP where io_uring is missing";
    S18 kernel::overflow_storms
        "kernel overflow: MAX_COUNT plus an io_uring completion saturate the counter to u64::MAX, again and again, while tasks and threads add and read"
        "waiting add/poll_add/thread add neither finish nor spin (wakeups and process CPU against an honest back-off, as this machine measured it); every unit accounted for, a u64::MAX read as the saturated value";
    S19 kernel::kvm_ioeventfd_vcpus
        "KVM: two vCPUs of a tiny guest ring doorbells (out to ports with KVM_IOEVENTFD) at full speed while tasks read, on both flavors"
        "guest rings == sum read, per eventfd; no out exits to user space; SKIP where /dev/kvm is missing";
};

/// S3: the same topology through mio (threads, one `Poll` each) and then
/// through tokio (tasks on one runtime).
fn semaphore_edge_triggered(ctx: &Arc<Ctx>) -> Step {
    mio_src::semaphore_consumers(ctx)?;
    ctx.proceed()?;
    rt::semaphore_tasks(ctx)
}

/// Looks a scenario up by id, case-insensitively: `"S3"`, `"s3"` and `"3"`
/// all find S3.
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::scenario;
/// assert_eq!(scenario("16").map(|s| s.id), Some("S16"));
/// assert_eq!(scenario("s19").map(|s| s.id), Some("S19"));
/// assert_eq!(scenario("S20"), None);
/// ```
pub fn scenario(id: &str) -> Option<&'static Scenario> {
    let id = id.trim();
    SCENARIOS
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(id) || s.id[1..] == *id)
}
