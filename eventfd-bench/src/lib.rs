//! Tooling for `async-eventfd`: the stress-scenario engine ([`stress`]) and
//! the hand-written baselines that the benchmarks measure the crate against.
//!
//! Not published: it backs the `eventfd-bench` binary, the stress test suite
//! and the criterion benchmarks of `async-eventfd`.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

pub mod baselines;
#[cfg(target_os = "linux")]
pub mod kernel_rigs;
pub mod rng;
pub mod stress;
