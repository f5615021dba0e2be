//! Serde helpers shared by configuration types.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a list of humantime durations (`["500ms", "2s"]`).
pub(crate) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| serde::de::Error::custom(format!("duration `{s}`: {e}")))
        })
        .collect()
}
