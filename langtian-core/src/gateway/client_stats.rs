//! A client's end-to-end report (`ClientStats`: source → paint and source → receipt latencies and
//! animation-frame intervals in 1 ms buckets, snapshot rebuild durations): checked, then added to
//! the gateway's metrics `ui_tick_to_paint_latency`, `ui_tick_to_browser_latency`,
//! `ui_frame_interval` and `ui_snapshot_rebuild_latency` (seconds, histograms) and the counters
//! `ui_stats_reports`, `ui_snapshot_rebuilds`.
//!
//! ```
//! use langtian_core::gateway::client_stats::check;
//! use langtian_core::proto::gateway::v1::{ClientStats, LatencyCount};
//! let ok = ClientStats { paint: vec![LatencyCount { ms: 42, count: 3 }], ..Default::default() };
//! assert_eq!(check(&ok).unwrap().paint_samples, 3);
//! let bad = ClientStats { paint: vec![LatencyCount { ms: 5_000, count: 1 }], ..Default::default() };
//! assert!(check(&bad).unwrap_err().to_string().contains("paint"));
//! ```

use super::pb;

/// The last bucket: a second or more.
pub const MAX_BUCKET_MS: u32 = 1000;
/// Samples one report may hold per series (a browser painting 60 frames of 100 rows for 10 s
/// sends 60,000).
pub const MAX_SAMPLES: u64 = 10_000_000;
/// Rebuild durations one report may hold, and the longest one accepted (an hour).
pub const MAX_REBUILDS: usize = 10_000;
/// See [`MAX_REBUILDS`].
pub const MAX_REBUILD_MS: u32 = 3_600_000;

/// What is wrong with a report (sent back as an `ERROR_CODE_BAD_STATS` error frame).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    /// More entries than there are buckets.
    #[error("ClientStats.{series}: {n} entries (at most {max})")]
    TooManyEntries {
        /// `paint`, `receipt` or `rebuild_ms`.
        series: &'static str,
        /// Entries sent.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// A bucket past the last one.
    #[error("ClientStats.{series}: bucket {ms} ms (the last bucket is {MAX_BUCKET_MS} ms)")]
    Bucket {
        /// `paint` or `receipt`.
        series: &'static str,
        /// The bucket sent.
        ms: u32,
    },
    /// A zero count, or more samples than a report may hold.
    #[error("ClientStats.{series}: {what}")]
    Count {
        /// `paint` or `receipt`.
        series: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A rebuild longer than an hour.
    #[error("ClientStats.rebuild_ms: {0} ms (at most {MAX_REBUILD_MS})")]
    Rebuild(u32),
}

/// A checked report's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Source → paint samples.
    pub paint_samples: u64,
    /// Source → receipt samples.
    pub receipt_samples: u64,
    /// Frame intervals.
    pub frame_samples: u64,
    /// Rebuilds reported.
    pub rebuilds: usize,
}

fn series(name: &'static str, counts: &[pb::LatencyCount]) -> Result<u64, StatsError> {
    let max = MAX_BUCKET_MS as usize + 1;
    if counts.len() > max {
        return Err(StatsError::TooManyEntries {
            series: name,
            n: counts.len(),
            max,
        });
    }
    let mut total = 0u64;
    for c in counts {
        if c.ms > MAX_BUCKET_MS {
            return Err(StatsError::Bucket {
                series: name,
                ms: c.ms,
            });
        }
        if c.count == 0 {
            return Err(StatsError::Count {
                series: name,
                what: format!("bucket {} ms has a count of 0", c.ms),
            });
        }
        total += u64::from(c.count);
    }
    if total > MAX_SAMPLES {
        return Err(StatsError::Count {
            series: name,
            what: format!("{total} samples (at most {MAX_SAMPLES} per report)"),
        });
    }
    Ok(total)
}

/// Checks a report; nothing of a bad one is recorded.
pub fn check(s: &pb::ClientStats) -> Result<Checked, StatsError> {
    let paint_samples = series("paint", &s.paint)?;
    let receipt_samples = series("receipt", &s.receipt)?;
    let frame_samples = series("frame", &s.frame)?;
    if s.rebuild_ms.len() > MAX_REBUILDS {
        return Err(StatsError::TooManyEntries {
            series: "rebuild_ms",
            n: s.rebuild_ms.len(),
            max: MAX_REBUILDS,
        });
    }
    if let Some(ms) = s.rebuild_ms.iter().find(|ms| **ms > MAX_REBUILD_MS) {
        return Err(StatsError::Rebuild(*ms));
    }
    Ok(Checked {
        paint_samples,
        receipt_samples,
        frame_samples,
        rebuilds: s.rebuild_ms.len(),
    })
}

