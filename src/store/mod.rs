//! The store: the only module that speaks SQL.
//!
//! Every read and write goes through [`Store::unit`], one choke point that
//! takes a pooled connection, runs the caller's closure in a transaction
//! under a per-attempt timeout, commits, and retries with jittered backoff
//! when the failure is connection-class or a serialization conflict
//! (see [`retry`]). Because an attempt whose connection died during COMMIT
//! may or may not have committed, every write in the submodules is
//! idempotent: keys chosen by the caller, `ON CONFLICT DO NOTHING`, and a
//! conflict answered with what the earlier attempt stored.
//!
//! Submodules are named for the tables they own; functions are named table
//! first (`master_heartbeat`, `change_insert`).

pub mod admin;
pub mod builds;
pub mod buildsets;
pub mod changes;
pub mod contract;
pub mod idempotency;
pub mod masters;
pub mod migrate;
pub mod notify;
pub mod outage;
pub mod reads;
pub mod requests;
pub mod retry;
pub mod schedulers;
pub mod topology;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tracing::Instrument;

pub use outage::{DbHealth, HealthSnapshot};
pub use retry::RetryPolicy;
use retry::{Failure, classify_pg, classify_pool};

/// The transaction handed to a unit of work. It dereferences to
/// [`tokio_postgres::Transaction`] and adds `prepare_cached`.
pub type Tx<'t> = deadpool_postgres::Transaction<'t>;

/// The future a unit-of-work closure returns.
pub type WorkFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, WorkError>> + Send + 't>>;

/// How a unit-of-work closure fails: a database error (classified and maybe
/// retried) or a refusal decided by the closure itself (never retried; the
/// transaction is rolled back).
#[derive(Debug)]
pub enum WorkError {
    /// An error from the driver or the server.
    Pg(tokio_postgres::Error),
    /// The work refused to go on; the text says why.
    Rejected(String),
}

impl From<tokio_postgres::Error> for WorkError {
    fn from(error: tokio_postgres::Error) -> Self {
        WorkError::Pg(error)
    }
}

/// Connection and timing options of the store, with their defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest number of pooled connections. Default 8.
    pub pool_size: usize,
    /// Time allowed to open one connection (TCP + authentication).
    /// Default 5 s; a `connect_timeout` in the URL wins.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`. Default 30 s.
    pub statement_timeout: Duration,
    /// Server-side `idle_in_transaction_session_timeout`. Default 60 s.
    pub idle_in_transaction_timeout: Duration,
    /// Linux `TCP_USER_TIMEOUT` and keepalive idle time: how long an
    /// unanswered socket is trusted. Default 10 s.
    pub tcp_user_timeout: Duration,
    /// Client-side limit on one attempt (connect, run, commit). Default 35 s,
    /// just above the statement timeout.
    pub attempt_timeout: Duration,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// `application_name` reported to the server unless the URL sets one.
    pub application_name: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(60),
            tcp_user_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(35),
            retry: RetryPolicy::default(),
            application_name: "buildmaster".to_owned(),
        }
    }
}

/// How long a caller is prepared to wait for the database.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Retry until the database answers (background loops).
    Forever,
    /// Give up with [`StoreError::Unavailable`] after this long (HTTP
    /// requests, CLI commands).
    For(Duration),
}

