//! # langtian-core
//!
//! The library behind every Langtian binary and binding.
//!
//! - [`envelope`]: the event envelope (validation, protobuf encode/decode, NATS headers).
//! - [`bus`]: connecting to NATS, publishing with QoS 0/1/2, durable pull consumers with native
//!   JetStream acks, dead letters from server advisories, declarative provisioning.
//! - [`aggregate`] (feature `aggregate`): keyed latest state → 33 ms deltas + snapshots (KV).
//! - `cli` (feature `cli`): the flags, stop signal and ops address shared by the service binaries.
//! - [`console`]: the service binaries' banners and status lines (plain, or JSON log events).
//! - [`collector`]: UDP datagrams → envelopes → JetStream, with a bounded outage buffer.
//! - [`discovery`]: node registry on JetStream KV (TTL, watch, history).
//! - [`gateway`] (feature `gateway`): the browser WebSocket gateway (JWT, ACL, batching, degradation).
//! - [`lake`] (feature `lake`): DuckLake attach, exactly-once batch writes, maintenance.
//! - [`flow`] (feature `flow`): the sql-flow-compatible stream processor.
//! - [`obs`] (feature `obs`): Prometheus recorder, `/metrics` and `/healthz`.
//! - [`query`] (feature `lake`): read-only SQL on the lake over NATS (`lt.query.v1`), Arrow IPC chunks.
//! - [`natsd`]: locating and running a `nats-server` process (used by `lt up` and the test kit).
//! - [`platform`]: `lt up`, the whole platform in one process.
//! - [`sim`]: data generators.
//! - [`bench`]: benchmark programs behind `lt bench`.
//! - `testkit` (feature `testkit`): real nats-server processes and clusters for tests.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(feature = "aggregate")]
pub mod aggregate;
pub mod bench;
pub mod bus;
#[cfg(feature = "cli")]
pub mod cli;
pub mod collector;
pub mod console;
pub mod discovery;
pub mod envelope;
#[cfg(feature = "flow")]
pub mod flow;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "lake")]
pub mod lake;
pub mod natsd;
#[cfg(feature = "obs")]
pub mod obs;
pub mod platform;
pub mod proto;
#[cfg(feature = "lake")]
pub mod query;
mod serde_util;
pub mod sim;
#[cfg(test)]
mod source_scan;
#[cfg(feature = "testkit")]
pub mod testkit;

/// The async-nats version Langtian is built on, re-exported for callers of the bus API.
pub use async_nats;

/// The longest duration a setting (a flag, a pipeline file's key) may hold: one year. Longer is
/// surely a typo, and the services add these durations to clock instants, which must not
/// overflow (`--drain-timeout 500000000000years` used to panic the collector on SIGTERM).
pub const MAX_SETTING_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The longest retention a topology may give a stream, a KV bucket or the dead letters: 100
/// years of 365 days (`0` means forever). JetStream carries it in nanoseconds as an `i64`, which
/// ends at about 292 years.
pub const MAX_RETENTION: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks that the duration setting `key` is at most `max`; the error names the key, the value
/// and the limit, e.g. "`ack_wait` (2years) is longer than the limit of 365days (one year)".
pub(crate) fn check_duration_at_most(
    key: &str,
    value: std::time::Duration,
    max: std::time::Duration,
) -> Result<(), String> {
    match over_limit(value, max) {
        Some(tail) => Err(format!("`{key}` ({}) {tail}", humantime::format_duration(value))),
        None => Ok(()),
    }
}

/// The one wording of every duration limit (flags, pipeline files, topology files): `None` when
/// `value` is within `max`, else "is longer than the limit of 365days (one year)" for the caller
/// to put after the key and value it names.
pub(crate) fn over_limit(value: std::time::Duration, max: std::time::Duration) -> Option<String> {
    if value <= max {
        return None;
    }
    let days = max.as_secs() / 86_400;
    let years = match (days % 365, days / 365) {
        (0, 1) => " (one year)".to_owned(),
        (0, n) => format!(" ({n} years)"),
        _ => String::new(),
    };
    Some(format!("is longer than the limit of {days}days{years}"))
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_wording_for_every_duration_limit() {
        assert_eq!(over_limit(MAX_SETTING_DURATION, MAX_SETTING_DURATION), None);
        let year_and_a_second = MAX_SETTING_DURATION + Duration::from_secs(1);
        assert_eq!(
            over_limit(year_and_a_second, MAX_SETTING_DURATION).as_deref(),
            Some("is longer than the limit of 365days (one year)")
        );
        let e = check_duration_at_most(
            "dlq.max_age",
            Duration::from_secs(200 * 365 * 86_400),
            MAX_RETENTION,
        )
        .unwrap_err();
        assert!(e.starts_with("`dlq.max_age` (199years"), "{e}");
        assert!(
            e.ends_with(") is longer than the limit of 36500days (100 years)"),
            "{e}"
        );
        assert_eq!(
            over_limit(Duration::from_secs(3 * 86_400), Duration::from_secs(2 * 86_400)).as_deref(),
            Some("is longer than the limit of 2days")
        );
    }

    #[cfg(feature = "cli")]
    #[test]
    fn a_flag_beyond_the_limit_uses_the_same_words() {
        let flag = crate::cli::duration_arg("366days").unwrap_err();
        assert_eq!(flag, "`366days` is longer than the limit of 365days (one year)");
    }
}
