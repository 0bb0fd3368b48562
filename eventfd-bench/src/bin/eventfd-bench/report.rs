//! Statistics over samples and rounds, and the text table.

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
        let at = |q: f64| {
            let last = samples.len() - 1;
            // Nearest rank; `q` is in [0, 1].
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a rank within the sample count"
            )]
            let i = ((last as f64) * q).round() as usize;
            samples[i.min(last)] as f64
        };
        #[allow(
            clippy::cast_precision_loss,
            reason = "nanosecond sums fit f64 well enough"
        )]
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

/// Formats nanoseconds for the table: `1,234` ns.
pub(crate) fn ns(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "display only"
    )]
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `v`, or `None` (JSON `null`) when it is not finite: a ratio against a
/// row that was not measured.
pub(crate) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Formats a ratio: `0.93x`.
pub(crate) fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".to_string()
    }
}

/// Prints a table with aligned columns: the first left-aligned, the rest
/// right-aligned.
pub(crate) fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("  {cell:>w$}"));
            }
        }
        println!("{}", out.trim_end());
    };
    println!("\n{title}");
    line(&mut header.iter().copied());
    let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    println!("{}", "-".repeat(total));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// A progress line on stderr, only when it is a terminal.
pub(crate) struct Progress {
    tty: bool,
    total: usize,
    done: usize,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            done: 0,
        }
    }

    pub(crate) fn step(&mut self, what: &str) {
        self.done += 1;
        if self.tty {
            eprint!("\r\x1b[2K[{}/{}] {what}", self.done, self.total);
        }
    }

    pub(crate) fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}
