//! Shared helpers for the integration tests (real nats-server through the test kit).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::Duration;

use langtian_core::bus::{Bus, BusOptions, StreamSpec, ensure_stream};
use langtian_core::testkit::TestServer;

pub async fn server() -> TestServer {
    TestServer::start().await.expect("start nats-server")
}

pub async fn bus(url: &str) -> Bus {
    let mut o = BusOptions::new(url);
    o.request_timeout = Duration::from_secs(3);
    Bus::connect(&o).await.expect("connect")
}

pub async fn stream(bus: &Bus, name: &str, subjects: &[&str]) {
    let mut s = StreamSpec::new(name, subjects.iter().map(|s| s.to_string()).collect());
    s.duplicate_window = Duration::from_secs(120);
    ensure_stream(bus, &s).await.expect("create stream");
}

pub async fn stream_len(bus: &Bus, name: &str) -> u64 {
    let mut s = bus.jetstream().get_stream(name).await.expect("stream");
    s.info().await.expect("info").state.messages
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Calls `f` until it returns `Ok` (e.g. a service that has not subscribed yet) or `timeout`
/// passes; panics with the last error.
pub async fn retry_until<T, E, F, Fut>(timeout: Duration, mut f: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("still failing after {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
