// The README and the guide show every layer, so they (and their doctests) are
// the crate docs when the default features are on; a trimmed build gets a
// pointer instead of broken links.
#![cfg_attr(
    all(feature = "tokio", feature = "mio", feature = "stream"),
    doc = include_str!("../README.md")
)]
#![cfg_attr(all(feature = "tokio", feature = "mio", feature = "stream"), doc = "")]
#![cfg_attr(
    all(feature = "tokio", feature = "mio", feature = "stream"),
    doc = include_str!("../docs/guide.md")
)]
#![cfg_attr(
    not(all(feature = "tokio", feature = "mio", feature = "stream")),
    doc = "A Linux eventfd as a first-class citizen of async Rust. These docs were \
           built without some default features (`tokio`, `mio`, `stream`); build \
           with them for the full guide and examples."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("async-eventfd supports Linux and Android only: eventfd(2) is a Linux syscall");

mod eventfd;
pub use crate::eventfd::{EventFd, EventFdBuilder};

#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
mod mio;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
mod async_fd;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use crate::async_fd::AsyncEventFd;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use crate::async_fd::{RuntimeShutdown, TryNewError};

#[cfg(feature = "stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
mod stream;

/// The largest value the counter holds: `u64::MAX - 1`.
///
/// An add that would take the counter past it waits (blocking fd,
/// `AsyncEventFd::add`) or fails with `WouldBlock` (nonblocking fd).
///
/// # Examples
///
/// ```
/// use async_eventfd::{EventFd, MAX_COUNT};
///
/// # fn main() -> std::io::Result<()> {
/// let efd = EventFd::new()?;
/// efd.add(MAX_COUNT)?;
/// assert_eq!(efd.add(1).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
/// assert_eq!(efd.read()?, MAX_COUNT);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// None: a constant.
pub const MAX_COUNT: u64 = 0xffff_ffff_ffff_fffe;
