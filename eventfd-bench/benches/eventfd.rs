//! Criterion benchmarks, one group per layer, each with a baseline.
//!
//! Run with `cargo bench -p eventfd-bench --bench eventfd` (add
//! `-- ping-pong` to pick a group). For side-by-side ratios against
//! `tokio-eventfd` and syscall counts, use the `eventfd-bench` binary
//! (`cargo run --release -p eventfd-bench`).
//!
//! - `add+read`: one add and one read, no waiting: `EventFd`, `AsyncEventFd`
//!   `try_add`/`try_read`, and a pipe (8-byte write + read) as baseline.
//! - `ping-pong-ct` / `ping-pong-mt`: one round trip between two tasks, each
//!   waiting on its own channel: `AsyncEventFd`, `tokio::sync::Notify`, and
//!   two hand-written `AsyncFd` loops (READABLE|WRITABLE interest cleared
//!   only on `WouldBlock`; READABLE-only cleared after a draining read), the
//!   baselines of `eventfd_bench::baselines`, which the binary measures too.
//! - `stream`: the `Stream` impl, against `read().await` on the same fd.

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_eventfd::{AsyncEventFd, EventFd};
use criterion::{criterion_group, criterion_main, Criterion};
use eventfd_bench::baselines::{AsyncFdR, AsyncFdRw, NotifyCounter};
use futures::StreamExt;
use tokio::runtime::{Builder, Runtime};

fn ct() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

fn mt() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

fn add_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("add+read");

    let efd = EventFd::new().expect("eventfd");
    g.bench_function("EventFd", |b| {
        b.iter(|| {
            efd.add(black_box(1)).expect("add");
            black_box(efd.read().expect("read"))
        })
    });

    let rt = ct();
    let _entered = rt.enter();
    let aefd = AsyncEventFd::new().expect("AsyncEventFd");
    g.bench_function("AsyncEventFd try_add+try_read", |b| {
        b.iter(|| {
            aefd.try_add(black_box(1)).expect("try_add");
            black_box(aefd.try_read().expect("try_read"))
        })
    });
    g.bench_function("AsyncEventFd add+read (ready, no wait)", |b| {
        b.to_async(&rt).iter(|| async {
            aefd.add(black_box(1)).await.expect("add");
            black_box(aefd.read().await.expect("read"))
        })
    });

    let (r, w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .expect("pipe");
    g.bench_function("pipe write+read (baseline)", |b| {
        let mut buf = [0u8; 8];
        b.iter(|| {
            nix::unistd::write(&w, black_box(&1u64.to_ne_bytes())).expect("write");
            black_box(nix::unistd::read(&r, &mut buf).expect("read"))
        })
    });
    g.finish();
}

/// One side of a ping-pong: wait for the own channel, signal the other.
trait Side: Send + 'static {
    fn wait(&self) -> impl Future<Output = io::Result<u64>> + Send;
    fn signal(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Makes the two channels of a pair, inside the runtime.
trait Pair: Sized + Send + Sync + 'static {
    fn make() -> io::Result<Self>;
}

impl Pair for Arc<AsyncEventFd> {
    fn make() -> io::Result<Self> {
        AsyncEventFd::new().map(Arc::new)
    }
}

/// `(me, peer)` for a task: wait on `me`, signal `peer`.
struct Ends<T>(T, T);

impl Side for Ends<Arc<AsyncEventFd>> {
    async fn wait(&self) -> io::Result<u64> {
        self.0.read().await
    }
    async fn signal(&self) -> io::Result<()> {
        self.1.add(1).await
    }
}

impl Pair for Arc<NotifyCounter> {
    fn make() -> io::Result<Self> {
        Ok(Arc::new(NotifyCounter::new()))
    }
}

impl Side for Ends<Arc<NotifyCounter>> {
    async fn wait(&self) -> io::Result<u64> {
        Ok(self.0.read().await)
    }
    async fn signal(&self) -> io::Result<()> {
        self.1.add(1);
        Ok(())
    }
}

impl Pair for Arc<AsyncFdRw> {
    fn make() -> io::Result<Self> {
        AsyncFdRw::new().map(Arc::new)
    }
}

