//! What each rule decided, keyed by the sequence of values it read.
//!
//! A rule's script is deterministic and sees the world only through its
//! reads, so its first read is always the same, the second depends only on
//! the first value, and so on: its runs form a tree whose leaves are
//! outcomes. Replaying the reads natively down that tree gives the outcome
//! the script would give, at the cost of a few hash lookups.
//!
//! Each read node also remembers the edge it last left by: most reads
//! give the same value event after event (a kind, a flag, a scope check),
//! and comparing with that edge's value first skips hashing the value.
//!
//! The tree is bounded: past [`MAX_NODES`] it is dropped and regrown, and a
//! rule whose reads rarely repeat (a byte count that differs on every event)
//! stops using it. Either way the outcome is the script's.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::view::{mix, Frame, Getter, Read, Value};

/// Nodes one rule's tree may hold before it is dropped.
const MAX_NODES: usize = 1 << 14;

/// Lookups after which a rule that rarely finds its reads in the tree
/// stops consulting it.
const TRIAL: u32 = 2048;

/// What a rule made of one event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Quiet,
    Fired { score: u32, message: String, evidence: BTreeMap<String, serde_json::Value> },
    Fault(String),
}

/// Twelve bytes: a path's nodes, made one after the other, share a cache line.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// The script's next read here: `arg` indexes `Memo::args` ([`NO_ARG`]
    /// for a property), `hot` the edge last taken from here (an index into
    /// `Memo::edges`, [`NO_EDGE`] before the first).
    Read { getter: Getter, arg: u32, hot: u32 },
    /// An index into `Memo::outcomes`.
    Done(u32),
}

const _: () = assert!(std::mem::size_of::<Node>() == 12);
const _: () = assert!(std::mem::size_of::<Key>() == 40);

const NO_EDGE: u32 = u32::MAX;
const NO_ARG: u32 = u32::MAX;

/// Keys are already well-mixed digests.
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An edge out of a node: the node it leaves, the value read, the node it reaches.
#[derive(Debug)]
struct Edge {
    from: u32,
    value: Key,
    to: u32,
}

/// A value as an edge keeps it: plain owned data, a short string inline,
/// so comparing it with the value just read touches no other memory.
#[derive(Debug)]
enum Key {
    Bool(bool),
    Int(i64),
    /// A string of at most [`SHORT`] bytes, zero-padded.
    Short(u8, [u8; SHORT]),
    /// A longer string, with its first and last eight bytes at hand: ids
    /// that differ mostly differ there, so a mismatch is seen without
    /// reading the text.
    Long { head: u64, tail: u64, text: Box<str> },
    Strs(Box<[String]>),
    Fail(Box<str>),
}

/// Most values a rule reads (a tool, a kind, a data class, a task or
/// credential id) fit here; as many bytes as [`Key::Long`] takes anyway.
const SHORT: usize = 32;

impl Key {
    fn of(value: &Value) -> Key {
        match value {
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Str(s) if s.len() <= SHORT => {
                let mut bytes = [0u8; SHORT];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Key::Short(s.len() as u8, bytes)
            }
            Value::Str(s) => {
                let b = s.as_bytes();
                Key::Long { head: word(b, 0), tail: word(b, b.len().saturating_sub(8)), text: (*s).into() }
            }
            Value::Strs(items) => Key::Strs((*items).into()),
            Value::Fail(message) => Key::Fail(message.as_str().into()),
        }
    }

    #[inline(always)]
    fn is(&self, value: &Value) -> bool {
        match (self, value) {
            (Key::Bool(a), Value::Bool(b)) => a == b,
            (Key::Int(a), Value::Int(b)) => a == b,
            (Key::Short(len, bytes), Value::Str(b)) => usize::from(*len) == b.len() && same_short(bytes, b.as_bytes()),
            (Key::Long { head, tail, text }, Value::Str(b)) => {
                let bytes = b.as_bytes();
                text.len() == b.len()
                    && *head == word(bytes, 0)
                    && *tail == word(bytes, bytes.len().saturating_sub(8))
                    && **text == **b
            }
            (Key::Strs(a), Value::Strs(b)) => **a == **b,
            (Key::Fail(a), Value::Fail(b)) => **a == **b,
            _ => false,
        }
    }
}

