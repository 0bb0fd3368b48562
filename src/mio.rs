//! `impl mio::event::Source for EventFd`.

use std::io;
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::EventFd;

/// Registers an [`EventFd`] in a mio [`Poll`](mio::Poll).
///
/// mio registers edge-triggered: after an event, read until `WouldBlock`
/// (counter mode needs one read; semaphore mode one read per unit) before
/// waiting again, or the next event may never come.
///
/// # Examples
///
/// ```
/// use mio::{Events, Interest, Poll, Token};
/// use async_eventfd::EventFd;
///
/// # fn main() -> std::io::Result<()> {
/// let mut poll = Poll::new()?;
/// let mut efd = EventFd::new()?;
/// poll.registry().register(&mut efd, Token(7), Interest::READABLE)?;
///
/// efd.add(1)?;
/// let mut events = Events::with_capacity(8);
/// poll.poll(&mut events, Some(std::time::Duration::from_secs(5)))?;
/// assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
/// assert_eq!(efd.read()?, 1);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The errors of `epoll_ctl(2)`: registering twice gives
/// [`io::ErrorKind::AlreadyExists`], reregistering or deregistering an fd
/// that is not registered gives [`io::ErrorKind::NotFound`].
impl Source for EventFd {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}
