//! What each rule decided, keyed by the sequence of values it read.
//!
//! A rule's script is deterministic and sees the world only through its
//! reads, so its first read is always the same, the second depends only on
//! the first value, and so on: its runs form a tree whose leaves are
//! outcomes. Replaying the reads natively down that tree gives the outcome
//! the script would give, at the cost of a few hash lookups.
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
    /// The script's next read here.
    Read { getter: Getter, arg: Option<Box<str>> },
    Done(Outcome),
}

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
    /// Keyed by a digest of (node, value); a digest collision is a miss.
    edges: HashMap<u64, Edge, BuildHasherDefault<DigestHasher>>,
    enabled: bool,
    lookups: u32,
    hits: u32,
}

fn edge_key(node: u32, value_digest: u64) -> u64 {
    mix(value_digest ^ u64::from(node).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Memo {
    pub(crate) fn new(enabled: bool) -> Memo {
        Memo { nodes: Vec::new(), edges: HashMap::default(), enabled, lookups: 0, hits: 0 }
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
            match self.nodes.get(at as usize)? {
                Node::Done(outcome) => {
                    self.hits += 1;
                    return Some(outcome);
                }
                Node::Read { getter, arg } => {
                    let value = frame.read(*getter, arg.as_deref().unwrap_or(""));
                    let edge = self.edges.get(&edge_key(at, value.digest()))?;
                    if edge.from != at || edge.value.as_value() != value {
                        return None;
                    }
                    at = edge.to;
                }
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
        }
        let node = |i: usize| match trace.get(i) {
            Some(read) => Node::Read { getter: read.getter, arg: read.arg.as_deref().map(Into::into) },
            None => Node::Done(outcome.clone()),
        };
        if self.nodes.is_empty() {
            self.nodes.push(node(0));
        }
        let mut at = 0u32;
        for (i, read) in trace.iter().enumerate() {
            match self.nodes.get(at as usize) {
                Some(Node::Read { getter, arg }) if *getter == read.getter && arg.as_deref() == read.arg.as_deref() => {}
                // A script that read differently from the same values is not
                // deterministic after all; stop trusting the tree.
                _ => return self.stop(),
            }
            let key = edge_key(at, read.value.as_value().digest());
            match self.edges.get(&key) {
                Some(edge) if edge.from == at && edge.value == read.value => at = edge.to,
                Some(_) => return,
                None => {
                    let to = self.nodes.len() as u32;
                    self.nodes.push(node(i + 1));
                    self.edges.insert(key, Edge { from: at, value: read.value.clone(), to });
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
        self.edges = HashMap::default();
    }
}
