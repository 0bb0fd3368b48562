//! A Linux eventfd as a first-class citizen of async Rust: an owned
//! [`EventFd`] (counter or semaphore mode, blocking or not, adopt an fd from
//! elsewhere), a mio `Source`, and a tokio `AsyncEventFd` that any number of
//! tasks share through `&self` and that never loses a wakeup.
//!
//! An eventfd is a counter in the kernel behind a file descriptor, so it can
//! be handed to what a channel cannot reach: the kernel (io_uring, KVM), a
//! plain thread, a signal handler, a child process, a C event loop. Adds from
//! any number of writers coalesce into one count that a reader takes in one
//! read.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | `AsyncEventFd`, on tokio's `AsyncFd` (tokio 1.54 or later) |
//! | `mio` | yes | `impl mio::event::Source for EventFd` |
//! | `stream` | yes | `impl futures_core::Stream for AsyncEventFd` |
//! | `vmm-sys-util` | no | conversions to and from `vmm_sys_util::eventfd::EventFd` (rust-vmm: kvm-ioctls' ioeventfd and irqfd) |
//!
// The guide shows every layer, so it (and its doctests) is the rest of the
// crate docs when the default features are on; a trimmed build gets a pointer
// instead of broken links.
#![cfg_attr(
    all(feature = "tokio", feature = "mio", feature = "stream"),
    doc = include_str!("../docs/guide.md")
)]
#![cfg_attr(
    not(all(feature = "tokio", feature = "mio", feature = "stream")),
    doc = "These docs were built without some default features (`tokio`, \
           `mio`, `stream`); build with them for the full guide and examples."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("async-eventfd supports Linux and Android only: eventfd(2) is a Linux syscall");

// The README's example is a whole program that readers copy as it stands, so
// it is compiled here rather than shown in the crate docs.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod builder;
mod eventfd;
mod notifier;
mod wait;
pub use crate::builder::EventFdBuilder;
pub use crate::eventfd::EventFd;
pub use crate::notifier::Notifier;

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

#[cfg(feature = "vmm-sys-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "vmm-sys-util")))]
mod vmm;

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
pub const MAX_COUNT: u64 = u64::MAX - 1;
