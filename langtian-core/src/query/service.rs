//! The NATS side of the query service: a queue subscription on `lt.query.v1`, a few queries at
//! a time on blocking threads, chunks published to the reply subject as they are produced.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument as _;

use super::exec::{Limits, execute};
use super::{
    ErrorCode, HEADER_CHUNK, HEADER_ERROR, HEADER_LAST, HEADER_ROWS, HEADER_TRUNCATED, QUERY_SUBJECT,
    QueryError, QueryFailure, QueryRequest,
};
use crate::bus::Bus;
use crate::lake::{Lake, LakeConfig};

/// Settings of the query service.
#[derive(Debug, Clone)]
pub struct QueryServiceConfig {
    /// Request subject.
    pub subject: String,
    /// Queue group (several instances share the load).
    pub queue_group: String,
    /// Queries running at once.
    pub max_concurrent: usize,
    /// Row limit when the request sets none, and the cap of any request.
    pub max_rows: u64,
    /// Byte limit when the request sets none, and the cap.
    pub max_bytes: u64,
    /// Timeout when the request sets none.
    pub default_timeout: Duration,
    /// Longest timeout a request may ask for.
    pub max_timeout: Duration,
}

impl Default for QueryServiceConfig {
    fn default() -> Self {
        Self {
            subject: QUERY_SUBJECT.into(),
            queue_group: "lt-query".into(),
            max_concurrent: 2,
            max_rows: 10_000_000,
            max_bytes: 2 << 30,
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(600),
        }
    }
}

/// A query service setting that cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query service setting `{key}`: {reason}")]
pub struct QueryConfigError {
    /// The setting, e.g. `max_concurrent`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl QueryServiceConfig {
    /// Checks the settings: a subject and queue group NATS accepts, limits of at least 1, a
    /// default timeout above 0 and no longer than the longest a request may ask for.
    ///
    /// ```
    /// use langtian_core::query::QueryServiceConfig;
    /// assert!(QueryServiceConfig::default().validate().is_ok());
    /// let e = QueryServiceConfig { max_concurrent: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(e.key, "max_concurrent");
    /// ```
    pub fn validate(&self) -> Result<(), QueryConfigError> {
        let bad = |key, reason: String| Err(QueryConfigError { key, reason });
        let token_ok = |t: &str| !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c.is_control());
        if !self.subject.split('.').all(token_ok) {
            return bad(
                "subject",
                format!(
                    "`{}` is not a NATS subject (empty token or whitespace)",
                    self.subject
                ),
            );
        }
        if !token_ok(&self.queue_group) || self.queue_group.contains('.') {
            return bad(
                "queue_group",
                format!(
                    "`{}` is not a queue group name (empty, a dot or whitespace)",
                    self.queue_group
                ),
            );
        }
        for (key, v) in [
            ("max_concurrent", self.max_concurrent as u64),
            ("max_rows", self.max_rows),
            ("max_bytes", self.max_bytes),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1, got 0".into());
            }
        }
        if self.default_timeout.is_zero() {
            return bad(
                "default_timeout",
                "must be above 0 (every query would time out)".into(),
            );
        }
        if self.default_timeout > self.max_timeout {
            return bad(
                "default_timeout",
                format!(
                    "{:?} is longer than max_timeout {:?}",
                    self.default_timeout, self.max_timeout
                ),
            );
        }
        Ok(())
    }
}

/// Serves read-only queries on one lake.
#[derive(Debug)]
pub struct QueryService {
    bus: Bus,
    lake: LakeConfig,
    cfg: QueryServiceConfig,
}

type SharedLake = Arc<Mutex<Option<Lake>>>;

impl QueryService {
    /// A service for `lake` (opened on the first query; in a process that already writes the
    /// lake, it shares that DuckDB instance, see [`Lake::open`]).
    pub fn new(bus: Bus, lake: LakeConfig, cfg: QueryServiceConfig) -> Self {
        Self { bus, lake, cfg }
    }

    /// Serves until `stop` turns true; queries in progress finish first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), QueryError> {
        let client = self.bus.client().clone();
        let mut sub = client
            .queue_subscribe(self.cfg.subject.clone(), self.cfg.queue_group.clone())
            .await
            .map_err(|e| QueryError::Nats(format!("subscribing to {}: {e}", self.cfg.subject)))?;
        let permits = Arc::new(Semaphore::new(self.cfg.max_concurrent.max(1)));
        let lake: SharedLake = Arc::new(Mutex::new(None));
        let cfg = Arc::new(self.cfg);
        let lake_cfg = Arc::new(self.lake);
        let chunk_bytes = self.bus.max_payload().saturating_sub(8 * 1024).max(16 * 1024);
        let mut running = tokio::task::JoinSet::new();
        loop {
            let msg = tokio::select! {
                m = sub.next() => match m { Some(m) => m, None => break },
                _ = stop.wait_for(|s| *s) => break,
            };
            let Some(reply) = msg.reply.clone() else {
                tracing::debug!("query request without a reply subject ignored");
                continue;
            };
            let permit = match permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            let (client, cfg, lake, lake_cfg) = (client.clone(), cfg.clone(), lake.clone(), lake_cfg.clone());
            let span = tracing::info_span!("query", reply = %reply);
            running.spawn(
                async move {
                    let _permit = permit;
                    answer(
                        &client,
                        reply.to_string(),
                        &msg.payload,
                        &cfg,
                        lake,
                        lake_cfg,
                        chunk_bytes,
                    )
                    .await;
                }
                .instrument(span),
            );
            while running.try_join_next().is_some() {}
        }
        let _ = sub.unsubscribe().await;
        while running.join_next().await.is_some() {}
        Ok(())
    }
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.as_str());
    }
    h
}