/// Why a unit of work failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database stayed unreachable for the whole budget.
    #[error(
        "database unavailable: {op} gave up after {:.1} s and {attempts} attempts; last error: {last_error}",
        waited.as_secs_f64()
    )]
    Unavailable {
        /// The unit of work.
        op: &'static str,
        /// Time spent trying.
        waited: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure, as text.
        last_error: String,
    },
    /// A failure that retrying cannot fix (constraint, syntax, permission,
    /// bad credentials).
    #[error("{op} failed: {}", error_chain(.source))]
    Database {
        /// The unit of work.
        op: &'static str,
        /// The server's or driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool cannot be used any more (closed at shutdown).
    #[error("{op}: connection pool unusable: {detail}")]
    Pool {
        /// The unit of work.
        op: &'static str,
        /// What the pool said.
        detail: String,
    },
    /// The work itself refused to go on (a rule of the data was not met).
    #[error("{op}: {reason}")]
    Rejected {
        /// The unit of work.
        op: &'static str,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// Whether the failure is the database being unreachable (HTTP 503)
    /// rather than a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The shortest time an attempt is given, even at the end of a budget:
/// enough to open a connection on a healthy local network.
const MIN_LAST_ATTEMPT: Duration = Duration::from_millis(50);

/// Cheap-to-clone handle on the connection pool and the outage tracker.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Kept to open dedicated connections (LISTEN) with the same settings.
    config: tokio_postgres::Config,
    health: DbHealth,
    attempt_timeout: Duration,
    retry: RetryPolicy,
}

/// Builds the driver configuration: the URL (or key=value string) as given,
/// plus the socket-level limits of [`StoreOptions`] where the URL is silent.
///
/// Fails when the string is not a valid libpq connection string.
pub fn connection_config(
    url: &str,
    options: &StoreOptions,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name(options.application_name.clone());
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(options.tcp_user_timeout);
    }
    config.keepalives(true);
    config.keepalives_idle(options.tcp_user_timeout);
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(2));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    // Server-side limits travel as startup options so that they hold from
    // the first statement of every connection, reconnections included.
    let ours = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c TimeZone=UTC",
        options.statement_timeout.as_millis(),
        options.idle_in_transaction_timeout.as_millis()
    );
    let merged = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(merged);
    Ok(config)
}

/// A description of where a configuration points, without the password,
/// for logs and error messages.
pub fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(
            config
                .get_ports()
                .iter()
                .copied()
                .chain(std::iter::repeat(5432)),
        )
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "{} (database {}, user {})",
        if hosts.is_empty() {
            "default host".to_owned()
        } else {
            hosts.join(",")
        },
        config.get_dbname().unwrap_or("<default>"),
        config.get_user().unwrap_or("<default>")
    )
}

