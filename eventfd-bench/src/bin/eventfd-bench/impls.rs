//! The ways to wake a task that the benchmarks compare: this crate, the
//! baselines, and their common shape (a [`Chan`]: a receiving side owned by
//! one task, a sending side for another task, and a plain-thread sender).

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};

use async_eventfd::{AsyncEventFd, EventFd};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::sync::Notify;

use crate::sys;

/// An implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Impl {
    /// `async_eventfd::AsyncEventFd`: `read().await` / `add(1).await`.
    Crate,
    /// `tokio::sync::Notify` plus an atomic counter (in-process only, no fd).
    Notify,
    /// Hand-written `AsyncFd<EventFd>`, READABLE|WRITABLE interest, readiness
    /// cleared only on `WouldBlock` (`try_io`): tokio's idiomatic loop.
    AsyncFdRw,
    /// Hand-written `AsyncFd<EventFd>`, READABLE-only interest, readiness
    /// cleared after every draining read; `add` is a plain write.
    AsyncFdR,
    /// The `tokio-eventfd` 0.2.2 crate (`AsyncRead`/`AsyncWrite` of 8 bytes).
    TokioEventfd,
}

impl Impl {
    /// The implementations that wake a task, in table order.
    pub(crate) const ALL: [Impl; 5] = [
        Impl::Crate,
        Impl::TokioEventfd,
        Impl::AsyncFdRw,
        Impl::AsyncFdR,
        Impl::Notify,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Crate => "async-eventfd",
            Impl::Notify => "notify",
            Impl::AsyncFdRw => "asyncfd-rw",
            Impl::AsyncFdR => "asyncfd-r",
            Impl::TokioEventfd => "tokio-eventfd",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == s)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Impl::Crate => "this crate: AsyncEventFd read().await / add(1).await",
            Impl::Notify => "tokio::sync::Notify + AtomicU64 (in-process only, no fd)",
            Impl::AsyncFdRw => {
                "hand-written AsyncFd, READABLE|WRITABLE, clear only on WouldBlock (try_io)"
            }
            Impl::AsyncFdR => "hand-written AsyncFd, READABLE only, clear after a draining read",
            Impl::TokioEventfd => "tokio-eventfd 0.2.2 (AsyncRead/AsyncWrite of 8 bytes)",
        }
    }
}

/// The receiving side of a channel: waits for a count and takes it.
pub(crate) trait Rx: Send + 'static {
    fn recv(&mut self) -> impl Future<Output = io::Result<u64>> + Send;
}

