//! Rounds that interleave what a table compares, so that a slow spell of a
//! noisy machine hits every row alike.

use std::io;

use crate::table::Progress;

/// Measures each key once per round, for `rounds` rounds; each round starts
/// one key later than the one before, so no key always runs first. Returns
/// each key's results in round order. `label` names a key in the progress line.
pub(crate) fn interleaved<K: Copy, R>(
    keys: &[K],
    rounds: usize,
    label: impl Fn(K) -> String,
    mut measure: impl FnMut(K) -> io::Result<R>,
) -> io::Result<Vec<Vec<R>>> {
    let mut results: Vec<Vec<R>> = keys.iter().map(|_| Vec::with_capacity(rounds)).collect();
    let mut progress = Progress::new(keys.len() * rounds);
    for round in 0..rounds {
        for k in 0..keys.len() {
            let i = (round + k) % keys.len();
            progress.step(&format!("round {}/{rounds}: {}", round + 1, label(keys[i])));
            results[i].push(measure(keys[i])?);
        }
    }
    progress.finish();
    Ok(results)
}
