//! fd and memory accounting: the process's open fds and resident set size,
//! figures of the whole process, so [`exclusive`] runs one scenario at a time.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, Once};

/// The process's open fds (number -> what it points to) and RSS in bytes.
#[derive(Debug, Clone, Default)]
pub(super) struct Usage {
    pub(super) fds: BTreeMap<i32, String>,
    pub(super) rss: u64,
}

impl Usage {
    pub(super) fn now() -> Usage {
        // The directory being read is open too: not counted.
        let own = format!("/proc/{}/fd", std::process::id());
        let fds = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| {
                        let fd = e.file_name().to_str()?.parse().ok()?;
                        let target = std::fs::read_link(e.path())
                            .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
                        counted(&target, &own).then_some((fd, target))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Usage { fds, rss: rss() }
    }

    /// How `after` differs from `self`: the fds opened ("fd -> target")
    /// and closed since, at most 8 of each.
    pub(super) fn diff(&self, after: &Usage) -> String {
        /// The fds of `fds` that `other` lacks.
        fn list(fds: &BTreeMap<i32, String>, other: &BTreeMap<i32, String>) -> String {
            let all: Vec<String> = fds
                .iter()
                .filter(|(fd, t)| other.get(fd) != Some(t))
                .map(|(fd, target)| format!("{fd} -> {target}"))
                .collect();
            let more = if all.len() > 8 { ", ..." } else { "" };
            format!("[{}{more}]", all[..all.len().min(8)].join(", "))
        }
        let (opened, closed) = (list(&after.fds, &self.fds), list(&self.fds, &after.fds));
        format!("opened {opened}, closed {closed}")
    }
}

/// Whether an fd is of a kind that a scenario makes, and so could leak:
/// eventfds, epoll, io_uring and KVM instances (all `anon_inode:`) and
/// sockets (tokio's signal pipe). No scenario opens a pipe or a file; the
/// sanitizer runtimes do (the symbolizer's pipes, `/proc/self/maps`), at
/// moments of their own, and would make a clean scenario look leaky.
fn counted(target: &str, own: &str) -> bool {
    target != own && (target.starts_with("anon_inode:") || target.starts_with("socket:"))
}

/// `VmRSS` of `/proc/self/status`, in bytes (0 if unreadable).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits until no other scenario runs in this process (`cargo test` runs
/// the stress tests on parallel threads) and holds that until the guard drops.
/// The first call also warms up what a process opens once and keeps for
/// its lifetime (with tokio's `signal` feature, which `cargo test
/// --workspace` turns on, the first runtime opens a socket pair that is
/// never closed), so that the first scenario is not blamed for it.
pub(super) fn exclusive() -> MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build();
        drop((current, multi));
    });
    guard
}

/// The process's open fds and resident set size at one moment.
///
/// # Examples
///
/// ```
/// let before = eventfd_bench::stress::sample();
/// let efd = async_eventfd::EventFd::new()?;
/// assert_eq!(eventfd_bench::stress::sample().fds, before.fds + 1);
/// drop(efd);
/// assert_eq!(eventfd_bench::stress::sample().fds, before.fds);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Open fds of the kinds scenarios make (see [`Report::fds_before`](crate::stress::Report::fds_before)).
    pub fds: usize,
    /// Resident set size in bytes (see [`Report::rss_before`](crate::stress::Report::rss_before)).
    pub rss: u64,
}

/// Samples the process's open fds and RSS between scenarios, as the
/// scenarios' own figures are taken (after any running scenario finishes).
///
/// # Examples
///
/// ```
/// use eventfd_bench::stress::{run, sample, Config};
///
/// let before = sample();
/// assert!(run("S3", &Config::default()).passed());
/// assert_eq!(sample().fds, before.fds, "no fd left behind");
/// ```
pub fn sample() -> Sample {
    let _alone = exclusive();
    let now = Usage::now();
    Sample {
        fds: now.fds.len(),
        rss: now.rss,
    }
}
