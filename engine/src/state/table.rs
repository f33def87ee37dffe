//! The state's tables: entries by key, each either decoded or still the
//! bytes it was restored from.
//!
//! A restore of a million agents would spend most of its time building
//! agents that may not act again for hours. So a restored entry stays as
//! its stored bytes and is decoded the first time the state folds or
//! decides on it. What the sweep and the scans need (when an agent was last
//! seen, a task's deadline, whose a credential is) is a small head written
//! before the value, read without decoding the rest. Bytes are checked
//! against their checksum when restored, so a garbled entry is refused
//! then, not found half-way through a stream.
//!
//! Stored form of an entry: an xxh3-64 checksum of the rest (8 bytes,
//! little-endian), then the postcard head, then the postcard value.

use std::fmt::Debug;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Key, KeyMap};

/// An entry kind a [`Table`] keeps: what its head holds.
pub trait Stored: Clone + Serialize + DeserializeOwned {
    /// What scans read of an entry without decoding it.
    type Head: Copy + Debug + Serialize + DeserializeOwned;

    fn head(&self) -> Self::Head;
}

const SUM: usize = 8;

/// The stored form of `head` and `value`.
pub fn seal(head: &impl Serialize, value: &impl Serialize) -> Option<Vec<u8>> {
    let bytes = postcard::to_extend(head, vec![0; SUM]).ok()?;
    let mut bytes = postcard::to_extend(value, bytes).ok()?;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[SUM..]);
    bytes[..SUM].copy_from_slice(&sum.to_le_bytes());
    Some(bytes)
}

/// What a stored form's checksum covers, once it matches.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let (sum, rest) = bytes.split_first_chunk::<SUM>().ok_or("shorter than its checksum")?;
    if u64::from_le_bytes(*sum) != xxhash_rust::xxh3::xxh3_64(rest) {
        return Err("checksum mismatch".into());
    }
    Ok(rest)
}

/// The head of a stored form whose checksum was already checked.
fn head_of<T: Stored>(bytes: &[u8]) -> Result<(T::Head, &[u8]), String> {
    postcard::take_from_bytes(bytes.get(SUM..).unwrap_or_default()).map_err(|e| e.to_string())
}

/// Checks a stored form and reads its head: what a restore does per entry.
pub fn check<T: Stored>(bytes: &[u8]) -> Result<T::Head, String> {
    unseal(bytes)?;
    head_of::<T>(bytes).map(|(head, _)| head)
}

/// A stored value written with no head (the state's global entries).
pub fn open<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, String> {
    postcard::from_bytes(unseal(bytes)?).map_err(|e| e.to_string())
}

fn decode<T: Stored>(bytes: &[u8]) -> Result<T, String> {
    let (_, body) = head_of::<T>(bytes)?;
    postcard::from_bytes(body).map_err(|e| e.to_string())
}

/// A restored entry not used since: its checked bytes and the partition
/// it lives in.
#[derive(Debug, Clone)]
pub struct Cold {
    bytes: Box<[u8]>,
    home: i32,
}

/// One entry as the journal keeps it: decoded, or still cold.
#[derive(Debug, Clone)]
pub enum Lazy<T> {
    Warm(Rc<T>),
    Cold(Cold),
}

impl<T: Stored> Lazy<T> {
    pub fn head(&self) -> Option<T::Head> {
        match self {
            Lazy::Warm(value) => Some(value.head()),
            Lazy::Cold(cold) => cold_head::<T>(&cold.bytes),
        }
    }
}

fn cold_head<T: Stored>(bytes: &[u8]) -> Option<T::Head> {
    head_of::<T>(bytes).ok().map(|(head, _)| head)
}

/// Decodes checked bytes. They only fail to decode if this build wrote
/// something it cannot read: reported, and the entry reads as absent.
fn decoded<T: Stored>(bytes: &[u8]) -> Option<T> {
    decode(bytes)
        .map_err(|reason| tracing::error!(%reason, "a restored state entry passed its checksum but does not decode; it starts afresh"))
        .ok()
}

