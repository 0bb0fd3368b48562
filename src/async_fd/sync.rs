//! The atomics and `Mutex` of the wake protocols (`Room`, `PollWriter`,
//! `RuntimeWatch`, `Speculation`): std's, or loom's when the loom models are
//! built.
//!
//! tokio's pattern (its `src/loom/`), with a cfg of this crate's own:
//! `--cfg loom` in `RUSTFLAGS` reaches every crate, and tokio answers it by
//! building its own loom mode (and wanting loom's runtime around every
//! reactor call). `--cfg async_eventfd_loom` switches only this module, so
//! the models run the crate's protocols on loom's atomics while tokio stays
//! itself (the models never call it: they meet a modelled fd at the seam,
//! `fd.rs`). `Arc` stays std's: `RuntimeWatch` is a `std::task::Wake`, and
//! the reference count is no part of any protocol.

#[cfg(not(async_eventfd_loom))]
pub(super) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
#[cfg(not(async_eventfd_loom))]
pub(super) use std::sync::{Mutex, MutexGuard};

#[cfg(async_eventfd_loom)]
pub(super) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
#[cfg(async_eventfd_loom)]
pub(super) use loom::sync::{Mutex, MutexGuard};
