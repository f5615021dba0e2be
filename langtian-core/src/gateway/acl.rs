//! Subject checks for the gateway: is a subject (or KV key) well formed, and is everything it can
//! match covered by one of the patterns a token allows (NATS `*` / `>` wildcard rules)?

/// Longest subject a client may send.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Why a subject is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Empty, too long, an empty token, whitespace, `>` not last, or a wildcard inside a token.
    #[error("`{subject}` is not a valid subject: {reason}")]
    Invalid {
        /// The subject (cut to 64 characters).
        subject: String,
        /// Why.
        reason: &'static str,
    },
}

fn invalid(subject: &str, reason: &'static str) -> SubjectError {
    SubjectError::Invalid {
        subject: subject.chars().take(64).collect(),
        reason,
    }
}

/// Checks a subscription subject (wildcards allowed).
pub fn check_subject(s: &str) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(invalid(s, "empty"));
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(invalid(s, "longer than 256 bytes"));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(s, "empty token"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(s, "whitespace or control character"));
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err(invalid(s, "a wildcard must be a whole token"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(invalid(s, "`>` must be the last token"));
        }
    }
    Ok(())
}

/// Checks a literal subject (no wildcards), e.g. a KV key.
pub fn check_literal(s: &str) -> Result<(), SubjectError> {
    check_subject(s)?;
    if s.split('.').any(|t| t == "*" || t == ">") {
        return Err(invalid(s, "wildcards are not allowed here"));
    }
    Ok(())
}

/// Whether every subject `requested` can match is matched by `allowed`.
///
/// ```
/// use langtian_core::gateway::acl::covers;
/// assert!(covers("xy.md.>", "xy.md.tick.shfe.*"));
/// assert!(covers("xy.md.*.shfe.>", "xy.md.tick.shfe.3"));
/// assert!(!covers("xy.md.tick.shfe.>", "xy.md.tick.*.>"), "other venues too");
/// assert!(!covers("xy.md.*", "xy.md.>"));
/// ```
pub fn covers(allowed: &str, requested: &str) -> bool {
    let a: Vec<&str> = allowed.split('.').collect();
    let r: Vec<&str> = requested.split('.').collect();
    for (i, at) in a.iter().enumerate() {
        if *at == ">" {
            // `>` needs at least one more token in the request.
            return r.len() > i;
        }
        let Some(rt) = r.get(i) else {
            return false;
        };
        match *at {
            "*" => {
                if *rt == ">" {
                    return false;
                }
            }
            lit => {
                if *rt != lit {
                    return false;
                }
            }
        }
    }
    a.len() == r.len()
}

/// Whether any of `patterns` covers `requested`.
pub fn allowed_by(patterns: &[String], requested: &str) -> bool {
    patterns.iter().any(|p| covers(p, requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("xy.md.tick.>").is_ok());
        assert!(check_subject("xy.*.tick").is_ok());
        for bad in ["", "a..b", "a.>.b", "a b", "a.b*", ".a", "a.", "a.>x"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        assert!(check_subject(&"a.".repeat(200)).is_err());
        assert!(check_literal("xy.md.snapshot.shfe").is_ok());
        assert!(check_literal("xy.md.snapshot.*").is_err());
    }

    #[test]
    fn coverage_follows_nats_wildcards() {
        assert!(covers(">", "anything.at.all"));
        assert!(covers("xy.md.>", "xy.md.snapshot"));
        assert!(!covers("xy.md.>", "xy.md"));
        assert!(covers("xy.*.tick", "xy.md.tick"));
        assert!(covers("xy.*.tick", "xy.*.tick"));
        assert!(!covers("xy.*.tick", "xy.>"));
        assert!(!covers("xy.md.tick", "xy.md.*"));
        assert!(!covers("xy.md.tick", "xy.md.tick.extra"));
        assert!(!covers("xy.md.tick.extra", "xy.md.tick"));
        assert!(allowed_by(
            &["lt.md.>".into(), "xy.md.>".into()],
            "xy.md.tick.shfe.0"
        ));
        assert!(!allowed_by(&["lt.md.>".into()], "lt.evt.battery.x"));
        assert!(!allowed_by(&[], "xy.md.tick"));
    }
}
