//! Datagram → envelopes. Pure logic: no sockets, no server.
//!
//! A datagram is one of
//! - an encoded `langtian.envelope.v1.Envelope` (published as it is, its own event id kept);
//! - a `langtian.battery.v1.ChannelSampleBatch` (one `battery.sample` event per sample, source =
//!   device, event id `<device>/<channel>/<seq>/<ts_device>`, `ts_received` stamped);
//! - JSON lines: one object per line (see [`JsonDefaults`] for the fields that are understood).
//!
//! With [`DatagramFormat::Auto`] the kind is recognised: a datagram that starts with `{` (after
//! white space) is JSON lines; otherwise it is tried as an envelope, then as a sample batch. A
//! batch can never pass as an envelope (it has no `event_type`), so the order is unambiguous.
//!
//! A bad record never takes good ones with it: each JSON line and each sample stands alone.

use bytes::Bytes;
use prost::Message as _;

use crate::bus::OutgoingMessage;
use crate::envelope::{Envelope, EnvelopeBuilder, EnvelopeError};
use crate::proto::battery::v1::ChannelSampleBatch;
use crate::proto::envelope::v1 as pb;

/// The content type of a battery sample payload.
pub const BATTERY_SAMPLE_CONTENT_TYPE: &str =
    "application/x-protobuf; messageType=langtian.battery.v1.ChannelSample";

/// Event type of a battery sample.
pub const BATTERY_SAMPLE_EVENT_TYPE: &str = "battery.sample";

/// What the datagrams on a socket hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatagramFormat {
    /// Recognise each datagram (JSON lines, envelope or battery batch).
    #[default]
    Auto,
    /// Encoded envelopes only.
    Envelope,
    /// Battery sample batches only.
    Battery,
    /// JSON lines only.
    JsonLines,
}

impl std::str::FromStr for DatagramFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "envelope" => Ok(Self::Envelope),
            "battery" => Ok(Self::Battery),
            "jsonl" | "json" => Ok(Self::JsonLines),
            other => Err(format!(
                "unknown datagram format `{other}` (expected auto, envelope, battery or jsonl)"
            )),
        }
    }
}

/// Defaults for JSON records.
///
/// A JSON line is an object. Understood fields (all optional):
/// `event_type` (default [`JsonDefaults::event_type`]); `source_system`, `source` or `device_id`
/// (default: the sender's address, e.g. `udp-10-0-0-7`); `seq` (unsigned integer); `ts`
/// (nanoseconds since the epoch, default: receipt time); `event_id`. The event id is `event_id`
/// if given, else `<source>/<seq>/<ts>` (`ts` 0 when absent) when `seq` is given (deterministic, so a resent datagram
/// is de-duplicated by the server), else `<source>/<collector run>/<counter>`. The line itself
/// is the payload (`application/json`).
#[derive(Debug, Clone)]
pub struct JsonDefaults {
    /// Event type of lines that do not name one.
    pub event_type: String,
}

impl Default for JsonDefaults {
    fn default() -> Self {
        Self {
            event_type: "telemetry".into(),
        }
    }
}

/// Why a datagram or one record in it was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty datagram")]
    Empty,
    /// Not any format the socket accepts.
    #[error("datagram of {len} bytes is not an envelope, a battery sample batch or JSON lines ({detail})")]
    Unrecognised {
        /// Length.
        len: usize,
        /// What the decoders said.
        detail: String,
    },
    /// An envelope datagram failed to decode or validate.
    #[error("envelope: {0}")]
    Envelope(EnvelopeError),
    /// A battery batch failed to decode.
    #[error("battery batch of {len} bytes: {reason}")]
    Battery {
        /// Length.
        len: usize,
        /// Why.
        reason: String,
    },
    /// One sample of a batch is unusable.
    #[error("battery sample {index} (device `{device}`): {reason}")]
    Sample {
        /// Index in the batch.
        index: usize,
        /// Its device id.
        device: String,
        /// Why.
        reason: String,
    },
    /// One JSON line is unusable.
    #[error("JSON line {line}: {reason}")]
    Json {
        /// 1-based line number in the datagram.
        line: usize,
        /// Why.
        reason: String,
    },
}

impl DecodeError {
    /// A short label for metrics (`reason="json"`).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Unrecognised { .. } => "unrecognised",
            DecodeError::Envelope(_) => "envelope",
            DecodeError::Battery { .. } => "battery",
            DecodeError::Sample { .. } => "sample",
            DecodeError::Json { .. } => "json",
        }
    }
}

