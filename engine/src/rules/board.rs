//! The rules every worker should run, published in one place.
//!
//! Workers each compile their own [`RuleHost`](super::RuleHost) (a Rhai engine is not shared
//! between threads), so a change of rules is published here as source text
//! with a new generation number. Between two records each worker compares
//! one atomic number with the generation it runs; when they differ it
//! compiles what is published and swaps it in, keeping its state. Whoever
//! changes the rules (the folder watch, a reload signal, a promotion) goes
//! through the board, and a ruleset reaches the board only after it
//! compiled and passed its cases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::RulesetSource;

/// The enforcing ruleset and the candidate in shadow, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub enforcing: RulesetSource,
    pub shadow: Option<RulesetSource>,
}

#[derive(Debug)]
pub struct RuleBoard {
    generation: AtomicU64,
    published: Mutex<Published>,
}

impl RuleBoard {
    pub fn new(enforcing: RulesetSource, shadow: Option<RulesetSource>) -> RuleBoard {
        RuleBoard { generation: AtomicU64::new(0), published: Mutex::new(Published { enforcing, shadow }) }
    }

    /// Changes with every publication; cheap enough to read per record.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        // A panic while holding the lock cannot leave `Published` half
        // written: every change is a whole-field assignment.
        self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is published now, with its generation.
    pub fn published(&self) -> (u64, Published) {
        let published = self.lock();
        (self.generation(), published.clone())
    }

    /// Applies `change`; publishes a new generation if it changed anything.
    fn publish(&self, change: impl FnOnce(&mut Published)) -> bool {
        let mut published = self.lock();
        let before = published.clone();
        change(&mut published);
        let changed = *published != before;
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// A new enforcing ruleset (already compiled and tested by the caller).
    pub fn enforce(&self, source: RulesetSource) -> bool {
        self.publish(|p| p.enforcing = source)
    }

    /// A new candidate in shadow (already compiled by the caller).
    pub fn shadow(&self, source: RulesetSource) -> bool {
        self.publish(|p| p.shadow = Some(source))
    }

    /// The candidate becomes the enforcing ruleset; `false` if there is none.
    pub fn promote(&self) -> bool {
        self.publish(|p| {
            if let Some(candidate) = p.shadow.take() {
                p.enforcing = candidate;
            }
        })
    }

    /// Stops the candidate; `false` if there is none.
    pub fn drop_shadow(&self) -> bool {
        self.publish(|p| p.shadow = None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(version: &str) -> RulesetSource {
        let mut source = RulesetSource::shipped().unwrap_or_else(|e| unreachable!("{e}"));
        source.version = version.into();
        source
    }

    #[test]
    fn only_a_change_moves_the_generation() {
        let board = RuleBoard::new(source("a"), None);
        assert_eq!(board.generation(), 0);
        assert!(!board.enforce(source("a")));
        assert!(!board.promote(), "nothing to promote");
        assert!(!board.drop_shadow());
        assert_eq!(board.generation(), 0);

        assert!(board.shadow(source("b")));
        assert!(board.promote());
        let (generation, published) = board.published();
        assert_eq!(generation, 2);
        assert_eq!(published.enforcing.version, "b");
        assert!(published.shadow.is_none());
    }
}
