//! SPIFFE ID validation, after the SPIFFE ID specification (section 2).

/// Checks `id` against the SPIFFE ID rules; the error says which rule failed.
pub fn validate(id: &str) -> Result<(), String> {
    if is_valid(id) {
        Ok(())
    } else {
        explain(id)
    }
}

/// The same rules in one pass over the bytes, without saying which failed:
/// every event carries a workload id, and nearly all of them are valid.
fn is_valid(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else { return false };
    if id.len() > 2048 {
        return false;
    }
    let bytes = rest.as_bytes();
    let domain = bytes.iter().take_while(|&&b| CLASS[usize::from(b)] & DOMAIN != 0).count();
    match bytes.get(domain) {
        _ if domain == 0 => false,
        None => true,
        Some(b'/') => path_is_valid(&bytes[domain + 1..]),
        Some(_) => false,
    }
}

/// Segments separated by `/`, none empty, `.` or `..`, each of letters,
/// digits, `.`, `_` and `-`.
fn path_is_valid(path: &[u8]) -> bool {
    let mut start = 0;
    for (i, &b) in path.iter().enumerate() {
        if b == b'/' {
            if !segment_is_valid(&path[start..i]) {
                return false;
            }
            start = i + 1;
        } else if CLASS[usize::from(b)] & PATH == 0 {
            return false;
        }
    }
    segment_is_valid(&path[start..])
}

fn segment_is_valid(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

/// Which bytes a trust domain ([`DOMAIN`]) and a path segment ([`PATH`]) may hold.
static CLASS: [u8; 256] = classes();
const DOMAIN: u8 = 1;
const PATH: u8 = 2;

const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let common = matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
        table[i] = if common { DOMAIN | PATH } else if b.is_ascii_uppercase() { PATH } else { 0 };
        i += 1;
    }
    table
}

/// Which rule `id` breaks, for the error message.
fn explain(id: &str) -> Result<(), String> {
    if id.len() > 2048 {
        return Err(format!("is {} bytes, over the 2048-byte limit", id.len()));
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("`{id}` does not start with `spiffe://`"))?;
    if rest.contains(['?', '#']) {
        return Err(format!("`{id}` has a query or fragment"));
    }
    let (domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if domain.is_empty() {
        return Err(format!("`{id}` has an empty trust domain"));
    }
    if domain.contains(':') {
        return Err(format!("`{id}` has a port in its trust domain"));
    }
    if let Some(c) = domain.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-')) {
        return Err(format!("trust domain `{domain}` has `{c}`; only lowercase letters, digits, `.`, `_` and `-` are allowed"));
    }
    if path.is_empty() {
        return Ok(());
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err(format!("`{id}` has an empty path segment")),
            "." | ".." => return Err(format!("`{id}` has a `{segment}` path segment")),
            _ => {}
        }
        if let Some(c) = segment.chars().find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-')) {
            return Err(format!("path segment `{segment}` has `{c}`; only letters, digits, `.`, `_` and `-` are allowed"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_valid_ids() {
        for id in ["spiffe://example.org", "spiffe://prod.acme-corp/ns/agents/sa/billing-bot", "spiffe://a_b.c/x.y/Z-9"] {
            assert_eq!(validate(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_each_broken_rule() {
        let cases = [
            ("http://example.org/x", "does not start"),
            ("spiffe:///path", "empty trust domain"),
            ("spiffe://Example.org/x", "`E`"),
            ("spiffe://example.org:8443/x", "port"),
            ("spiffe://example.org/a//b", "empty path segment"),
            ("spiffe://example.org/a/", "empty path segment"),
            ("spiffe://example.org/a/../b", "`..`"),
            ("spiffe://example.org/./b", "`.`"),
            ("spiffe://example.org/a?x=1", "query"),
            ("spiffe://example.org/a#f", "fragment"),
            ("spiffe://example.org/a b", "` `"),
        ];
        for (id, needle) in cases {
            let err = validate(id).err().unwrap_or_default();
            assert!(err.contains(needle), "{id}: `{err}` lacks `{needle}`");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(validate(&long).is_err());
    }

    proptest::proptest! {
        /// The one-pass check accepts exactly what the explaining one accepts.
        #[test]
        fn the_fast_check_agrees_with_the_rules(id in "(spiffe://|spiffe:/|http://)?[a-zA-Z0-9._/:?# -]{0,24}") {
            proptest::prop_assert_eq!(super::is_valid(&id), super::explain(&id).is_ok(), "{}", id);
        }

        #[test]
        fn the_fast_check_agrees_on_near_valid_ids(id in "spiffe://[a-z0-9._A-]{0,6}(/[a-zA-Z0-9._ -]{0,3}){0,4}") {
            proptest::prop_assert_eq!(super::is_valid(&id), super::explain(&id).is_ok(), "{}", id);
        }
    }
}
