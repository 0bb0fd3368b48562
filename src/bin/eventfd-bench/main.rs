//! eventfd-bench (placeholder until the benchmark binary lands).
fn main() {}
