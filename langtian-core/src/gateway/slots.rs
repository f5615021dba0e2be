//! Connection limits: at most `max_total` WebSockets on the gateway and `max_per_user` per token
//! subject. A slot is taken before the upgrade and given back when the connection ends (or the
//! upgrade fails), so a burst of upgrades cannot overshoot the limits.
//!
//! ```
//! use langtian_core::gateway::slots::{Slots, SlotError};
//! let slots = Slots::new(10, 1);
//! let a = slots.try_take("alice").unwrap();
//! assert_eq!(slots.try_take("alice").unwrap_err(), SlotError::User { user: "alice".into(), limit: 1 });
//! assert!(slots.try_take("bob").is_ok());
//! drop(a);
//! assert!(slots.try_take("alice").is_ok());
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The gateway holds `limit` connections (HTTP 503).
    #[error("the gateway is at its limit of {limit} connections")]
    Total {
        /// `max_connections`.
        limit: usize,
    },
    /// This token subject holds `limit` connections (HTTP 429).
    #[error("user `{user}` already has {limit} connections (the limit per user)")]
    User {
        /// The token's `sub`.
        user: String,
        /// `max_connections_per_user`.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// The gateway's connection slots.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_user: usize,
    taken: Mutex<Taken>,
}

/// A taken slot; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    user: String,
}

impl Slots {
    /// Limits of `max_total` connections and `max_per_user` per token subject.
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_user,
            taken: Mutex::new(Taken::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Taken> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for `user`, or says which limit is reached.
    pub fn try_take(self: &Arc<Self>, user: &str) -> Result<Slot, SlotError> {
        let mut t = self.lock();
        if t.total >= self.max_total {
            return Err(SlotError::Total {
                limit: self.max_total,
            });
        }
        let n = t.per_user.get(user).copied().unwrap_or(0);
        if n >= self.max_per_user {
            return Err(SlotError::User {
                user: user.to_owned(),
                limit: self.max_per_user,
            });
        }
        t.total += 1;
        t.per_user.insert(user.to_owned(), n + 1);
        Ok(Slot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                t.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_limit_counts_every_user() {
        let s = Slots::new(2, 5);
        let a = s.try_take("a").unwrap();
        let _b = s.try_take("b").unwrap();
        assert_eq!(s.try_take("c").unwrap_err(), SlotError::Total { limit: 2 });
        drop(a);
        assert_eq!(s.taken(), 1);
        assert!(s.try_take("c").is_ok());
    }

    #[test]
    fn slots_come_back_and_users_are_forgotten() {
        let s = Slots::new(100, 2);
        let held: Vec<_> = (0..2).map(|_| s.try_take("u").unwrap()).collect();
        assert!(matches!(s.try_take("u"), Err(SlotError::User { limit: 2, .. })));
        drop(held);
        assert_eq!(s.taken(), 0);
        assert!(s.lock().per_user.is_empty());
        let again: Vec<_> = (0..2).map(|_| s.try_take("u").unwrap()).collect();
        assert_eq!(again.len(), 2);
    }
}
