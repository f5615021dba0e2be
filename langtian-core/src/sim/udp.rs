//! Battery samples over UDP, the way a cycler's data logger sends them: each datagram is a
//! `langtian.battery.v1.ChannelSampleBatch` with up to `per_datagram` samples.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use langtian_core::sim::udp::{BatteryUdpConfig, send_battery_udp};
//! let cfg = BatteryUdpConfig { count: Some(10_000), ..BatteryUdpConfig::new("127.0.0.1:14250".parse().unwrap()) };
//! let (_stop_tx, stop) = tokio::sync::watch::channel(false);
//! let report = send_battery_udp(&cfg, stop, |r| eprintln!("{} samples", r.samples)).await?;
//! assert_eq!(report.samples, 10_000);
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{BatteryParams, BatterySim};
use crate::proto::battery::v1::{ChannelSample, ChannelSampleBatch};

/// What to send, where and how fast.
#[derive(Debug, Clone)]
pub struct BatteryUdpConfig {
    /// The collector's address.
    pub target: SocketAddr,
    /// Cyclers.
    pub devices: usize,
    /// Channels per cycler.
    pub channels: u32,
    /// Samples per second, all channels together.
    pub rate: f64,
    /// Samples per datagram.
    pub per_datagram: usize,
    /// Cell time between two samples of a channel.
    pub sample_interval: Duration,
    /// Stop after this many samples (`None` = until stopped).
    pub count: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Cell and program parameters.
    pub params: BatteryParams,
}

impl BatteryUdpConfig {
    /// 4 cyclers × 16 channels, 1,000 samples/s, 10 per datagram, 1 s between samples.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            devices: 4,
            channels: 16,
            rate: 1000.0,
            per_datagram: 10,
            sample_interval: Duration::from_secs(1),
            count: None,
            seed: 7,
            params: BatteryParams::default(),
        }
    }
}

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

