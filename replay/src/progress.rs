//! A one-line progress bar on stderr: share of the file read, records per
//! second and time left. Drawn only when stderr is a terminal, at most ten
//! times a second, so logs and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ProgressBar {
    shown: bool,
    started: Instant,
    last_draw: Instant,
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

impl ProgressBar {
    /// A bar that draws when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> ProgressBar {
        let now = Instant::now();
        ProgressBar { shown: enabled && std::io::stderr().is_terminal(), started: now, last_draw: now }
    }

    /// `done` of `total` bytes read, `records` records so far.
    pub fn update(&mut self, done: u64, total: u64, records: u64) {
        if !self.shown || self.last_draw.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last_draw = Instant::now();
        let elapsed = self.started.elapsed();
        let share = if total == 0 { 0.0 } else { (done as f64 / total as f64).min(1.0) };
        let rate = records as f64 / elapsed.as_secs_f64().max(1e-9);
        let eta = if share > 0.0 { elapsed.mul_f64((1.0 - share) / share) } else { Duration::ZERO };
        let width = 30;
        let filled = (share * width as f64) as usize;
        eprint!(
            "\r  [{}{}] {:>5.1}%  {} records  {}/s  ETA {} ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            share * 100.0,
            count(records as f64),
            count(rate),
            clock(eta)
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the bar's line.
    pub fn finish(&mut self) {
        if self.shown {
            eprint!("\r{}\r", " ".repeat(90));
            let _ = std::io::stderr().flush();
        }
    }
}
