//! A pipeline file (sql-flow YAML with Jinja variables) as `lt-flow` reads it.
#![no_main]
use std::collections::BTreeMap;

use langtian_core::flow::config::PipelineFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = PipelineFile::from_str("fuzz.yml", text, &BTreeMap::new()) {
        // What validation accepts, the runner can use: its durations convert and add to a clock.
        let now = std::time::Instant::now();
        let _ = now + f.pipeline.flush_interval() + f.pipeline.drain_deadline();
        if let Some(n) = &f.pipeline.source.nats {
            let _ = now + n.ack_wait + n.fetch.expires;
        }
        if let Some(d) = &f.pipeline.sink.ducklake {
            let _ = now + d.maintenance_interval;
        }
    }
});
