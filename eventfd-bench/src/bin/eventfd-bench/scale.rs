//! `eventfd-bench scale`: wake one of N registered receivers, each waited on
//! by a task, and wait for its reply; with a floor that makes the same
//! syscalls with no runtime.

use std::io;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_eventfd::EventFd;
use eventfd_bench::rng::Rng;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::Serialize;

use crate::contenders::{dispatch, Chan, Contender, End};
use crate::interleave::interleaved;
use crate::options::{Pick, ScaleArgs};
use crate::pinning::Pin;
use crate::rows::{grid, ratio_to, Floor, Row};
use crate::runtime::{join, on_runtime, on_thread, Flavor};
use crate::stats::Stats;
use crate::table::{finite, flavor, ns, print_json, print_table, ratio};
use crate::timing::{nanos, Rts};

/// The seed of the random choice of receivers.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Serialize)]
struct Doc {
    command: &'static str,
    pin: &'static str,
    pick: &'static str,
    rounds: usize,
    rts_per_round: usize,
    results: Vec<DocRow>,
}

#[derive(Serialize)]
struct DocRow {
    #[serde(rename = "impl")]
    name: &'static str,
    flavor: Option<&'static str>,
    fds: usize,
    mean_ns: f64,
    p50_ns: f64,
    p99_ns: f64,
    max_ns: f64,
    p50_vs_fewest_fds: Option<f64>,
    p50_vs_crate: Option<f64>,
}

/// The receiver counts that fit the open-file limit (the soft one raised
/// to the hard one first: 10,000 receivers and more); the others are
/// skipped with a line on stderr.
fn fitting(fds: &[usize]) -> Vec<usize> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let raised = soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok();
    let limit = if raised { hard } else { soft };
    fds.iter()
        .copied()
        .filter(|&n| {
            let ok = (n as u64).saturating_add(64) <= limit;
            if !ok {
                eprintln!("eventfd-bench: skipping --fds {n}: the open-file limit is {limit}");
            }
            ok
        })
        .collect()
}

