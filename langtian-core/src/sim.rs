//! Data generators. This first version holds a small battery-cycler generator used by `lt up`'s
//! demo producer; the full simulators (UDP senders, market ticks) build on it.
//!
//! ```
//! use langtian_core::sim::BatterySim;
//! let mut sim = BatterySim::new(2, 4, 42);
//! let samples = sim.step(1_000_000_000);
//! assert_eq!(samples.len(), 8);
//! assert!(samples.iter().all(|s| s.voltage > 2.5 && s.voltage < 4.3));
//! ```

use crate::proto::battery::v1::{ChannelSample, StepType};

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
}

#[derive(Debug, Clone)]
struct Channel {
    device: usize,
    channel: u32,
    cycle: u32,
    step: u32,
    soc: f64,
    capacity: f64,
    energy: f64,
    temp: f64,
    seq: u64,
    capacity_ah: f64,
}

/// N devices × M channels cycling CC charge → rest → CC discharge → rest.
#[derive(Debug, Clone)]
pub struct BatterySim {
    channels: Vec<Channel>,
    rng: Rng,
    now_ns: i64,
}

impl BatterySim {
    /// A simulator with `devices` × `channels` channels, deterministic for `seed`.
    pub fn new(devices: usize, channels: u32, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut chans = Vec::new();
        for d in 0..devices {
            for c in 0..channels {
                chans.push(Channel {
                    device: d,
                    channel: c,
                    cycle: 1,
                    step: 0,
                    soc: 20.0 + 60.0 * rng.unit(),
                    capacity: 0.0,
                    energy: 0.0,
                    temp: 24.0 + rng.unit(),
                    seq: 0,
                    capacity_ah: 2.9 + 0.2 * rng.unit(),
                });
            }
        }
        Self {
            channels: chans,
            rng,
            now_ns: crate::envelope::now_nanos(),
        }
    }

    /// Number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Advances every channel by `dt_ns` and returns one sample per channel.
    pub fn step(&mut self, dt_ns: i64) -> Vec<ChannelSample> {
        self.now_ns += dt_ns;
        let dt_h = dt_ns as f64 / 3.6e12;
        let now = self.now_ns;
        let mut out = Vec::with_capacity(self.channels.len());
        for ch in &mut self.channels {
            let (step_type, current) = match ch.step % 4 {
                0 => (StepType::CcCharge, 1.5),
                1 | 3 => (StepType::Rest, 0.0),
                _ => (StepType::CcDischarge, -1.5),
            };
            let noise = (self.rng.unit() - 0.5) * 0.004;
            ch.soc = (ch.soc + 100.0 * current * dt_h / ch.capacity_ah).clamp(0.0, 100.0);
            let ocv = 3.0 + 1.2 * (ch.soc / 100.0) - 0.1 * (1.0 - ch.soc / 100.0).powi(4);
            let voltage = (ocv + 0.05 * current + noise).clamp(2.6, 4.25);
            ch.capacity += current.abs() * dt_h;
            ch.energy += current.abs() * voltage * dt_h;
            let heat = 0.02 * current.abs();
            ch.temp += (heat - 0.01 * (ch.temp - 25.0)) * dt_ns as f64 / 1e9 * 0.1;
            ch.seq += 1;
            out.push(ChannelSample {
                device_id: format!("cycler-{:02}", ch.device),
                channel: ch.channel,
                cycle: ch.cycle,
                step: ch.step,
                step_type: step_type as i32,
                voltage,
                current,
                temperature: ch.temp,
                capacity: ch.capacity,
                energy: ch.energy,
                soc: ch.soc,
                seq: ch.seq,
                ts_device: now,
                ts_received: 0,
            });
            let step_done = match step_type {
                StepType::CcCharge => ch.soc >= 95.0,
                StepType::CcDischarge => ch.soc <= 10.0,
                _ => ch.seq % 60 == 0,
            };
            if step_done {
                ch.step += 1;
                ch.capacity = 0.0;
                ch.energy = 0.0;
                if ch.step % 4 == 0 {
                    ch.cycle += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed() {
        let a = BatterySim::new(1, 2, 7).step(1_000_000_000);
        let b = BatterySim::new(1, 2, 7).step(1_000_000_000);
        assert_eq!(
            a.iter().map(|s| s.voltage).collect::<Vec<_>>(),
            b.iter().map(|s| s.voltage).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sequences_increase_and_charge_raises_soc() {
        let mut sim = BatterySim::new(1, 1, 1);
        let first = sim.step(1_000_000_000).remove(0);
        let mut last = first.clone();
        for _ in 0..100 {
            let s = sim.step(1_000_000_000).remove(0);
            assert_eq!(s.seq, last.seq + 1);
            last = s;
        }
        assert!(last.soc > first.soc, "CC charge must raise SOC");
    }
}
