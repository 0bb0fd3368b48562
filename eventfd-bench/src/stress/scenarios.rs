//! The scenario table: what each scenario is, and the function that runs it.

use std::fmt;
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
#[derive(Clone, Copy)]
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

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("topology", &self.topology)
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
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
pub const SCENARIOS: [Scenario; 19] = [
    Scenario {
        id: "S1",
        name: "level_triggered_epoll",
        topology: "level-triggered epoll: N writer threads add 1, R reader threads in epoll_wait on one epfd drain to WouldBlock",
        checks: "after draining, epoll_wait(0) reports nothing",
        run: epoll::level_triggered_epoll,
    },
    Scenario {
        id: "S2",
        name: "edge_triggered_epoll",
        topology: "edge-triggered epoll (EPOLLET): ping-pong with an ack, and two writes with no read between",
        checks: "each write produces its own edge; a single reader sees no spurious wakeup",
        run: epoll::edge_triggered_epoll,
    },
    Scenario {
        id: "S3",
        name: "semaphore_edge_triggered",
        topology: "semaphore mode, read-only edge-triggered registration (mio Polls and tokio tasks): one add of N, M consumers",
        checks: "exactly N reads of 1; no count stranded after a read that left a count",
        run: semaphore_edge_triggered,
    },
    Scenario {
        id: "S4",
        name: "epoll_oneshot_rearm",
        topology: "EPOLLONESHOT: wait, drain, re-arm with EPOLL_CTL_MOD, writes landing between drain and re-arm",
        checks: "a re-arm with count > 0 reports at once",
        run: epoll::epoll_oneshot_rearm,
    },
    Scenario {
        id: "S5",
        name: "epoll_exclusive",
        topology: "EPOLLEXCLUSIVE: M threads, each with its own epoll instance on the same eventfd",
        checks: "some waiter wakes for every write; no count stranded",
        run: epoll::epoll_exclusive,
    },
    Scenario {
        id: "S6",
        name: "many_fds_many_sleepers",
        topology: "10 edge-triggered eventfds on one epfd, 10 threads in epoll_wait(maxevents = 1), all written at once",
        checks: "all wake within T, every round; each fd read exactly once per round",
        run: epoll::many_fds_many_sleepers,
    },
    Scenario {
        id: "S7",
        name: "timeout_boundary",
        topology: "a writer writes just before (or just after) a waiter's epoll_wait timeout expires",
        checks: "the event reaches some waiter every round",
        run: epoll::timeout_boundary,
    },
    Scenario {
        id: "S8",
        name: "poll_many_readers",
        topology: "poll(2) with R reader threads; POLLOUT at MAX_COUNT",
        checks: "POLLOUT absent at MAX_COUNT, and a POLLOUT waiter wakes after a read",
        run: plain_syscalls::poll_many_readers,
    },
    Scenario {
        id: "S9",
        name: "blocking_syscalls",
        topology: "blocking read/write syscalls under contention, blocked writers at MAX_COUNT released by a reader",
        checks: "every blocked call returns",
        run: plain_syscalls::blocking_syscalls,
    },
    Scenario {
        id: "S10",
        name: "mio_source_churn",
        topology: "EventFd as a mio Source, with reregister/deregister churn during writes",
        checks: "no event for a deregistered or replaced token; a re-registration with a count reports it",
        run: mio_src::mio_source_churn,
    },
    Scenario {
        id: "S11",
        name: "tokio_multi_thread_cancellation",
        topology: "tokio multi-thread runtime (2, 4, 8 workers): add tasks, plain-thread writers through try_clone, read tasks (counter and semaphore mode) cancelled at random by select!",
        checks: "conservation under cancellation",
        run: rt::tokio_multi_thread_cancellation,
    },
    Scenario {
        id: "S12",
        name: "tokio_current_thread_ping_pong",
        topology: "tokio current-thread runtime; writes only from another OS thread (eventfd -> epoll -> parked driver); ping-pong",
        checks: "every round's wake arrives; each read takes exactly that round's add",
        run: rt::tokio_current_thread_ping_pong,
    },
    Scenario {
        id: "S13",
        name: "runtime_shutdown_and_drop",
        topology: "runtime shutdown with pending read/add, Arc clones dropped while others wait, last drop",
        checks: "pending and later read/add return errors; dropping a clone never hangs the others; the last drop closes the fd",
        run: rt::runtime_shutdown_and_drop,
    },
    Scenario {
        id: "S14",
        name: "stale_readiness_guard",
        topology: "a tokio readiness guard kept across more than 256 (and 32768) reactor events, then cleared",
        checks: "clearing the stale guard does not drop live readiness; the fd still wakes (tokio >= 1.54, 15-bit readiness tick)",
        run: rt::stale_readiness_guard,
    },
    Scenario {
        id: "S15",
        name: "bad_input_under_load",
        topology: "u64::MAX adds, short buffers and adds at MAX_COUNT while writers and an epoll reader run",
        checks: "exact errors (InvalidInput, EINVAL, WouldBlock); conservation; no spurious wakeup for the single reader",
        run: plain_syscalls::bad_input_under_load,
    },
    Scenario {
        id: "S16",
        name: "ten_thousand_fds",
        topology: "10,000 AsyncEventFds in one runtime, a reader task each, writer threads adding round-robin",
        checks: "every reader gets its exact share",
        run: rt::ten_thousand_fds,
    },
    Scenario {
        id: "S17",
        name: "io_uring_rings",
        topology: "kernel writer: 3 io_uring rings (a thread each) with the same eventfd registered complete NOPs; tokio readers (read, poll_read) on both flavors",
        checks: "completions reaped == sum read; liveness after the last completion; SKIP where io_uring is missing",
        run: kernel::io_uring_rings,
    },
    Scenario {
        id: "S18",
        name: "overflow_storms",
        topology: "kernel overflow: MAX_COUNT plus an io_uring completion saturate the counter to u64::MAX, again and again, while tasks and threads add and read",
        checks: "waiting add/poll_add/thread add neither finish nor spin (wakeups and process CPU against an honest back-off, as this machine measured it); every unit accounted for, a u64::MAX read as the saturated value",
        run: kernel::overflow_storms,
    },
    Scenario {
        id: "S19",
        name: "kvm_ioeventfd_vcpus",
        topology: "KVM: two vCPUs of a tiny guest ring doorbells (out to ports with KVM_IOEVENTFD) at full speed while tasks read, on both flavors",
        checks: "guest rings == sum read, per eventfd; no out exits to user space; SKIP where /dev/kvm is missing",
        run: kernel::kvm_ioeventfd_vcpus,
    },
];

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
    let number = id
        .strip_prefix('S')
        .or_else(|| id.strip_prefix('s'))
        .unwrap_or(id);
    SCENARIOS.iter().find(|s| &s.id[1..] == number)
}
