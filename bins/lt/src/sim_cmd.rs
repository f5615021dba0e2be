//! `lt sim battery|ticks`: argument handling and progress lines; the generators are in
//! `langtian_core::sim`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Subcommand};
use langtian_core::sim::ticks::{TickRun, publish_contracts, publish_ticks};
use langtian_core::sim::udp::{BatteryUdpConfig, send_battery_udp};
use langtian_core::sim::{TickSim, TickSimConfig};
use tokio::sync::watch;

use crate::{CmdError, ConnArgs};

/// `lt sim` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimCmd {
    /// Battery cyclers (CC/CV charge, rest, discharge, capacity fade) sending UDP datagrams
    /// (langtian.battery.v1.ChannelSampleBatch) to a collector.
    Battery(BatteryArgs),
    /// Market ticks for seed 002 (venues × symbols, bursts, a few duplicates and out-of-order
    /// ticks) published to xy.src.tick.<venue>.<symbol> (stream XY_SRC), after each instrument's
    /// contract to xy.ref.contract.<venue>.<symbol> (stream XY_REF).
    Ticks(TickArgs),
}

#[derive(Debug, Args)]
pub struct BatteryArgs {
    /// The collector's UDP address.
    #[arg(long, default_value = "127.0.0.1:14250")]
    to: SocketAddr,
    /// Cyclers.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Channels per cycler.
    #[arg(long, default_value_t = 16)]
    channels: u32,
    /// Samples per second (all channels).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Samples per datagram.
    #[arg(long, default_value_t = 10)]
    per_datagram: usize,
    /// Cell time between two samples of a channel (larger = faster cycling).
    #[arg(long, default_value = "1s", value_parser = langtian_core::cli::duration_arg)]
    sample_interval: Duration,
    /// Stop after this many samples.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long.
    #[arg(long, value_parser = langtian_core::cli::duration_arg)]
    duration: Option<Duration>,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct TickArgs {
    /// Venues.
    #[arg(long, default_value_t = 3)]
    venues: usize,
    /// Instruments per venue.
    #[arg(long, default_value_t = 50)]
    symbols: usize,
    /// Average ticks per second (bursts of 4× every 5 s included).
    #[arg(long, default_value_t = 4000.0)]
    rate: f64,
    /// Probability of a duplicated tick.
    #[arg(long, default_value_t = 0.001)]
    dup_rate: f64,
    /// Probability of an out-of-order tick.
    #[arg(long, default_value_t = 0.002)]
    ooo_rate: f64,
    /// Stop after this many ticks.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long.
    #[arg(long, value_parser = langtian_core::cli::duration_arg)]
    duration: Option<Duration>,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the instruments' contracts (reference data) go first, one per instrument
    /// (`<prefix>.<venue>.<symbol>`, stream XY_REF); `off` not to publish them.
    #[arg(long, default_value = "xy.ref.contract")]
    contracts_prefix: String,
}

fn stop_after(limit: Option<Duration>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::ctrl_c_or(limit).await;
        let _ = tx.send(true);
    });
    rx
}

/// Runs `lt sim …`; a setting that cannot work is a configuration error (exit 10).
pub async fn cmd_sim(conn: &ConnArgs, cmd: &SimCmd) -> Result<(), CmdError> {
    match cmd {
        SimCmd::Battery(a) => {
            let cfg = BatteryUdpConfig {
                devices: a.devices,
                channels: a.channels,
                rate: a.rate,
                per_datagram: a.per_datagram,
                sample_interval: a.sample_interval,
                count: a.count,
                seed: a.seed,
                ..BatteryUdpConfig::new(a.to)
            };
            cfg.validate().map_err(CmdError::config)?;
            eprintln!(
                "lt sim battery: {} cyclers × {} channels, {} samples/s, {} per datagram → udp://{}",
                a.devices, a.channels, a.rate, a.per_datagram, a.to
            );
            let r = send_battery_udp(&cfg, stop_after(a.duration), |r| {
                eprintln!(
                    "  {:>8.1}s  {:>10} samples  {:>9} datagrams",
                    r.seconds, r.samples, r.datagrams
                )
            })
            .await
            .map_err(|e| format!("sending to {}: {e}", a.to))?;
            println!(
                "sent {} samples in {} datagrams in {:.1}s ({:.0} samples/s)",
                r.samples,
                r.datagrams,
                r.seconds,
                r.samples as f64 / r.seconds.max(1e-9)
            );
        }
        SimCmd::Ticks(a) => {
            let sim_cfg = TickSimConfig {
                venues: a.venues,
                symbols_per_venue: a.symbols,
                duplicate_rate: a.dup_rate,
                out_of_order_rate: a.ooo_rate,
                seed: a.seed,
            };
            let run = TickRun {
                rate: a.rate,
                count: a.count,
                ..TickRun::default()
            };
            // Refused before connecting, so the error is about the setting, not the server.
            sim_cfg.validate().map_err(CmdError::config)?;
            run.validate().map_err(CmdError::config)?;
            let bus = conn.connect().await?;
            let mut sim = TickSim::new(sim_cfg);
            if a.contracts_prefix != "off" {
                let n = publish_contracts(&bus, &sim, &a.contracts_prefix)
                    .await
                    .map_err(|e| {
                        format!(
                            "publishing contracts to {}.>: {e} (`--contracts-prefix off` skips them)",
                            a.contracts_prefix
                        )
                    })?;
                eprintln!(
                    "lt sim ticks: {n} contracts → {}.<venue>.<symbol>",
                    a.contracts_prefix
                );
            }
            eprintln!(
                "lt sim ticks: {} instruments, {} ticks/s → {}.<venue>.<symbol>",
                sim.instruments(),
                a.rate,
                run.prefix
            );
            let r = publish_ticks(&bus, &mut sim, &run, stop_after(a.duration), |r| {
                eprintln!("  {:>8.1}s  {:>10} ticks", r.seconds, r.published)
            })
            .await
            .map_err(|e| e.to_string())?;
            println!(
                "published {} ticks in {:.1}s ({:.0}/s)",
                r.published,
                r.seconds,
                r.published as f64 / r.seconds.max(1e-9)
            );
        }
    }
    Ok(())
}
