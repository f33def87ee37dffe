//! Exponential backoff between retries against a broker that is away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(100);
const LAST: Duration = Duration::from_secs(10);
/// How often a waiting worker looks at the shutdown flag.
const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    pub attempts: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: FIRST, attempts: 0 }
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
        self.attempts = 0;
    }

    /// The delay the next [`Backoff::wait`] will take.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Waits before the next attempt; returns `false` at once if the engine
    /// is shutting down, so a retry loop never holds up a shutdown.
    pub fn wait(&mut self, shutdown: &AtomicBool) -> bool {
        let until = Instant::now() + self.next;
        self.next = (self.next * 2).min(LAST);
        self.attempts += 1;
        loop {
            if shutdown.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_a_ceiling_and_shutdown_cuts_them_short() {
        let mut backoff = Backoff::new();
        let stop = AtomicBool::new(true);
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(backoff.delay());
            assert!(!backoff.wait(&stop));
        }
        assert_eq!(delays[0], FIRST);
        assert_eq!(delays[1], FIRST * 2);
        assert_eq!(delays[9], LAST);
        backoff.reset();
        assert_eq!(backoff.delay(), FIRST);
    }
}
