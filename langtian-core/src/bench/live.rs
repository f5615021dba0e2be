//! `lt bench live`: market ticks → JetStream (`XY_SRC`) → aggregator (33 ms deltas) → gateway
//! (16 ms batches) → N WebSocket clients, at the seed's load (4k ticks/s) and a stress load
//! (40k ticks/s). Latency is taken per delivered tick from its `ts_exchange` (stamped by the
//! simulator right before publishing) to the client's receipt; the raw limit beside it is a bare
//! core-NATS publish → subscribe of the same ticks in the same run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::sync::watch;

use super::{BenchError, BenchRecord, Host};
use crate::aggregate::AggregatorConfig;
use crate::aggregate::service::{AggregatorStats, run_aggregator};
use crate::bus::{Bus, BusOptions, Topology};
use crate::envelope::now_nanos;
use crate::gateway::auth::{Claims, JwtConfig, sign_hs256};
use crate::gateway::{Gateway, GatewayConfig, GatewayStats};
use crate::natsd::{NatsServer, NatsServerConfig};
use crate::proto::gateway::v1 as pb;
use crate::proto::md::v1::{Delta, Tick};
use crate::sim::ticks::{TickRun, publish_ticks};
use crate::sim::{TickSim, TickSimConfig};

/// Settings of `lt bench live`.
#[derive(Debug, Clone)]
pub struct LiveBenchConfig {
    /// Steps: (ticks per second, the aggregator's delta interval).
    pub steps: Vec<(f64, Duration)>,
    /// Seconds measured per rate (after the warm-up).
    pub seconds: f64,
    /// Seconds of warm-up per rate (not measured).
    pub warmup: f64,
    /// WebSocket clients.
    pub clients: usize,
}

impl LiveBenchConfig {
    /// `--quick`: a few seconds, for smoke tests.
    pub fn quick() -> Self {
        let d33 = Duration::from_millis(33);
        Self {
            // The seed's load and the stress load at the default 33 ms, then the seed's load
            // with the shortest delta interval the aggregator allows (16 ms).
            steps: vec![
                (4_000.0, d33),
                (40_000.0, d33),
                (4_000.0, Duration::from_millis(16)),
            ],
            seconds: 2.0,
            warmup: 1.0,
            clients: 5,
        }
    }
    /// The full run.
    pub fn full() -> Self {
        Self {
            seconds: 20.0,
            warmup: 3.0,
            ..Self::quick()
        }
    }
}

const NONE: usize = usize::MAX;
const SECRET: &[u8] = b"lt-bench-live-secret-0123";

/// The parts of a tick's way, in order: publish → aggregator receipt, aggregator receipt → delta
/// sent, delta sent → gateway receipt, gateway receipt → batch sent, batch sent → client receipt;
/// and the whole way (index 5).
const PARTS: [&str; 6] = [
    "publish→aggregator",
    "aggregator wait",
    "aggregator→gateway",
    "gateway wait",
    "gateway→client",
    "total",
];

/// One measured step's samples: latency (µs) per part, and each tick's publish time.
#[derive(Debug, Default)]
struct StepSamples {
    parts: [Vec<u32>; 6],
    published_ns: Vec<i64>,
}

/// Latency samples per measured step, shared by the clients.
#[derive(Debug, Default)]
struct Samples {
    step: AtomicUsize,
    by_step: Mutex<Vec<StepSamples>>,
}

impl Samples {
    fn record(&self, published_ns: i64, parts_ns: [i64; 6]) {
        let step = self.step.load(Ordering::Relaxed);
        if step == NONE {
            return;
        }
        let mut v = self.by_step.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() <= step {
            v.resize_with(step + 1, Default::default);
        }
        for (i, ns) in parts_ns.iter().enumerate() {
            v[step].parts[i].push(u32::try_from((ns / 1000).max(0)).unwrap_or(u32::MAX));
        }
        v[step].published_ns.push(published_ns);
    }
    fn take(&self, step: usize) -> StepSamples {
        let mut v = self.by_step.lock().unwrap_or_else(|p| p.into_inner());
        v.get_mut(step).map(std::mem::take).unwrap_or_default()
    }
}

/// A window whose worst tick took longer than this is reported as a stall: well above every
/// part's usual p99, so a pause of the pipeline stands out with when and where it happened.
const STALL_MS: f64 = 100.0;

/// Width of a window of the stall timeline.
const WINDOW_MS: i64 = 250;

