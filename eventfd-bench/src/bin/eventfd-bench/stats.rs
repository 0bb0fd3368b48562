//! Percentiles of one measurement's samples, and medians over rounds.

/// Summary of one measurement's per-operation samples (nanoseconds).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Stats {
    pub(crate) fn of(mut samples: Vec<u64>) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_unstable();
        let last = samples.len() - 1;
        // Nearest rank; `q` is in [0, 1].
        let at = |q: f64| samples[(((last as f64) * q).round() as usize).min(last)] as f64;
        let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64;
        Stats {
            mean,
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }

    /// The median of each field over rounds; `max` is the largest of all.
    pub(crate) fn median_of(rounds: &[Stats]) -> Stats {
        Stats {
            mean: median(rounds.iter().map(|s| s.mean)),
            p50: median(rounds.iter().map(|s| s.p50)),
            p99: median(rounds.iter().map(|s| s.p99)),
            p999: median(rounds.iter().map(|s| s.p999)),
            max: rounds.iter().map(|s| s.max).fold(0.0, f64::max),
        }
    }
}

/// The median of the values (the mean of the middle two for an even count).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}
