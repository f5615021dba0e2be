//! The record kinds the aggregator keeps — market ticks, contracts (reference data) and battery
//! channel samples — and their delta/snapshot messages (`langtian.md.v1.Delta`/`Snapshot`,
//! `ContractDelta`/`ContractSnapshot`, `langtian.battery.v1.ChannelDelta`/`ChannelSnapshot`).

use prost::Message;

use super::state::{GroupSnapshot, Keyed, ShardDelta};
use crate::proto::battery::v1::{ChannelDelta, ChannelSample, ChannelSnapshot};
use crate::proto::md::v1::{Contract, ContractDelta, ContractSnapshot, Delta, Snapshot, Tick};

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

/// One value of a [`Row`].
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A signed integer (timestamps: nanoseconds since the Unix epoch).
    Int(i64),
    /// An unsigned integer (sequences, counts, channel numbers).
    UInt(u64),
    /// A number.
    Float(f64),
    /// No value (a tick without a bid level).
    Missing,
}

/// A record as one flat row, the columns in a fixed order: what the SDKs hand out (a Python
/// dict or DataFrame row, a JS object), defined once here.
///
/// ```
/// use langtian_core::aggregate::records::{Cell, Row};
/// use langtian_core::proto::md::v1::{Level, Tick};
/// let t = Tick { venue: "SHFE".into(), symbol: "rb2501".into(), bids: vec![Level { price: 3500.0, volume: 12.0 }], ..Default::default() };
/// let row = t.row();
/// assert_eq!(row[0], ("venue", Cell::Text("SHFE".into())));
/// assert!(row.contains(&("bid", Cell::Float(3500.0))));
/// assert!(row.contains(&("ask", Cell::Missing)));
/// ```
pub trait Row {
    /// `(column, value)` pairs.
    fn row(&self) -> Vec<(&'static str, Cell)>;
}

impl Row for Tick {
    fn row(&self) -> Vec<(&'static str, Cell)> {
        let level = |l: Option<&crate::proto::md::v1::Level>, f: fn(&crate::proto::md::v1::Level) -> f64| {
            l.map_or(Cell::Missing, |l| Cell::Float(f(l)))
        };
        vec![
            ("venue", Cell::Text(self.venue.clone())),
            ("symbol", Cell::Text(self.symbol.clone())),
            ("seq", Cell::UInt(self.seq)),
            ("last", Cell::Float(self.last)),
            ("bid", level(self.bids.first(), |l| l.price)),
            ("bid_volume", level(self.bids.first(), |l| l.volume)),
            ("ask", level(self.asks.first(), |l| l.price)),
            ("ask_volume", level(self.asks.first(), |l| l.volume)),
            ("volume", Cell::Float(self.vol)),
            ("open_interest", Cell::Float(self.oi)),
            ("flags", Cell::UInt(u64::from(self.flags))),
            ("ts_exchange", Cell::Int(self.ts_exchange)),
            ("ts_arrival", Cell::Int(self.ts_arrival)),
        ]
    }
}

impl Row for Contract {
    fn row(&self) -> Vec<(&'static str, Cell)> {
        vec![
            ("venue", Cell::Text(self.venue.clone())),
            ("symbol", Cell::Text(self.symbol.clone())),
            ("name", Cell::Text(self.name.clone())),
            ("tick_size", Cell::Float(self.tick_size)),
            ("multiplier", Cell::Float(self.multiplier)),
            ("currency", Cell::Text(self.currency.clone())),
            ("expiry", Cell::Text(self.expiry.clone())),
            ("seq", Cell::UInt(self.seq)),
            ("ts", Cell::Int(self.ts)),
        ]
    }
}

impl Row for ChannelSample {
    fn row(&self) -> Vec<(&'static str, Cell)> {
        vec![
            ("device_id", Cell::Text(self.device_id.clone())),
            ("channel", Cell::UInt(u64::from(self.channel))),
            ("cycle", Cell::UInt(u64::from(self.cycle))),
            ("step", Cell::UInt(u64::from(self.step))),
            ("step_type", Cell::Int(i64::from(self.step_type))),
            ("voltage", Cell::Float(self.voltage)),
            ("current", Cell::Float(self.current)),
            ("temperature", Cell::Float(self.temperature)),
            ("capacity", Cell::Float(self.capacity)),
            ("energy", Cell::Float(self.energy)),
            ("soc", Cell::Float(self.soc)),
            ("seq", Cell::UInt(self.seq)),
            ("ts_device", Cell::Int(self.ts_device)),
            ("ts_received", Cell::Int(self.ts_received)),
        ]
    }
}

/// A record with its delta and snapshot messages.
pub trait MdRecord: Keyed + Row + Message + Default + PartialEq + Send + Sync + 'static {
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

impl Keyed for Contract {
    fn key(&self) -> String {
        format!("{}.{}", self.venue, self.symbol)
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn ts(&self) -> i64 {
        self.ts
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

/// Implements [`MdRecord`] for a record whose delta and snapshot messages have the fields of
/// `langtian.md.v1.Delta`/`Snapshot`, the records in field `$records`.
macro_rules! md_record {
    ($rec:ty, $delta:ident = $delta_name:literal, $snapshot:ident = $snapshot_name:literal, $records:ident) => {
        impl MdRecord for $rec {
            fn encode_delta(group: &str, d: &ShardDelta<Self>, ts: i64) -> Vec<u8> {
                $delta {
                    group: group.to_owned(),
                    shard: d.shard,
                    version: d.version,
                    base_version: d.base_version,
                    ts,
                    $records: d.records.clone(),
                }
                .encode_to_vec()
            }
            fn decode_delta(bytes: &[u8]) -> Result<DecodedDelta<Self>, MessageError> {
                let d = $delta::decode(bytes).map_err(err($delta_name))?;
                let delta = ShardDelta {
                    shard: d.shard,
                    version: d.version,
                    base_version: d.base_version,
                    records: d.$records,
                };
                Ok((d.group, delta, d.ts))
            }
            fn encode_snapshot(group: &str, s: &GroupSnapshot<Self>, ts: i64) -> Vec<u8> {
                $snapshot {
                    group: group.to_owned(),
                    version: s.version,
                    ts,
                    $records: s.records.clone(),
                    shard_versions: s.shard_versions.clone(),
                }
                .encode_to_vec()
            }
            fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot<Self>, MessageError> {
                let s = $snapshot::decode(bytes).map_err(err($snapshot_name))?;
                let snapshot = GroupSnapshot {
                    version: s.version,
                    records: s.$records,
                    shard_versions: s.shard_versions,
                };
                Ok((s.group, snapshot, s.ts))
            }
        }
    };
}

md_record!(
    Tick,
    Delta = "langtian.md.v1.Delta",
    Snapshot = "langtian.md.v1.Snapshot",
    ticks
);
md_record!(
    Contract,
    ContractDelta = "langtian.md.v1.ContractDelta",
    ContractSnapshot = "langtian.md.v1.ContractSnapshot",
    contracts
);
md_record!(
    ChannelSample,
    ChannelDelta = "langtian.battery.v1.ChannelDelta",
    ChannelSnapshot = "langtian.battery.v1.ChannelSnapshot",
    samples
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_round_trip_through_their_delta_and_snapshot() {
        let c = Contract {
            symbol: "rb2501".into(),
            venue: "shfe".into(),
            name: "rebar 2501".into(),
            tick_size: 1.0,
            multiplier: 10.0,
            currency: "CNY".into(),
            expiry: "2025-01-15".into(),
            seq: 2,
            ts: 7,
        };
        assert_eq!(
            (c.key(), c.seq(), Keyed::ts(&c)),
            ("shfe.rb2501".to_owned(), 2, 7)
        );
        let d = ShardDelta {
            shard: 1,
            version: 5,
            base_version: 4,
            records: vec![c.clone()],
        };
        let (group, back, ts) = Contract::decode_delta(&Contract::encode_delta("shfe", &d, 9)).unwrap();
        assert_eq!((group.as_str(), back, ts), ("shfe", d, 9));
        let s = GroupSnapshot {
            version: 3,
            records: vec![c],
            shard_versions: vec![0, 5],
        };
        let (_, back, _) = Contract::decode_snapshot(&Contract::encode_snapshot("shfe", &s, 9)).unwrap();
        assert_eq!(back, s);
        // A tick delta is not a contract snapshot: the error names the message.
        let e = Contract::decode_snapshot(&[0xff, 0xff]).unwrap_err();
        assert_eq!(e.what, "langtian.md.v1.ContractSnapshot");
    }
}
