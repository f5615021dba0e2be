//! Tells the operator, at WARN and at most every [`UNREACHABLE_WARN_EVERY`], that a connection
//! has no NATS server: async-nats keeps retrying on its own (and reports each failed attempt only
//! as a connection event), so a service given a mistyped `--nats-url` would otherwise run silently
//! for ever. The warning names the URLs (credentials hidden), how long, and the last error.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use langtian_core::bus::Reachability;
//!
//! let start = Instant::now();
//! let mut r = Reachability::new(start);
//! // The first failed attempt warns at once; the next ones within the period do not.
//! assert!(r.on_failure(start).is_some());
//! assert!(r.on_failure(start + Duration::from_secs(5)).is_none());
//! let w = r.on_failure(start + Duration::from_secs(31)).unwrap();
//! assert_eq!((w.attempts, w.down_for.as_secs()), (2, 31));
//! // Connected: the outage is over, and the caller is told how long it lasted.
//! assert_eq!(r.on_connected(start + Duration::from_secs(40)), Some(Duration::from_secs(40)));
//! ```

use std::time::{Duration, Instant};

/// How often the warning repeats while no server answers.
pub const UNREACHABLE_WARN_EVERY: Duration = Duration::from_secs(30);

/// What to say in one warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachableWarning {
    /// Since the connection was last up (or since it was first tried).
    pub down_for: Duration,
    /// Failed attempts since the last warning.
    pub attempts: u64,
}

/// The connection's up/down state as the event callback sees it.
#[derive(Debug, Clone)]
pub struct Reachability {
    down_since: Option<Instant>,
    last_warn: Option<Instant>,
    attempts: u64,
    warned: bool,
}

impl Reachability {
    /// Not connected yet, trying since `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            down_since: Some(now),
            last_warn: None,
            attempts: 0,
            warned: false,
        }
    }

    /// The connection dropped.
    pub fn on_disconnected(&mut self, now: Instant) {
        if self.down_since.is_none() {
            self.down_since = Some(now);
        }
    }

    /// An attempt to (re)connect failed: `Some` when it is time to warn.
    pub fn on_failure(&mut self, now: Instant) -> Option<UnreachableWarning> {
        let since = *self.down_since.get_or_insert(now);
        self.attempts += 1;
        let due = self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= UNREACHABLE_WARN_EVERY);
        if !due {
            return None;
        }
        self.last_warn = Some(now);
        self.warned = true;
        let attempts = std::mem::take(&mut self.attempts);
        Some(UnreachableWarning {
            down_for: now.duration_since(since),
            attempts,
        })
    }

    /// Connected: `Some(outage)` when a warning was given for it (so the recovery is told too).
    pub fn on_connected(&mut self, now: Instant) -> Option<Duration> {
        let since = self.down_since.take();
        self.last_warn = None;
        self.attempts = 0;
        if !std::mem::take(&mut self.warned) {
            return None;
        }
        since.map(|s| now.duration_since(s))
    }
}

/// `nats://user:secret@host:4222` → `nats://***@host:4222` (a URL as it may be logged).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_period_while_down_and_tells_the_recovery() {
        let t0 = Instant::now();
        let mut r = Reachability::new(t0);
        let first = r.on_failure(t0 + Duration::from_secs(2));
        assert_eq!(
            first,
            Some(UnreachableWarning {
                down_for: Duration::from_secs(2),
                attempts: 1
            })
        );
        for s in 3..32 {
            assert_eq!(r.on_failure(t0 + Duration::from_secs(s)), None, "at {s} s");
        }
        let again = r.on_failure(t0 + Duration::from_secs(32));
        assert_eq!(
            again,
            Some(UnreachableWarning {
                down_for: Duration::from_secs(32),
                attempts: 30
            })
        );
        assert_eq!(
            r.on_connected(t0 + Duration::from_secs(33)),
            Some(Duration::from_secs(33))
        );
        // Connected with no warning given: nothing to tell.
        r.on_disconnected(t0 + Duration::from_secs(40));
        assert_eq!(r.on_connected(t0 + Duration::from_secs(41)), None);
        // A new outage counts from its own start and warns at once.
        r.on_disconnected(t0 + Duration::from_secs(50));
        let w = r.on_failure(t0 + Duration::from_secs(55));
        assert_eq!(
            w,
            Some(UnreachableWarning {
                down_for: Duration::from_secs(5),
                attempts: 1
            })
        );
    }

    #[test]
    fn credentials_never_reach_the_log() {
        assert_eq!(redact_url("nats://u:secret@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("tls://tok@h"), "tls://***@h");
        assert_eq!(redact_url("h:4222"), "h:4222");
        assert_eq!(redact_url("nats://127.0.0.1:14222"), "nats://127.0.0.1:14222");
    }
}
