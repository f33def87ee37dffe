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
    let domain = bytes.iter().position(|b| *b == b'/').unwrap_or(bytes.len());
    if domain == 0 || !bytes[..domain].iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-')) {
        return false;
    }
    if domain == bytes.len() {
        return true;
    }
    bytes[domain + 1..].split(|b| *b == b'/').all(|segment| {
        !matches!(segment, b"" | b"." | b"..")
            && segment.iter().all(|b| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
    })
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
