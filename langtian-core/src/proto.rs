//! Rust types generated from `proto/` at build time (prost + protox, no `protoc`).
#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// `langtian.envelope.v1`
pub mod envelope {
    /// Version 1 of the envelope contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/langtian.envelope.v1.rs"));
    }
}

/// `langtian.battery.v1`
pub mod battery {
    /// Version 1 of the battery cycler contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/langtian.battery.v1.rs"));
    }
}

/// `langtian.md.v1`
pub mod md {
    /// Version 1 of the market data contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/langtian.md.v1.rs"));
    }
}

/// `langtian.gateway.v1`
pub mod gateway {
    /// Version 1 of the WebSocket frames between clients and lt-gateway.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/langtian.gateway.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every contract, for decoding by message type at run time.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/langtian_descriptors.bin"));