async fn send_error(client: &async_nats::Client, reply: String, chunk: u64, f: &QueryFailure) {
    let body = serde_json::to_vec(f).unwrap_or_default();
    let h = headers(&[
        (HEADER_CHUNK, chunk.to_string()),
        (HEADER_LAST, "1".into()),
        (HEADER_ERROR, f.code.as_str().to_owned()),
    ]);
    if let Err(e) = client.publish_with_headers(reply, h, body.into()).await {
        tracing::warn!(code = "reply_failed", error = %e, "sending a query error failed");
    }
}

async fn answer(
    client: &async_nats::Client,
    reply: String,
    payload: &Bytes,
    cfg: &QueryServiceConfig,
    lake: SharedLake,
    lake_cfg: Arc<LakeConfig>,
    chunk_bytes: usize,
) {
    let req: QueryRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            let f = QueryFailure::new(ErrorCode::BadRequest, format!("request is not a query JSON: {e}"));
            return send_error(client, reply, 0, &f).await;
        }
    };
    #[cfg(feature = "obs")]
    metrics::counter!("query_requests").increment(1);
    let started = std::time::Instant::now();
    let limits = Limits {
        max_rows: req.max_rows.unwrap_or(cfg.max_rows).min(cfg.max_rows),
        max_bytes: req.max_bytes.unwrap_or(cfg.max_bytes).min(cfg.max_bytes),
        timeout: req.timeout().unwrap_or(cfg.default_timeout).min(cfg.max_timeout),
        chunk_bytes,
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let work = tokio::task::spawn_blocking(move || {
        let conn = {
            let mut guard = lake
                .lock()
                .map_err(|_| QueryFailure::new(ErrorCode::Unavailable, "lake handle poisoned"))?;
            if guard.is_none() {
                let opened = Lake::open((*lake_cfg).clone())
                    .map_err(|e| QueryFailure::new(ErrorCode::Unavailable, e.to_string()))?;
                *guard = Some(opened);
            }
            match guard.as_ref() {
                Some(l) => l
                    .connection()
                    .try_clone()
                    .map_err(|e| QueryFailure::new(ErrorCode::Unavailable, e.to_string()))?,
                None => return Err(QueryFailure::new(ErrorCode::Unavailable, "lake not open")),
            }
        };
        execute(&conn, &req, limits, &mut |chunk| tx.blocking_send(chunk).is_ok())
    });
    let mut index = 0u64;
    // Hold one chunk back so the last one can carry the trailer headers.
    let mut held: Option<Vec<u8>> = None;
    while let Some(chunk) = rx.recv().await {
        if let Some(prev) = held.replace(chunk) {
            let h = headers(&[(HEADER_CHUNK, index.to_string())]);
            if let Err(e) = client.publish_with_headers(reply.clone(), h, prev.into()).await {
                tracing::warn!(code = "reply_failed", error = %e, "sending a query chunk failed");
                return;
            }
            index += 1;
        }
    }
    let outcome = match work.await {
        Ok(r) => r,
        Err(e) => Err(QueryFailure::new(
            ErrorCode::Execution,
            format!("query task failed: {e}"),
        )),
    };
    match outcome {
        Ok(done) => {
            let mut pairs = vec![
                (HEADER_CHUNK, index.to_string()),
                (HEADER_LAST, "1".to_owned()),
                (HEADER_ROWS, done.rows.to_string()),
            ];
            if let Some(t) = done.truncated {
                pairs.push((HEADER_TRUNCATED, t.to_owned()));
            }
            let body = held.unwrap_or_default();
            if let Err(e) = client
                .publish_with_headers(reply, headers(&pairs), body.into())
                .await
            {
                tracing::warn!(code = "reply_failed", error = %e, "sending the last query chunk failed");
            }
            tracing::debug!(
                rows = done.rows,
                chunks = index + 1,
                ms = started.elapsed().as_millis() as u64,
                "query answered"
            );
        }
        Err(f) => {
            #[cfg(feature = "obs")]
            metrics::counter!("query_errors", "code" => f.code.as_str()).increment(1);
            tracing::info!(code = f.code.as_str(), message = %f.message, "query failed");
            send_error(client, reply, index, &f).await;
        }
    }
    #[cfg(feature = "obs")]
    metrics::histogram!("query_latency").record(started.elapsed().as_secs_f64());
}
