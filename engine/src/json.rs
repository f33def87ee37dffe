//! JSON strings, eight bytes at a time, for the places where the engine
//! reads or writes most of its text: the record reader ([`crate::decode`]),
//! the decision writer and the decision brief reader ([`crate::verdict`]).
//!
//! Nearly every string in a record or a decision is an id, a name or a
//! time: no quote, no backslash, no control character. Finding that out a
//! word at a time, rather than a byte at a time as serde_json does, is most
//! of the cost of reading and writing them.

use std::borrow::Cow;
use std::collections::BTreeMap;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags (in each byte's high bit) the bytes of `word` that end or
/// escape a JSON string or may not appear in one: `"`, `\` and controls.
/// The lowest flag is exact; those above it may be false.
fn specials(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\'))) | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
}

/// Where the run of bytes from `from` that stand in a JSON string as they
/// are ends: at the first `"`, `\` or control character, or the end.
#[inline]
fn plain_end(bytes: &[u8], from: usize) -> usize {
    let mut end = from;
    while let Some(chunk) = bytes.get(end..end + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let flags = specials(u64::from_le_bytes(word));
        if flags != 0 {
            return end + flags.trailing_zeros() as usize / 8;
        }
        end += 8;
    }
    while bytes.get(end).is_some_and(|b| !matches!(b, b'"' | b'\\' | 0..=0x1f)) {
        end += 1;
    }
    end
}

/// How deep an ignored value may nest before a [`Cursor`] gives up.
const MAX_SKIP_DEPTH: u32 = 16;
/// Keys per object a [`Cursor`] tracks for duplicates.
const MAX_KEYS: usize = 32;

/// A direct reader for a strict subset of JSON, in front of serde_json:
/// strings without escapes, integers without fraction or exponent, each
/// key at most once per object. Any step answers `None` on anything else
/// (an escape, a float, a duplicate, a syntax error, nesting past a small
/// depth), and the caller reads the text with serde_json instead. Its
/// users hold what it accepts to read the same as serde_json.
pub(crate) struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, at: 0 }
    }

    /// Only white space is left.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.text.len()).then_some(())
    }

    fn b(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.b().get(self.at).copied()
    }

    pub(crate) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Consumes `byte` after white space.
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        self.b()[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// Reads one optional field's value into `slot`; `null` is `None`.
    pub(crate) fn put<T>(&mut self, slot: &mut Option<T>, read: fn(&mut Cursor<'a>) -> Option<T>) -> Option<()> {
        if self.literal(b"null").is_some() {
            return Some(());
        }
        *slot = Some(read(self)?);
        Some(())
    }

    /// Walks the comma-separated items up to `close`, the opening byte
    /// already taken, letting `item` read each one.
    pub(crate) fn items(&mut self, close: u8, mut item: impl FnMut(&mut Cursor<'a>) -> Option<()>) -> Option<()> {
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Walks an object, handing each key to `field`, which reads its value.
    /// serde's derive refuses a field given twice (even after a `null`),
    /// so a key seen twice, or more keys than are tracked, sends the
    /// record to serde.
    pub(crate) fn object(&mut self, mut field: impl FnMut(&mut Cursor<'a>, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        let mut keys: [&'a str; MAX_KEYS] = [""; MAX_KEYS];
        let mut seen = 0;
        // One bit per key's length: only keys of a length seen before are compared.
        let mut lengths = 0u64;
        self.items(b'}', |c| {
            let key = c.str()?;
            let bit = 1u64 << (key.len() % 64);
            if seen == MAX_KEYS || (lengths & bit != 0 && keys[..seen].contains(&key)) {
                return None;
            }
            lengths |= bit;
            keys[seen] = key;
            seen += 1;
            c.eat(b':')?;
            field(c, key)
        })
    }

    /// A string without escapes or control characters, borrowed.
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let end = plain_end(self.b(), start);
        if self.b().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        // The text is UTF-8 already, and a quote never falls inside a
        // multi-byte character: slicing at the quotes only checks that.
        self.text.get(start..end)
    }

    pub(crate) fn string(&mut self) -> Option<String> {
        self.str().map(str::to_owned)
    }

    pub(crate) fn borrowed(&mut self) -> Option<Cow<'a, str>> {
        self.str().map(Cow::Borrowed)
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        if self.literal(b"true").is_some() {
            Some(true)
        } else {
            self.literal(b"false").map(|()| false)
        }
    }

    /// An integer in JSON's grammar that fits `i64`; a fraction or an
    /// exponent is a float, which serde refuses for these fields.
    pub(crate) fn int(&mut self) -> Option<i64> {
        self.ws();
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.b()[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let magnitude = digits.iter().try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(i64::from(d - b'0')))?;
        match (negative, magnitude) {
            // serde_json reads `-0` as a float.
            (true, 0) => None,
            (true, m) => Some(-m),
            (false, m) => Some(m),
        }
    }

    pub(crate) fn strings(&mut self) -> Option<Vec<String>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.items(b']', |c| {
            items.push(c.string()?);
            Some(())
        })?;
        Some(items)
    }

    /// A map of strings; a key given twice keeps its last value, as serde does.
    pub(crate) fn string_map(&mut self) -> Option<BTreeMap<String, String>> {
        self.eat(b'{')?;
        let mut map = BTreeMap::new();
        self.items(b'}', |c| {
            let key = c.string()?;
            c.eat(b':')?;
            map.insert(key, c.string()?);
            Some(())
        })?;
        Some(map)
    }

    /// Steps over a value of a field this reader does not know, checking
    /// it as serde would.
    pub(crate) fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.str().map(drop),
            b'{' => self.object(|c, _| c.skip(depth + 1)),
            b'[' => {
                self.at += 1;
                self.items(b']', |c| c.skip(depth + 1))
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            // Only integers: a float's text is for serde to judge.
            _ => self.int().map(drop),
        }
    }
}

