//! The stream processor: sql-flow-compatible pipeline files with a native JetStream source and an
//! exactly-once DuckLake sink.
//!
//! - [`config`]: templated, strictly parsed pipeline files.
//! - [`handler`]: JSON / protobuf payloads → Arrow relation `batch` → DuckDB SQL.

pub mod config;
pub mod handler;
pub mod runner;
