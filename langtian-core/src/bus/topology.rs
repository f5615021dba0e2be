use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use serde::Deserialize;

use super::error::api;
use super::{Bus, BusError, ConsumerSpec, DlqConfig};
use crate::{MAX_RETENTION, MAX_SETTING_DURATION, check_duration_at_most};

/// Storage backend of a stream or bucket.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk (default).
    #[default]
    File,
    /// In memory.
    Memory,
}

impl From<Storage> for stream::StorageType {
    fn from(s: Storage) -> Self {
        match s {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        }
    }
}

/// A stream as declared in a topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// File (default) or memory.
    #[serde(default)]
    pub storage: Storage,
    /// Replicas (1 or 3 in a cluster).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Max age of messages (0 = unlimited).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Duration,
    /// Max total bytes (-1 = unlimited).
    #[serde(default = "minus_one")]
    pub max_bytes: i64,
    /// Max messages (-1 = unlimited).
    #[serde(default = "minus_one")]
    pub max_msgs: i64,
    /// Max messages kept per subject (-1 = unlimited); 1 keeps only each subject's latest, as
    /// reference data wants (JetStream drops the older one when a newer arrives).
    #[serde(default = "minus_one")]
    pub max_msgs_per_subject: i64,
    /// De-duplication window for `Nats-Msg-Id` (0 = server default of 2 minutes).
    #[serde(default, with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Discard new messages instead of old ones when full.
    #[serde(default)]
    pub discard_new: bool,
    /// Allow direct get (reads from any replica).
    #[serde(default)]
    pub allow_direct: bool,
}

fn one() -> usize {
    1
}
fn minus_one() -> i64 {
    -1
}

impl StreamSpec {
    /// A file stream with defaults.
    pub fn new(name: impl Into<String>, subjects: Vec<String>) -> Self {
        Self {
            name: name.into(),
            subjects,
            storage: Storage::File,
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_msgs: -1,
            max_msgs_per_subject: -1,
            duplicate_window: Duration::ZERO,
            discard_new: false,
            allow_direct: false,
        }
    }

    /// The server-side stream configuration.
    pub fn server_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: self.storage.into(),
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: self.max_msgs,
            max_messages_per_subject: self.max_msgs_per_subject,
            duplicate_window: self.duplicate_window,
            discard: if self.discard_new {
                stream::DiscardPolicy::New
            } else {
                stream::DiscardPolicy::Old
            },
            allow_direct: self.allow_direct,
            ..Default::default()
        }
    }
}

/// A KV bucket as declared in a topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSpec {
    /// Bucket name.
    pub bucket: String,
    /// Revisions kept per key (1..=64).
    #[serde(default = "one_i64")]
    pub history: i64,
    /// Entry lifetime (0 = forever); for discovery this is the node TTL.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Duration,
    /// File (default) or memory.
    #[serde(default)]
    pub storage: Storage,
    /// Replicas.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Keep a delete marker for this long when `max_age` expires an entry, so watchers see the
    /// expiry (server 2.11+). `None` = no markers.
    #[serde(default, with = "humantime_serde")]
    pub limit_markers: Option<Duration>,
}

fn one_i64() -> i64 {
    1
}

impl KvSpec {
    /// The server-side bucket configuration.
    pub fn server_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.bucket.clone(),
            history: self.history,
            max_age: self.max_age,
            storage: self.storage.into(),
            num_replicas: self.replicas,
            limit_markers: self.limit_markers,
            ..Default::default()
        }
    }
}

/// Streams, consumers and KV buckets to provision, usually from a YAML file.
///
/// Provisioning is an explicit admin step (`lt up`, `Topology::apply`), never part of the data
/// path: publishers and consumers only bind to what exists.
///
/// ```
/// use langtian_core::bus::Topology;
/// let t = Topology::from_yaml_str("inline", r#"
/// streams:
///   - name: LT_EVENTS
///     subjects: ["lt.evt.>"]
///     duplicate_window: 2m
/// consumers:
///   - stream: LT_EVENTS
///     durable: lake-writer
///     max_deliver: 5
/// kv:
///   - bucket: lt_nodes
///     history: 5
///     max_age: 15s
///     limit_markers: 1m
/// "#)?;
/// assert_eq!(t.streams[0].duplicate_window.as_secs(), 120);
/// # Ok::<(), langtian_core::bus::BusError>(())
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Streams.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// Durable pull consumers.
    #[serde(default)]
    pub consumers: Vec<ConsumerSpec>,
    /// KV buckets.
    #[serde(default)]
    pub kv: Vec<KvSpec>,
    /// Dead-letter streams (advisory capture + `LT_DLQ`).
    #[serde(default)]
    pub dlq: Option<DlqConfig>,
}

/// The default topology shipped with Langtian (`config/topology.yaml`).
pub const DEFAULT_TOPOLOGY_YAML: &str = include_str!("../../../config/topology.yaml");