impl BatteryUdpConfig {
    /// Checks that the run can be sent: a rate above 0, at least one cycler, channel and sample
    /// per datagram, a sample interval above 0, and datagrams that fit in one UDP payload.
    ///
    /// ```
    /// use langtian_core::sim::udp::BatteryUdpConfig;
    /// let cfg = BatteryUdpConfig::new("127.0.0.1:14250".parse().unwrap());
    /// assert!(cfg.validate().is_ok());
    /// let e = BatteryUdpConfig { rate: 0.0, ..cfg }.validate().unwrap_err();
    /// assert_eq!(e.key, "rate");
    /// ```
    pub fn validate(&self) -> Result<(), super::SimConfigError> {
        super::positive("rate", self.rate)?;
        super::at_least_one("devices", self.devices as u64)?;
        super::at_least_one("channels", u64::from(self.channels))?;
        super::at_least_one("per-datagram", self.per_datagram as u64)?;
        if self.sample_interval.is_zero() {
            return Err(super::SimConfigError::new("sample-interval", "must be above 0"));
        }
        // The largest datagram: `per_datagram` samples (at most one step of every channel).
        let per = self
            .per_datagram
            .min(self.devices.saturating_mul(self.channels as usize));
        let mut probe = DatagramSource::new(self);
        let mut samples = Vec::with_capacity(per);
        while samples.len() < per {
            let more = probe.next_samples(per - samples.len());
            if more.is_empty() {
                break;
            }
            samples.extend(more);
        }
        let bytes = encode_datagram(samples).len();
        if bytes > MAX_DATAGRAM_BYTES {
            return Err(super::SimConfigError::new(
                "per-datagram",
                format!(
                    "{} samples make a {bytes}-byte datagram, above the {MAX_DATAGRAM_BYTES}-byte UDP limit",
                    self.per_datagram
                ),
            ));
        }
        Ok(())
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct UdpReport {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Samples sent.
    pub samples: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// Encodes samples as one datagram.
pub fn encode_datagram(samples: Vec<ChannelSample>) -> Vec<u8> {
    ChannelSampleBatch { samples }.encode_to_vec()
}

/// Cuts the simulator's output into datagrams of `per_datagram` samples.
#[derive(Debug)]
pub struct DatagramSource {
    sim: BatterySim,
    dt_ns: i64,
    pending: std::collections::VecDeque<ChannelSample>,
    per_datagram: usize,
}

impl DatagramSource {
    /// A source for `cfg`.
    pub fn new(cfg: &BatteryUdpConfig) -> Self {
        Self {
            sim: BatterySim::with_params(
                cfg.devices.max(1),
                cfg.channels.max(1),
                cfg.seed,
                cfg.params.clone(),
            ),
            dt_ns: i64::try_from(cfg.sample_interval.as_nanos()).unwrap_or(i64::MAX),
            pending: Default::default(),
            per_datagram: cfg.per_datagram.max(1),
        }
    }

    /// The next datagram's samples (at most `limit`).
    pub fn next_samples(&mut self, limit: usize) -> Vec<ChannelSample> {
        let n = self.per_datagram.min(limit.max(1));
        if self.pending.is_empty() {
            self.pending.extend(self.sim.step(self.dt_ns));
        }
        let n = n.min(self.pending.len());
        self.pending.drain(..n).collect()
    }
}

/// Sends simulated samples to `cfg.target` until `stop` turns true or `cfg.count` is reached.
/// Settings that cannot work are refused first ([`BatteryUdpConfig::validate`]).
/// `progress` is called about once a second.
pub async fn send_battery_udp(
    cfg: &BatteryUdpConfig,
    mut stop: watch::Receiver<bool>,
    mut progress: impl FnMut(&UdpReport),
) -> std::io::Result<UdpReport> {
    // A setting that cannot work (a rate of 0 would wait forever) is refused before anything is
    // sent; the typed error is inside the io::Error (kind InvalidInput).
    cfg.validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let bind: SocketAddr = if cfg.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(cfg.target).await?;
    let mut source = DatagramSource::new(cfg);
    let started = Instant::now();
    let mut report = UdpReport::default();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = Instant::now();
    let remaining = |r: &UdpReport| cfg.count.map(|c| c.saturating_sub(r.samples));
    while !*stop.borrow() && remaining(&report) != Some(0) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        // Pace by elapsed time, so a late tick catches up instead of lowering the rate.
        let due = (started.elapsed().as_secs_f64() * cfg.rate) as u64;
        while report.samples < due {
            let left = remaining(&report).unwrap_or(u64::MAX);
            if left == 0 {
                break;
            }
            let want = (due - report.samples).min(left) as usize;
            let samples = source.next_samples(want);
            let n = samples.len() as u64;
            let bytes = encode_datagram(samples);
            match socket.send(&bytes).await {
                Ok(_) => {}
                // Nothing listening yet (ICMP port unreachable): the datagram is gone, as on a wire.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            report.datagrams += 1;
            report.samples += n;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            report.seconds = started.elapsed().as_secs_f64();
            progress(&report);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_hold_whole_samples_in_channel_order() {
        let cfg = BatteryUdpConfig {
            devices: 1,
            channels: 3,
            per_datagram: 2,
            ..BatteryUdpConfig::new("127.0.0.1:1".parse().unwrap())
        };
        let mut src = DatagramSource::new(&cfg);
        let a = src.next_samples(100);
        let b = src.next_samples(100);
        let c = src.next_samples(1);
        assert_eq!(a.len(), 2);
        assert_eq!(b.len(), 1, "the rest of the first round");
        assert_eq!((a[0].channel, a[1].channel, b[0].channel), (0, 1, 2));
        assert_eq!((c.len(), c[0].seq), (1, 2));
        let decoded = ChannelSampleBatch::decode(encode_datagram(a.clone()).as_slice()).unwrap();
        assert_eq!(decoded.samples, a);
    }
}
