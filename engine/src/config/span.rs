//! Durations as the configuration writes them: `"50ms"`, `"10s"`, `"10m"`,
//! `"1h"`, `"1d"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl Span {
    pub const fn millis(ms: u64) -> Span {
        Span(Duration::from_millis(ms))
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Reads `"<whole number><unit>"`, unit one of `ms`, `s`, `m`, `h`, `d`.
    pub fn parse(text: &str) -> Option<Span> {
        let text = text.trim();
        let digits = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let per = UNITS.iter().find(|(name, _)| *name == unit.trim())?.1;
        number.checked_mul(per).map(Span::millis)
    }
}

impl fmt::Display for Span {
    /// In the largest unit that divides it: `90s`, `10m`, `50ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        let (name, per) = UNITS.iter().find(|(_, per)| ms > 0 && ms.is_multiple_of(*per)).copied().unwrap_or(("ms", 1));
        write!(f, "{}{name}", ms / per)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Span, D::Error> {
        let text = String::deserialize(deserializer)?;
        Span::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"50ms\", \"10s\", \"10m\", \"1h\" or \"1d\""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_print_with_their_unit() {
        for (text, ms) in [("50ms", 50), ("10s", 10_000), ("10m", 600_000), ("1h", 3_600_000), ("2d", 172_800_000), (" 90s ", 90_000)] {
            assert_eq!(Span::parse(text), Some(Span::millis(ms)), "{text}");
        }
        for bad in ["", "10", "ms", "1.5s", "-1s", "10 minutes", "5y"] {
            assert_eq!(Span::parse(bad), None, "{bad}");
        }
        assert_eq!(Span::millis(90_000).to_string(), "90s");
        assert_eq!(Span::millis(600_000).to_string(), "10m");
        assert_eq!(Span::millis(1_500).to_string(), "1500ms");
    }
}
