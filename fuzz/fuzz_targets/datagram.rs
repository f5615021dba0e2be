//! A UDP datagram as the collector receives it, decoded in every format.
#![no_main]
use langtian_core::collector::{DatagramFormat, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    for f in [
        DatagramFormat::Auto,
        DatagramFormat::Envelope,
        DatagramFormat::Battery,
        DatagramFormat::JsonLines,
    ] {
        let out = Decoder::new(f, "lt.evt").decode(data, peer, 1);
        // Every datagram is accounted for: records, or errors naming what is wrong.
        assert!(
            !out.messages.is_empty()
                || !out.errors.is_empty()
                || data.iter().all(|b| b.is_ascii_whitespace())
        );
    }
});