impl Side for Ends<Arc<AsyncFdRw>> {
    async fn wait(&self) -> io::Result<u64> {
        self.0.read().await
    }
    async fn signal(&self) -> io::Result<()> {
        self.1.add(1).await
    }
}

impl Pair for Arc<AsyncFdR> {
    fn make() -> io::Result<Self> {
        AsyncFdR::new().map(Arc::new)
    }
}

impl Side for Ends<Arc<AsyncFdR>> {
    async fn wait(&self) -> io::Result<u64> {
        self.0.read().await
    }
    async fn signal(&self) -> io::Result<()> {
        self.1.add(1)
    }
}

/// Times `iters` round trips between two spawned tasks; channel setup and
/// the partner's spawn happen before the clock starts.
fn ping_pong<P>(rt: &Runtime, iters: u64) -> Duration
where
    P: Pair + Clone,
    Ends<P>: Side,
{
    rt.block_on(async {
        let a = P::make().expect("channel a");
        let b = P::make().expect("channel b");
        let partner = Ends(b.clone(), a.clone());
        let me = Ends(a, b);
        let peer = tokio::spawn(async move {
            for _ in 0..iters {
                partner.wait().await.expect("partner wait");
                partner.signal().await.expect("partner signal");
            }
        });
        let timed = tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..iters {
                me.signal().await.expect("signal");
                black_box(me.wait().await.expect("wait"));
            }
            start.elapsed()
        });
        let elapsed = timed.await.expect("timed task");
        peer.await.expect("partner task");
        elapsed
    })
}

fn ping_pong_group(c: &mut Criterion, name: &str, rt: &Runtime) {
    let mut g = c.benchmark_group(name);
    g.bench_function("AsyncEventFd", |b| {
        b.iter_custom(|iters| ping_pong::<Arc<AsyncEventFd>>(rt, iters))
    });
    g.bench_function("Notify (baseline, no fd)", |b| {
        b.iter_custom(|iters| ping_pong::<Arc<NotifyCounter>>(rt, iters))
    });
    g.bench_function("AsyncFd READABLE|WRITABLE, clear on WouldBlock", |b| {
        b.iter_custom(|iters| ping_pong::<Arc<AsyncFdRw>>(rt, iters))
    });
    g.bench_function("AsyncFd READABLE, clear after draining read", |b| {
        b.iter_custom(|iters| ping_pong::<Arc<AsyncFdR>>(rt, iters))
    });
    g.finish();
}

fn ping_pong_ct(c: &mut Criterion) {
    ping_pong_group(c, "ping-pong-ct", &ct());
}

fn ping_pong_mt(c: &mut Criterion) {
    ping_pong_group(c, "ping-pong-mt", &mt());
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    let rt = ct();
    let mut efd = rt
        .block_on(async { AsyncEventFd::new() })
        .expect("AsyncEventFd");
    g.bench_function("add then Stream::next (ready)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    efd.try_add(black_box(1)).expect("try_add");
                    black_box(efd.next().await.expect("item").expect("read"));
                }
                start.elapsed()
            })
        })
    });
    let efd2 = rt
        .block_on(async { AsyncEventFd::new() })
        .expect("AsyncEventFd");
    g.bench_function("add then read().await (ready, baseline)", |b| {
        b.to_async(&rt).iter(|| async {
            efd2.try_add(black_box(1)).expect("try_add");
            black_box(efd2.read().await.expect("read"))
        })
    });
    g.bench_function("thread adds, Stream task reads (ping-pong)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut rx = AsyncEventFd::new().expect("AsyncEventFd");
                let to_task = rx.get_ref().try_clone().expect("dup");
                let back = EventFd::builder()
                    .nonblocking(false)
                    .build()
                    .expect("blocking eventfd");
                let to_thread = back.try_clone().expect("dup");
                let thread = std::thread::spawn(move || {
                    for _ in 0..iters {
                        back.read().expect("thread read");
                        to_task.add(1).expect("thread add");
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    to_thread.add(1).expect("add");
                    black_box(rx.next().await.expect("item").expect("read"));
                }
                let elapsed = start.elapsed();
                thread.join().expect("thread");
                elapsed
            })
        })
    });
    g.finish();
}

criterion_group!(benches, add_read, ping_pong_ct, ping_pong_mt, stream);
criterion_main!(benches);