impl Store {
    /// Creates the pool. No connection is opened until the first unit of
    /// work, so this succeeds while the database is down.
    ///
    /// Fails only when the pool cannot be built (a zero size).
    pub fn new(config: tokio_postgres::Config, options: &StoreOptions) -> anyhow::Result<Store> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // Fast: check `is_closed()` only. A connection that died while
                // idle is closed by its connection task and discarded here; one
                // that dies in use is evicted by `unit` itself.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.attempt_timeout))
            .create_timeout(Some(options.connect_timeout + Duration::from_secs(1)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()?;
        Ok(Store {
            pool,
            config,
            health: DbHealth::default(),
            attempt_timeout: options.attempt_timeout,
            retry: options.retry,
        })
    }

    /// The outage tracker shared by every unit of work of this store.
    pub fn health(&self) -> &DbHealth {
        &self.health
    }

    /// Pool size, idle connections and waiters, for metrics.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// Closes the pool; later units of work fail with [`StoreError::Pool`].
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs `work` in one transaction, retrying it on connection failures and
    /// serialization conflicts until it commits or `budget` runs out.
    ///
    /// `work` may run several times, so it must be idempotent: an attempt
    /// whose COMMIT was cut off may have committed.
    ///
    /// Fails with [`StoreError::Unavailable`] when the budget runs out, and
    /// with [`StoreError::Database`] at once on any other error.
    pub async fn unit<T, F>(
        &self,
        op: &'static str,
        budget: Budget,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Tx<'t>) -> WorkFuture<'t, T> + Send,
    {
        self.unit_timed(op, budget, self.attempt_timeout, work)
            .await
    }

    /// [`Store::unit`] with an explicit per-attempt timeout (migrations).
    pub async fn unit_timed<T, F>(
        &self,
        op: &'static str,
        budget: Budget,
        attempt_timeout: Duration,
        mut work: F,
    ) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> FnMut(&'t Tx<'t>) -> WorkFuture<'t, T> + Send,
    {
        let started = Instant::now();
        let deadline = match budget {
            Budget::Forever => None,
            Budget::For(limit) => Some(started + limit),
        };
        let mut delays = self.retry.delays();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let limit = match deadline {
                Some(deadline) => attempt_timeout
                    .min(deadline.saturating_duration_since(Instant::now()))
                    .max(MIN_LAST_ATTEMPT),
                None => attempt_timeout,
            };
            // The connection lives outside the timed future so that a timed-out
            // attempt can evict it instead of returning a wedged one to the pool.
            let mut held: Option<Object> = None;
            let span = tracing::debug_span!("unit", op, attempt);
            let outcome =
                tokio::time::timeout(limit, attempt_once(&self.pool, &mut held, &mut work))
                    .instrument(span)
                    .await;
            let (failure, message) = match outcome {
                Ok(Ok(value)) => {
                    self.health.succeeded();
                    return Ok(value);
                }
                Ok(Err(AttemptError::Rejected(reason))) => {
                    return Err(StoreError::Rejected { op, reason });
                }
                Ok(Err(AttemptError::Pg(error))) => {
                    let failure = classify_pg(&error);
                    if failure == Failure::Permanent {
                        return Err(StoreError::Database { op, source: error });
                    }
                    (failure, error_chain(&error))
                }
                Ok(Err(AttemptError::Pool(error))) => {
                    let failure = classify_pool(&error);
                    if failure == Failure::Permanent {
                        return Err(StoreError::Pool {
                            op,
                            detail: error.to_string(),
                        });
                    }
                    (failure, error.to_string())
                }
                Err(_elapsed) => (
                    Failure::Connection,
                    format!("attempt timed out after {:.1} s", limit.as_secs_f64()),
                ),
            };
            if failure == Failure::Connection {
                if let Some(object) = held.take() {
                    // Detach the connection from the pool and drop it.
                    drop(Object::take(object));
                }
                self.health.connection_failed(op, &message);
            }
            let mut delay = delays.next().unwrap_or(self.retry.max_delay);
            if let Some(deadline) = deadline {
                // Use the whole budget: the last wait is cut short so that a
                // final attempt runs right at the deadline.
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining < MIN_LAST_ATTEMPT {
                    return Err(StoreError::Unavailable {
                        op,
                        waited: started.elapsed(),
                        attempts: attempt,
                        last_error: message,
                    });
                }
                delay = delay.min(remaining - MIN_LAST_ATTEMPT);
            }
            self.health.retried();
            tracing::debug!(op, attempt, delay_ms = delay.as_millis() as u64, error = %message, "retrying unit of work");
            tokio::time::sleep(delay).await;
        }
    }

    /// Forgets every prepared statement cached by pooled connections; called
    /// after migrations, which may change the types behind them.
    pub fn clear_statement_caches(&self) {
        self.pool.manager().statement_caches.clear();
    }
}

enum AttemptError {
    Pg(tokio_postgres::Error),
    Rejected(String),
    Pool(deadpool_postgres::PoolError),
}

/// One attempt: take a connection, open a transaction, run `work`, commit.
async fn attempt_once<T, F>(
    pool: &Pool,
    held: &mut Option<Object>,
    work: &mut F,
) -> Result<T, AttemptError>
where
    F: for<'t> FnMut(&'t Tx<'t>) -> WorkFuture<'t, T>,
{
    let object = pool.get().await.map_err(|error| match error {
        // A failure to connect is the driver's error: classify it as such.
        deadpool_postgres::PoolError::Backend(error) => AttemptError::Pg(error),
        other => AttemptError::Pool(other),
    })?;
    let client = held.insert(object);
    let tx = client.transaction().await.map_err(AttemptError::Pg)?;
    let value = work(&tx).await.map_err(|error| match error {
        WorkError::Pg(error) => AttemptError::Pg(error),
        WorkError::Rejected(reason) => AttemptError::Rejected(reason),
    })?;
    tx.commit().await.map_err(AttemptError::Pg)?;
    Ok(value)
}

/// An error and its sources on one line ("db error: ERROR: relation ...").
/// tokio-postgres puts the server's message in the source, not in the
/// error's own text.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}
