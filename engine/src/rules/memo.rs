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

use super::view::{mix, Frame, Getter, Owned, Read};

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

#[derive(Debug)]
enum Node {
    /// The script's next read here, and the edge last taken from here
    /// (an index into `Memo::edges`, [`NO_EDGE`] before the first).
    Read { getter: Getter, arg: Option<Box<str>>, hot: u32 },
    Done(Outcome),
}

const NO_EDGE: u32 = u32::MAX;

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
    value: Owned,
    to: u32,
}

#[derive(Debug)]
pub(crate) struct Memo {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
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
            let (getter, arg, hot) = match self.nodes.get(at as usize)? {
                Node::Done(_) => break,
                Node::Read { getter, arg, hot } => (*getter, arg.as_deref(), *hot),
            };
            let value = frame.read(getter, arg.unwrap_or(""));
            at = match self.edges.get(hot as usize) {
                Some(edge) if edge.value.as_value() == value => edge.to,
                _ => {
                    let found = *self.index.get(&edge_key(at, value.digest()))?;
                    let edge = self.edges.get(found as usize)?;
                    if edge.from != at || edge.value.as_value() != value {
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
        match self.nodes.get(at as usize)? {
            Node::Done(outcome) => Some(outcome),
            Node::Read { .. } => None,
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
            self.index.clear();
        }
        let node = |i: usize| match trace.get(i) {
            Some(read) => Node::Read { getter: read.getter, arg: read.arg.as_deref().map(Into::into), hot: NO_EDGE },
            None => Node::Done(outcome.clone()),
        };
        if self.nodes.is_empty() {
            self.nodes.push(node(0));
        }
        let mut at = 0u32;
        for (i, read) in trace.iter().enumerate() {
            match self.nodes.get(at as usize) {
                Some(Node::Read { getter, arg, .. }) if *getter == read.getter && arg.as_deref() == read.arg.as_deref() => {}
                // A script that read differently from the same values is not
                // deterministic after all; stop trusting the tree.
                _ => return self.stop(),
            }
            let key = edge_key(at, read.value.as_value().digest());
            match self.index.get(&key).and_then(|&e| self.edges.get(e as usize)) {
                Some(edge) if edge.from == at && edge.value == read.value => at = edge.to,
                Some(_) => return,
                None => {
                    let to = self.nodes.len() as u32;
                    self.nodes.push(node(i + 1));
                    self.index.insert(key, self.edges.len() as u32);
                    self.edges.push(Edge { from: at, value: read.value.clone(), to });
                    at = to;
                }
            }
        }
        match self.nodes.get(at as usize) {
            Some(Node::Done(seen)) if seen == outcome => {}
            _ => self.stop(),
        }
    }

    fn stop(&mut self) {
        self.enabled = false;
        self.nodes = Vec::new();
        self.edges = Vec::new();
        self.index = HashMap::default();
    }
}
