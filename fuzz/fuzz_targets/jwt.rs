//! A token a client presents to the gateway (HS256 verifier with a fixed key).
#![no_main]
use langtian_core::gateway::auth::{JwtConfig, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(v) = Verifier::new(&JwtConfig::hs256(b"fuzz-secret-0123456789abcdef".to_vec())) else {
        return;
    };
    // Without the key nothing can be valid; any error is typed, never a panic.
    assert!(v.verify(token).is_err());
});
