//! An envelope as it arrives from NATS or a datagram.
#![no_main]
use langtian_core::envelope::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::decode(data) {
        // What decodes re-encodes and decodes to the same envelope.
        let again = Envelope::decode(&e.encode()).expect("a re-encoded envelope decodes");
        assert_eq!(again, e);
    }
});
