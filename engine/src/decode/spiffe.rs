//! SPIFFE ID validation, after the SPIFFE ID specification (section 2).

/// Checks `id` against the SPIFFE ID rules; the error says which rule failed.
pub fn validate(id: &str) -> Result<(), String> {
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
}
