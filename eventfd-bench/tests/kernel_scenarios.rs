//! S17-S19, the stress scenarios whose writer is the kernel, run straight
//! from `src/stress/kernel.rs` until the engine's table takes them (see that
//! file's docs). A SKIP prints its reason and passes nothing.
//!
//! ```text
//! cargo test --release -p eventfd-bench --test kernel_scenarios
//! EVENTFD_STRESS_SCALE=20 cargo test --release -p eventfd-bench --test kernel_scenarios
//! ```

// io_uring and KVM are Linux's.
#![cfg(target_os = "linux")]

/// `kernel.rs` names the generator `crate::rng::Rng`, as inside the library.
mod rng {
    pub(crate) use eventfd_bench::rng::Rng;
}

/// ... and the shared rigs `crate::kernel_rigs`.
mod kernel_rigs {
    pub(crate) use eventfd_bench::kernel_rigs::*;
}

#[allow(dead_code, reason = "the summary's fields are read through Debug")]
#[path = "../src/stress/kernel/mod.rs"]
mod kernel;

use eventfd_bench::rng::Rng;
use kernel::Outcome;

/// One scenario at a time: S18 measures the CPU time of the whole process
/// while adds wait, which a scenario running beside it would inflate.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs scenario `id` with a fresh seed (printed, to replay it with
/// `EVENTFD_STRESS_SEED`) at `EVENTFD_STRESS_SCALE`, and asserts it passed
/// with exact conservation.
fn check(id: &str, scenario: fn(u64, u32) -> Outcome) {
    let _serial = serial();
    let seed = std::env::var("EVENTFD_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    let scale = std::env::var("EVENTFD_STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let start = std::time::Instant::now();
    match scenario(seed, scale) {
        Outcome::Passed(summary) => {
            println!(
                "{id} PASS (seed {seed}, scale {scale}, {:.1?}): {summary:?}",
                start.elapsed()
            );
            assert_eq!(summary.added, summary.read, "{id}: sum read != sum added");
            assert!(
                summary.kernel_signals > 0,
                "{id}: the kernel never signalled"
            );
        }
        Outcome::Skipped(reason) => println!("{id} SKIP: {reason}"),
        Outcome::Failed(failure) => panic!("{id} FAIL (seed {seed}, scale {scale}): {failure}"),
    }
}

#[test]
fn s17_io_uring_rings_signal_one_eventfd() {
    check("S17", kernel::s17);
}

#[test]
fn s18_kernel_overflow_storms() {
    check("S18", kernel::s18);
}

#[test]
fn s19_two_vcpus_ring_ioeventfds() {
    check("S19", kernel::s19);
}