/// The worst moments of a step: per [`WINDOW_MS`] window of publish time, the largest total
/// latency and its largest publish → aggregator part, for the windows whose total exceeds
/// `over_ms`, worst first. `at_s` is seconds after the first measured tick.
fn stalls(s: &StepSamples, over_ms: f64) -> Vec<Stall> {
    let Some(first) = s.published_ns.iter().copied().min() else {
        return Vec::new();
    };
    let mut windows: std::collections::BTreeMap<i64, (u32, u32)> = std::collections::BTreeMap::new();
    for (i, t) in s.published_ns.iter().enumerate() {
        let w = windows.entry((t - first) / (WINDOW_MS * 1_000_000)).or_default();
        w.0 = w.0.max(s.parts[5][i]);
        w.1 = w.1.max(s.parts[0][i]);
    }
    let mut out: Vec<Stall> = windows
        .into_iter()
        .filter(|(_, (total, _))| f64::from(*total) / 1000.0 > over_ms)
        .map(|(w, (total, to_agg))| Stall {
            at_s: (w * WINDOW_MS) as f64 / 1000.0,
            total_max_ms: f64::from(total) / 1000.0,
            publish_to_aggregator_max_ms: f64::from(to_agg) / 1000.0,
        })
        .collect();
    out.sort_by(|a, b| b.total_max_ms.total_cmp(&a.total_max_ms));
    out
}

/// A window of a step whose worst tick took longer than the stall threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Stall {
    at_s: f64,
    total_max_ms: f64,
    publish_to_aggregator_max_ms: f64,
}

