//! The stress suite: scenarios S1-S19 (`eventfd_bench::stress::SCENARIOS`
//! describes each), one test each, run by the engine in
//! `eventfd_bench::stress`. S17-S19 have the kernel as the
//! writer (io_uring, KVM): where it is missing, the test prints one line
//! with the reason and checks nothing (it does not claim a pass). So does a
//! scenario whose verdict is INCONCLUSIVE (a machine too slow to judge).
//!
//! Each test runs its scenario at `EVENTFD_STRESS_SCALE` (default 1), prints
//! the report (with its seed), and asserts that it passed: conservation (sum
//! read == sum added, exactly), liveness (no count left pending for 2 s with
//! no waiter woken; the watchdog names the waiter and the count left), no fd
//! left open, and the scenario's own checks. Nothing hangs: every scenario
//! has a watchdog. A failure names its seed; `EVENTFD_STRESS_SEED=<seed>`
//! replays its random choices.
//!
//! The engine runs the scenarios of one process one at a time (the fd and
//! RSS figures are the process's), so these tests queue on each other even
//! when the harness runs them on parallel threads.
//!
//! ```text
//! cargo test --release -p eventfd-bench --test stress
//! EVENTFD_STRESS_SCALE=20 cargo test --release -p eventfd-bench --test stress
//! EVENTFD_STRESS_SEED=12345 cargo test --release -p eventfd-bench --test stress
//! taskset -c 0 cargo test --release -p eventfd-bench --test stress
//! EVENTFD_STRESS_THREADS=8 cargo test --release -p eventfd-bench --test stress
//! ```

use eventfd_bench::stress::{self, Config, Report, Verdict};

/// Runs `id` and asserts that it passed, with exact conservation and no fd
/// left open; `None` if it skipped (only where `may_skip`) or was
/// inconclusive, its reason printed.
fn run(id: &str, may_skip: bool) -> Option<Report> {
    let config = Config::from_env();
    let report = stress::run(id, &config);
    println!("{report}");
    let replay = format!("replay with EVENTFD_STRESS_SEED={}", report.seed);
    if let Some(seed) = config.seed {
        assert_eq!(report.seed, seed, "the report must name the seed it ran");
    }
    assert_eq!(report.id, id, "report for the wrong scenario");
    assert!(!report.failed(), "{id} failed: {report}");
    match &report.verdict {
        Verdict::Skip(reason) => {
            assert!(
                may_skip,
                "{id} skipped, but it needs nothing missing: {reason}"
            );
            println!("{id} SKIP (nothing checked): {reason}");
            return None;
        }
        // A machine too slow to judge (a debug build under emulation): not a
        // fault, and not a pass either.
        Verdict::Inconclusive(reason) => {
            println!("{id} INCONCLUSIVE (nothing concluded): {reason}");
            return None;
        }
        _ => {}
    }
    assert_eq!(report.verdict, Verdict::Pass);
    assert!(report.rounds >= 1, "{id} ran no round ({replay})");
    assert!(report.tally.add_calls > 0, "{id} added nothing: {report}");
    assert_eq!(
        report.tally.reads, report.tally.adds,
        "{id}: sum read != sum added ({replay})"
    );
    assert_eq!(
        report.fds_after, report.fds_before,
        "{id} left fds behind: {report}"
    );
    Some(report)
}

/// [`run`] for a scenario that needs nothing the machine may lack.
fn check(id: &str) -> Option<Report> {
    run(id, false)
}

/// [`run`] for a kernel scenario, which skips where its facility is missing.
fn check_or_skip(id: &str) -> Option<Report> {
    run(id, true)
}

/// S1: Level-triggered epoll: writer threads add 1, reader threads share one epfd and drain.
#[test]
fn s1_level_triggered_epoll_many_writers_many_readers() {
    check("S1");
}

/// S2: Edge-triggered epoll: ping-pong with ack, then two writes without a read: one edge each.
#[test]
fn s2_edge_triggered_epoll_ping_pong_and_double_write() {
    let Some(r) = check("S2") else {
        return;
    };
    assert_eq!(
        r.tally.spurious, 0,
        "a single edge-triggered reader woke for nothing"
    );
    assert_eq!(
        r.tally.read_calls * 4,
        r.tally.add_calls * 3,
        "one read per ping-pong add, one per pair of adds"
    );
}

/// S3: Semaphore mode behind read-only edge-triggered registrations (mio and tokio): N reads of 1.
#[test]
fn s3_semaphore_edge_triggered_one_add_many_consumers() {
    let Some(r) = check("S3") else {
        return;
    };
    assert_eq!(
        r.tally.reads, r.tally.read_calls as u128,
        "every semaphore read returns 1"
    );
}

