//! `lt bench ingest`: (a) the highest datagram rate the collector sustains with zero loss, next
//! to a bare async-nats windowed publish of the very same envelopes in the same run; (b) UDP →
//! collector → JetStream → flow → DuckLake, events per second with the lake checked.

use std::net::SocketAddr;
#[cfg(feature = "flow")]
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use tokio::sync::watch;

use super::{BenchError, BenchRecord, Host, median};
#[cfg(feature = "flow")]
use crate::bus::Topology;
use crate::bus::{Bus, BusOptions, OutgoingMessage, StreamSpec, ensure_stream};
use crate::collector::{Collector, CollectorConfig, CollectorStats, DatagramFormat, Decoder};
use crate::natsd::{NatsServer, NatsServerConfig};
use crate::sim::udp::{BatteryUdpConfig, DatagramSource, encode_datagram};

/// Settings of `lt bench ingest`.
#[derive(Debug, Clone)]
pub struct IngestBenchConfig {
    /// Seconds each rate step sends for.
    pub step_seconds: f64,
    /// Samples per datagram.
    pub per_datagram: usize,
    /// Envelopes in the bare publish baseline (per round).
    pub baseline_messages: usize,
    /// Rounds of the baseline (median reported).
    pub baseline_rounds: usize,
    /// Searches for the collector's highest sustained rate (median reported), each on a fresh
    /// stream like each baseline round.
    pub collector_searches: usize,
    /// Events sent through the end-to-end case.
    pub e2e_events: usize,
    /// The flow's batch size in the end-to-end case.
    pub e2e_batch: usize,
}

impl IngestBenchConfig {
    /// `--quick`: seconds, for smoke tests.
    pub fn quick() -> Self {
        Self {
            step_seconds: 1.0,
            per_datagram: 10,
            baseline_messages: 50_000,
            baseline_rounds: 1,
            collector_searches: 1,
            e2e_events: 50_000,
            e2e_batch: 10_000,
        }
    }
    /// The full run.
    pub fn full() -> Self {
        Self {
            step_seconds: 4.0,
            baseline_messages: 300_000,
            baseline_rounds: 3,
            collector_searches: 3,
            e2e_events: 500_000,
            ..Self::quick()
        }
    }
}

/// Pre-encoded datagrams of the battery simulator (so the sender costs little CPU).
fn datagrams(samples: usize, per_datagram: usize, seed: u64) -> Vec<Vec<u8>> {
    let cfg = BatteryUdpConfig {
        devices: 16,
        channels: 64,
        per_datagram,
        seed,
        ..BatteryUdpConfig::new(SocketAddr::from(([127, 0, 0, 1], 1)))
    };
    let mut src = DatagramSource::new(&cfg);
    let mut out = Vec::with_capacity(samples / per_datagram + 1);
    let mut n = 0;
    while n < samples {
        let s = src.next_samples(samples - n);
        n += s.len();
        out.push(encode_datagram(s));
    }
    out
}

/// Sends `dgrams` to `to` at `rate` samples/s from a plain thread; returns the seconds it took.
fn send_paced(to: SocketAddr, dgrams: Vec<Vec<u8>>, per_datagram: usize, rate: f64) -> std::io::Result<f64> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(to)?;
    let interval = per_datagram as f64 / rate;
    let start = Instant::now();
    for (i, d) in dgrams.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 * interval);
        let now = Instant::now();
        if due > now + Duration::from_micros(500) {
            std::thread::sleep(due - now);
        }
        sock.send(d)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The envelopes the collector makes of `dgrams`, for the bare baseline.
fn envelopes(dgrams: &[Vec<u8>], prefix: &str) -> Vec<OutgoingMessage> {
    let mut d = Decoder::new(DatagramFormat::Auto, prefix);
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    dgrams
        .iter()
        .flat_map(|g| d.decode(g, ip, crate::envelope::now_nanos()).messages)
        .collect()
}

/// A bare async-nats loop: JetStream publish with a window of 1024 outstanding PubAcks.
async fn publish_bare(bus: &Bus, msgs: &[OutgoingMessage]) -> Result<f64, BenchError> {
    let js = bus.jetstream();
    let start = Instant::now();
    let mut inflight = std::collections::VecDeque::with_capacity(1024);
    for m in msgs {
        let mut pm = PublishMessage::build().payload(m.payload.clone());
        if let Some(h) = &m.headers {
            pm = pm.headers(h.clone());
        }
        if let Some(id) = &m.msg_id {
            pm = pm.message_id(id.clone());
        }
        let f = js
            .send_publish(m.subject.clone(), pm)
            .await
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        inflight.push_back(f);
        if inflight.len() >= 1024
            && let Some(f) = inflight.pop_front()
        {
            f.await.map_err(|e| BenchError::Baseline(e.to_string()))?;
        }
    }
    while let Some(f) = inflight.pop_front() {
        f.await.map_err(|e| BenchError::Baseline(e.to_string()))?;
    }
    Ok(msgs.len() as f64 / start.elapsed().as_secs_f64())
}

