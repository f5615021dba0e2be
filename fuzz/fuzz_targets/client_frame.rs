//! A WebSocket binary frame from a browser to the gateway.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = langtian_core::gateway::decode_client(data);
});
