//! Market ticks for seed 002: venues × symbols, a price random walk with five book levels,
//! bursts, and a raw feed's flaws — occasional duplicates (the same tick twice) and
//! out-of-order delivery (a tick held back and sent after its successor).
//!
//! ```
//! use langtian_core::sim::{TickSim, TickSimConfig};
//! let mut sim = TickSim::new(TickSimConfig { venues: 2, symbols_per_venue: 3, ..Default::default() });
//! let ticks = sim.next_ticks(100);
//! assert_eq!(ticks.len(), 100);
//! assert!(ticks.iter().all(|t| t.bids.len() == 5 && t.bids[0].price < t.asks[0].price));
//! ```

use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::watch;

use super::Rng;
use crate::bus::{Bus, BusError, OutgoingMessage, Publisher, PublisherConfig, Qos};
use crate::proto::md::v1::{Contract, Level, Tick};

const VENUES: [&str; 6] = ["shfe", "dce", "czce", "cffex", "ine", "gfex"];
const ROOTS: [&str; 12] = [
    "rb", "cu", "al", "zn", "au", "ag", "i", "m", "y", "ta", "ma", "if",
];
/// The name and lot multiplier of each root (same order as `ROOTS`).
const ROOT_TERMS: [(&str, f64); 12] = [
    ("rebar", 10.0),
    ("copper", 5.0),
    ("aluminium", 5.0),
    ("zinc", 5.0),
    ("gold", 1000.0),
    ("silver", 15.0),
    ("iron ore", 100.0),
    ("soybean meal", 10.0),
    ("soybean oil", 10.0),
    ("PTA", 5.0),
    ("methanol", 10.0),
    ("CSI 300 index", 300.0),
];