/// Writes `text` as a JSON string, with the same bytes as serde_json.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    if plain_end(text.as_bytes(), 0) == text.len() {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // The rare string that needs escapes; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Writes `n` in decimal, as serde_json does.
pub(crate) fn write_u32(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes `value` with serde_json; writing to a Vec cannot fail, and the
/// engine's types always serialize.
pub(crate) fn write_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The eight-at-a-time scan stops where a byte-by-byte one would.
    #[test]
    fn the_plain_run_ends_at_the_first_special_byte() {
        let byte_by_byte = |b: &[u8]| b.iter().position(|b| matches!(b, b'"' | b'\\' | 0..=0x1f)).unwrap_or(b.len());
        for len in 0..24 {
            let plain: String = "abcdéfghijklmnopqrstuvwxyz".chars().take(len).collect();
            assert_eq!(plain_end(plain.as_bytes(), 0), plain.len());
            for at in 0..len {
                for special in ['"', '\\', '\t', '\u{1}', '\u{1f}'] {
                    let mut body: Vec<char> = plain.chars().collect();
                    body[at] = special;
                    let body: String = body.into_iter().collect();
                    let bytes = body.as_bytes();
                    assert_eq!(plain_end(bytes, 0), byte_by_byte(bytes), "{body:?}");
                    let from = (at + 1).min(bytes.len());
                    assert_eq!(plain_end(bytes, from), from + byte_by_byte(&bytes[from..]), "{body:?} from {from}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn numbers_are_written_as_serde_writes_them(n in prop_oneof![any::<u32>(), 0u32..1000]) {
            let mut ours = Vec::new();
            write_u32(&mut ours, n);
            prop_assert_eq!(ours, serde_json::to_vec(&n).unwrap_or_default());
        }

        #[test]
        fn strings_are_written_as_serde_writes_them(text in "(\\PC|[\"\\\\\u{0}-\u{1f}\u{7f}])*") {
            let mut ours = Vec::new();
            write_str(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap_or_default());
        }
    }
}