/// The sending side of a channel, used from a task: adds 1.
pub(crate) trait Tx: Send + 'static {
    fn send(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A sender for plain threads (and for benchmarks that wake many receivers
/// the same way): one `write(2)` to the fd, or `Notify::notify_one`.
#[derive(Clone)]
pub(crate) enum SyncTx {
    /// The receiver's fd; valid while the receiver lives, which every
    /// benchmark guarantees (receivers outlive the last send to them).
    Fd(RawFd),
    Notify(Arc<NotifyCell>),
}

impl SyncTx {
    pub(crate) fn fire(&self) -> io::Result<()> {
        match self {
            SyncTx::Fd(fd) => sys::add_raw(*fd),
            SyncTx::Notify(cell) => {
                cell.add();
                Ok(())
            }
        }
    }
}

/// One channel of an implementation.
pub(crate) struct Chan<R, T> {
    pub(crate) rx: R,
    pub(crate) tx: T,
    pub(crate) sync: SyncTx,
}

/// An implementation as types: how to make a channel (inside a runtime).
pub(crate) trait Kind {
    type R: Rx;
    type T: Tx;
    fn make() -> io::Result<Chan<Self::R, Self::T>>;
}

/// A channel whose receiving and sending ends share one fd object, and
/// whose plain-thread sender writes to that fd.
fn shared_fd<F: AsRawFd, E>(fd: Arc<F>, end: impl Fn(Arc<F>) -> E) -> Chan<E, E> {
    Chan {
        sync: SyncTx::Fd(fd.as_raw_fd()),
        rx: end(Arc::clone(&fd)),
        tx: end(fd),
    }
}

/// Calls `$f::<Kind>($args)` for the kind of `$impl`.
macro_rules! dispatch {
    ($impl:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $impl {
            $crate::impls::Impl::Crate => $f::<$crate::impls::CrateKind>($($arg),*),
            $crate::impls::Impl::Notify => $f::<$crate::impls::NotifyKind>($($arg),*),
            $crate::impls::Impl::AsyncFdRw => $f::<$crate::impls::AsyncFdRwKind>($($arg),*),
            $crate::impls::Impl::AsyncFdR => $f::<$crate::impls::AsyncFdRKind>($($arg),*),
            $crate::impls::Impl::TokioEventfd => $f::<$crate::impls::TokioEventfdKind>($($arg),*),
        }
    };
}
pub(crate) use dispatch;

// ---- this crate -----------------------------------------------------------

pub(crate) struct CrateKind;

pub(crate) struct CrateEnd(Arc<AsyncEventFd>);

impl Rx for CrateEnd {
    async fn recv(&mut self) -> io::Result<u64> {
        self.0.read().await
    }
}

impl Tx for CrateEnd {
    async fn send(&mut self) -> io::Result<()> {
        self.0.add(1).await
    }
}

impl Kind for CrateKind {
    type R = CrateEnd;
    type T = CrateEnd;
    fn make() -> io::Result<Chan<CrateEnd, CrateEnd>> {
        Ok(shared_fd(Arc::new(AsyncEventFd::new()?), CrateEnd))
    }
}

// ---- Notify ---------------------------------------------------------------

/// A counter and a `Notify`: `notify_one` keeps a permit, so no wakeup is lost.
#[derive(Default)]
pub(crate) struct NotifyCell {
    notify: Notify,
    count: AtomicU64,
}

impl NotifyCell {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }
}

pub(crate) struct NotifyKind;

pub(crate) struct NotifyEnd(Arc<NotifyCell>);

impl Rx for NotifyEnd {
    async fn recv(&mut self) -> io::Result<u64> {
        loop {
            let value = self.0.count.swap(0, Ordering::AcqRel);
            if value > 0 {
                return Ok(value);
            }
            self.0.notify.notified().await;
        }
    }
}

impl Tx for NotifyEnd {
    async fn send(&mut self) -> io::Result<()> {
        self.0.add();
        Ok(())
    }
}

impl Kind for NotifyKind {
    type R = NotifyEnd;
    type T = NotifyEnd;
    fn make() -> io::Result<Chan<NotifyEnd, NotifyEnd>> {
        let cell = Arc::new(NotifyCell::default());
        Ok(Chan {
            rx: NotifyEnd(Arc::clone(&cell)),
            tx: NotifyEnd(Arc::clone(&cell)),
            sync: SyncTx::Notify(cell),
        })
    }
}

// ---- hand-written AsyncFd loops -------------------------------------------

fn register(interest: Interest) -> io::Result<Arc<AsyncFd<EventFd>>> {
    let efd = EventFd::new()?;
    // SAFETY: the `AsyncFd` owns `efd`, whose fd stays open and unchanged
    // until the `AsyncFd` is dropped (nothing here swaps it).
    let afd = unsafe { AsyncFd::register_with_interest(efd, interest) };
    Ok(Arc::new(afd.map_err(|e| e.into_parts().1)?))
}

pub(crate) struct AsyncFdRwKind;

pub(crate) struct AsyncFdRwEnd(Arc<AsyncFd<EventFd>>);

impl Rx for AsyncFdRwEnd {
    async fn recv(&mut self) -> io::Result<u64> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|afd| afd.get_ref().read()) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

impl Tx for AsyncFdRwEnd {
    async fn send(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|afd| afd.get_ref().add(1)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

impl Kind for AsyncFdRwKind {
    type R = AsyncFdRwEnd;
    type T = AsyncFdRwEnd;
    fn make() -> io::Result<Chan<AsyncFdRwEnd, AsyncFdRwEnd>> {
        let afd = register(Interest::READABLE | Interest::WRITABLE)?;
        Ok(shared_fd(afd, AsyncFdRwEnd))
    }
}

pub(crate) struct AsyncFdRKind;

pub(crate) struct AsyncFdREnd(Arc<AsyncFd<EventFd>>);

impl Rx for AsyncFdREnd {
    async fn recv(&mut self) -> io::Result<u64> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.get_inner().read() {
                Ok(value) => {
                    // The read took the whole counter: readiness is stale. An
                    // event that arrived after the guard bumps tokio's tick
                    // and makes this clear a no-op.
                    guard.clear_ready();
                    return Ok(value);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Tx for AsyncFdREnd {
    async fn send(&mut self) -> io::Result<()> {
        // Never full in these benchmarks; a plain write.
        self.0.get_ref().add(1)
    }
}

impl Kind for AsyncFdRKind {
    type R = AsyncFdREnd;
    type T = AsyncFdREnd;
    fn make() -> io::Result<Chan<AsyncFdREnd, AsyncFdREnd>> {
        Ok(shared_fd(register(Interest::READABLE)?, AsyncFdREnd))
    }
}

// ---- tokio-eventfd ----------------------------------------------------------

pub(crate) struct TokioEventfdKind;

pub(crate) struct TokioEventfdEnd(tokio_eventfd::EventFd);

impl Rx for TokioEventfdEnd {
    async fn recv(&mut self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        let efd = &mut self.0;
        let n = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut *efd).poll_read(cx, &mut rb))?;
            Poll::Ready(Ok::<_, io::Error>(rb.filled().len()))
        })
        .await?;
        if n != 8 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(u64::from_ne_bytes(buf))
    }
}

impl Tx for TokioEventfdEnd {
    async fn send(&mut self) -> io::Result<()> {
        let buf = 1u64.to_ne_bytes();
        let efd = &mut self.0;
        let n = poll_fn(|cx| Pin::new(&mut *efd).poll_write(cx, &buf)).await?;
        if n != 8 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(())
    }
}

impl Kind for TokioEventfdKind {
    type R = TokioEventfdEnd;
    type T = TokioEventfdEnd;
    fn make() -> io::Result<Chan<TokioEventfdEnd, TokioEventfdEnd>> {
        let rx = tokio_eventfd::EventFd::new(0, false)?;
        // The crate's handles are `&mut` for I/O: the sender gets a dup of the
        // fd with its own registration, as a user of the crate would do.
        let tx = rx.try_clone()?;
        let sync = SyncTx::Fd(rx.as_raw_fd());
        Ok(Chan {
            rx: TokioEventfdEnd(rx),
            tx: TokioEventfdEnd(tx),
            sync,
        })
    }
}