pub(crate) fn run(args: &ScaleArgs) -> io::Result<ExitCode> {
    let (pin, pick, rounds, rts) = (args.common.pin, args.pick, args.rounds, args.rts);
    let fds = fitting(&args.fds);
    let mut keys: Vec<(Row, usize)> = grid(&args.common, &fds);
    keys.extend(fds.iter().map(|&n| (Row::Floor(Floor::Epoll), n)));
    let n = Rts::new(rts, args.warmup.min(rts));
    let results = interleaved(
        &keys,
        rounds,
        |(row, n)| format!("{} fds={n}", row.label()),
        |(row, fds)| {
            match row {
                Row::Task(c, flavor) => dispatch!(c, scale_with(flavor, pin, fds, pick, n)),
                Row::Floor(_) => scale_floor(pin, fds, pick, n),
            }
            .map(Stats::of)
        },
    )?;
    let stats: Vec<Stats> = results.iter().map(|r| Stats::median_of(r)).collect();
    let first = fds.first().copied().unwrap_or(1);
    let p50 = |j: usize| stats[j].p50;
    // Each row against its own fewest-fds row, and against its baseline.
    let results: Vec<DocRow> = keys
        .iter()
        .zip(&stats)
        .enumerate()
        .map(|(at, (&(row, n), s))| DocRow {
            name: row.name(),
            flavor: row.flavor().map(Flavor::name),
            fds: n,
            mean_ns: s.mean,
            p50_ns: s.p50,
            p99_ns: s.p99,
            max_ns: s.max,
            p50_vs_fewest_fds: finite(ratio_to(&keys, &(row, first), at, p50)),
            p50_vs_crate: finite(ratio_to(&keys, &(row.baseline(), n), at, p50)),
        })
        .collect();
    if args.common.json {
        print_json(&Doc {
            command: "scale",
            pin: pin.name(),
            pick: pick.name(),
            rounds,
            rts_per_round: rts,
            results,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let title = match pick {
        Pick::Random => {
            "scale: wake one of N registered receivers at random, wait for its reply (ns)"
        }
        Pick::First => "scale: wake the first of N registered receivers, wait for its reply (ns)",
    };
    let vs_first = format!("p50 vs {first} fd");
    print_table(
        title,
        &results,
        &[
            ("implementation", &|r| r.name.to_string()),
            ("flavor", &|r| flavor(r.flavor)),
            ("fds", &|r| ns(r.fds as f64)),
            ("ns/wake", &|r| ns(r.mean_ns)),
            ("p50", &|r| ns(r.p50_ns)),
            ("p99", &|r| ns(r.p99_ns)),
            (&vs_first, &|r| ratio(r.p50_vs_fewest_fds)),
            ("p50 vs crate", &|r| ratio(r.p50_vs_crate)),
        ],
    );
    println!(
        "pin={}, pick={}, {rounds} rounds x {rts} wakes, interleaved; medians of rounds. \
         The wake is one plain write (notify_one for notify); the reply likewise. \
         floor: epoll = the same six syscalls on the same kind of kernel objects, \
         in one thread (no runtime, no task); its growth is the kernel's.",
        pin.name(),
        pick.name(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The sequence of receivers to wake, out of `fds`: the same for every
/// row (a fixed seed), so each pays for the same choices.
fn picker(pick: Pick, fds: usize) -> impl FnMut() -> usize {
    let mut rng = Rng::new(SEED);
    move || match pick {
        Pick::Random => usize::try_from(rng.below(fds as u64)).unwrap_or(0),
        Pick::First => 0,
    }
}

/// `fds` receivers of `c` each wait in a task of its own; a driver wakes
/// one (as `pick` says) and waits for its reply. Returns ns per round trip.
fn scale_with<E: End>(
    c: Contender,
    flavor: Flavor,
    pin: Pin,
    fds: usize,
    pick: Pick,
    n: Rts,
) -> io::Result<Vec<u64>> {
    let (samples, _reply_rx) = on_runtime(flavor, pin, move || async move {
        let chan = E::chan(c)?;
        let (mut reply_rx, reply) = (chan.rx, chan.sync);
        let mut wake = Vec::with_capacity(fds);
        // A waiter that fails leaves its error here and replies anyway, so
        // the driver stops instead of waiting forever for its reply.
        let failure = Arc::new(Mutex::new(None::<io::Error>));
        for _ in 0..fds {
            let Chan { mut rx, sync, .. } = E::chan(c)?;
            wake.push(sync);
            let reply = reply.clone();
            let failure = Arc::clone(&failure);
            tokio::spawn(async move {
                let e = loop {
                    if let Err(e) = rx.recv().await {
                        break e;
                    }
                    if let Err(e) = reply.fire() {
                        break e;
                    }
                };
                *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                // Best effort: if the reply fd itself failed, so does this.
                drop(reply.fire());
            });
        }
        let driver = tokio::spawn(async move {
            let mut next = picker(pick, fds);
            let mut samples = Vec::with_capacity(n.rts);
            for i in 0..n.rts + n.warmup {
                let pick = next();
                let start = Instant::now();
                wake[pick].fire()?;
                reply_rx.recv().await?;
                let elapsed = start.elapsed();
                let mut failed = failure.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(e) = failed.take() {
                    return Err(e);
                }
                if i >= n.warmup {
                    samples.push(nanos(elapsed));
                }
            }
            Ok::<_, io::Error>((samples, reply_rx))
        });
        let (samples, reply_rx) = join(driver.await)?;
        // The waiting tasks still use the reply fd: keep it open until they
        // are cancelled (`on_runtime` drops the runtime before it returns).
        Ok((samples, reply_rx))
    })?;
    Ok(samples)
}

/// The floor: `fds` eventfds and a reply eventfd in one level-triggered epoll
/// set. A round trip writes the chosen eventfd, takes its event from
/// `epoll_wait` and reads it, then the same with the reply: a task's six
/// syscalls, on the same kernel objects.
fn scale_floor(pin: Pin, fds: usize, pick: Pick, n: Rts) -> io::Result<Vec<u64>> {
    on_thread(pin, move || {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let efds = (0..fds)
            .map(|_| EventFd::new())
            .collect::<io::Result<Vec<_>>>()?;
        let reply = EventFd::new()?;
        for (token, efd) in (0u64..).zip(efds.iter().chain([&reply])) {
            epoll.add(efd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        }
        let mut events = [EpollEvent::empty()];
        // Waits for the one ready fd, which must be `efd` (token `token`),
        // and takes its count.
        let mut take = |efd: &EventFd, token: usize| -> io::Result<()> {
            let n = epoll.wait(&mut events, EpollTimeout::NONE)?;
            if n != 1 || events[0].data() != token as u64 {
                return Err(io::Error::other(format!(
                    "epoll floor: expected token {token}, got {n} event(s), token {}",
                    events[0].data()
                )));
            }
            efd.read().map(drop)
        };
        let mut next = picker(pick, fds);
        let mut samples = Vec::with_capacity(n.rts);
        for i in 0..n.rts + n.warmup {
            let pick = next();
            let efd = efds
                .get(pick)
                .ok_or_else(|| io::Error::other("epoll floor: no receivers"))?;
            let start = Instant::now();
            efd.add(1)?;
            take(efd, pick)?;
            reply.add(1)?;
            take(&reply, fds)?;
            if i >= n.warmup {
                samples.push(nanos(start.elapsed()));
            }
        }
        Ok(samples)
    })
}