/// Restored entries not used since, sorted by key as a store returns
/// them: filling it is a copy, not a million hash inserts. A lookup is a
/// binary search, made once per entry, when it is first used; the entry
/// then leaves a hole, and the run is let go when none is left.
#[derive(Debug, Clone, Default)]
struct Run {
    slots: Vec<(Key, Option<Cold>)>,
    live: usize,
}

impl Run {
    /// Keys are uniform hashes, so a key's value says about where it sits:
    /// the search starts there and gallops out to a short binary search,
    /// touching a few nearby cache lines rather than twenty far apart.
    fn find(&self, k: &Key) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let slots = &self.slots;
        let n = slots.len();
        let at = |i: usize| slots[i].0;
        let guess = ((((*k >> 64) as u64) as u128 * n as u128) >> 64) as usize;
        let (mut lo, mut hi) = (guess, guess + 1);
        let mut step = 1;
        if at(guess) <= *k {
            while hi < n && at(hi) <= *k {
                lo = hi;
                hi = (hi + step).min(n);
                step *= 2;
            }
        } else {
            hi = guess;
            loop {
                lo = hi.saturating_sub(step);
                if lo == 0 || at(lo) <= *k {
                    break;
                }
                hi = lo;
                step *= 2;
            }
        }
        let found = slots[lo..hi].binary_search_by_key(k, |(key, _)| *key).ok()?;
        Some(lo + found)
    }

    fn get(&self, k: &Key) -> Option<&Cold> {
        self.slots[self.find(k)?].1.as_ref()
    }

    fn get_mut(&mut self, k: &Key) -> Option<&mut Cold> {
        let at = self.find(k)?;
        self.slots[at].1.as_mut()
    }

    fn take(&mut self, k: &Key) -> Option<Cold> {
        let at = self.find(k)?;
        let cold = self.slots[at].1.take()?;
        self.live -= 1;
        if self.live == 0 {
            self.slots = Vec::new();
        }
        Some(cold)
    }

    /// Puts an entry back where it was taken from.
    fn put(&mut self, k: Key, cold: Cold) {
        match self.slots.binary_search_by_key(&k, |(key, _)| *key) {
            Ok(at) => {
                if self.slots[at].1.replace(cold).is_none() {
                    self.live += 1;
                }
            }
            Err(at) => {
                self.slots.insert(at, (k, Some(cold)));
                self.live += 1;
            }
        }
    }

    /// Adds entries of keys the run does not hold.
    fn extend(&mut self, more: impl ExactSizeIterator<Item = (Key, Cold)>) {
        self.slots.retain(|(_, cold)| cold.is_some());
        self.live += more.len();
        self.slots.extend(more.map(|(k, cold)| (k, Some(cold))));
        // A store gives each kind in key order already; a changelog does not.
        if !self.slots.is_sorted_by_key(|(k, _)| *k) {
            self.slots.sort_unstable_by_key(|(k, _)| *k);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &Cold)> {
        self.slots.iter().filter_map(|(k, cold)| Some((k, cold.as_ref()?)))
    }
}

/// Entries of one kind by key, and the activity partition each lives in.
///
/// Decoded entries are in `warm`, restored ones not used since in `cold`
/// (a key is in at most one of the two). A cold entry carries its home, so
/// a restore writes each entry once; `homes` holds the rest, including
/// entries gone since, until their tombstone is written.
#[derive(Debug, Clone)]
pub struct Table<T> {
    warm: KeyMap<Key, Rc<T>>,
    cold: Run,
    homes: KeyMap<Key, i32>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { warm: KeyMap::default(), cold: Run::default(), homes: KeyMap::default() }
    }
}

impl<T: Stored> Table<T> {
    pub fn len(&self) -> usize {
        self.warm.len() + self.cold.live
    }