/// Shape of the generated feed.
#[derive(Debug, Clone)]
pub struct TickSimConfig {
    /// Number of venues (up to 6 distinct names; more reuse names with a suffix).
    pub venues: usize,
    /// Instruments per venue.
    pub symbols_per_venue: usize,
    /// Probability that a tick is sent twice.
    pub duplicate_rate: f64,
    /// Probability that a tick is held back and sent after the instrument's next tick.
    pub out_of_order_rate: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for TickSimConfig {
    fn default() -> Self {
        Self {
            venues: 3,
            symbols_per_venue: 50,
            duplicate_rate: 0.001,
            out_of_order_rate: 0.002,
            seed: 7,
        }
    }
}

impl TickSimConfig {
    /// Checks that the feed can be generated: at least one venue and instrument, rates that are
    /// probabilities and together at most 1.
    ///
    /// ```
    /// use langtian_core::sim::TickSimConfig;
    /// assert!(TickSimConfig::default().validate().is_ok());
    /// let e = TickSimConfig { duplicate_rate: 1.5, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(e.key, "dup-rate");
    /// ```
    pub fn validate(&self) -> Result<(), super::SimConfigError> {
        super::at_least_one("venues", self.venues as u64)?;
        super::at_least_one("symbols", self.symbols_per_venue as u64)?;
        super::probability("dup-rate", self.duplicate_rate)?;
        super::probability("ooo-rate", self.out_of_order_rate)?;
        if self.duplicate_rate + self.out_of_order_rate > 1.0 {
            return Err(super::SimConfigError::new(
                "dup-rate",
                format!(
                    "dup-rate + ooo-rate must be at most 1, got {} + {}",
                    self.duplicate_rate, self.out_of_order_rate
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Instrument {
    venue: String,
    symbol: String,
    /// Index into `ROOTS` and `ROOT_TERMS`.
    root: usize,
    /// Delivery month as YYMM (2501 = January 2025).
    month: u32,
    seq: u64,
    price: f64,
    tick_size: f64,
    vol: f64,
    oi: f64,
    held: Option<Tick>,
}

/// The generator. Popular instruments tick more often (Zipf-like choice).
#[derive(Debug, Clone)]
pub struct TickSim {
    cfg: TickSimConfig,
    instruments: Vec<Instrument>,
    rng: Rng,
    /// Ticks owed by the duplicate/out-of-order machinery, sent before new ones.
    owed: Vec<Tick>,
}

impl TickSim {
    /// A feed with `cfg`.
    pub fn new(cfg: TickSimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let mut instruments = Vec::new();
        for v in 0..cfg.venues.max(1) {
            let venue = match VENUES.get(v) {
                Some(n) => (*n).to_owned(),
                None => format!("{}{}", VENUES[v % VENUES.len()], v / VENUES.len()),
            };
            for s in 0..cfg.symbols_per_venue.max(1) {
                let root = ROOTS[s % ROOTS.len()];
                let month = 2501 + (s / ROOTS.len()) as u32 % 12;
                let base = rng.range(2_000.0, 80_000.0);
                let tick_size = if base > 10_000.0 { 10.0 } else { 1.0 };
                instruments.push(Instrument {
                    venue: venue.clone(),
                    symbol: format!("{root}{month}"),
                    root: s % ROOTS.len(),
                    month,
                    seq: 0,
                    price: (base / tick_size).round() * tick_size,
                    tick_size,
                    vol: 0.0,
                    oi: rng.range(10_000.0, 500_000.0).round(),
                    held: None,
                });
            }
        }
        Self {
            cfg,
            instruments,
            rng,
            owed: Vec::new(),
        }
    }

    /// Number of instruments.
    pub fn instruments(&self) -> usize {
        self.instruments.len()
    }

    /// The reference data of every instrument: name, tick size, lot multiplier, currency and
    /// last trading day (the 15th of the delivery month), version 1, published at the start of
    /// the year before delivery. The same simulator always gives the same contracts.
    ///
    /// ```
    /// use langtian_core::sim::{TickSim, TickSimConfig};
    /// let sim = TickSim::new(TickSimConfig { venues: 1, symbols_per_venue: 1, ..Default::default() });
    /// let c = &sim.contracts()[0];
    /// assert_eq!((c.symbol.as_str(), c.name.as_str(), c.expiry.as_str()), ("rb2501", "rebar 2501", "2025-01-15"));
    /// assert_eq!((c.multiplier, c.seq), (10.0, 1));
    /// ```
    pub fn contracts(&self) -> Vec<Contract> {
        self.instruments
            .iter()
            .map(|i| {
                let (name, multiplier) = ROOT_TERMS[i.root];
                let (year, month) = (2000 + i.month / 100, i.month % 100);
                Contract {
                    symbol: i.symbol.clone(),
                    venue: i.venue.clone(),
                    name: format!("{name} {}", i.month),
                    tick_size: i.tick_size,
                    multiplier,
                    currency: "CNY".into(),
                    expiry: format!("{year}-{month:02}-15"),
                    seq: 1,
                    ts: listing_time_nanos(year - 1),
                }
            })
            .collect()
    }

    /// The subject a tick is published on: `<prefix>.<venue>.<symbol>` (prefix `xy.src.tick`).
    pub fn subject(prefix: &str, t: &Tick) -> String {
        format!("{prefix}.{}.{}", t.venue, t.symbol)
    }

    /// The next `n` ticks of the feed, flaws included.
    pub fn next_ticks(&mut self, n: usize) -> Vec<Tick> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Some(t) = self.owed.pop() {
                out.push(t);
                continue;
            }
            // Zipf-like: square of a uniform favours low indices.
            let u = self.rng.unit();
            let i = ((u * u) * self.instruments.len() as f64) as usize;
            let i = i.min(self.instruments.len() - 1);
            let t = self.fresh(i);
            let r = self.rng.unit();
            if let Some(held) = self.instruments[i].held.take() {
                // The held-back tick arrives right after its successor.
                out.push(t);
                self.owed.push(held);
            } else if r < self.cfg.out_of_order_rate {
                self.instruments[i].held = Some(t);
            } else if r < self.cfg.out_of_order_rate + self.cfg.duplicate_rate {
                self.owed.push(t.clone());
                out.push(t);
            } else {
                out.push(t);
            }
        }
        out
    }

    fn fresh(&mut self, i: usize) -> Tick {
        let rng = &mut self.rng;
        let inst = &mut self.instruments[i];
        inst.seq += 1;
        let steps = (rng.normal() * 1.2).round();
        inst.price = (inst.price + steps * inst.tick_size).max(inst.tick_size * 10.0);
        let traded = (rng.unit() * 20.0).floor() + 1.0;
        inst.vol += traded;
        inst.oi = (inst.oi + (rng.unit() - 0.5) * traded * 2.0).max(0.0).round();
        let mid = inst.price;
        let mut bids = Vec::with_capacity(5);
        let mut asks = Vec::with_capacity(5);
        for l in 0..5 {
            let off = (l as f64 + 1.0) * inst.tick_size;
            bids.push(Level {
                price: mid - off,
                volume: (rng.unit() * 200.0).floor() + 1.0,
            });
            asks.push(Level {
                price: mid + off,
                volume: (rng.unit() * 200.0).floor() + 1.0,
            });
        }
        let now = crate::envelope::now_nanos();
        Tick {
            symbol: inst.symbol.clone(),
            venue: inst.venue.clone(),
            ts_exchange: now,
            ts_arrival: 0,
            seq: inst.seq,
            last: mid,
            bids,
            asks,
            vol: inst.vol,
            oi: inst.oi,
            flags: 0,
            source: "lt-sim".into(),
        }
    }
}

/// 1 January of `year`, 00:00 UTC, in nanoseconds since the epoch (years 1970..2200).
fn listing_time_nanos(year: u32) -> i64 {
    let days: i64 = (1970..year as i64)
        .map(|y| {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum();
    days * 86_400 * 1_000_000_000
}

/// Publishes the simulator's [contracts](TickSim::contracts) to `<prefix>.<venue>.<symbol>`
/// (prefix `xy.ref.contract`), confirmed by JetStream, each with the message id
/// `<venue>.<symbol>/<seq>` so that the stream's duplicate window drops a re-publish. Returns
/// how many were published.
pub async fn publish_contracts(bus: &Bus, sim: &TickSim, prefix: &str) -> Result<u64, BusError> {
    let publisher = Publisher::new(bus.clone(), PublisherConfig::new(Qos::AtLeastOnce));
    let mut window = publisher.window();
    let contracts = sim.contracts();
    for c in &contracts {
        let msg = OutgoingMessage::new(format!("{prefix}.{}.{}", c.venue, c.symbol), c.encode_to_vec())
            .with_msg_id(format!("{}.{}/{}", c.venue, c.symbol, c.seq));
        window.send(msg).await?;
    }
    window.drain().await?;
    Ok(contracts.len() as u64)
}

/// How fast and how long to publish ticks.
#[derive(Debug, Clone)]
pub struct TickRun {
    /// Subject prefix (`xy.src.tick`).
    pub prefix: String,
    /// Average ticks per second.
    pub rate: f64,
    /// Every `burst_every`, the rate is multiplied by `burst_factor` for `burst_len`.
    pub burst_every: Duration,
    /// Length of a burst.
    pub burst_len: Duration,
    /// Rate multiplier during a burst.
    pub burst_factor: f64,
    /// Stop after this many ticks (`None` = until stopped).
    pub count: Option<u64>,
    /// QoS of the publishes (1 = JetStream PubAck; the stream keeps a feed's duplicates because
    /// each publish gets its own message id).
    pub qos: Qos,
}

impl Default for TickRun {
    fn default() -> Self {
        Self {
            prefix: "xy.src.tick".into(),
            rate: 4000.0,
            burst_every: Duration::from_secs(5),
            burst_len: Duration::from_millis(300),
            burst_factor: 4.0,
            count: None,
            qos: Qos::AtLeastOnce,
        }
    }
}

impl TickRun {
    /// Checks that the run can keep its rate: a rate above 0, bursts that multiply by ≥ 1 and fit
    /// in their period.
    pub fn validate(&self) -> Result<(), super::SimConfigError> {
        super::positive("rate", self.rate)?;
        if !(self.burst_factor.is_finite() && self.burst_factor >= 1.0) {
            return Err(super::SimConfigError::new(
                "burst-factor",
                format!("must be a number ≥ 1, got {}", self.burst_factor),
            ));
        }
        if self.burst_every.is_zero() || self.burst_len > self.burst_every {
            return Err(super::SimConfigError::new(
                "burst-every",
                format!(
                    "must be above 0 and at least the burst length ({:?}), got {:?}",
                    self.burst_len, self.burst_every
                ),
            ));
        }
        Ok(())
    }
}

/// Why [`publish_ticks`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum TickRunError {
    /// A setting of the run or of the simulator cannot work.
    #[error(transparent)]
    Config(#[from] super::SimConfigError),
    /// Publishing failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Totals of a tick run.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// Ticks published (confirmed for QoS ≥ 1).
    pub published: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// Publishes `sim`'s ticks at `run.rate` until `stop` turns true or `run.count` is reached.
/// `progress` is called about once a second with the running total.
pub async fn publish_ticks(
    bus: &Bus,
    sim: &mut TickSim,
    run: &TickRun,
    mut stop: watch::Receiver<bool>,
    mut progress: impl FnMut(&TickReport),
) -> Result<TickReport, TickRunError> {
    run.validate()?;
    sim.cfg.validate()?;
    let publisher = Publisher::new(bus.clone(), PublisherConfig::new(run.qos));
    let mut window = publisher.window();
    let started = Instant::now();
    let mut report = TickReport::default();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut budget = 0.0f64;
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    let every = run.burst_every.as_secs_f64().max(0.001);
    while !*stop.borrow() && run.count.is_none_or(|c| sent < c) {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let t = started.elapsed().as_secs_f64();
        let in_burst = t % every < run.burst_len.as_secs_f64();
        // Keep the average at `rate`: bursts borrow from the quiet time around them.
        let burst_share = (run.burst_len.as_secs_f64() / every).min(1.0);
        let quiet = 1.0 / (1.0 + burst_share * (run.burst_factor - 1.0));
        let rate = run.rate * quiet * if in_burst { run.burst_factor } else { 1.0 };
        budget += rate * 0.01;
        let mut n = budget.floor() as u64;
        if let Some(c) = run.count {
            n = n.min(c - sent);
        }
        budget -= n as f64;
        for mut tk in sim.next_ticks(n as usize) {
            tk.ts_arrival = 0;
            let msg = OutgoingMessage::new(TickSim::subject(&run.prefix, &tk), tk.encode_to_vec());
            if window.send(msg).await?.is_some() {
                report.published += 1;
            }
            sent += 1;
        }
        if run.qos == Qos::AtMostOnce {
            report.published = sent;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            report.seconds = started.elapsed().as_secs_f64();
            progress(&report);
        }
    }
    report.published += window.drain().await?.len() as u64;
    if run.qos == Qos::AtMostOnce {
        report.published = sent;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_describe_every_instrument_once() {
        let sim = TickSim::new(TickSimConfig::default());
        let contracts = sim.contracts();
        assert_eq!(contracts.len(), sim.instruments());
        let keys: std::collections::BTreeSet<String> = contracts
            .iter()
            .map(|c| format!("{}.{}", c.venue, c.symbol))
            .collect();
        assert_eq!(keys.len(), contracts.len(), "one contract per instrument");
        for c in &contracts {
            assert!(c.tick_size > 0.0 && c.multiplier > 0.0, "{c:?}");
            assert_eq!(c.expiry.len(), 10, "{c:?}");
        }
        // 1 January 2024, 00:00 UTC.
        assert_eq!(listing_time_nanos(2024), 1_704_067_200_000_000_000);
        // The same feed gives the same contracts (a re-publish is a duplicate, not a new version).
        assert_eq!(TickSim::new(TickSimConfig::default()).contracts(), contracts);
    }

    #[test]
    fn runs_and_feeds_that_cannot_work_are_refused_by_key() {
        assert!(TickRun::default().validate().is_ok());
        let key = |r: TickRun| r.validate().map_err(|e| e.key);
        assert_eq!(
            key(TickRun {
                rate: 0.0,
                ..TickRun::default()
            }),
            Err("rate")
        );
        assert_eq!(
            key(TickRun {
                rate: f64::INFINITY,
                ..TickRun::default()
            }),
            Err("rate")
        );
        assert_eq!(
            key(TickRun {
                burst_factor: 0.5,
                ..TickRun::default()
            }),
            Err("burst-factor")
        );
        let long_burst = TickRun {
            burst_len: Duration::from_secs(6),
            ..TickRun::default()
        };
        assert_eq!(key(long_burst), Err("burst-every"));
        let feed = |c: TickSimConfig| c.validate().map_err(|e| e.key);
        assert_eq!(
            feed(TickSimConfig {
                venues: 0,
                ..Default::default()
            }),
            Err("venues")
        );
        assert_eq!(
            feed(TickSimConfig {
                symbols_per_venue: 0,
                ..Default::default()
            }),
            Err("symbols")
        );
        assert_eq!(
            feed(TickSimConfig {
                out_of_order_rate: -0.1,
                ..Default::default()
            }),
            Err("ooo-rate")
        );
        let both = TickSimConfig {
            duplicate_rate: 0.6,
            out_of_order_rate: 0.6,
            ..Default::default()
        };
        assert_eq!(feed(both), Err("dup-rate"));
    }

    #[test]
    fn deterministic_and_flawed_like_a_feed() {
        let cfg = TickSimConfig {
            venues: 2,
            symbols_per_venue: 5,
            duplicate_rate: 0.01,
            out_of_order_rate: 0.01,
            seed: 11,
        };
        let a: Vec<(String, u64)> = TickSim::new(cfg.clone())
            .next_ticks(20_000)
            .iter()
            .map(|t| (format!("{}.{}", t.venue, t.symbol), t.seq))
            .collect();
        let b: Vec<(String, u64)> = TickSim::new(cfg)
            .next_ticks(20_000)
            .iter()
            .map(|t| (format!("{}.{}", t.venue, t.symbol), t.seq))
            .collect();
        assert_eq!(a, b, "same seed, same feed");
        let mut last = std::collections::HashMap::new();
        let (mut dups, mut backwards) = (0, 0);
        for (sym, seq) in &a {
            if let Some(prev) = last.insert(sym.clone(), *seq) {
                if *seq == prev {
                    dups += 1;
                } else if *seq < prev {
                    backwards += 1;
                }
            }
        }
        assert!(dups > 50 && dups < 600, "duplicates: {dups}");
        assert!(backwards > 50 && backwards < 600, "out of order: {backwards}");
    }

    #[test]
    fn books_are_sane() {
        let mut sim = TickSim::new(TickSimConfig::default());
        assert_eq!(sim.instruments(), 150);
        for t in sim.next_ticks(5_000) {
            assert!(t.bids[0].price < t.last && t.last < t.asks[0].price);
            assert!(t.bids.windows(2).all(|w| w[0].price > w[1].price));
            assert!(!t.venue.contains('.') && !t.symbol.contains('.'));
        }
    }
}
