//! Battery cycler channels.
//!
//! Each channel runs the classic test program of a Li-ion cell, cycle after cycle:
//! CC charge at `charge_c` × capacity until the terminal voltage reaches `v_max` → CV charge at
//! `v_max` until the current falls below `cutoff_c` × capacity → rest → CC discharge at
//! `discharge_c` × capacity down to `v_min` → rest. The cell model is an open-circuit-voltage
//! curve of the state of charge, an ohmic resistance, one RC polarisation branch (so the voltage
//! relaxes during rests), Joule heating against ambient cooling, and per-cycle capacity fade and
//! resistance growth, so a long run shows capacity fading per channel.
//!
//! ```
//! use langtian_core::sim::BatterySim;
//! let mut sim = BatterySim::new(2, 4, 42);
//! let samples = sim.step(1_000_000_000);
//! assert_eq!(samples.len(), 8);
//! assert!(samples.iter().all(|s| s.voltage > 2.5 && s.voltage < 4.3));
//! ```

use super::Rng;
use crate::proto::battery::v1::{ChannelSample, StepType};

/// The test program and cell parameters shared by all channels (each channel varies them a little).
#[derive(Debug, Clone)]
pub struct BatteryParams {
    /// Nominal capacity, Ah.
    pub capacity_ah: f64,
    /// CC charge current as a C-rate.
    pub charge_c: f64,
    /// CC discharge current as a C-rate.
    pub discharge_c: f64,
    /// CV end current as a C-rate.
    pub cutoff_c: f64,
    /// Charge voltage limit, V.
    pub v_max: f64,
    /// Discharge cut-off voltage, V.
    pub v_min: f64,
    /// Rest after each charge and discharge, seconds of cell time.
    pub rest_s: f64,
    /// Capacity lost per cycle (fraction of nominal).
    pub fade_per_cycle: f64,
    /// Ohmic resistance of a new cell, Ω.
    pub r_ohm: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
}

impl Default for BatteryParams {
    fn default() -> Self {
        Self {
            capacity_ah: 3.0,
            charge_c: 0.5,
            discharge_c: 1.0,
            cutoff_c: 0.05,
            v_max: 4.2,
            v_min: 2.75,
            rest_s: 600.0,
            fade_per_cycle: 0.001,
            r_ohm: 0.035,
            ambient_c: 25.0,
        }
    }
}

/// Open-circuit voltage of an NMC-like cell at state of charge `x` (0..1).
fn ocv(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    3.35 + 0.75 * x - 0.25 * (-20.0 * x).exp() - 0.5 * (-40.0 * x).exp() + 0.08 * (-(1.0 - x) * 25.0).exp()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CcCharge,
    CvCharge,
    RestAfterCharge,
    CcDischarge,
    RestAfterDischarge,
}

impl Phase {
    fn step_type(self) -> StepType {
        match self {
            Phase::CcCharge => StepType::CcCharge,
            Phase::CvCharge => StepType::CvCharge,
            Phase::RestAfterCharge | Phase::RestAfterDischarge => StepType::Rest,
            Phase::CcDischarge => StepType::CcDischarge,
        }
    }
}

#[derive(Debug, Clone)]
struct Channel {
    device_id: String,
    channel: u32,
    cycle: u32,
    step: u32,
    phase: Phase,
    phase_s: f64,
    soc: f64,
    v_pol: f64,
    current: f64,
    capacity: f64,
    energy: f64,
    temp: f64,
    seq: u64,
    capacity_ah: f64,
    fade: f64,
    r_ohm: f64,
}

/// N devices × M channels, each running the CC/CV cycling program.
#[derive(Debug, Clone)]
pub struct BatterySim {
    channels: Vec<Channel>,
    params: BatteryParams,
    rng: Rng,
    now_ns: i64,
}

const R_POL: f64 = 0.02;
const TAU_POL_S: f64 = 40.0;

impl BatterySim {
    /// A simulator with `devices` × `channels` channels and default parameters, deterministic for `seed`.
    pub fn new(devices: usize, channels: u32, seed: u64) -> Self {
        Self::with_params(devices, channels, seed, BatteryParams::default())
    }