    /// The heap the table's own slots take (not what the entries point to).
    pub fn slot_bytes(&self) -> usize {
        use std::mem::size_of;
        self.warm.capacity() * (size_of::<(Key, Rc<T>)>() + 1)
            + self.cold.slots.capacity() * size_of::<(Key, Option<Cold>)>()
            + self.homes.capacity() * (size_of::<(Key, i32)>() + 1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.warm.keys().chain(self.cold.iter().map(|(k, _)| k))
    }

    /// The decoded entries.
    pub fn warm(&self) -> impl Iterator<Item = &T> {
        self.warm.values().map(|v| v.as_ref())
    }

    /// The restored entries' stored forms, not decoded yet.
    pub fn cold(&self) -> impl Iterator<Item = &[u8]> {
        self.cold.iter().map(|(_, c)| c.bytes.as_ref())
    }

    /// Every entry's key and head, decoding none.
    pub fn heads(&self) -> impl Iterator<Item = (Key, T::Head)> + '_ {
        let warm = self.warm.iter().map(|(k, v)| (*k, v.head()));
        let cold = self.cold.iter().filter_map(|(k, c)| Some((*k, cold_head::<T>(&c.bytes)?)));
        warm.chain(cold)
    }

    pub fn head(&self, k: &Key) -> Option<T::Head> {
        match self.warm.get(k) {
            Some(value) => Some(value.head()),
            None => cold_head::<T>(&self.cold.get(k)?.bytes),
        }
    }

    /// The value, leaving the table as it is: a cold entry is decoded for
    /// this read only. For the rare reads (signals, deadlines, reports).
    pub fn peek(&self, k: &Key) -> Option<Rc<T>> {
        match self.warm.get(k) {
            Some(value) => Some(value.clone()),
            None => decoded(&self.cold.get(k)?.bytes).map(Rc::new),
        }
    }

    /// Takes `k` out of the cold run, if it is there; where it lives
    /// moves to `homes`.
    fn take_cold(&mut self, k: &Key) -> Option<Cold> {
        let cold = self.cold.take(k)?;
        self.homes.insert(*k, cold.home);
        Some(cold)
    }

    /// Decodes `k` for good if it is cold.
    fn thaw(&mut self, k: &Key) {
        if self.cold.live == 0 || self.warm.contains_key(k) {
            return;
        }
        if let Some(value) = self.take_cold(k).and_then(|cold| decoded(&cold.bytes)) {
            self.warm.insert(*k, Rc::new(value));
        }
    }

    /// The value, decoded for good if it was cold.
    pub fn get(&mut self, k: &Key) -> Option<&Rc<T>> {
        self.thaw(k);
        self.warm.get(k)
    }

    /// The value to change in place (copied first if a view still shares it).
    pub fn get_mut(&mut self, k: &Key) -> Option<&mut T> {
        self.thaw(k);
        self.warm.get_mut(k).map(Rc::make_mut)
    }