/// S4: EPOLLONESHOT: a re-arm with a count pending reports at once.
#[test]
fn s4_epoll_oneshot_rearm_with_writes_between_drain_and_rearm() {
    check("S4");
}

/// S5: EPOLLEXCLUSIVE: one epoll instance per thread on the same eventfd; no count stranded.
#[test]
fn s5_epoll_exclusive_one_epfd_per_thread() {
    check("S5");
}

/// S6: 10 edge-triggered fds, 10 sleepers with maxevents = 1, all written at once, every round.
#[test]
fn s6_ten_edge_triggered_fds_ten_sleepers_maxevents_one() {
    let Some(r) = check("S6") else {
        return;
    };
    assert_eq!(
        r.tally.reads, r.tally.read_calls as u128,
        "each fd read exactly 1 per round"
    );
}

/// S7: A write lands at a waiter's timeout: the event still reaches some waiter.
#[test]
fn s7_write_at_the_epoll_wait_timeout_boundary() {
    check("S7");
}

/// S8: poll(2) readers; POLLOUT absent at MAX_COUNT and back after a read.
#[test]
fn s8_poll_many_readers_and_pollout_at_max_count() {
    check("S8");
}

/// S9: Blocking syscalls under contention; writers blocked at MAX_COUNT all return.
#[test]
fn s9_blocking_read_write_and_writers_blocked_at_max_count() {
    check("S9");
}

/// S10: mio Source churn: no event for a stale token; re-registration reports a pending count.
#[test]
fn s10_mio_source_reregister_deregister_churn_during_writes() {
    check("S10");
}

/// S11: tokio multi-thread (2, 4, 8 workers), counter and semaphore mode, reads cancelled by select!.
#[test]
fn s11_tokio_multi_thread_tasks_threads_and_cancelled_reads() {
    check("S11");
}

/// S12: tokio current-thread runtime woken only by another OS thread's writes.
#[test]
fn s12_tokio_current_thread_ping_pong_from_os_thread() {
    let Some(r) = check("S12") else {
        return;
    };
    assert_eq!(
        r.tally.read_calls, r.tally.add_calls,
        "one read per ping-pong add"
    );
}

/// S13: Runtime shutdown fails pending read/add; dropping clones never hangs; the last drop closes.
#[test]
fn s13_runtime_shutdown_and_arc_drops_never_hang() {
    check("S13");
}

/// S14: A readiness guard kept across exactly 256 and 16,384 reactor events, then cleared: the fd still wakes.
#[test]
fn s14_stale_readiness_guard_across_many_reactor_events() {
    check("S14");
}

/// S15: u64::MAX adds, short buffers and MAX_COUNT adds under load: exact errors, exact conservation.
#[test]
fn s15_bad_input_under_load_disturbs_nothing() {
    let Some(r) = check("S15") else {
        return;
    };
    assert_eq!(
        r.tally.spurious, 0,
        "a bad write woke the single reader for nothing"
    );
}

/// S16: 10,000 AsyncEventFds with a reader each: every reader gets exactly its share.
#[test]
fn s16_ten_thousand_async_eventfds_round_robin_writers() {
    check("S16");
}

/// S17: io_uring rings (a thread each) signal one eventfd per completion: completions == sum read.
#[test]
fn s17_io_uring_rings_signal_one_eventfd_per_completion() {
    if let Some(r) = check_or_skip("S17") {
        // Each ring thread's NOP completions are adds of exactly 1.
        assert_eq!(
            r.tally.adds,
            u128::from(r.tally.add_calls),
            "one unit per completion"
        );
    }
}

/// S18: kernel signals saturate the counter to u64::MAX again and again; waiting adds never spin.
#[test]
fn s18_kernel_overflow_storms_account_for_every_unit() {
    if let Some(r) = check_or_skip("S18") {
        // At least one saturation per round: MAX_COUNT plus a signal.
        assert!(
            r.tally.reads >= u128::from(u64::MAX) * u128::from(r.rounds),
            "{r}"
        );
    }
}

/// S19: two vCPUs ring KVM ioeventfds at full speed: guest rings == sum read.
#[test]
fn s19_kvm_vcpus_ring_ioeventfds_while_tasks_read() {
    if let Some(r) = check_or_skip("S19") {
        assert_eq!(
            r.tally.adds,
            u128::from(r.tally.add_calls),
            "one unit per guest ring"
        );
    }
}