/// A bucket's value in seconds: its middle (the overflow bucket: one second).
fn seconds(ms: u32) -> f64 {
    if ms >= MAX_BUCKET_MS {
        1.0
    } else {
        (f64::from(ms) + 0.5) / 1000.0
    }
}

/// Adds a checked report to the gateway's metrics.
pub fn record(s: &pb::ClientStats) {
    let paint = metrics::histogram!("ui_tick_to_paint_latency");
    for c in &s.paint {
        paint.record_many(seconds(c.ms), c.count as usize);
    }
    let receipt = metrics::histogram!("ui_tick_to_browser_latency");
    for c in &s.receipt {
        receipt.record_many(seconds(c.ms), c.count as usize);
    }
    let frame = metrics::histogram!("ui_frame_interval");
    for c in &s.frame {
        frame.record_many(seconds(c.ms), c.count as usize);
    }
    let rebuild = metrics::histogram!("ui_snapshot_rebuild_latency");
    for ms in &s.rebuild_ms {
        rebuild.record(f64::from(*ms) / 1000.0);
    }
    metrics::counter!("ui_snapshot_rebuilds").increment(s.rebuild_ms.len() as u64);
    metrics::counter!("ui_stats_reports").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(ms: u32, count: u32) -> pb::LatencyCount {
        pb::LatencyCount { ms, count }
    }

    #[test]
    fn accepts_a_full_report_and_totals_it() {
        let s = pb::ClientStats {
            paint: vec![lc(0, 1), lc(40, 7), lc(MAX_BUCKET_MS, 2)],
            receipt: vec![lc(12, 5)],
            rebuild_ms: vec![30, 250],
            frame: vec![lc(16, 58), lc(33, 2)],
        };
        assert_eq!(
            check(&s),
            Ok(Checked {
                paint_samples: 10,
                receipt_samples: 5,
                frame_samples: 60,
                rebuilds: 2
            })
        );
        assert_eq!(check(&pb::ClientStats::default()).map(|c| c.rebuilds), Ok(0));
    }

    #[test]
    fn names_what_is_out_of_range() {
        let e = |s: pb::ClientStats| check(&s).unwrap_err().to_string();
        assert!(
            e(pb::ClientStats {
                receipt: vec![lc(1001, 1)],
                ..Default::default()
            })
            .contains("receipt: bucket 1001 ms")
        );
        assert!(
            e(pb::ClientStats {
                frame: vec![lc(16, 3), lc(2000, 1)],
                ..Default::default()
            })
            .contains("frame: bucket 2000 ms")
        );
        assert!(
            e(pb::ClientStats {
                paint: vec![lc(3, 0)],
                ..Default::default()
            })
            .contains("paint: bucket 3 ms has a count of 0")
        );
        assert!(
            e(pb::ClientStats {
                paint: (0..1002).map(|i| lc(i % 1000, 1)).collect(),
                ..Default::default()
            })
            .contains("1002 entries")
        );
        assert!(
            e(pb::ClientStats {
                paint: (0..3).map(|i| lc(i, u32::MAX)).collect(),
                ..Default::default()
            })
            .contains("samples (at most 10000000")
        );
        assert!(
            e(pb::ClientStats {
                rebuild_ms: vec![5, MAX_REBUILD_MS + 1],
                ..Default::default()
            })
            .contains("rebuild_ms: 3600001 ms")
        );
        assert!(
            e(pb::ClientStats {
                rebuild_ms: vec![1; MAX_REBUILDS + 1],
                ..Default::default()
            })
            .contains("rebuild_ms: 10001 entries")
        );
    }

    #[test]
    fn a_bucket_is_recorded_at_its_middle() {
        assert!((seconds(0) - 0.0005).abs() < 1e-12);
        assert!((seconds(41) - 0.0415).abs() < 1e-12);
        assert!((seconds(MAX_BUCKET_MS) - 1.0).abs() < 1e-12);
        // A 60 Hz frame (16.67 ms, bucket 16) stays under the 16.7 ms bound of
        // `FRAME_BUCKETS`; one frame dropped (33.3 ms) lands above 25 ms.
        assert!(seconds(16) < 0.0167 && seconds(33) > 0.025);
    }
}