/// The result of one datagram: the messages to publish and the records that were rejected.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Ready to publish, in datagram order.
    pub messages: Vec<OutgoingMessage>,
    /// Rejected records.
    pub errors: Vec<DecodeError>,
}

/// Turns datagrams into publishable envelopes.
///
/// ```
/// use langtian_core::collector::{Decoder, DatagramFormat};
/// let mut d = Decoder::new(DatagramFormat::Auto, "lt.evt");
/// let out = d.decode(br#"{"source":"s1","seq":7,"t":21.5}"#, "10.0.0.7".parse().unwrap(), 1);
/// assert_eq!(out.messages[0].subject, "lt.evt.telemetry.s1");
/// // No `ts` in the line: 0 stands in, so a re-sent line gets the same id.
/// assert_eq!(out.messages[0].msg_id.as_deref(), Some("s1/7/0"));
/// ```
#[derive(Debug)]
pub struct Decoder {
    format: DatagramFormat,
    prefix: String,
    json: JsonDefaults,
    max_message_bytes: usize,
    run: String,
    counter: u64,
}

impl Decoder {
    /// A decoder publishing under `prefix` (`lt.evt`).
    pub fn new(format: DatagramFormat, prefix: &str) -> Self {
        Self {
            format,
            prefix: prefix.to_owned(),
            json: JsonDefaults::default(),
            max_message_bytes: crate::envelope::DEFAULT_MAX_ENVELOPE_BYTES,
            run: format!("{:x}", crate::envelope::now_nanos()),
            counter: 0,
        }
    }

    /// Sets the JSON defaults.
    pub fn with_json(mut self, json: JsonDefaults) -> Self {
        self.json = json;
        self
    }

