//! The two record kinds the aggregator keeps — market ticks and battery channel samples — and
//! their delta/snapshot messages (`langtian.md.v1.Delta`/`Snapshot`,
//! `langtian.battery.v1.ChannelDelta`/`ChannelSnapshot`).

use prost::Message;

use super::state::{GroupSnapshot, Keyed, ShardDelta};
use crate::proto::battery::v1::{ChannelDelta, ChannelSample, ChannelSnapshot};
use crate::proto::md::v1::{Delta, Snapshot, Tick};

/// A delta or snapshot that could not be decoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("undecodable {what}: {reason}")]
pub struct MessageError {
    /// Which message.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

/// A decoded delta: its group, its shard's change and its time.
pub type DecodedDelta<R> = (String, ShardDelta<R>, i64);
/// A decoded snapshot: its group, the state and its time.
pub type DecodedSnapshot<R> = (String, GroupSnapshot<R>, i64);

/// A record with its delta and snapshot messages.
pub trait MdRecord: Keyed + Message + Default + PartialEq + Send + Sync + 'static {
    /// Encodes a delta of `group`.
    fn encode_delta(group: &str, d: &ShardDelta<Self>, ts: i64) -> Vec<u8>;
    /// Decodes a delta.
    fn decode_delta(bytes: &[u8]) -> Result<DecodedDelta<Self>, MessageError>;
    /// Encodes a snapshot of `group`.
    fn encode_snapshot(group: &str, s: &GroupSnapshot<Self>, ts: i64) -> Vec<u8>;
    /// Decodes a snapshot.
    fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<Self>, MessageError>;
}

impl Keyed for Tick {
    fn key(&self) -> String {
        format!("{}.{}", self.venue, self.symbol)
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ts(&self) -> i64 {
        self.ts_exchange
    }
}

impl Keyed for ChannelSample {
    fn key(&self) -> String {
        format!("{}/{}", self.device_id, self.channel)
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ts(&self) -> i64 {
        self.ts_device
    }
}

fn err(what: &'static str) -> impl FnOnce(prost::DecodeError) -> MessageError {
    move |e| MessageError {
        what,
        reason: e.to_string(),
    }
}

impl MdRecord for Tick {
    fn encode_delta(group: &str, d: &ShardDelta<Self>, ts: i64) -> Vec<u8> {
        Delta {
            group: group.to_owned(),
            shard: d.shard,
            version: d.version,
            ts,
            ticks: d.records.clone(),
            base_version: d.base_version,
        }
        .encode_to_vec()
    }
    fn decode_delta(bytes: &[u8]) -> Result<DecodedDelta<Self>, MessageError> {
        let d = Delta::decode(bytes).map_err(err("langtian.md.v1.Delta"))?;
        Ok((
            d.group,
            ShardDelta {
                shard: d.shard,
                version: d.version,
                base_version: d.base_version,
                records: d.ticks,
            },
            d.ts,
        ))
    }
    fn encode_snapshot(group: &str, s: &GroupSnapshot<Self>, ts: i64) -> Vec<u8> {
        Snapshot {
            group: group.to_owned(),
            version: s.version,
            ts,
            ticks: s.records.clone(),
            shard_versions: s.shard_versions.clone(),
        }
        .encode_to_vec()
    }
    fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<Self>, MessageError> {
        let s = Snapshot::decode(bytes).map_err(err("langtian.md.v1.Snapshot"))?;
        Ok((
            s.group,
            GroupSnapshot {
                version: s.version,
                records: s.ticks,
                shard_versions: s.shard_versions,
            },
            s.ts,
        ))
    }
}

impl MdRecord for ChannelSample {
    fn encode_delta(group: &str, d: &ShardDelta<Self>, ts: i64) -> Vec<u8> {
        ChannelDelta {
            group: group.to_owned(),
            shard: d.shard,
            version: d.version,
            base_version: d.base_version,
            ts,
            samples: d.records.clone(),
        }
        .encode_to_vec()
    }
    fn decode_delta(bytes: &[u8]) -> Result<DecodedDelta<Self>, MessageError> {
        let d = ChannelDelta::decode(bytes).map_err(err("langtian.battery.v1.ChannelDelta"))?;
        Ok((
            d.group,
            ShardDelta {
                shard: d.shard,
                version: d.version,
                base_version: d.base_version,
                records: d.samples,
            },
            d.ts,
        ))
    }
    fn encode_snapshot(group: &str, s: &GroupSnapshot<Self>, ts: i64) -> Vec<u8> {
        ChannelSnapshot {
            group: group.to_owned(),
            version: s.version,
            ts,
            samples: s.records.clone(),
            shard_versions: s.shard_versions.clone(),
        }
        .encode_to_vec()
    }
    fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<Self>, MessageError> {
        let s = ChannelSnapshot::decode(bytes).map_err(err("langtian.battery.v1.ChannelSnapshot"))?;
        Ok((
            s.group,
            GroupSnapshot {
                version: s.version,
                records: s.samples,
                shard_versions: s.shard_versions,
            },
            s.ts,
        ))
    }
}
