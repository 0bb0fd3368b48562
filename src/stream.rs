//! `impl Stream for AsyncEventFd`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::AsyncEventFd;

/// An `AsyncEventFd` is a stream of reads.
///
/// Each item is one successful read: the whole counter in counter mode, `1`
/// in semaphore mode. The stream never ends on its own (`poll_next` never
/// returns `None`); stop taking items when done. An error (the runtime shut
/// down: kind `Other`, holding a [`RuntimeShutdown`](crate::RuntimeShutdown))
/// is yielded as an `Err` item, and the stream may be polled again.
///
/// It waits through [`AsyncEventFd::poll_read`], so only the task polling the
/// stream is woken; other tasks can still `read().await` the same fd.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
/// use async_eventfd::AsyncEventFd;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut efd = AsyncEventFd::new()?;
/// efd.add(3).await?;
/// let first = efd.next().await.transpose()?;
/// assert_eq!(first, Some(3));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Items are `Err` as [`AsyncEventFd::read`] fails.
impl Stream for AsyncEventFd {
    type Item = io::Result<u64>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<u64>>> {
        self.poll_read(cx).map(Some)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}
