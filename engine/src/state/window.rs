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

/// The exact sum of a series' buckets, wide enough never to saturate, so
/// buckets can leave it by subtraction. Clamped on the way out, it equals
/// the saturating sum of the same buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Total {
    actions: u64,
    step_ups: u64,
    denials: u64,
    bytes: u128,
    egress: u128,
}

impl Total {
    fn add(&mut self, t: &Tally) {
        self.actions += u64::from(t.actions);
        self.step_ups += u64::from(t.step_ups);
        self.denials += u64::from(t.denials);
        self.bytes += u128::from(t.bytes);
        self.egress += u128::from(t.egress);
    }

    fn sub(&mut self, t: &Tally) {
        self.actions -= u64::from(t.actions);
        self.step_ups -= u64::from(t.step_ups);
        self.denials -= u64::from(t.denials);
        self.bytes -= u128::from(t.bytes);
        self.egress -= u128::from(t.egress);
    }

    fn clamped(&self) -> Tally {
        Tally {
            actions: self.actions.min(u64::from(u32::MAX)) as u32,
            step_ups: self.step_ups.min(u64::from(u32::MAX)) as u32,
            denials: self.denials.min(u64::from(u32::MAX)) as u32,
            bytes: self.bytes.min(u128::from(u64::MAX)) as u64,
            egress: self.egress.min(u128::from(u64::MAX)) as u64,
        }
    }
}

/// `N` buckets of `width_ms` each; the newest bucket holds index `head`.
///
/// The series keeps the total of its buckets as they change, so a sum
/// subtracts the few buckets outside the asked window (none, when the
/// window ends at the newest bucket) instead of adding up all `N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored<N>")]
pub struct Series<const N: usize> {
    width_ms: i64,
    head: i64,
    #[serde(with = "sparse")]
    buckets: [Tally; N],
    #[serde(skip)]
    total: Total,
}

/// A series as checkpoints keep it: the buckets; the total is rebuilt.
#[derive(Deserialize)]
struct Stored<const N: usize> {
    width_ms: i64,
    head: i64,
    #[serde(with = "sparse")]
    buckets: [Tally; N],
}

impl<const N: usize> From<Stored<N>> for Series<N> {
    fn from(stored: Stored<N>) -> Self {
        let mut total = Total::default();
        stored.buckets.iter().for_each(|b| total.add(b));
        Series { width_ms: stored.width_ms, head: stored.head, buckets: stored.buckets, total }
    }
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
        Series { width_ms, head: i64::MIN, buckets: [Tally::default(); N], total: Total::default() }
    }

    fn index(&self, t: Timestamp) -> i64 {
        t.millis().div_euclid(self.width_ms)
    }

    fn slot(i: i64) -> usize {
        i.rem_euclid(N as i64) as usize
    }

    /// Adds `tally` at time `t`. A time older than the whole window is dropped.
    pub fn add(&mut self, t: Timestamp, tally: &Tally) {
        let idx = self.index(t);
        if self.head == i64::MIN || idx - self.head >= N as i64 {
            self.buckets = [Tally::default(); N];
            self.total = Total::default();
            self.head = idx;
        } else if idx > self.head {
            for i in self.head + 1..=idx {
                let bucket = &mut self.buckets[Self::slot(i)];
                self.total.sub(bucket);
                *bucket = Tally::default();
            }
            self.head = idx;
        } else if self.head - idx >= N as i64 {
            return;
        }
        let bucket = &mut self.buckets[Self::slot(idx)];
        self.total.sub(bucket);
        bucket.add(tally);
        self.total.add(bucket);
    }

    /// The sum of the buckets that cover `(now - N * width, now]`: the
    /// total, less the buckets it holds outside that window.
    pub fn sum(&self, now: Timestamp) -> Tally {
        let now_idx = self.index(now);
        let n = N as i64;
        // The buckets held cover (head - N, head].
        if self.head == i64::MIN || now_idx - self.head >= n || self.head - now_idx >= n {
            return Tally::default();
        }
        let outside = if now_idx >= self.head { self.head - n + 1..=now_idx - n } else { now_idx + 1..=self.head };
        let mut total = self.total;
        for i in outside {
            total.sub(&self.buckets[Self::slot(i)]);
        }
        total.clamped()
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

    /// The sum a series gave before it kept a total: every bucket in the
    /// window added up, saturating.
    fn summed<const N: usize>(w: &Series<N>, now: Timestamp) -> Tally {
        let mut total = Tally::default();
        let now_idx = w.index(now);
        if w.head == i64::MIN {
            return total;
        }
        let oldest = (now_idx - N as i64 + 1).max(w.head - N as i64 + 1);
        for i in oldest..=w.head.min(now_idx) {
            total.add(&w.buckets[Series::<N>::slot(i)]);
        }
        total
    }

    proptest::proptest! {
        /// Whatever the order and size of the events, and wherever the
        /// window ends (before, at or after the newest bucket), the kept
        /// total gives the sum of the buckets, saturation included, and
        /// survives a checkpoint.
        #[test]
        fn the_kept_total_is_the_sum_of_the_buckets(
            adds in proptest::collection::vec((0i64..200, 0u32..3, proptest::prop_oneof![0u64..5000, proptest::strategy::Just(u64::MAX - 7)]), 1..60),
            asks in proptest::collection::vec(-30i64..260, 1..8),
        ) {
            let mut w = Series::<6>::new(10_000);
            for (secs, actions, bytes) in adds {
                w.add(at(secs), &Tally { actions, bytes, egress: bytes / 2, ..Tally::default() });
                for &ask in &asks {
                    proptest::prop_assert_eq!(w.sum(at(ask)), summed(&w, at(ask)));
                }
            }
            let bytes = postcard::to_allocvec(&w).unwrap_or_default();
            proptest::prop_assert_eq!(postcard::from_bytes::<Series<6>>(&bytes).ok(), Some(w));
        }
    }

    #[test]
    fn a_long_gap_clears_everything() {
        let mut w = Series::<6>::new(10_000);
        w.add(at(0), &one());
        w.add(at(10_000), &one());
        assert_eq!(w.sum(at(10_000)).actions, 1);
    }
}