/// p50, p95, p99 in milliseconds.
fn percentiles(mut v: Vec<u32>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_unstable();
    let at = |q: f64| f64::from(v[((v.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    (at(0.50), at(0.95), at(0.99))
}

async fn client(url: String, samples: Arc<Samples>, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let sub = pb::ClientFrame {
        kind: Some(pb::client_frame::Kind::Subscribe(pb::Subscribe {
            id: 1,
            subject: "xy.md.tick.>".into(),
            priority: true,
        })),
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        sub.encode_to_vec().into(),
    ))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => return Ok(()),
        };
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = m else {
            if m.is_none() {
                return Err("the gateway closed the connection".into());
            }
            continue;
        };
        let now = now_nanos();
        let Ok(frame) = pb::ServerFrame::decode(b.as_ref()) else {
            continue;
        };
        if let Some(pb::server_frame::Kind::Batch(batch)) = frame.kind {
            for f in batch.messages {
                if let Ok(d) = Delta::decode(f.payload.as_ref()) {
                    for t in d.ticks {
                        samples.record(
                            t.ts_exchange,
                            [
                                t.ts_arrival - t.ts_exchange,
                                d.ts - t.ts_arrival,
                                f.ts_received - d.ts,
                                batch.ts - f.ts_received,
                                now - batch.ts,
                                now - t.ts_exchange,
                            ],
                        );
                    }
                }
            }
        }
    }
}

/// Bare limit: core publish of the same ticks → a bare subscriber, latency from `ts_exchange`.
async fn bare_latency(bus: &Bus, rate: f64, seconds: f64) -> Result<Vec<u32>, BenchError> {
    let err = |e: String| BenchError::Baseline(e);
    let mut sub = bus
        .client()
        .subscribe("bench.bare.>")
        .await
        .map_err(|e| err(e.to_string()))?;
    bus.client().flush().await.map_err(|e| err(e.to_string()))?;
    let n = (rate * seconds) as usize;
    let reader = tokio::spawn(async move {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(m)) => {
                    let now = now_nanos();
                    if let Ok(t) = Tick::decode(m.payload.as_ref()) {
                        v.push(u32::try_from(((now - t.ts_exchange) / 1000).max(0)).unwrap_or(u32::MAX));
                    }
                }
                _ => break,
            }
        }
        v
    });
    let mut sim = TickSim::new(TickSimConfig {
        seed: 99,
        ..TickSimConfig::default()
    });
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < n {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(n);
        if due > sent {
            for t in sim.next_ticks(due - sent) {
                let subject = TickSim::subject("bench.bare", &t);
                bus.client()
                    .publish(subject, t.encode_to_vec().into())
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
            sent = due;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    reader.await.map_err(|e| err(e.to_string()))
}

/// Runs the benchmark; `progress` receives one line per step.
pub async fn bench_live(
    cfg: &LiveBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    let err = |e: String| BenchError::Baseline(e);
    let dir = tempfile::Builder::new()
        .prefix("lt-bench-live-")
        .tempdir()
        .map_err(|e| err(e.to_string()))?;
    let server = NatsServer::start(NatsServerConfig::new(dir.path().join("nats"))).await?;
    let bus = Bus::connect(&BusOptions::new(&server.client_url())).await?;
    Topology::default_topology()?.apply(&bus).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let gcfg = GatewayConfig::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        JwtConfig::hs256(SECRET.to_vec()),
    );
    let batch_ms = gcfg.degrade.batch_interval.as_millis();
    let gw = Gateway::bind(gcfg).await.map_err(|e| err(e.to_string()))?;
    let ws_url = gw.ws_url();
    let gw_stats = Arc::new(GatewayStats::default());
    let gw_task = tokio::spawn(gw.run(bus.clone(), gw_stats.clone(), stop_rx.clone()));
    let token = sign_hs256(
        SECRET,
        &Claims::new("bench", vec!["xy.md.>".into()], Duration::from_secs(3600)),
    )
    .map_err(err)?;
    let samples = Arc::new(Samples {
        step: AtomicUsize::new(NONE),
        ..Samples::default()
    });
    // Wait for the gateway to accept, then connect the clients.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(gw_task_addr(&ws_url))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(err("the gateway did not start".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut clients = Vec::new();
    for _ in 0..cfg.clients {
        clients.push(tokio::spawn(client(
            format!("{ws_url}?token={token}"),
            samples.clone(),
            stop_rx.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw_stats.active.load(Ordering::Relaxed) < cfg.clients as u64 {
        if Instant::now() > deadline {
            return Err(err("the WebSocket clients did not connect".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut records = Vec::new();
    let mut sim = TickSim::new(TickSimConfig::default());
    for (step, (rate, delta_interval)) in cfg.steps.iter().copied().enumerate() {
        // A fresh aggregator per step (it restores from its KV snapshots, as after a restart).
        let agg_cfg = AggregatorConfig {
            battery: None,
            contracts: None,
            delta_interval,
            ..AggregatorConfig::default()
        };
        let agg_stats = Arc::new(AggregatorStats::default());
        let (agg_stop_tx, agg_stop_rx) = watch::channel(false);
        let agg = tokio::spawn(run_aggregator(
            bus.clone(),
            agg_cfg.clone(),
            agg_stats.clone(),
            agg_stop_rx,
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agg_stats.ticks.ready.load(Ordering::Relaxed) {
            if Instant::now() > deadline || agg.is_finished() {
                return Err(err("the aggregator did not start".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bare = bare_latency(&bus, rate, cfg.seconds.min(5.0)).await?;
        let (b50, b95, b99) = percentiles(bare);
        let run = TickRun {
            rate,
            count: Some((rate * (cfg.warmup + cfg.seconds)) as u64),
            // Steady load: the seed's bursts would make the two rates incomparable.
            burst_factor: 1.0,
            ..TickRun::default()
        };
        let (pub_stop_tx, pub_stop_rx) = watch::channel(false);
        let ingested0 = agg_stats.ticks.ingested.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let warm = Duration::from_secs_f64(cfg.warmup);
        let s = samples.clone();
        let marker = tokio::spawn(async move {
            tokio::time::sleep(warm).await;
            s.step.store(step, Ordering::Relaxed);
        });
        let report = publish_ticks(&bus, &mut sim, &run, pub_stop_rx, |_| {}).await?;
        drop(pub_stop_tx);
        let _ = marker.await;
        // Let the last deltas arrive, then stop measuring.
        tokio::time::sleep(Duration::from_millis(300)).await;
        samples.step.store(NONE, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let published_rate = report.published as f64 / elapsed;
        let ingested = agg_stats.ticks.ingested.load(Ordering::Relaxed) - ingested0;
        let step_samples = samples.take(step);
        // Where the tail came from: the windows whose worst tick took over STALL_MS.
        let slow = stalls(&step_samples, STALL_MS);
        let mut parts = step_samples.parts;
        let got = std::mem::take(&mut parts[5]);
        let delivered = got.len() as f64 / cfg.clients as f64 / cfg.seconds;
        let (p50, p95, p99) = percentiles(got);
        let breakdown: Vec<(String, f64, f64)> = parts[..5]
            .iter()
            .zip(PARTS)
            .map(|(v, name)| {
                let (a, _, c) = percentiles(v.clone());
                (name.to_owned(), a, c)
            })
            .collect();
        let parts_text: Vec<String> = breakdown
            .iter()
            .map(|(n, a, c)| format!("{n} {a:.1}/{c:.1}"))
            .collect();
        let _ = agg_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), agg).await;
        let dms = delta_interval.as_millis();
        progress(&format!(
            "{rate:>6.0} ticks/s, deltas every {dms} ms (published {published_rate:.0}/s, aggregator took {ingested}): tick → WebSocket client p50 {p50:.1} ms · p95 {p95:.1} ms · p99 {p99:.1} ms over {} clients ({delivered:.0} ticks/s each after conflation) · bare core NATS p50 {b50:.2} · p99 {b99:.2} ms\n      parts p50/p99 ms: {}",
            cfg.clients,
            parts_text.join(" · ")
        ));
        if let Some(worst) = slow.first() {
            progress(&format!(
                "      {} window(s) of {WINDOW_MS} ms with a tick over {STALL_MS:.0} ms; the worst at +{:.2} s: {:.1} ms, of which publish→aggregator {:.1} ms",
                slow.len(),
                worst.at_s,
                worst.total_max_ms,
                worst.publish_to_aggregator_max_ms
            ));
        }
        let target = if rate <= 4_000.0 { 30.0 } else { 180.0 };
        // A tick waits for the aggregator's next delta, uniformly over the interval: the p99 of
        // that wait alone, before any transport, is 0.99 × the interval.
        let wait_floor_p99 = 0.99 * agg_cfg.delta_interval.as_secs_f64() * 1000.0;
        if p99 > target && wait_floor_p99 > target * 0.9 {
            progress(&format!(
                "      target p99 ≤ {target:.0} ms not met: the wait for the next delta alone has p99 {wait_floor_p99:.1} ms with deltas every {dms} ms"
            ));
        }
        records.push(BenchRecord {
            bench: "live".into(),
            case: format!("tick_to_ws_p99_{}k_{dms}ms", (rate / 1000.0).round()),
            unit: "ms".into(),
            ours: p99,
            baseline: Some(b99),
            baseline_what: "bare core NATS publish → subscribe of the same ticks, p99".into(),
            ratio: Some(p99 / b99),
            target,
            meets: p99 <= target,
            params: serde_json::json!({
                "rate": rate, "seconds": cfg.seconds, "clients": cfg.clients,
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "bare_p50_ms": b50, "bare_p95_ms": b95, "bare_p99_ms": b99,
                "parts_p50_p99_ms": breakdown.iter().map(|(n, a, c)| serde_json::json!({"part": n, "p50": a, "p99": c})).collect::<Vec<_>>(),
                "delta_interval_ms": agg_cfg.delta_interval.as_millis(),
                "delta_wait_floor_p99_ms": wait_floor_p99,
                "batch_interval_ms": batch_ms,
                "delivered_ticks_per_s_per_client": delivered,
                "stall_windows_over_100ms": slow.len(),
                "worst_stall_windows": &slow[..slow.len().min(5)],
                "target_note": if rate <= 4_000.0 { "issue 5: p99 ≤ 30 ms at 4k/s" } else { "seed 002: p99 < 180 ms end to end" },
            }),
            host: Host::now(),
        });
    }
    let _ = stop_tx.send(true);
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), gw_task).await;
    Ok(records)
}

fn gw_task_addr(ws_url: &str) -> String {
    ws_url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(s: &mut StepSamples, published_ms: i64, to_agg_ms: u32, total_ms: u32) {
        s.published_ns.push(published_ms * 1_000_000);
        for (i, v) in s.parts.iter_mut().enumerate() {
            v.push(match i {
                0 => to_agg_ms * 1000,
                5 => total_ms * 1000,
                _ => 0,
            });
        }
    }

    #[test]
    fn stalls_name_the_windows_over_the_threshold_worst_first() {
        let mut s = StepSamples::default();
        for ms in (1_000..6_000).step_by(10) {
            sample(&mut s, ms, 2, 30);
        }
        // Two stalls: one at +1.5 s (publish → aggregator), a worse one at +3.25 s (elsewhere).
        sample(&mut s, 2_510, 290, 311);
        sample(&mut s, 4_300, 5, 150);
        let got = stalls(&s, 100.0);
        assert_eq!(
            got,
            vec![
                Stall {
                    at_s: 1.5,
                    total_max_ms: 311.0,
                    publish_to_aggregator_max_ms: 290.0
                },
                Stall {
                    at_s: 3.25,
                    total_max_ms: 150.0,
                    publish_to_aggregator_max_ms: 5.0
                },
            ]
        );
        assert!(stalls(&s, 400.0).is_empty());
        assert!(stalls(&StepSamples::default(), 100.0).is_empty());
    }
}
