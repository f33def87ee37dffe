//! Recorded decisions read ahead of their events, waiting in the order read.
//!
//! A decision waits here when the join reads past it looking for another
//! event's: the recording was written in another order (several Kafka
//! workers), or holds decisions the input has no event for (an input cut to
//! one tenant, a recording of all of them). Each keeps its line number in
//! the recording, so the join can let go of those it has long passed.

use std::collections::{HashMap, VecDeque};

struct Waiting {
    line_no: u64,
    event_id: String,
    line: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Window {
    /// The number of `slots[0]`; slots are numbered in the order kept.
    first: u64,
    /// Oldest first; `None` once taken. The front is never `None`.
    slots: VecDeque<Option<Waiting>>,
    /// The slot of each waiting decision, by its event id.
    index: HashMap<String, u64>,
}

impl Window {
    /// How many decisions wait.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Keeps a decision read at `line_no`. A second decision for one event
    /// is given back: the first one stays.
    pub(super) fn keep(&mut self, line_no: u64, event_id: String, line: Vec<u8>) -> Option<Vec<u8>> {
        if self.index.contains_key(&event_id) {
            return Some(line);
        }
        self.index.insert(event_id.clone(), self.first + self.slots.len() as u64);
        self.slots.push_back(Some(Waiting { line_no, event_id, line }));
        None
    }

    /// The decision waiting for `event_id`, with its line number.
    pub(super) fn take(&mut self, event_id: &str) -> Option<(u64, Vec<u8>)> {
        let slot = self.index.remove(event_id)?;
        let waiting = self.slots.get_mut(usize::try_from(slot - self.first).ok()?)?.take()?;
        self.drop_taken();
        Some((waiting.line_no, waiting.line))
    }

    /// The oldest decision, if it was read before `line_no`.
    pub(super) fn release_before(&mut self, line_no: u64) -> Option<Vec<u8>> {
        if self.slots.front()?.as_ref()?.line_no >= line_no {
            return None;
        }
        let waiting = self.slots.pop_front()??;
        self.first += 1;
        self.index.remove(&waiting.event_id);
        self.drop_taken();
        Some(waiting.line)
    }

    /// Every decision still waiting.
    pub(super) fn drain(&mut self) -> Vec<Vec<u8>> {
        self.index.clear();
        self.first += self.slots.len() as u64;
        self.slots.drain(..).flatten().map(|w| w.line).collect()
    }

    fn drop_taken(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_wait_in_the_order_read_and_leave_when_taken_or_passed() {
        let mut window = Window::default();
        for (n, id) in [(3, "a"), (5, "b"), (6, "c"), (9, "d")] {
            assert_eq!(window.keep(n, id.to_owned(), id.as_bytes().to_vec()), None);
        }
        assert_eq!(window.keep(10, "b".to_owned(), b"b2".to_vec()), Some(b"b2".to_vec()), "the first one stays");
        assert_eq!(window.take("b"), Some((5, b"b".to_vec())));
        assert_eq!(window.take("b"), None);
        assert_eq!(window.release_before(3), None, "nothing read before line 3");
        assert_eq!(window.release_before(7), Some(b"a".to_vec()));
        // `b` was taken, so `c` is next, and `d` was read after line 7.
        assert_eq!(window.release_before(7), Some(b"c".to_vec()));
        assert_eq!(window.release_before(7), None);
        assert_eq!(window.len(), 1);
        assert_eq!(window.take("d"), Some((9, b"d".to_vec())));
        assert!(window.is_empty() && window.slots.is_empty());
        assert_eq!(window.keep(11, "e".to_owned(), b"e".to_vec()), None);
        assert_eq!(window.drain(), vec![b"e".to_vec()]);
        assert!(window.is_empty() && window.slots.is_empty());
    }
}
