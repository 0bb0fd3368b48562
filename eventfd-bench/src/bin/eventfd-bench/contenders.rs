//! The implementations under test (this crate and the
//! [`eventfd_bench::baselines`]) in one shape, a [`Chan`], and [`dispatch!`],
//! which runs a generic measurement on a contender's [`End`] type.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use async_eventfd::{AsyncEventFd, EventFd, Notifier};
use clap::builder::PossibleValue;
use clap::ValueEnum;
use eventfd_bench::baselines::{AsyncFdR, AsyncFdRw, NotifyCounter, TokioEventfd};

/// An implementation under test: `--impl` takes its [`name`](Contender::name)
/// and shows its [`describe`](Contender::describe) as help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contender {
    Crate,
    Notify,
    AsyncFdRw,
    AsyncFdR,
    TokioEventfd,
    Notifier,
    TryClone,
}

impl ValueEnum for Contender {
    fn value_variants<'a>() -> &'a [Contender] {
        &Contender::THREAD_TASK
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.describe()))
    }
}

impl Contender {
    /// The implementations that wake a task, in table order.
    pub(crate) const ALL: [Contender; 5] = [
        Contender::Crate,
        Contender::TokioEventfd,
        Contender::AsyncFdRw,
        Contender::AsyncFdR,
        Contender::Notify,
    ];

    /// `thread-task`'s rows, every contender: [`Contender::ALL`] plus the
    /// crate's two writers for a plain thread, next to it (the same task
    /// side; only the thread's writer differs).
    pub(crate) const THREAD_TASK: [Contender; 7] = [
        Contender::Crate,
        Contender::Notifier,
        Contender::TryClone,
        Contender::TokioEventfd,
        Contender::AsyncFdRw,
        Contender::AsyncFdR,
        Contender::Notify,
    ];

    /// `kernel`'s rows: the implementations on an fd a kernel writer can
    /// signal (a Notify has no fd; the two writers share the crate's reader).
    pub(crate) const KERNEL: [Contender; 4] = [
        Contender::Crate,
        Contender::TokioEventfd,
        Contender::AsyncFdRw,
        Contender::AsyncFdR,
    ];

    /// The first column of its rows (`impl` in `--json`), and `--impl`'s
    /// value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Crate => "async-eventfd",
            Contender::Notify => "notify",
            Contender::AsyncFdRw => "asyncfd-rw",
            Contender::AsyncFdR => "asyncfd-r",
            Contender::TokioEventfd => "tokio-eventfd",
            Contender::Notifier => "notifier",
            Contender::TryClone => "try-clone",
        }
    }

    /// What it is, in words (`what` in `--json`, `--impl`'s help).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Contender::Crate => "this crate: AsyncEventFd read().await / add(1).await",
            Contender::Notify => "tokio::sync::Notify + AtomicU64 (in-process only, no fd)",
            Contender::AsyncFdRw => {
                "hand-written AsyncFd, READABLE|WRITABLE, clear only on WouldBlock (try_io)"
            }
            Contender::AsyncFdR => {
                "hand-written AsyncFd, READABLE only, clear after a draining read"
            }
            Contender::TokioEventfd => "tokio-eventfd 0.2.2 (AsyncRead/AsyncWrite of 8 bytes)",
            Contender::Notifier => "this crate; a plain thread writes with Notifier::notify()",
            Contender::TryClone => {
                "this crate; a plain thread writes with EventFd::add(1) on get_ref().try_clone()"
            }
        }
    }
}

/// The type of both ends of a contender's channel.
pub(crate) trait End: Send + Sized + 'static {
    /// A new channel of `c`, a contender of this type (inside a runtime).
    fn chan(c: Contender) -> io::Result<Chan<Self>>;
    /// Receives: waits for a count and takes it.
    fn recv(&mut self) -> impl Future<Output = io::Result<u64>> + Send;
    /// Sends from a task: adds 1.
    fn send(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A sender for plain threads (and for benchmarks that wake many receivers
/// the same way): one `write(2)` to the fd, or `Notify::notify_one`.
#[derive(Clone)]
pub(crate) enum SyncTx {
    /// The receiver's fd; valid while the receiver lives, which every
    /// benchmark guarantees (receivers outlive the last send to them).
    Fd(RawFd),
    Notify(Arc<NotifyCounter>),
    Notifier(Notifier),
    /// A `try_clone` of the crate's `EventFd`.
    EventFd(Arc<EventFd>),
}

impl SyncTx {
    pub(crate) fn fire(&self) -> io::Result<()> {
        match self {
            SyncTx::Fd(fd) => add_raw(*fd),
            SyncTx::Notify(cell) => {
                cell.add(1);
                Ok(())
            }
            SyncTx::Notifier(n) => n.notify(),
            SyncTx::EventFd(efd) => efd.add(1),
        }
    }

    /// The receiver's eventfd, for a kernel writer to signal; `None` for a
    /// `Notify`, which has no fd.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        match self {
            SyncTx::Fd(fd) => Some(*fd),
            SyncTx::Notify(_) => None,
            SyncTx::Notifier(n) => Some(n.as_fd().as_raw_fd()),
            SyncTx::EventFd(efd) => Some(efd.as_raw_fd()),
        }
    }
}

