//! Realistic, deterministic data generators.
//!
//! - [`BatterySim`]: battery cycler channels running a CC/CV charge → rest → CC discharge → rest
//!   program with capacity fade, internal resistance, polarisation and heating.
//! - [`TickSim`]: market ticks for seed 002 (venues, symbols, bursts, occasional out-of-order and
//!   duplicate ticks).
//! - [`udp`]: sends battery samples to a collector over UDP at a set rate.
//! - [`ticks`]: publishes ticks to `xy.src.tick.<venue>.<symbol>` and contracts (reference data)
//!   to `xy.ref.contract.<venue>.<symbol>`.
//!
//! Everything is reproducible from a seed (timestamps aside, which follow the wall clock).

mod battery;
pub mod ticks;
pub mod udp;

pub use battery::{BatteryParams, BatterySim};
pub use ticks::{TickSim, TickSimConfig};

/// A simulator setting that cannot work, named by its key (the `lt sim` option without `--`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("simulator setting `{key}`: {reason}")]
pub struct SimConfigError {
    /// The setting, e.g. `rate`.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SimConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// `v` must be a finite number > 0.
fn positive(key: &'static str, v: f64) -> Result<(), SimConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(SimConfigError::new(
            key,
            format!("must be a number above 0, got {v}"),
        ))
    }
}

/// `v` must be a probability (0 ≤ v ≤ 1).
fn probability(key: &'static str, v: f64) -> Result<(), SimConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(SimConfigError::new(
            key,
            format!("must be between 0 and 1, got {v}"),
        ))
    }
}

/// `v` must be at least 1.
fn at_least_one(key: &'static str, v: u64) -> Result<(), SimConfigError> {
    if v >= 1 {
        Ok(())
    } else {
        Err(SimConfigError::new(key, "must be at least 1, got 0"))
    }
}

/// Deterministic xorshift64* generator (no external dependency, reproducible from a seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (0 is mapped to a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }
    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// Approximately standard normal (sum of 4 uniforms, scaled).
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * (3.0f64).sqrt()
    }
}