/// The eight bytes of `s` from `at`; zero past its end.
fn word(s: &[u8], at: usize) -> u64 {
    s.get(at..at + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Whether `b` (at most [`SHORT`] bytes) equals the start of `a`, in two
/// overlapping loads per side instead of a call to `memcmp`.
fn same_short(a: &[u8; SHORT], b: &[u8]) -> bool {
    fn half(s: &[u8], at: usize) -> u32 {
        s.get(at..at + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_le_bytes)
    }
    fn wide(s: &[u8], at: usize) -> u128 {
        s.get(at..at + 16).and_then(|w| w.try_into().ok()).map_or(0, u128::from_le_bytes)
    }
    let n = b.len();
    match n {
        16..=SHORT => wide(a, 0) == wide(b, 0) && wide(a, n - 16) == wide(b, n - 16),
        8..=15 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a.get(..n) == Some(b),
    }
}

#[derive(Debug)]
pub(crate) struct Memo {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    outcomes: Vec<Outcome>,
    /// The method arguments the script passes (a window, a name): few.
    args: Vec<Box<str>>,
    /// Edges by a digest of (node, value); a digest collision is a miss.
    index: HashMap<u64, u32, BuildHasherDefault<DigestHasher>>,
    enabled: bool,
    lookups: u32,
    hits: u32,
    /// Events answered from the tree since the memo was made.
    #[cfg(test)]
    pub(crate) answered: u64,
}

fn edge_key(node: u32, value_digest: u64) -> u64 {
    mix(value_digest ^ u64::from(node).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Memo {
    pub(crate) fn new(enabled: bool) -> Memo {
        Memo {
            nodes: Vec::new(),
            edges: Vec::new(),
            outcomes: Vec::new(),
            args: Vec::new(),
            index: HashMap::default(),
            enabled,
            lookups: 0,
            hits: 0,
            #[cfg(test)]
            answered: 0,
        }
    }

    /// The outcome of the script on the event in `frame`, if its reads have
    /// been seen before.
    pub(crate) fn recall(&mut self, frame: &Frame) -> Option<&Outcome> {
        if !self.enabled {
            return None;
        }
        if self.lookups == TRIAL {
            if self.hits < TRIAL / 8 {
                self.stop();
                return None;
            }
            self.lookups = 0;
            self.hits = 0;
        }
        self.lookups += 1;
        let mut at = 0u32;
        loop {
            let (getter, arg, hot) = match *self.nodes.get(at as usize)? {
                Node::Done(_) => break,
                Node::Read { getter, arg, hot } => (getter, arg, hot),
            };
            let arg = if arg == NO_ARG { "" } else { self.args.get(arg as usize).map_or("", |a| a) };
            let value = frame.read(getter, arg);
            at = match self.edges.get(hot as usize) {
                Some(edge) if edge.value.is(&value) => edge.to,
                _ => {
                    let found = *self.index.get(&edge_key(at, value.digest()))?;
                    let edge = self.edges.get(found as usize)?;
                    if edge.from != at || !edge.value.is(&value) {
                        return None;
                    }
                    let to = edge.to;
                    if let Some(Node::Read { hot, .. }) = self.nodes.get_mut(at as usize) {
                        *hot = found;
                    }
                    to
                }
            };
        }
        self.hits += 1;
        #[cfg(test)]
        {
            self.answered += 1;
        }
        match *self.nodes.get(at as usize)? {
            Node::Done(outcome) => self.outcomes.get(outcome as usize),
            Node::Read { .. } => None,
        }
    }

    /// The index of `arg` in `args`, added if new.
    fn arg_index(&mut self, arg: Option<&str>) -> u32 {
        let Some(arg) = arg else { return NO_ARG };
        match self.args.iter().position(|a| **a == *arg) {
            Some(i) => i as u32,
            None => {
                self.args.push(arg.into());
                (self.args.len() - 1) as u32
            }
        }
    }

    /// A new node for the read at `i` of `trace`, or for `outcome` past its end.
    fn node(&mut self, trace: &[Read], i: usize, outcome: &Outcome) -> Node {
        match trace.get(i) {
            Some(read) => Node::Read { getter: read.getter, arg: self.arg_index(read.arg.as_deref()), hot: NO_EDGE },
            None => {
                self.outcomes.push(outcome.clone());
                Node::Done((self.outcomes.len() - 1) as u32)
            }
        }
    }

    /// Records that the reads in `trace` led the script to `outcome`.
    pub(crate) fn learn(&mut self, trace: &[Read], outcome: &Outcome) {
        if !self.enabled {
            return;
        }
        if self.nodes.len() + trace.len() + 1 > MAX_NODES {
            self.nodes.clear();
            self.edges.clear();
            self.outcomes.clear();
            self.index.clear();
        }
        if self.nodes.is_empty() {
            let root = self.node(trace, 0, outcome);
            self.nodes.push(root);
        }
        let mut at = 0u32;
        for (i, read) in trace.iter().enumerate() {
            match self.nodes.get(at as usize).copied() {
                Some(Node::Read { getter, arg, .. }) if getter == read.getter && self.arg_is(arg, read.arg.as_deref()) => {}
                // A script that read differently from the same values is not
                // deterministic after all; stop trusting the tree.
                _ => return self.stop(),
            }
            let value = read.value.as_value();
            let key = edge_key(at, value.digest());
            match self.index.get(&key).and_then(|&e| self.edges.get(e as usize)) {
                Some(edge) if edge.from == at && edge.value.is(&value) => at = edge.to,
                Some(_) => return,
                None => {
                    let to = self.nodes.len() as u32;
                    let next = self.node(trace, i + 1, outcome);
                    self.nodes.push(next);
                    self.index.insert(key, self.edges.len() as u32);
                    self.edges.push(Edge { from: at, value: Key::of(&value), to });
                    at = to;
                }
            }
        }
        match self.nodes.get(at as usize) {
            Some(Node::Done(seen)) if self.outcomes.get(*seen as usize) == Some(outcome) => {}
            _ => self.stop(),
        }
    }

    fn arg_is(&self, arg: u32, read: Option<&str>) -> bool {
        match read {
            None => arg == NO_ARG,
            Some(read) => self.args.get(arg as usize).is_some_and(|a| **a == *read),
        }
    }

    fn stop(&mut self) {
        self.enabled = false;
        self.nodes = Vec::new();
        self.edges = Vec::new();
        self.outcomes = Vec::new();
        self.index = HashMap::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A kept string matches exactly the strings equal to it, whether
        /// it is kept inline or boxed, at every length around the words.
        #[test]
        fn a_kept_string_matches_only_its_equal(a in "[ab]{0,44}", b in "[ab]{0,44}") {
            proptest::prop_assert_eq!(Key::of(&Value::Str(&a)).is(&Value::Str(&b)), a == b);
            proptest::prop_assert!(Key::of(&Value::Str(&a)).is(&Value::Str(&a)));
            proptest::prop_assert!(!Key::of(&Value::Str(&a)).is(&Value::Int(a.len() as i64)));
        }
    }
}