async fn fresh_stream(bus: &Bus, name: &str, subjects: &str) -> Result<(), BenchError> {
    let _ = bus.jetstream().delete_stream(name).await;
    let mut s = StreamSpec::new(name, vec![subjects.to_owned()]);
    s.max_bytes = 8 * 1024 * 1024 * 1024;
    s.duplicate_window = Duration::from_secs(120);
    ensure_stream(bus, &s).await?;
    Ok(())
}

/// One rate step: did the collector take `rate` samples/s with zero loss and keep up?
struct Step {
    rate: f64,
    sent: u64,
    lost: u64,
    published_rate: f64,
    ok: bool,
}

async fn step(
    stats: &CollectorStats,
    addr: SocketAddr,
    rate: f64,
    cfg: &IngestBenchConfig,
    seed: u64,
) -> Result<Step, BenchError> {
    let samples = (rate * cfg.step_seconds) as usize;
    let dgrams = datagrams(samples, cfg.per_datagram, seed);
    let before = stats.snapshot();
    let per = cfg.per_datagram;
    let start = Instant::now();
    let send_s = tokio::task::spawn_blocking(move || send_paced(addr, dgrams, per, rate))
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?
        .map_err(|e| BenchError::Baseline(format!("sending datagrams: {e}")))?;
    // Wait for the collector to publish what it received (bounded: it must keep up).
    let limit = Duration::from_secs_f64(cfg.step_seconds * 2.0 + 2.0);
    loop {
        let s = stats.snapshot();
        let received = s.records - before.records;
        let published = s.published - before.published;
        if published >= received
            && s.backlog == 0
            && received + (s.kernel_drops - before.kernel_drops) * per as u64 >= samples as u64
        {
            break;
        }
        if start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed().as_secs_f64();
    let s = stats.snapshot();
    let published = s.published - before.published;
    let lost = (samples as u64).saturating_sub(published);
    let published_rate = published as f64 / took;
    // Sustained: nothing lost, and everything published within 10 % of the sending time.
    let ok = lost == 0 && took <= send_s * 1.1 + 0.05;
    Ok(Step {
        rate,
        sent: samples as u64,
        lost,
        published_rate,
        ok,
    })
}

async fn wait_idle(stats: &CollectorStats) {
    let start = Instant::now();
    while stats.snapshot().backlog > 0 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One search for the collector's highest sustained rate: climb by 12 % from `start` until a
/// step fails, then bisect twice between the last pass and the failure.
async fn search_rate(
    stats: &CollectorStats,
    addr: SocketAddr,
    start: f64,
    bare: f64,
    cfg: &IngestBenchConfig,
    seed: &mut u64,
    progress: &mut impl FnMut(&str),
) -> Result<f64, BenchError> {
    let report_step = |s: &Step, progress: &mut dyn FnMut(&str)| {
        progress(&format!(
            "collector at {:>8.0} samples/s ({:>6.0} datagrams/s): sent {:>8}, lost {:>6}, published {:>8.0}/s → {}",
            s.rate,
            s.rate / cfg.per_datagram as f64,
            s.sent,
            s.lost,
            s.published_rate,
            if s.ok { "sustained" } else { "NOT sustained" }
        ));
    };
    let mut rate = start;
    let mut best: Option<f64> = None;
    let mut failed_at: Option<f64> = None;
    for _ in 0..12 {
        *seed += 1;
        let s = step(stats, addr, rate, cfg, *seed).await?;
        report_step(&s, progress);
        if !s.ok {
            failed_at = Some(rate);
            break;
        }
        best = Some(rate);
        rate = (rate * 1.12).round();
        if rate > bare * 1.3 {
            break;
        }
    }
    if let (Some(fail), Some(pass)) = (failed_at, best) {
        let (mut lo, mut hi) = (pass, fail);
        for _ in 0..2 {
            // Let the backlog of a failed step clear first.
            wait_idle(stats).await;
            let mid = ((lo + hi) / 2.0).round();
            *seed += 1;
            let s = step(stats, addr, mid, cfg, *seed).await?;
            report_step(&s, progress);
            if s.ok {
                lo = mid;
                best = Some(mid);
            } else {
                hi = mid;
            }
        }
    }
    Ok(best.unwrap_or(0.0))
}

/// `lt bench ingest`.
pub async fn bench_ingest(
    cfg: &IngestBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRecord>, BenchError> {
    let err = |e: String| BenchError::Baseline(e);
    let dir = tempfile::Builder::new()
        .prefix("lt-bench-ingest-")
        .tempdir()
        .map_err(|e| err(e.to_string()))?;
    let server = NatsServer::start(NatsServerConfig::new(dir.path().join("nats"))).await?;
    let url = server.client_url();
    let bus = Bus::connect(&BusOptions::new(&url)).await?;

    // (a1) The limit: bare windowed publish of the same envelopes.
    let mut bare = Vec::new();
    for round in 0..cfg.baseline_rounds {
        fresh_stream(&bus, "BENCH_INGEST", "bench.ingest.>").await?;
        let msgs = envelopes(
            &datagrams(cfg.baseline_messages, cfg.per_datagram, 100 + round as u64),
            "bench.ingest",
        );
        let r = publish_bare(&bus, &msgs).await?;
        progress(&format!(
            "baseline round {round}: bare async-nats windowed publish {r:>9.0} msgs/s ({} envelopes of ~{} bytes)",
            msgs.len(),
            msgs.first().map(|m| m.payload.len()).unwrap_or(0)
        ));
        bare.push(r);
    }
    let bare = median(bare);

    // (a2) The collector: raise the rate until it loses something or falls behind.
    fresh_stream(&bus, "BENCH_INGEST", "bench.ingest.>").await?;
    let mut ccfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    ccfg.subject_prefix = "bench.ingest".into();
    let collector = Collector::bind(ccfg).await.map_err(|e| err(e.to_string()))?;
    let addr = collector.local_addr();
    let rcvbuf = collector.recv_buffer_bytes();
    let stats = collector.stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(collector.run(bus.clone(), stop_rx));
    let mut seed = 1000;
    let mut start = (bare * 0.5).max(5_000.0).round();
    let mut found = Vec::new();
    for search in 0..cfg.collector_searches.max(1) {
        if search > 0 {
            wait_idle(&stats).await;
            fresh_stream(&bus, "BENCH_INGEST", "bench.ingest.>").await?;
        }
        let r = search_rate(&stats, addr, start, bare, cfg, &mut seed, &mut progress).await?;
        progress(&format!(
            "collector search {search}: highest zero-loss rate {r:.0} samples/s"
        ));
        found.push(r);
        // Later searches start closer to the answer (fewer steps, same step rule).
        start = (r * 0.75).max(5_000.0).round();
    }
    let _ = stop_tx.send(true);
    let report = task
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    let sustained = median(found.clone());
    let ratio = if bare > 0.0 { sustained / bare } else { 0.0 };
    progress(&format!(
        "collector: highest zero-loss rate (median of {} searches) {sustained:.0} samples/s ({:.0} datagrams/s) vs bare publish {bare:.0} msgs/s → ratio {ratio:.2} (receive buffer {} KiB, kernel drops {})",
        found.len(),
        sustained / cfg.per_datagram as f64,
        rcvbuf / 1024,
        report.stats.kernel_drops
    ));

    // (b) End to end through the lake, at the rate the collector sustained.
    let e2e = e2e(
        &bus,
        &url,
        dir.path(),
        cfg,
        sustained.max(10_000.0),
        &mut progress,
    )
    .await?;
    let params = serde_json::json!({
        "per_datagram": cfg.per_datagram, "step_seconds": cfg.step_seconds,
        "baseline_messages": cfg.baseline_messages, "baseline_rounds": cfg.baseline_rounds,
        "collector_searches": found,
        "recv_buffer_bytes": rcvbuf, "window": 1024, "qos": 1,
        "server": bus.client().server_info().version,
    });
    let mut e2e_params = params.clone();
    if let Some(o) = e2e_params.as_object_mut() {
        o.insert("events".into(), cfg.e2e_events.into());
        o.insert("flow_batch".into(), cfg.e2e_batch.into());
        o.insert("send_rate".into(), e2e.send_rate.into());
        o.insert(
            "collector_buffer".into(),
            E2E_BUFFER.max(cfg.e2e_events + 10_000).into(),
        );
        o.insert(
            "pipeline".into(),
            "config/pipelines/battery-to-lake.yml (lt up's)".into(),
        );
    }
    drop(server);
    Ok(vec![
        BenchRecord {
            bench: "ingest".into(),
            case: "collector_zero_loss_rate".into(),
            unit: "msgs/s".into(),
            ours: sustained,
            baseline: Some(bare),
            baseline_what: "bare async-nats JetStream publish, window 1024, of the same envelopes".into(),
            ratio: Some(ratio),
            target: 0.9,
            meets: ratio >= 0.9,
            params,
            host: Host::now(),
        },
        BenchRecord {
            bench: "ingest".into(),
            case: "e2e_udp_to_ducklake_sustained".into(),
            unit: "msgs/s".into(),
            ours: e2e.sustained,
            baseline: None,
            baseline_what: "highest offered rate (steps of 2 × step_seconds) with every event in the lake within 2.5 s of the last datagram".into(),
            ratio: None,
            target: 50_000.0,
            meets: e2e.sustained >= 50_000.0,
            params: e2e_params.clone(),
            host: Host::now(),
        },
        BenchRecord {
            bench: "ingest".into(),
            case: "e2e_udp_to_ducklake".into(),
            unit: "msgs/s".into(),
            ours: e2e.rate,
            baseline: None,
            baseline_what: String::new(),
            ratio: None,
            target: 50_000.0,
            meets: e2e.rate >= 50_000.0,
            params: e2e_params,
            host: Host::now(),
        },
    ])
}

/// The end-to-end collector's buffer: the whole overload run and any failed step fit.
const E2E_BUFFER: usize = 2_000_000;

struct E2e {
    /// N events offered at the collector's maximum / time until all are in the lake.
    rate: f64,
    send_rate: f64,
    /// Highest offered rate the whole path keeps up with.
    sustained: f64,
}

#[cfg(feature = "flow")]
async fn e2e(
    bus: &Bus,
    url: &str,
    dir: &std::path::Path,
    cfg: &IngestBenchConfig,
    send_rate: f64,
    progress: &mut impl FnMut(&str),
) -> Result<E2e, BenchError> {
    let err = |e: String| BenchError::Baseline(e);
    Topology::default_topology()?.apply(bus).await?;
    let lake_dir = dir.join("lake");
    // Offered load may exceed what the whole pipeline drains (the flow shares the two cores):
    // the buffer holds the whole run so the lake's rate, not a drop, is what is measured.
    let mut ccfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    // The sustained steps that fail are bounded (2 × step_seconds at < 2× the collector's rate).
    ccfg.buffer_records = E2E_BUFFER.max(cfg.e2e_events + 10_000);
    let collector = Collector::bind(ccfg).await.map_err(|e| err(e.to_string()))?;
    let addr = collector.local_addr();
    let cstats = collector.stats();
    let (cstop, crx) = watch::channel(false);
    let ctask = tokio::spawn(collector.run(bus.clone(), crx));
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("SQLFLOW_NATS_URL".to_owned(), url.to_owned());
    vars.insert("SQLFLOW_LAKE_DIR".to_owned(), lake_dir.display().to_string());
    vars.insert("SQLFLOW_BATCH_SIZE".to_owned(), cfg.e2e_batch.to_string());
    let file = crate::flow::config::PipelineFile::from_str(
        "battery-to-lake.yml",
        crate::flow::EXAMPLE_PIPELINE,
        &vars,
    )
    .map_err(|e| err(e.to_string()))?;
    let stats = std::sync::Arc::new(crate::flow::runner::RunStats::default());
    let (fstop, frx) = watch::channel(false);
    let mut ftask = tokio::spawn(crate::flow::runner::run_pipeline(file, stats.clone(), frx));
    let n = cfg.e2e_events;
    let dgrams = datagrams(n, cfg.per_datagram, 7);
    let per = cfg.per_datagram;
    let start = Instant::now();
    let sender = tokio::task::spawn_blocking(move || send_paced(addr, dgrams, per, send_rate));
    let mut last = Instant::now();
    let (mut seen, mut moved) = (0u64, Instant::now());
    while stats.rows_out.load(Ordering::Relaxed) < n as u64 {
        if ftask.is_finished() {
            return Err(err("the flow stopped early".into()));
        }
        let rows = stats.rows_out.load(Ordering::Relaxed);
        if rows > seen {
            (seen, moved) = (rows, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(30) {
            return Err(err(format!(
                "stalled at {rows} lake rows of {n}; collector {:?}",
                cstats.snapshot()
            )));
        }
        if last.elapsed() > Duration::from_secs(5) {
            let c = cstats.snapshot();
            progress(&format!(
                "end-to-end: received {} · published {} · backlog {} · lake rows {} of {n}",
                c.records,
                c.published,
                c.backlog,
                stats.rows_out.load(Ordering::Relaxed)
            ));
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed().as_secs_f64();
    let sent_s = sender
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    let rate = n as f64 / took;
    progress(&format!(
        "end-to-end (offered at the collector's maximum): {rate:>9.0} events/s ({n} events sent at {send_rate:.0}/s in {sent_s:.1} s; all in the lake after {took:.1} s)"
    ));

    // Sustained: the highest offered rate at which every event of a step is in the lake within
    // KEEP_UP after its last datagram (the flow's 1 s flush + a commit).
    const KEEP_UP: Duration = Duration::from_millis(2500);
    let mut total = n as u64;
    let mut seed = 70u64;
    let try_rate = |r: f64, total: &mut u64, seed: &mut u64| {
        *seed += 1;
        let count = (r * cfg.step_seconds * 2.0) as usize;
        let dgrams = datagrams(count, cfg.per_datagram, *seed);
        let target = *total + count as u64;
        *total = target;
        let stats = stats.clone();
        async move {
            let sent = tokio::task::spawn_blocking(move || send_paced(addr, dgrams, per, r))
                .await
                .map_err(|e| err(e.to_string()))?
                .map_err(|e| err(e.to_string()))?;
            let sent_at = Instant::now();
            while stats.rows_out.load(Ordering::Relaxed) < target && sent_at.elapsed() < KEEP_UP {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let kept_up = stats.rows_out.load(Ordering::Relaxed) >= target;
            // Let the pipeline drain before the next step.
            while stats.rows_out.load(Ordering::Relaxed) < target
                && sent_at.elapsed() < Duration::from_secs(120)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(bool, usize, f64), BenchError>((kept_up, count, sent))
        }
    };
    let mut r = (send_rate * 0.5).max(10_000.0).round();
    let (mut best, mut failed) = (0.0f64, None::<f64>);
    for step in 0..9 {
        let (kept_up, count, sent) = try_rate(r, &mut total, &mut seed).await?;
        progress(&format!(
            "end-to-end sustained at {r:>8.0} events/s: {count} sent in {sent:.1} s → {}",
            if kept_up {
                "all in the lake within 2.5 s"
            } else {
                "NOT kept up"
            }
        ));
        if kept_up {
            best = r;
        } else {
            failed = Some(r);
        }
        r = match failed {
            // Climb by 15 % until a step fails, then bisect.
            None => (r * 1.15).round(),
            Some(f) => ((best.max(f * 0.5) + f) / 2.0).round(),
        };
        if failed.is_some() && step >= 5 {
            break;
        }
    }
    progress(&format!("end-to-end: highest sustained rate {best:.0} events/s"));
    let _ = cstop.send(true);
    let report = ctask
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
    let _ = fstop.send(true);
    crate::flow::runner::drain_within(&mut ftask, Duration::from_secs(30))
        .await
        .map_err(|e| err(e.to_string()))?;
    let lake =
        crate::lake::Lake::open(crate::lake::LakeConfig::local(&lake_dir)).map_err(|e| err(e.to_string()))?;
    let (rows, distinct): (i64, i64) = lake
        .connection()
        .query_row(
            "SELECT count(*), count(DISTINCT (device_id, channel, seq, ts_device)) FROM lake.battery_samples",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| err(e.to_string()))?;
    let total = total as i64;
    if rows != total || distinct != total || report.stats.dropped + report.stats.kernel_drops > 0 {
        return Err(err(format!(
            "lake holds {rows} rows / {distinct} distinct samples of {total} sent (collector {:?})",
            report.stats
        )));
    }
    progress(&format!(
        "end-to-end: lake verified: {rows} rows, {distinct} distinct samples, none lost"
    ));
    Ok(E2e {
        rate,
        send_rate,
        sustained: best,
    })
}

#[cfg(not(feature = "flow"))]
async fn e2e(
    _bus: &Bus,
    _url: &str,
    _dir: &std::path::Path,
    _cfg: &IngestBenchConfig,
    _send_rate: f64,
    _progress: &mut impl FnMut(&str),
) -> Result<E2e, BenchError> {
    Err(BenchError::Baseline(
        "the end-to-end case needs the `flow` feature".into(),
    ))
}
