//! Sliding windows over event time in fixed buckets: bounded memory, and the
//! same sums for the same events whatever order of arrival within a bucket.

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// What one bucket counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub actions: u32,
    pub step_ups: u32,
    pub denials: u32,
    pub bytes: u64,
    pub egress: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.actions = self.actions.saturating_add(other.actions);
        self.step_ups = self.step_ups.saturating_add(other.step_ups);
        self.denials = self.denials.saturating_add(other.denials);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.egress = self.egress.saturating_add(other.egress);
    }
}

/// `N` buckets of `width_ms` each; the newest bucket holds index `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series<const N: usize> {
    width_ms: i64,
    head: i64,
    #[serde(with = "sparse")]
    buckets: [Tally; N],
}

/// Buckets as a checkpoint and the changelog keep them: only the ones that
/// counted something, each with its slot. Most of an agent's buckets are
/// empty, and every changed agent is written on every batch.
mod sparse {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use super::Tally;

    fn used<const N: usize>(buckets: &[Tally; N]) -> impl Iterator<Item = (u8, &Tally)> {
        let empty = Tally::default();
        (0u8..).zip(buckets).filter(move |(_, t)| **t != empty)
    }

    pub fn serialize<S: Serializer, const N: usize>(buckets: &[Tally; N], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(used(buckets).count()))?;
        for slot in used(buckets) {
            seq.serialize_element(&slot)?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[Tally; N], D::Error> {
        struct Buckets<const N: usize>;

        impl<'de, const N: usize> Visitor<'de> for Buckets<N> {
            type Value = [Tally; N];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the used buckets of a window of {N}")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[Tally; N], A::Error> {
                let mut buckets = [Tally::default(); N];
                while let Some((slot, tally)) = seq.next_element::<(u8, Tally)>()? {
                    let bucket = buckets
                        .get_mut(usize::from(slot))
                        .ok_or_else(|| A::Error::custom(format!("bucket {slot} of a window of {N}")))?;
                    *bucket = tally;
                }
                Ok(buckets)
            }
        }

        d.deserialize_seq(Buckets::<N>)
    }
}

impl<const N: usize> Series<N> {
    pub fn new(width_ms: i64) -> Self {
        Series { width_ms, head: i64::MIN, buckets: [Tally::default(); N] }
    }

    fn index(&self, t: Timestamp) -> i64 {
        t.millis().div_euclid(self.width_ms)
    }

    /// Adds `tally` at time `t`. A time older than the whole window is dropped.
    pub fn add(&mut self, t: Timestamp, tally: &Tally) {
        let idx = self.index(t);
        if self.head == i64::MIN || idx - self.head >= N as i64 {
            self.buckets = [Tally::default(); N];
            self.head = idx;
        } else if idx > self.head {
            for i in self.head + 1..=idx {
                self.buckets[i.rem_euclid(N as i64) as usize] = Tally::default();
            }
            self.head = idx;
        } else if self.head - idx >= N as i64 {
            return;
        }
        self.buckets[idx.rem_euclid(N as i64) as usize].add(tally);
    }

    /// The sum of the buckets that cover `(now - N * width, now]`.
    pub fn sum(&self, now: Timestamp) -> Tally {
        let now_idx = self.index(now);
        let mut total = Tally::default();
        if self.head == i64::MIN {
            return total;
        }
        let newest = self.head.min(now_idx);
        let oldest = (now_idx - N as i64 + 1).max(self.head - N as i64 + 1);
        // One division for the first slot, then walk the ring.
        let mut slot = oldest.rem_euclid(N as i64) as usize;
        for _ in oldest..=newest {
            total.add(&self.buckets[slot]);
            slot = if slot + 1 == N { 0 } else { slot + 1 };
        }
        total
    }
}

/// The windows an agent keeps: one minute, ten minutes and one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    pub m1: Series<6>,
    pub m10: Series<10>,
    pub h1: Series<12>,
}

/// A window a rule can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    M1,
    M10,
    H1,
}

impl Span {
    pub fn parse(text: &str) -> Option<Span> {
        match text {
            "1m" => Some(Span::M1),
            "10m" => Some(Span::M10),
            "1h" => Some(Span::H1),
            _ => None,
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            Span::M1 => 60,
            Span::M10 => 600,
            Span::H1 => 3600,
        }
    }
}

impl Default for Windows {
    fn default() -> Self {
        Windows { m1: Series::new(10_000), m10: Series::new(60_000), h1: Series::new(300_000) }
    }
}

impl Windows {
    pub fn add(&mut self, t: Timestamp, tally: &Tally) {
        self.m1.add(t, tally);
        self.m10.add(t, tally);
        self.h1.add(t, tally);
    }

    pub fn sum(&self, span: Span, now: Timestamp) -> Tally {
        match span {
            Span::M1 => self.m1.sum(now),
            Span::M10 => self.m10.sum(now),
            Span::H1 => self.h1.sum(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp(secs * 1000)
    }

    fn one() -> Tally {
        Tally { actions: 1, bytes: 10, ..Tally::default() }
    }

    #[test]
    fn counts_slide_out_of_the_window() {
        let mut w = Windows::default();
        for s in 0..60 {
            w.add(at(s), &one());
        }
        assert_eq!(w.sum(Span::M1, at(59)).actions, 60);
        assert_eq!(w.sum(Span::M10, at(59)).bytes, 600);
        // 30 s later the first 30 s have left the one-minute window.
        assert_eq!(w.sum(Span::M1, at(89)).actions, 30);
        assert_eq!(w.sum(Span::H1, at(89)).actions, 60);
        assert_eq!(w.sum(Span::M10, at(60 * 11)).actions, 0);
    }

    #[test]
    fn late_events_land_in_their_own_bucket_or_are_dropped() {
        let mut w = Series::<6>::new(10_000);
        w.add(at(100), &one());
        w.add(at(95), &one());
        w.add(at(10), &one());
        assert_eq!(w.sum(at(100)).actions, 2);
    }

    #[test]
    fn a_window_decodes_as_it_was_from_its_used_buckets() {
        let mut w = Windows::default();
        for s in 0..100 {
            w.add(at(s * 7), &one());
        }
        let bytes = postcard::to_allocvec(&w).unwrap_or_default();
        assert_eq!(postcard::from_bytes::<Windows>(&bytes).ok(), Some(w.clone()));
        let quiet = postcard::to_allocvec(&Windows::default()).unwrap_or_default();
        // All 28 buckets, even empty, would take 140 bytes on their own.
        assert!(quiet.len() < 50, "empty buckets take no room: {} bytes", quiet.len());
        // A slot past the end of a smaller window is refused.
        let mut twelve = Series::<12>::new(1_000);
        twelve.add(Timestamp(11_000), &one());
        let twelve = postcard::to_allocvec(&twelve).unwrap_or_default();
        assert!(postcard::from_bytes::<Series<6>>(&twelve).is_err());
    }

    #[test]
    fn a_long_gap_clears_everything() {
        let mut w = Series::<6>::new(10_000);
        w.add(at(0), &one());
        w.add(at(10_000), &one());
        assert_eq!(w.sum(at(10_000)).actions, 1);
    }
}