impl Topology {
    /// Parses YAML; errors name the file, the key path and the line.
    pub fn from_yaml_str(file: &str, text: &str) -> Result<Self, BusError> {
        let t: Topology = serde_yaml_ng::from_str(text).map_err(|e| BusError::Topology {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        t.validate(file)?;
        Ok(t)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, BusError> {
        let text = std::fs::read_to_string(path).map_err(|e| BusError::Topology {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_yaml_str(&path.display().to_string(), &text)
    }

    /// The built-in default topology.
    pub fn default_topology() -> Result<Self, BusError> {
        Self::from_yaml_str("config/topology.yaml (built in)", DEFAULT_TOPOLOGY_YAML)
    }

    fn validate(&self, file: &str) -> Result<(), BusError> {
        let err = |reason: String| BusError::Topology {
            file: file.to_owned(),
            reason,
        };
        for (i, s) in self.streams.iter().enumerate() {
            if s.name.is_empty() || s.name.contains(['.', '*', '>', ' ']) {
                return Err(err(format!(
                    "streams[{i}].name `{}` is not a valid stream name",
                    s.name
                )));
            }
            if s.subjects.is_empty() {
                return Err(err(format!(
                    "streams[{i}].subjects is empty (stream `{}`)",
                    s.name
                )));
            }
            let named = |r: String| err(format!("{r} (stream `{}`)", s.name));
            if s.max_msgs_per_subject == 0 || s.max_msgs_per_subject < -1 {
                return Err(named(format!(
                    "streams[{i}].max_msgs_per_subject is {}: use -1 (unlimited) or at least 1",
                    s.max_msgs_per_subject
                )));
            }
            check_duration_at_most(&format!("streams[{i}].max_age"), s.max_age, MAX_RETENTION)
                .map_err(named)?;
            check_duration_at_most(
                &format!("streams[{i}].duplicate_window"),
                s.duplicate_window,
                MAX_SETTING_DURATION,
            )
            .map_err(named)?;
        }
        for (i, c) in self.consumers.iter().enumerate() {
            c.validate()
                .map_err(|r| err(format!("consumers[{i}] ({}/{}): {r}", c.stream, c.durable)))?;
        }
        for (i, k) in self.kv.iter().enumerate() {
            if !(1..=64).contains(&k.history) {
                return Err(err(format!(
                    "kv[{i}].history must be 1..=64 (bucket `{}`)",
                    k.bucket
                )));
            }
            let named = |r: String| err(format!("{r} (bucket `{}`)", k.bucket));
            check_duration_at_most(&format!("kv[{i}].max_age"), k.max_age, MAX_RETENTION).map_err(named)?;
            if let Some(m) = k.limit_markers {
                check_duration_at_most(&format!("kv[{i}].limit_markers"), m, MAX_SETTING_DURATION)
                    .map_err(named)?;
            }
        }
        if let Some(d) = &self.dlq {
            check_duration_at_most("dlq.max_age", d.max_age, MAX_RETENTION).map_err(err)?;
        }
        Ok(())
    }

    /// Creates or updates everything, streams first. Returns a line per object.
    pub async fn apply(&self, bus: &Bus) -> Result<Vec<String>, BusError> {
        let mut report = Vec::new();
        if let Some(d) = &self.dlq {
            for s in d.stream_specs() {
                report.push(ensure_stream(bus, &s).await?);
            }
        }
        for s in &self.streams {
            report.push(ensure_stream(bus, s).await?);
        }
        for c in &self.consumers {
            report.push(ensure_consumer(bus, c).await?);
        }
        if let Some(d) = &self.dlq {
            report.push(ensure_consumer(bus, &d.forwarder_spec()).await?);
        }
        for k in &self.kv {
            report.push(ensure_kv(bus, k).await?);
        }
        Ok(report)
    }
}

/// Creates the stream, or updates it to `spec` when it exists.
pub async fn ensure_stream(bus: &Bus, spec: &StreamSpec) -> Result<String, BusError> {
    let js = bus.jetstream();
    let what = || format!("stream `{}`", spec.name);
    let exists = js.get_stream(&spec.name).await.is_ok();
    js.create_or_update_stream(spec.server_config())
        .await
        .map_err(|e| BusError::Provision {
            what: what(),
            reason: e.to_string(),
        })?;
    Ok(format!(
        "{} {}",
        if exists { "updated" } else { "created" },
        what()
    ))
}

/// Creates the durable consumer, or updates it to `spec` when it exists.
pub async fn ensure_consumer(bus: &Bus, spec: &ConsumerSpec) -> Result<String, BusError> {
    spec.validate().map_err(|reason| BusError::Provision {
        what: format!("consumer `{}` on `{}`", spec.durable, spec.stream),
        reason,
    })?;
    let js = bus.jetstream();
    let stream = js.get_stream(&spec.stream).await.map_err(|e| match e.kind() {
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
        {
            BusError::UnknownStream {
                stream: spec.stream.clone(),
            }
        }
        _ => api(format!("reading stream `{}`", spec.stream))(e.to_string()),
    })?;
    let existing = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&spec.durable)
        .await
        .ok();
    let exists = existing.is_some();
    if let Some(c) = existing {
        let have = c.cached_info().config.ack_policy;
        let want = spec.server_config().ack_policy;
        if have != want {
            return Err(BusError::Provision {
                what: format!("consumer `{}` on `{}`", spec.durable, spec.stream),
                reason: format!(
                    "it exists with ack policy {have:?} but the spec asks for {want:?}; JetStream cannot change a consumer's ack policy — delete the consumer (`nats consumer rm {} {}`) and provision again (a flow resumes from the lake's committed offsets)",
                    spec.stream, spec.durable
                ),
            });
        }
    }
    stream
        .create_consumer(spec.server_config())
        .await
        .map_err(|e| BusError::Provision {
            what: format!("consumer `{}` on `{}`", spec.durable, spec.stream),
            reason: e.to_string(),
        })?;
    Ok(format!(
        "{} consumer `{}` on `{}`",
        if exists { "updated" } else { "created" },
        spec.durable,
        spec.stream
    ))
}

/// Creates the KV bucket, or updates it to `spec` when it exists.
pub async fn ensure_kv(bus: &Bus, spec: &KvSpec) -> Result<String, BusError> {
    let js = bus.jetstream();
    let exists = js.get_key_value(&spec.bucket).await.is_ok();
    js.create_or_update_key_value(spec.server_config())
        .await
        .map_err(|e| BusError::Provision {
            what: format!("KV bucket `{}`", spec.bucket),
            reason: e.to_string(),
        })?;
    Ok(format!(
        "{} KV bucket `{}`",
        if exists { "updated" } else { "created" },
        spec.bucket
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topology_parses() {
        let t = Topology::default_topology().unwrap();
        assert!(t.streams.iter().any(|s| s.name == "LT_EVENTS"));
        assert!(t.kv.iter().any(|k| k.bucket == "lt_nodes"));
    }

    #[test]
    fn durations_beyond_their_limit_are_named() {
        let cases = [
            (
                "streams:\n  - name: A\n    subjects: [a]\n    max_age: 36501days\n",
                "streams[0].max_age",
                "stream `A`",
            ),
            (
                "streams:\n  - name: A\n    subjects: [a]\n    duplicate_window: 400d\n",
                "streams[0].duplicate_window",
                "stream `A`",
            ),
            (
                "kv:\n  - bucket: b\n    max_age: 100000000years\n",
                "kv[0].max_age",
                "bucket `b`",
            ),
            (
                "kv:\n  - bucket: b\n    limit_markers: 2years\n",
                "kv[0].limit_markers",
                "bucket `b`",
            ),
            (
                "consumers:\n  - stream: S\n    durable: d\n    ack_wait: 2years\n",
                "ack_wait",
                "S/d",
            ),
            (
                "consumers:\n  - stream: S\n    durable: d\n    backoff: [1s, 1000years]\n",
                "backoff[1]",
                "S/d",
            ),
            (
                "consumers:\n  - stream: S\n    durable: d\n    ack_wait_backoff: [5000years]\n",
                "ack_wait_backoff[0]",
                "S/d",
            ),
            (
                "consumers:\n  - stream: S\n    durable: d\n    heartbeat: 2years\n",
                "heartbeat",
                "S/d",
            ),
            ("dlq:\n  max_age: 200years\n", "dlq.max_age", "limit of 36500days"),
        ];
        for (yaml, key, context) in cases {
            let err = Topology::from_yaml_str("t.yaml", yaml).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{yaml}: {err}");
            assert!(err.contains(context), "{yaml}: {err}");
            assert!(err.contains("longer than the limit"), "{yaml}: {err}");
        }
        // At the limits: accepted (a year for timeouts, a century for retention).
        let ok =
            "streams:\n  - name: A\n    subjects: [a]\n    max_age: 36500days\n    duplicate_window: 365d\n";
        Topology::from_yaml_str("t.yaml", ok).unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = Topology::from_yaml_str(
            "t.yaml",
            "streams:\n  - name: A\n    subjects: [a]\n    replica: 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.yaml"), "{err}");
        assert!(err.contains("replica"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = Topology::from_yaml_str("t", "streams:\n  - name: A.B\n    subjects: [a]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("streams[0].name"), "{err}");
        let err = Topology::from_yaml_str(
            "t",
            "consumers:\n  - stream: S\n    durable: d\n    max_ack_pending: 5\n    fetch_batch: 10\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_ack_pending"), "{err}");
    }
}