/// Adds 1 to the eventfd `fd` with one `write(2)`.
fn add_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: the receiver that owns `fd` outlives every send to it (see
    // `SyncTx::Fd`); the borrow ends with this call. No safe wrapper can
    // borrow an fd that another object owns.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match nix::unistd::write(fd, &1u64.to_ne_bytes()).map_err(io::Error::from)? {
        8 => Ok(()),
        _ => Err(io::ErrorKind::WriteZero.into()),
    }
}

/// One channel of a contender: a receiving end owned by one task, a sending
/// end for another task, and a plain-thread sender.
pub(crate) struct Chan<E> {
    pub(crate) rx: E,
    pub(crate) tx: E,
    pub(crate) sync: SyncTx,
}

/// A channel whose two ends share one object on an fd, and whose
/// plain-thread sender writes to that fd.
fn shared_fd<F: AsRawFd>(fd: F) -> Chan<Arc<F>> {
    let fd = Arc::new(fd);
    Chan {
        sync: SyncTx::Fd(fd.as_raw_fd()),
        rx: Arc::clone(&fd),
        tx: fd,
    }
}

/// Calls `$f::<End>(c, $args)` with the [`End`] type of the contender `c`.
macro_rules! dispatch {
    ($c:expr, $f:ident ( $($arg:expr),* $(,)? )) => {{
        use std::sync::Arc;
        use $crate::contenders::Contender as C;
        match $c {
            c @ (C::Crate | C::Notifier | C::TryClone) => {
                $f::<Arc<async_eventfd::AsyncEventFd>>(c, $($arg),*)
            }
            c @ C::Notify => $f::<Arc<eventfd_bench::baselines::NotifyCounter>>(c, $($arg),*),
            c @ C::AsyncFdRw => $f::<Arc<eventfd_bench::baselines::AsyncFdRw>>(c, $($arg),*),
            c @ C::AsyncFdR => $f::<Arc<eventfd_bench::baselines::AsyncFdR>>(c, $($arg),*),
            c @ C::TokioEventfd => $f::<eventfd_bench::baselines::TokioEventfd>(c, $($arg),*),
        }
    }};
}
pub(crate) use dispatch;

/// [`End`] for a type whose `read().await` receives and whose `add(1)` (with
/// `.await` if `await` is given) sends; `$chan` makes a channel.
macro_rules! end {
    ($ty:ty, $chan:expr $(, $await:tt)?) => {
        impl End for $ty {
            fn chan(c: Contender) -> io::Result<Chan<Self>> {
                $chan(c)
            }

            async fn recv(&mut self) -> io::Result<u64> {
                self.read().await
            }

            async fn send(&mut self) -> io::Result<()> {
                self.add(1)$(.$await)?
            }
        }
    };
}

end!(Arc<AsyncEventFd>, crate_chan, await);
end!(Arc<AsyncFdRw>, |_| Ok(shared_fd(AsyncFdRw::new()?)), await);
end!(Arc<AsyncFdR>, |_| Ok(shared_fd(AsyncFdR::new()?)));
end!(TokioEventfd, tokio_eventfd_chan, await);

/// The crate; its thread-side writers differ only in the plain-thread sender.
fn crate_chan(c: Contender) -> io::Result<Chan<Arc<AsyncEventFd>>> {
    let mut chan = shared_fd(AsyncEventFd::new()?);
    match c {
        Contender::Notifier => chan.sync = SyncTx::Notifier(chan.rx.notifier()?),
        // What a writer needed before `Notifier`.
        Contender::TryClone => {
            chan.sync = SyncTx::EventFd(Arc::new(chan.rx.get_ref().try_clone()?));
        }
        _ => {}
    }
    Ok(chan)
}

fn tokio_eventfd_chan(_: Contender) -> io::Result<Chan<TokioEventfd>> {
    let rx = TokioEventfd::new()?;
    // The crate's handles are `&mut` for I/O: the sender gets a dup of the
    // fd with its own registration, as a user of the crate would do.
    let tx = rx.try_clone()?;
    let sync = SyncTx::Fd(rx.as_raw_fd());
    Ok(Chan { rx, tx, sync })
}

impl End for Arc<NotifyCounter> {
    fn chan(_: Contender) -> io::Result<Chan<Self>> {
        let cell = Arc::new(NotifyCounter::new());
        Ok(Chan {
            rx: Arc::clone(&cell),
            tx: Arc::clone(&cell),
            sync: SyncTx::Notify(cell),
        })
    }

    async fn recv(&mut self) -> io::Result<u64> {
        Ok(self.read().await)
    }

    async fn send(&mut self) -> io::Result<()> {
        self.add(1);
        Ok(())
    }
}
