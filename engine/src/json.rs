//! JSON strings, eight bytes at a time, for the two places where the
//! engine reads or writes most of its text: the record reader
//! ([`crate::decode`]) and the decision writer ([`crate::verdict`]).
//!
//! Nearly every string in a record or a decision is an id, a name or a
//! time: no quote, no backslash, no control character. Finding that out a
//! word at a time, rather than a byte at a time as serde_json does, is most
//! of the cost of reading and writing them.

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
pub(crate) fn plain_end(bytes: &[u8], from: usize) -> usize {
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
