//! Which database errors are worth retrying, and how long to wait between
//! attempts.
//!
//! The rule (DESIGN.md section 4): retry connection-class failures — the
//! server went away, is shutting down, starting up or in recovery, the pool
//! could not connect — and serialization failures / deadlocks. Retry nothing
//! else: a constraint violation or a syntax error will fail again.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_postgres::error::SqlState;

/// What kind of failure a unit of work hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection or the server is gone or not ready. Retried; counts as
    /// an outage.
    Connection,
    /// Serialization failure or deadlock: the server is fine, the transaction
    /// lost a race. Retried; not an outage.
    Conflict,
    /// Anything else. Never retried.
    Permanent,
}

/// SQLSTATEs that mean "this server cannot serve you right now".
fn is_connection_state(code: &SqlState) -> bool {
    let code_str = code.code();
    code_str.starts_with("08") // connection exception class
        || *code == SqlState::ADMIN_SHUTDOWN // 57P01: fast shutdown
        || *code == SqlState::CRASH_SHUTDOWN // 57P02: another backend crashed
        || *code == SqlState::CANNOT_CONNECT_NOW // 57P03: starting up / shutting down / recovery
        || code_str == "57P05" // idle session timeout: the session is gone
}

/// Classifies a tokio-postgres error.
pub fn classify_pg(err: &tokio_postgres::Error) -> Failure {
    if err.is_closed() {
        return Failure::Connection;
    }
    if let Some(code) = err.code() {
        if is_connection_state(code) {
            return Failure::Connection;
        }
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return Failure::Conflict;
        }
        return Failure::Permanent;
    }
    // No SQLSTATE: an I/O error (reset, refused, timed out) or a connection
    // that closed under us is a connection failure; anything else (a value
    // that does not convert, a protocol surprise) is a bug, not an outage.
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        if inner.is::<std::io::Error>() {
            return Failure::Connection;
        }
        source = inner.source();
    }
    let text = err.to_string();
    if text.contains("connection closed") || text.contains("error connecting") {
        return Failure::Connection;
    }
    Failure::Permanent
}

/// Classifies an error from the pool's `get()`.
pub fn classify_pool(err: &deadpool_postgres::PoolError) -> Failure {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Timeout(_) => Failure::Connection,
        PoolError::Backend(e) => classify_pg(e),
        PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            Failure::Permanent
        }
    }
}

/// The retry policy of the unit-of-work helper.
///
/// Delays grow from `min_delay` by a factor of two up to `max_delay`, and
/// each is stretched by a random factor in [1, 2) so that many callers do
/// not hammer a server that has just come back in lock-step. With the
/// defaults (25 ms, 250 ms) a caller retries at least every 0.5 s, so work
/// resumes within half a second of the server accepting connections.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Largest delay before jitter.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(25),
            max_delay: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// An endless iterator of delays; the caller enforces its own budget.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::new()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_small_and_stay_under_twice_the_cap() {
        let policy = RetryPolicy::default();
        let delays: Vec<Duration> = policy.delays().take(50).collect();
        assert!(delays[0] >= Duration::from_millis(25) && delays[0] < Duration::from_millis(50));
        assert!(delays.iter().all(|d| *d < Duration::from_millis(500)));
        assert!(delays[49] >= Duration::from_millis(250));
    }

    #[test]
    fn sqlstates_of_a_restarting_server_are_connection_failures() {
        for code in ["57P01", "57P02", "57P03", "57P05", "08006", "08001"] {
            assert!(is_connection_state(&SqlState::from_code(code)), "{code}");
        }
        for code in ["23505", "42P01", "57014", "40001"] {
            assert!(!is_connection_state(&SqlState::from_code(code)), "{code}");
        }
    }
}