    /// The value to change in place, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, k: Key, make: impl FnOnce() -> T) -> &mut T {
        self.thaw(&k);
        Rc::make_mut(self.warm.entry(k).or_insert_with(|| Rc::new(make())))
    }

    /// Puts `value` in place of whatever `k` held.
    pub fn insert(&mut self, k: Key, value: Rc<T>) {
        self.take_cold(&k);
        self.warm.insert(k, value);
    }

    /// Keeps the checked stored bytes of entries the table does not hold,
    /// all living in `home`, to be decoded on first use.
    pub fn extend_cold(&mut self, entries: Vec<(Key, Box<[u8]>)>, home: i32) {
        self.cold.extend(entries.into_iter().map(|(k, bytes)| (k, Cold { bytes, home })));
        // Room for them once decoded, so that decoding them one by one
        // does not grow the tables again and again.
        self.warm.reserve(self.cold.live);
        self.homes.reserve(self.cold.live);
    }

    /// Removes an entry; where it lived stays known, for its tombstone.
    pub fn remove(&mut self, k: &Key) -> Option<Lazy<T>> {
        match self.warm.remove(k) {
            Some(value) => Some(Lazy::Warm(value)),
            None => self.take_cold(k).map(Lazy::Cold),
        }
    }

    /// The entry as the journal keeps it.
    pub fn lazy(&self, k: &Key) -> Option<Lazy<T>> {
        match self.warm.get(k) {
            Some(value) => Some(Lazy::Warm(value.clone())),
            None => self.cold.get(k).cloned().map(Lazy::Cold),
        }
    }

    /// Puts an entry back as the journal kept it (`None`: there was none).
    /// Where it lives is put back apart, with [`Table::set_home`].
    pub fn put(&mut self, k: Key, old: Option<Lazy<T>>) {
        match old {
            Some(Lazy::Warm(value)) => self.insert(k, value),
            Some(Lazy::Cold(cold)) => {
                self.warm.remove(&k);
                self.homes.remove(&k);
                self.cold.put(k, cold);
            }
            None => drop(self.remove(&k)),
        }
    }

    /// The stored form: a cold entry's bytes as they came.
    pub fn encode(&self, k: &Key) -> Option<Vec<u8>> {
        match self.warm.get(k) {
            Some(value) => seal(&value.head(), value.as_ref()),
            None => self.cold.get(k).map(|cold| cold.bytes.to_vec()),
        }
    }

    /// The partition `k` lives in (or lived in, until its tombstone is written).
    pub fn home(&self, k: &Key) -> Option<i32> {
        match self.homes.get(k) {
            Some(home) => Some(*home),
            None => self.cold.get(k).map(|cold| cold.home),
        }
    }

    pub fn set_home(&mut self, k: Key, home: i32) {
        match self.cold.get_mut(&k) {
            Some(cold) => cold.home = home,
            None => drop(self.homes.insert(k, home)),
        }
    }

    /// Forgets where a gone entry lived, returning it.
    pub fn forget_home(&mut self, k: &Key) -> Option<i32> {
        self.homes.remove(k)
    }

    /// Keys whose home is one of `partitions`.
    pub fn living_in(&self, partitions: &[i32]) -> Vec<Key> {
        let homes = self.homes.iter().map(|(k, home)| (k, *home));
        let cold = self.cold.iter().map(|(k, cold)| (k, cold.home));
        homes.chain(cold).filter(|(_, home)| partitions.contains(home)).map(|(k, _)| *k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(keys: &[Key]) -> Run {
        let mut run = Run::default();
        run.extend(keys.iter().map(|k| (*k, Cold { bytes: Box::default(), home: 0 })).collect::<Vec<_>>().into_iter());
        run
    }

    #[test]
    fn every_key_is_found_where_it_is_and_no_other() {
        let uniform: Vec<Key> = (0..5000u64).map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())).collect();
        // Far from uniform: the guess lands thousands of slots away.
        let skewed: Vec<Key> = (0..5000u128).map(|i| i * i * 7 + (1 << 100) * (i % 3)).collect();
        let edges: Vec<Key> = vec![0, 1, u128::MAX - 1, u128::MAX];
        for keys in [uniform, skewed, edges] {
            let run = run(&keys);
            for k in &keys {
                let at = run.find(k).map(|i| run.slots[i].0);
                assert_eq!(at, Some(*k));
            }
            for k in keys.iter().map(|k| k.wrapping_add(1)).filter(|k| !keys.contains(k)) {
                assert_eq!(run.find(&k), None, "{k} is not in the run");
            }
        }
    }

    #[test]
    fn a_taken_entry_leaves_a_hole_that_a_put_fills() {
        let keys: Vec<Key> = (0..100u64).map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())).collect();
        let mut run = run(&keys);
        assert!(run.take(&keys[7]).is_some());
        assert!(run.get(&keys[7]).is_none() && run.live == 99);
        run.put(keys[7], Cold { bytes: Box::new([1]), home: 3 });
        assert_eq!(run.get(&keys[7]).map(|c| (c.bytes.to_vec(), c.home)), Some((vec![1], 3)));
        for k in &keys {
            assert!(run.take(k).is_some());
        }
        assert!(run.slots.is_empty(), "a run with nothing left is let go");
    }
}
