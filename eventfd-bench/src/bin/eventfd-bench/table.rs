//! What the tables print: aligned text columns, number formats, the JSON
//! document, and the progress line while they are measured.

use std::io;

use serde::Serialize;

/// Formats nanoseconds for the table: `1,234` ns.
pub(crate) fn ns(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let s = (v.round().max(0.0) as u64).to_string();
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

/// Formats a ratio: `0.93x`; `-` for none (see [`finite`]).
pub(crate) fn ratio(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2}x"))
}

/// Formats a flavor: `-` for a floor's.
pub(crate) fn flavor(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

/// Prints `doc` as one pretty JSON document (`--json`).
pub(crate) fn print_json(doc: &impl Serialize) -> io::Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(io::Error::other)?;
    println!("{text}");
    Ok(())
}

/// A column of a table: its header, and a row's cell in it.
pub(crate) type Column<'a, R> = (&'a str, &'a dyn Fn(&R) -> String);

/// Prints `rows` under `title` in aligned `columns`: the first
/// left-aligned, the rest right-aligned.
pub(crate) fn print_table<R>(title: &str, rows: &[R], columns: &[Column<'_, R>]) {
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, cell)| cell(r)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
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
    for row in &rows {
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
