//! Tracks whether the database is reachable, so that an outage is logged
//! once when it starts and once, with its duration, when it ends — however
//! many units of work are retrying at the same time.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared view of the database's availability. Cheap to clone.
#[derive(Clone, Default)]
pub struct DbHealth {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Start of the current outage; `None` while the database answers.
    down_since: Mutex<Option<Instant>>,
    /// Number of outages seen since start-up.
    outages: AtomicU64,
    /// Milliseconds spent in finished outages.
    outage_ms: AtomicU64,
    /// Attempts retried after a connection or conflict failure.
    retries: AtomicU64,
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSnapshot {
    /// Whether an outage is under way.
    pub down: bool,
    /// Outages since start-up, the current one included.
    pub outages: u64,
    /// Seconds spent in outages, the current one included.
    pub outage_seconds: f64,
    /// Retried attempts since start-up.
    pub retries: u64,
}

impl DbHealth {
    /// Records a connection failure seen by `op`; logs when it starts an outage.
    pub fn connection_failed(&self, op: &str, error: &dyn std::fmt::Display) {
        let mut down = self
            .inner
            .down_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if down.is_none() {
            *down = Some(Instant::now());
            self.inner.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(op, error = %error, "database unreachable; retrying until it is back");
        }
    }

    /// Records a successful unit of work; logs the end of an outage.
    pub fn succeeded(&self) {
        let mut down = self
            .inner
            .down_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(since) = down.take() {
            let lasted = since.elapsed();
            self.inner
                .outage_ms
                .fetch_add(lasted.as_millis() as u64, Ordering::Relaxed);
            tracing::info!(
                outage_s = format_args!("{:.3}", lasted.as_secs_f64()),
                "database reachable again after {:.3} s",
                lasted.as_secs_f64()
            );
        }
    }

    /// Counts one retried attempt.
    pub fn retried(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether an outage is under way.
    pub fn is_down(&self) -> bool {
        self.down_for().is_some()
    }

    /// How long the current outage has lasted, if there is one.
    pub fn down_for(&self) -> Option<Duration> {
        self.inner
            .down_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .map(|since| since.elapsed())
    }

    /// Current counters.
    pub fn snapshot(&self) -> HealthSnapshot {
        let current = self.down_for();
        let finished = Duration::from_millis(self.inner.outage_ms.load(Ordering::Relaxed));
        HealthSnapshot {
            down: current.is_some(),
            outages: self.inner.outages.load(Ordering::Relaxed),
            outage_seconds: (finished + current.unwrap_or_default()).as_secs_f64(),
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_once_however_many_callers_fail() {
        let health = DbHealth::default();
        health.connection_failed("a", &"refused");
        health.connection_failed("b", &"refused");
        assert!(health.is_down());
        health.succeeded();
        health.succeeded();
        let snap = health.snapshot();
        assert!(!snap.down);
        assert_eq!(snap.outages, 1);
    }
}
