//! Subjects and subscription patterns from clients (subscribe frames) and JWT claims.
#![no_main]
use langtian_core::gateway::acl::{allowed_by, check_literal, check_subject, covers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (a, b) = s.split_once('\n').unwrap_or((s, s));
    let _ = check_subject(a);
    let _ = check_literal(b);
    if check_subject(a).is_ok() && check_subject(b).is_ok() {
        // A pattern covers itself; a pattern list allows what one of its patterns covers.
        assert!(covers(a, a));
        assert_eq!(allowed_by(&[a.to_owned()], b), covers(a, b));
    }
});