    /// A simulator with explicit parameters.
    pub fn with_params(devices: usize, channels: u32, seed: u64, params: BatteryParams) -> Self {
        let mut rng = Rng::new(seed);
        let mut chans = Vec::with_capacity(devices * channels as usize);
        for d in 0..devices {
            for c in 0..channels {
                // Start somewhere in the program so channels are not in lock step.
                let soc = rng.range(0.15, 0.85);
                let phase = if rng.unit() < 0.5 {
                    Phase::CcCharge
                } else {
                    Phase::CcDischarge
                };
                chans.push(Channel {
                    device_id: format!("cycler-{d:02}"),
                    channel: c,
                    cycle: 1,
                    step: if phase == Phase::CcCharge { 1 } else { 4 },
                    phase,
                    phase_s: 0.0,
                    soc,
                    v_pol: 0.0,
                    current: 0.0,
                    capacity: 0.0,
                    energy: 0.0,
                    temp: params.ambient_c + rng.range(-0.5, 0.5),
                    seq: 0,
                    capacity_ah: params.capacity_ah * rng.range(0.97, 1.03),
                    fade: params.fade_per_cycle * rng.range(0.7, 1.3),
                    r_ohm: params.r_ohm * rng.range(0.9, 1.1),
                });
            }
        }
        Self {
            channels: chans,
            params,
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

    /// Advances every channel by `dt_ns` of cell time and returns one sample per channel.
    pub fn step(&mut self, dt_ns: i64) -> Vec<ChannelSample> {
        self.now_ns += dt_ns;
        let dt_s = (dt_ns.max(1) as f64) / 1e9;
        let now = self.now_ns;
        let p = &self.params;
        let rng = &mut self.rng;
        self.channels
            .iter_mut()
            .map(|ch| advance(ch, p, rng, dt_s, now))
            .collect()
    }
}

fn advance(ch: &mut Channel, p: &BatteryParams, rng: &mut Rng, dt_s: f64, now: i64) -> ChannelSample {
    let cap = (ch.capacity_ah * (1.0 - ch.fade * f64::from(ch.cycle - 1))).max(0.2 * ch.capacity_ah);
    let r = ch.r_ohm * (1.0 + 0.002 * f64::from(ch.cycle - 1)) * (1.0 + 0.01 * (25.0 - ch.temp).max(0.0));
    let x = ch.soc;
    // Current this interval (positive = charge).
    let current = match ch.phase {
        Phase::CcCharge => p.charge_c * ch.capacity_ah,
        Phase::CvCharge => ((p.v_max - ocv(x) - ch.v_pol) / r).clamp(0.0, p.charge_c * ch.capacity_ah),
        Phase::RestAfterCharge | Phase::RestAfterDischarge => 0.0,
        Phase::CcDischarge => -p.discharge_c * ch.capacity_ah,
    };
    let dt_h = dt_s / 3600.0;
    ch.soc = (ch.soc + current * dt_h / cap).clamp(0.0, 1.0);
    // RC branch relaxes towards I·R_pol with time constant TAU.
    let k = (-dt_s / TAU_POL_S).exp();
    ch.v_pol = ch.v_pol * k + current * R_POL * (1.0 - k);
    let noise = rng.normal() * 0.0008;
    let voltage = if ch.phase == Phase::CvCharge {
        p.v_max + noise * 0.25
    } else {
        ocv(ch.soc) + current * r + ch.v_pol + noise
    }
    .clamp(2.5, 4.3);
    let heat_w = current * current * (r + R_POL);
    ch.temp += (heat_w * 0.6 - 0.012 * (ch.temp - p.ambient_c)) * dt_s / 60.0;
    ch.temp = ch.temp.clamp(p.ambient_c - 5.0, p.ambient_c + 40.0);
    ch.capacity += current.abs() * dt_h;
    ch.energy += current.abs() * voltage * dt_h;
    ch.current = current;
    ch.phase_s += dt_s;
    ch.seq += 1;
    let sample = ChannelSample {
        device_id: ch.device_id.clone(),
        channel: ch.channel,
        cycle: ch.cycle,
        step: ch.step,
        step_type: ch.phase.step_type() as i32,
        voltage,
        current: current + rng.normal() * 0.0005 * (current != 0.0) as u8 as f64,
        temperature: ch.temp + rng.normal() * 0.02,
        capacity: ch.capacity,
        energy: ch.energy,
        soc: ch.soc * 100.0,
        seq: ch.seq,
        ts_device: now,
        ts_received: 0,
    };
    let next = match ch.phase {
        Phase::CcCharge if voltage >= p.v_max || ch.soc >= 1.0 => Some(Phase::CvCharge),
        Phase::CvCharge if current <= p.cutoff_c * ch.capacity_ah || ch.soc >= 1.0 => {
            Some(Phase::RestAfterCharge)
        }
        Phase::RestAfterCharge if ch.phase_s >= p.rest_s => Some(Phase::CcDischarge),
        Phase::CcDischarge if voltage <= p.v_min || ch.soc <= 0.0 => Some(Phase::RestAfterDischarge),
        Phase::RestAfterDischarge if ch.phase_s >= p.rest_s => Some(Phase::CcCharge),
        _ => None,
    };
    if let Some(n) = next {
        if n == Phase::CcCharge {
            ch.cycle += 1;
        }
        ch.phase = n;
        ch.phase_s = 0.0;
        ch.step += 1;
        ch.capacity = 0.0;
        ch.energy = 0.0;
    }
    sample
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
    fn sequences_increase_and_values_stay_physical() {
        let mut sim = BatterySim::new(2, 4, 1);
        let mut last = sim.step(1_000_000_000);
        for _ in 0..20_000 {
            let now = sim.step(10_000_000_000);
            for (a, b) in last.iter().zip(&now) {
                assert_eq!(b.seq, a.seq + 1);
                assert!(b.voltage.is_finite() && (2.5..=4.3).contains(&b.voltage));
                assert!((0.0..=100.0).contains(&b.soc));
                assert!(b.temperature.is_finite() && b.temperature < 70.0);
            }
            last = now;
        }
    }

    /// Runs one channel through whole cycles and checks the program's shape: CC charge ends at
    /// v_max, CV current tapers to the cut-off, discharge ends at v_min, capacity fades.
    #[test]
    fn cc_cv_program_and_capacity_fade() {
        let mut sim = BatterySim::new(1, 1, 3);
        let mut cv_currents = Vec::new();
        let mut discharge_ah_per_cycle = std::collections::BTreeMap::new();
        let mut saw = std::collections::BTreeSet::new();
        let mut prev: Option<ChannelSample> = None;
        for _ in 0..200_000 {
            let s = sim.step(5_000_000_000).remove(0);
            let st = StepType::try_from(s.step_type).unwrap_or(StepType::Unspecified);
            saw.insert(s.step_type);
            if st == StepType::CvCharge {
                cv_currents.push(s.current);
                assert!(
                    (s.voltage - 4.2).abs() < 0.01,
                    "CV holds the voltage: {}",
                    s.voltage
                );
            }
            if let Some(p) = &prev {
                let pst = StepType::try_from(p.step_type).unwrap_or(StepType::Unspecified);
                if pst == StepType::CcDischarge && st != StepType::CcDischarge {
                    assert!(p.voltage <= 2.8, "discharge ends near v_min: {}", p.voltage);
                    discharge_ah_per_cycle.insert(p.cycle, p.capacity);
                }
                if pst == StepType::CcCharge && st == StepType::CvCharge {
                    assert!(p.voltage >= 4.19, "CC charge ends at v_max: {}", p.voltage);
                }
            }
            prev = Some(s);
            if discharge_ah_per_cycle.len() >= 12 {
                break;
            }
        }
        for t in [
            StepType::CcCharge,
            StepType::CvCharge,
            StepType::Rest,
            StepType::CcDischarge,
        ] {
            assert!(saw.contains(&(t as i32)), "program runs {t:?}");
        }
        assert!(cv_currents.first() > cv_currents.last(), "CV current tapers");
        // Skip the first (partial) cycle; full discharges lose capacity cycle after cycle.
        let caps: Vec<f64> = discharge_ah_per_cycle.values().skip(2).copied().collect();
        assert!(caps.len() >= 8, "{caps:?}");
        assert!(caps.first() > caps.last(), "capacity fades over cycles: {caps:?}");
        assert!(caps.iter().all(|c| *c > 2.0 && *c < 3.2), "{caps:?}");
    }
}
