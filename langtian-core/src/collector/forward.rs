//! The publishing half of the collector: buffer → PublishWindow → JetStream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{CollectorConfig, CollectorStats};
use crate::bus::{Bus, BusError, OutgoingMessage, PublishReceipt, PublishWindow, Publisher, PublisherConfig};

fn connected(bus: &Bus) -> bool {
    bus.client().connection_state() == async_nats::connection::State::Connected
}

fn count(stats: &CollectorStats, r: &PublishReceipt) {
    stats.published.fetch_add(1, Ordering::Relaxed);
    if r.duplicate {
        stats.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}

/// A failure the collector cannot fix by waiting (it stops and says why).
fn permanent(e: &BusError) -> bool {
    matches!(e, BusError::DuplicateWindowTooShort { .. } | BusError::Options(_))
}

struct Forwarder<'a> {
    bus: Bus,
    stats: Arc<CollectorStats>,
    window: PublishWindow<'a>,
    /// Messages the window handed back after an error; they go out before the buffer.
    again: VecDeque<OutgoingMessage>,
    last_error_log: Option<Instant>,
    backoff: Duration,
}

impl Forwarder<'_> {
    fn backlog(&self, rx: &mpsc::Receiver<OutgoingMessage>) -> u64 {
        (rx.len() + self.again.len() + self.window.in_flight()) as u64
    }

    fn update_held(&self) {
        self.stats.held.store(
            (self.again.len() + self.window.in_flight()) as u64,
            Ordering::Relaxed,
        );
    }

    /// After an error: take back what the window held, log (at most once a second) and pause.
    async fn recover(&mut self, e: BusError) -> Result<(), BusError> {
        if permanent(&e) {
            return Err(e);
        }
        self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
        let mut back: VecDeque<OutgoingMessage> = self.window.take_unconfirmed().into();
        back.extend(self.again.drain(..));
        self.again = back;
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(code = "publish_failed", error = %e, queued_again = self.again.len(), "publish failed; will publish again");
            self.last_error_log = Some(Instant::now());
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        Ok(())
    }

    async fn send(&mut self, m: OutgoingMessage) -> Result<(), BusError> {
        match self.window.send(m).await {
            Ok(Some(r)) => {
                count(&self.stats, &r);
                self.backoff = Duration::from_millis(50);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e @ (BusError::PayloadTooLarge { .. } | BusError::MissingMessageId { .. })) => {
                // The message's own fault (the decoder's size limit makes this rare): count it.
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(code = "envelope_rejected", error = %e, "envelope rejected by the publisher");
                Ok(())
            }
            Err(e) => self.recover(e).await,
        }
    }

    /// Confirms the oldest message in flight (when the buffer runs dry). One at a time, so the
    /// buffer is looked at again after each PubAck: waiting for the whole window instead would
    /// empty the pipeline to the server every time the input pauses for a moment.
    async fn confirm_oldest(&mut self) -> Result<(), BusError> {
        match self.window.confirm_oldest().await {
            Ok(Some(r)) => {
                count(&self.stats, &r);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => self.recover(e).await,
        }
    }
}

/// Publishes from `rx` until the reader is gone and everything is confirmed, or, after `stop`,
/// until `drain_timeout` runs out. Returns how many envelopes were left unpublished.
pub(super) async fn forward(
    bus: Bus,
    cfg: &CollectorConfig,
    mut rx: mpsc::Receiver<OutgoingMessage>,
    stats: Arc<CollectorStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, BusError> {
    let mut pcfg = PublisherConfig::new(cfg.qos);
    pcfg.window = cfg.publish_window;
    pcfg.ack_timeout = cfg.ack_timeout;
    // Two tries inside the window; after that the messages come back here and wait for the
    // connection, so an outage of any length costs no retries against a dead socket.
    pcfg.max_attempts = 2;
    let publisher = Publisher::new(bus.clone(), pcfg);
    let mut f = Forwarder {
        bus,
        stats: stats.clone(),
        window: publisher.window(),
        again: VecDeque::new(),
        last_error_log: None,
        backoff: Duration::from_millis(50),
    };
    let mut deadline: Option<Instant> = None;
    let mut reader_done = false;
    loop {
        if deadline.is_none() && *stop.borrow() {
            deadline = Some(Instant::now() + cfg.drain_timeout);
        }
        f.update_held();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if !connected(&f.bus) {
            stats.connected.store(false, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed(), if deadline.is_none() => {}
            }
            continue;
        }
        stats.connected.store(true, Ordering::Relaxed);
        if let Some(m) = f.again.pop_front() {
            f.send(m).await?;
            continue;
        }
        match rx.try_recv() {
            Ok(m) => {
                stats.dequeued.fetch_add(1, Ordering::Relaxed);
                f.send(m).await?
            }
            Err(mpsc::error::TryRecvError::Disconnected) => reader_done = true,
            Err(mpsc::error::TryRecvError::Empty) => {
                if f.window.in_flight() > 0 {
                    f.confirm_oldest().await?;
                    continue;
                }
                if reader_done {
                    break;
                }
                // Idle: wait for the next envelope (the reader closes the channel on stop).
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            stats.dequeued.fetch_add(1, Ordering::Relaxed);
                            f.send(m).await?
                        }
                        None => reader_done = true,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
        if reader_done && rx.is_empty() && f.again.is_empty() && f.window.in_flight() == 0 {
            break;
        }
    }
    let left = f.backlog(&rx);
    f.update_held();
    if left > 0 {
        tracing::error!(
            code = "unpublished_at_stop",
            left,
            "collector stopped with envelopes unpublished (NATS unreachable until the drain timeout)"
        );
    }
    Ok(left)
}
