//! XXH3 digests of short joined strings: state keys and decision ids.
//!
//! One-shot hashing of the joined bytes gives the same digest as streaming
//! the pieces, without the streaming state's setup; short inputs are
//! joined on the stack.

/// The 128-bit XXH3 of the `len` bytes that `fill` writes.
pub(crate) fn xxh3_128_of(len: usize, fill: impl FnOnce(&mut [u8])) -> u128 {
    joined(len, fill, xxhash_rust::xxh3::xxh3_128)
}

/// The 128-bit XXH3 of `parts`, each followed by `end`.
pub(crate) fn xxh3_128_terminated<P: AsRef<[u8]>>(parts: &[P], end: u8) -> u128 {
    joined(terminated_len(parts), |buf| terminate(buf, parts, end), xxhash_rust::xxh3::xxh3_128)
}

/// The 64-bit XXH3 of `parts`, each followed by `end`.
pub(crate) fn xxh3_64_terminated<P: AsRef<[u8]>>(parts: &[P], end: u8) -> u64 {
    joined(terminated_len(parts), |buf| terminate(buf, parts, end), xxhash_rust::xxh3::xxh3_64)
}

fn terminated_len<P: AsRef<[u8]>>(parts: &[P]) -> usize {
    parts.iter().map(|p| p.as_ref().len() + 1).sum()
}

fn terminate<P: AsRef<[u8]>>(buf: &mut [u8], parts: &[P], end: u8) {
    let mut at = 0;
    for part in parts {
        let part = part.as_ref();
        buf[at..at + part.len()].copy_from_slice(part);
        buf[at + part.len()] = end;
        at += part.len() + 1;
    }
}

fn joined<T>(len: usize, fill: impl FnOnce(&mut [u8]), hash: fn(&[u8]) -> T) -> T {
    let mut stack = [0u8; 192];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    fill(buf);
    hash(buf)
}