    /// Rejects envelopes larger than `limit` bytes (set it to the server's max_payload minus
    /// header room, so a record is refused here with a reason rather than by the server).
    pub fn with_max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Decodes one datagram from `peer`, received at `received_ns` (nanoseconds since the epoch).
    pub fn decode(&mut self, data: &[u8], peer: std::net::IpAddr, received_ns: i64) -> Decoded {
        let mut out = Decoded::default();
        if data.is_empty() {
            out.errors.push(DecodeError::Empty);
            return out;
        }
        match self.format {
            DatagramFormat::JsonLines => self.json_lines(data, peer, received_ns, &mut out),
            DatagramFormat::Envelope => self.envelope(data, &mut out),
            DatagramFormat::Battery => {
                if let Err(e) = self.battery(data, received_ns, &mut out) {
                    out.errors.push(e);
                }
            }
            DatagramFormat::Auto => {
                let first = data.iter().find(|b| !b.is_ascii_whitespace());
                if first == Some(&b'{') {
                    self.json_lines(data, peer, received_ns, &mut out);
                } else {
                    match Envelope::decode_with_limit(data, self.max_message_bytes) {
                        Ok(env) => out
                            .messages
                            .push(OutgoingMessage::from_envelope_lean(&self.prefix, &env)),
                        Err(env_err) => {
                            if let Err(bat_err) = self.battery(data, received_ns, &mut out) {
                                out.errors.push(DecodeError::Unrecognised {
                                    len: data.len(),
                                    detail: format!("as envelope: {env_err}; as battery batch: {bat_err}"),
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn envelope(&self, data: &[u8], out: &mut Decoded) {
        match Envelope::decode_with_limit(data, self.max_message_bytes) {
            Ok(env) => out
                .messages
                .push(OutgoingMessage::from_envelope_lean(&self.prefix, &env)),
            Err(e) => out.errors.push(DecodeError::Envelope(e)),
        }
    }

    /// Decodes a sample batch; `Err` when the datagram as a whole is not one.
    fn battery(&self, data: &[u8], received_ns: i64, out: &mut Decoded) -> Result<(), DecodeError> {
        let batch = ChannelSampleBatch::decode(data).map_err(|e| DecodeError::Battery {
            len: data.len(),
            reason: e.to_string(),
        })?;
        if batch.samples.is_empty() {
            return Err(DecodeError::Battery {
                len: data.len(),
                reason: "no samples".into(),
            });
        }
        for (index, mut s) in batch.samples.into_iter().enumerate() {
            let bad = |reason: &str| DecodeError::Sample {
                index,
                device: s.device_id.clone(),
                reason: reason.to_owned(),
            };
            if s.device_id.is_empty() {
                out.errors.push(bad("device_id is empty"));
                continue;
            }
            if s.seq == 0 {
                out.errors.push(bad("seq must start at 1"));
                continue;
            }
            if !(s.voltage.is_finite() && s.current.is_finite() && s.temperature.is_finite()) {
                out.errors
                    .push(bad("voltage, current and temperature must be finite numbers"));
                continue;
            }
            if let Err(e) = crate::envelope::check_subject_part("source_system", &s.device_id, false) {
                out.errors.push(bad(&e.to_string()));
                continue;
            }
            s.ts_received = received_ns;
            let ts = if s.ts_device > 0 { s.ts_device } else { received_ns };
            let env = pb::Envelope {
                event_id: format!("{}/{}/{}/{}", s.device_id, s.channel, s.seq, s.ts_device),
                event_type: BATTERY_SAMPLE_EVENT_TYPE.to_owned(),
                event_timestamp: ts,
                schema_version: "1.0".to_owned(),
                partition_key: Some(format!("{}/{}", s.device_id, s.channel)),
                payload: Bytes::from(s.encode_to_vec()),
                content_type: BATTERY_SAMPLE_CONTENT_TYPE.to_owned(),
                source_system: std::mem::take(&mut s.device_id),
            };
            if env.encoded_len() > self.max_message_bytes {
                out.errors.push(DecodeError::Sample {
                    index,
                    device: env.source_system,
                    reason: format!("encoded envelope is over {} bytes", self.max_message_bytes),
                });
                continue;
            }
            let env = Envelope::from_checked(env);
            out.messages
                .push(OutgoingMessage::from_envelope_lean(&self.prefix, &env));
        }
        Ok(())
    }

    fn json_lines(&mut self, data: &[u8], peer: std::net::IpAddr, received_ns: i64, out: &mut Decoded) {
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            match self.json_line(trimmed, peer, received_ns) {
                Ok(m) => out.messages.push(m),
                Err(reason) => out.errors.push(DecodeError::Json { line: i + 1, reason }),
            }
        }
    }

    fn json_line(
        &mut self,
        line: &[u8],
        peer: std::net::IpAddr,
        received_ns: i64,
    ) -> Result<OutgoingMessage, String> {
        let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let text = |k: &str| -> Result<Option<&str>, String> {
            match obj.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("`{k}` must be a string")),
            }
        };
        let event_type = text("event_type")?.unwrap_or(&self.json.event_type).to_owned();
        let source = match (text("source_system")?, text("source")?, text("device_id")?) {
            (Some(s), _, _) | (None, Some(s), _) | (None, None, Some(s)) => s.to_owned(),
            _ => format!("udp-{}", peer.to_string().replace(['.', ':'], "-")),
        };
        let seq = match obj.get("seq") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("`seq` must be an unsigned integer")?),
        };
        let ts = match obj.get("ts") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or("`ts` must be an integer (nanoseconds since the epoch)")?,
            ),
        };
        let id = match (text("event_id")?, seq) {
            (Some(id), _) => id.to_owned(),
            (None, Some(seq)) => format!("{source}/{seq}/{}", ts.unwrap_or(0)),
            (None, None) => {
                self.counter += 1;
                format!("{source}/{}/{}", self.run, self.counter)
            }
        };
        let env = EnvelopeBuilder::new(event_type, source)
            .event_id(id)
            .event_timestamp(ts.unwrap_or(received_ns))
            .payload(Bytes::copy_from_slice(line), "application/json")
            .max_bytes(self.max_message_bytes)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OutgoingMessage::from_envelope_lean(&self.prefix, &env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::battery::v1::ChannelSample;

    fn peer() -> std::net::IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn sample(device: &str, channel: u32, seq: u64) -> ChannelSample {
        ChannelSample {
            device_id: device.into(),
            channel,
            seq,
            voltage: 3.7,
            ts_device: 1_000 + seq as i64,
            ..Default::default()
        }
    }

    #[test]
    fn battery_batch_becomes_one_event_per_sample_with_deterministic_ids() {
        let data = ChannelSampleBatch {
            samples: vec![sample("cyc-1", 0, 1), sample("cyc-1", 1, 1)],
        }
        .encode_to_vec();
        let mut d = Decoder::new(DatagramFormat::Auto, "lt.evt");
        let a = d.decode(&data, peer(), 5);
        let b = d.decode(&data, peer(), 9);
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        assert_eq!(a.messages.len(), 2);
        assert_eq!(a.messages[0].subject, "lt.evt.battery.sample.cyc-1");
        assert_eq!(a.messages[1].msg_id.as_deref(), Some("cyc-1/1/1/1001"));
        assert!(
            a.messages[0].headers.is_none(),
            "lean: Nats-Msg-Id only (set from msg_id)"
        );
        // The same datagram again gets the same ids (the server drops the copy).
        let ids = |d: &Decoded| d.messages.iter().map(|m| m.msg_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        let env = Envelope::decode(&a.messages[0].payload).unwrap();
        let s = ChannelSample::decode(env.payload().as_ref()).unwrap();
        assert_eq!((s.ts_received, env.event_timestamp()), (5, 1001));
    }

    #[test]
    fn envelope_datagram_is_published_as_is() {
        let env = EnvelopeBuilder::new("demo.thing", "src-1")
            .event_id("e-1")
            .payload(&b"x"[..], "text/plain")
            .build()
            .unwrap();
        let mut d = Decoder::new(DatagramFormat::Auto, "lt.evt");
        let out = d.decode(&env.encode(), peer(), 1);
        assert_eq!(out.messages.len(), 1);
        assert_eq!(out.messages[0].payload, env.encode());
        assert_eq!(out.messages[0].msg_id.as_deref(), Some("e-1"));
    }

    #[test]
    fn bad_json_lines_do_not_take_good_ones_with_them() {
        let data = b"{\"source\":\"s1\",\"seq\":1}\nnot json\n[1,2]\n{\"source\":\"a.b\"}\n{\"seq\":-1}\n\n{\"device_id\":\"d2\",\"v\":1}\n";
        let mut d = Decoder::new(DatagramFormat::JsonLines, "lt.evt");
        let out = d.decode(data, peer(), 1);
        assert_eq!(out.messages.len(), 2, "{:?}", out.errors);
        assert_eq!(out.messages[1].subject, "lt.evt.telemetry.d2");
        let lines: Vec<usize> = out
            .errors
            .iter()
            .map(|e| match e {
                DecodeError::Json { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(
            out.errors[2].to_string().contains("source_system"),
            "{}",
            out.errors[2]
        );
    }

    #[test]
    fn json_without_source_uses_the_sender_and_without_seq_a_run_counter() {
        let mut d = Decoder::new(DatagramFormat::Auto, "lt.evt");
        let out = d.decode(
            b"  {\"event_type\":\"env.temp\",\"c\":21}",
            "10.1.2.3".parse().unwrap(),
            1,
        );
        assert_eq!(out.messages[0].subject, "lt.evt.env.temp.udp-10-1-2-3");
        let again = d.decode(
            b"{\"event_type\":\"env.temp\",\"c\":21}",
            "10.1.2.3".parse().unwrap(),
            1,
        );
        assert_ne!(out.messages[0].msg_id, again.messages[0].msg_id);
    }

    #[test]
    fn bad_samples_are_rejected_one_by_one() {
        let mut s_nan = sample("cyc-1", 2, 3);
        s_nan.voltage = f64::NAN;
        let data = ChannelSampleBatch {
            samples: vec![
                sample("", 0, 1),
                sample("cyc-1", 1, 0),
                s_nan,
                sample("bad.dev", 0, 1),
                sample("ok", 0, 1),
            ],
        }
        .encode_to_vec();
        let out = Decoder::new(DatagramFormat::Battery, "lt.evt").decode(&data, peer(), 1);
        assert_eq!(out.messages.len(), 1);
        assert_eq!(out.errors.len(), 4);
        assert!(out.errors.iter().all(|e| e.kind() == "sample"));
    }

    #[test]
    fn garbage_is_unrecognised_and_empty_is_empty() {
        let mut d = Decoder::new(DatagramFormat::Auto, "lt.evt");
        let out = d.decode(&[0xff, 0xfe, 0x00, 0x12], peer(), 1);
        assert!(out.messages.is_empty());
        assert_eq!(out.errors[0].kind(), "unrecognised");
        assert_eq!(d.decode(&[], peer(), 1).errors, vec![DecodeError::Empty]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            for f in [DatagramFormat::Auto, DatagramFormat::Envelope, DatagramFormat::Battery, DatagramFormat::JsonLines] {
                let out = Decoder::new(f, "lt.evt").decode(&data, peer(), 1);
                proptest::prop_assert!(!out.messages.is_empty() || !out.errors.is_empty() || data.iter().all(|b| b.is_ascii_whitespace()));
            }
        }
    }
}
