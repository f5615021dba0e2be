//! A topology file (streams, consumers, KV buckets, DLQ) as `lt topology apply` and `lt up` read it.
#![no_main]
use langtian_core::bus::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Topology::from_yaml_str("fuzz.yaml", text) {
        // What validation accepts turns into the JetStream API requests sent to the server.
        for s in &t.streams {
            let _ = serde_json::to_vec(&s.server_config());
        }
        for c in &t.consumers {
            let _ = serde_json::to_vec(&c.server_config());
        }
        for k in &t.kv {
            let _ = k.server_config();
        }
        if let Some(d) = &t.dlq {
            for s in d.stream_specs() {
                let _ = serde_json::to_vec(&s.server_config());
            }
            let _ = serde_json::to_vec(&d.forwarder_spec().server_config());
        }
    }
});
