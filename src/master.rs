//! A running master: [`Master::build`] binds the HTTP port and connects
//! (starting the embedded database when no URL is given);
//! [`Master::run_until_stopped`] migrates, registers, heartbeats and serves
//! until the shutdown future resolves, then stops everything in order.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::{self, ApiState};
use crate::embedded::EmbeddedDb;
use crate::metrics::Metrics;
use crate::runner::RunnerContext;
use crate::settings::Settings;
use crate::store::migrate::migrate;
use crate::store::notify::Wakeups;
use crate::store::{Budget, Store, connection_config, describe};
use crate::{dispatch, maintenance, scheduler};

/// How long the final "master stopped" write may wait at shutdown.
const SHUTDOWN_WRITE_BUDGET: Duration = Duration::from_secs(5);

/// Where the master's database comes from.
#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// A server given by URL.
    Url(String),
    /// The embedded server, with its state directory.
    Embedded(PathBuf),
}

impl DatabaseSource {
    /// The URL from the command line, else `DATABASE_URL` (both already
    /// merged by the CLI), else the settings file, else the embedded server.
    pub fn choose(cli_url: Option<String>, settings: &Settings) -> DatabaseSource {
        match cli_url.or_else(|| settings.database.url.clone()) {
            Some(url) => DatabaseSource::Url(url),
            None => DatabaseSource::Embedded(settings.embedded.data_dir.clone()),
        }
    }
}

/// A master that is bound and connected but not yet running.
pub struct Master {
    settings: Settings,
    name: String,
    listener: TcpListener,
    store: Store,
    embedded: Option<EmbeddedDb>,
}

impl Master {
    /// Binds the HTTP listener and prepares the database connection.
    ///
    /// Fails when the port cannot be bound, the URL is invalid, or the
    /// embedded database cannot be started. Does not wait for a database
    /// given by URL: that happens, with retries, in `run_until_stopped`.
    pub async fn build(settings: Settings, source: DatabaseSource) -> anyhow::Result<Master> {
        let listen = settings.http.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} ([http] listen / --listen)"))?;
        let (url, embedded) = match source {
            DatabaseSource::Url(url) => (url, None),
            DatabaseSource::Embedded(dir) => {
                tracing::info!(data_dir = %dir.display(), "no database URL given: starting the embedded PostgreSQL");
                let db = tokio::task::spawn_blocking(move || EmbeddedDb::start(&dir))
                    .await
                    .context("embedded database start-up task")??;
                if let Err(error) = db.ensure_database().await {
                    let _ = tokio::task::spawn_blocking(move || db.stop()).await;
                    return Err(error);
                }
                tracing::info!(
                    port = db.port(),
                    "embedded PostgreSQL running; connect with: PGPASSFILE={}/pgpass psql -h 127.0.0.1 -p {} -U {} {}",
                    db.data_dir().display(),
                    db.port(),
                    crate::embedded::SUPERUSER,
                    crate::embedded::DATABASE
                );
                (db.url(), Some(db))
            }
        };
        let options = settings.store_options();
        let config = connection_config(&url, &options).context("invalid database URL")?;
        tracing::info!(database = %describe(&config), "database configured");
        let store = Store::new(config, &options)?;
        Ok(Master {
            name: settings.master_name(),
            settings,
            listener,
            store,
            embedded,
        })
    }

    /// The address the HTTP server listens on (with the real port when
    /// port 0 was asked for).
    ///
    /// Fails only if the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `shutdown` resolves (or a fatal error), then shuts down
    /// gracefully: HTTP stops accepting, the heartbeat stops, the master row
    /// is marked inactive, the pool closes and the embedded database stops.
    ///
    /// Fails on a permanent database error (bad credentials, a failed
    /// migration) or when this master's row is taken over.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Master {
            settings,
            name,
            listener,
            store,
            embedded,
        } = self;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let metrics = Metrics::default();
        let write_token = settings
            .http
            .write_token
            .as_ref()
            .map(|t| t.expose().to_owned());
        if write_token.is_none() {
            tracing::warn!(
                "no write token configured ([http] write_token or BUILDMASTER_WRITE_TOKEN): \
                 write endpoints accept requests from this machine (loopback) only"
            );
        }
        let api_state = ApiState::new(
            store.clone(),
            name.clone(),
            write_token,
            settings.hooks.clone(),
            settings.request_deadline(),
            metrics.clone(),
        );

        let http_token = token.clone();
        let router = api::router(api_state.clone(), settings.http.max_body_bytes);
        let addr = listener.local_addr()?;
        tracker.spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { http_token.cancelled().await })
            .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        });
        tracing::info!(%addr, master = %name, "HTTP server listening");

        let signal_token = token.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown => {
                    tracing::info!("shutdown requested");
                    signal_token.cancel();
                }
                _ = signal_token.cancelled() => {}
            }
        });

        let incarnation = Uuid::new_v4();
        let outcome = run_master(
            &settings,
            &name,
            incarnation,
            &store,
            &api_state,
            &token,
            &tracker,
            &metrics,
        )
        .await;

        token.cancel();
        tracker.close();
        tracker.wait().await;
        if let Ok(Some(id)) = &outcome {
            // Builds interrupted by the shutdown are built again, by this
            // master when it returns or by another one now.
            match store
                .master_release_work(
                    *id,
                    "retry: the master shut down",
                    Budget::For(SHUTDOWN_WRITE_BUDGET),
                )
                .await
            {
                Ok((requests, _)) if requests > 0 => {
                    tracing::info!(requests, "interrupted build requests returned to the queue")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not return interrupted requests to the queue")
                }
            }
            match store
                .master_deactivate(*id, incarnation, Budget::For(SHUTDOWN_WRITE_BUDGET))
                .await
            {
                Ok(()) => tracing::info!(master = %name, "master marked stopped"),
                Err(error) => tracing::warn!(%error, "could not mark the master stopped"),
            }
        }
        store.close();
        if let Some(db) = embedded {
            tokio::task::spawn_blocking(move || db.stop())
                .await
                .context("embedded database shutdown task")??;
            tracing::info!("embedded PostgreSQL stopped");
        }
        outcome.map(|_| ())
    }
}

/// Migrate, register, heartbeat. Returns the master's row id when it got
/// that far, `None` when shutdown came first.
#[allow(clippy::too_many_arguments)]
async fn run_master(
    settings: &Settings,
    name: &str,
    incarnation: Uuid,
    store: &Store,
    api_state: &ApiState,
    token: &CancellationToken,
    tracker: &TaskTracker,
    metrics: &Metrics,
) -> anyhow::Result<Option<i64>> {
    let report = tokio::select! {
        _ = token.cancelled() => return Ok(None),
        report = migrate(store, Budget::Forever) => report.context("applying migrations")?,
    };
    for (version, migration) in &report.applied {
        tracing::info!(version, name = %migration, "migration applied");
    }
    tracing::info!(
        schema_version = report.version,
        views = report.views.len(),
        "database schema ready"
    );
    api_state.set_migrated();

    let registration = tokio::select! {
        _ = token.cancelled() => return Ok(None),
        registration = store.master_register(name, incarnation, Budget::Forever) => registration?,
    };
    let id = registration.master.id;
    if let Some(age) = registration.previous_active_heartbeat_age_s {
        tracing::warn!(
            master = %name,
            "the previous run of this master did not stop cleanly (last heartbeat {age:.0} s ago); \
             if another process still uses this name, give one of them another [master] name"
        );
    }
    tracing::info!(master = %name, id, %incarnation, "master registered");
    // Whatever a previous run of this master left claimed or running is
    // built again: nothing of it is running now.
    let (requests, builds) = tokio::select! {
        _ = token.cancelled() => return Ok(Some(id)),
        released = store.master_release_work(id, "retry: the master restarted", Budget::Forever) => released?,
    };
    if requests + builds > 0 {
        tracing::warn!(
            requests,
            builds,
            "work left by this master's previous run returned to the queue (builds marked retry)"
        );
    }
    let ids = tokio::select! {
        _ = token.cancelled() => return Ok(Some(id)),
        ids = store.topology_sync(&settings.workers, &settings.builders, &settings.schedulers, Budget::Forever) => ids?,
    };
    tracing::info!(
        workers = ids.workers.len(),
        builders = ids.builders.len(),
        schedulers = ids.schedulers.len(),
        "configuration synchronised"
    );
    api_state.set_topology(settings.clone(), ids.clone());

    let wakeups = Wakeups::default();
    {
        let (store, wakeups, token) = (store.clone(), wakeups.clone(), token.clone());
        tracker.spawn(async move { store.listen(wakeups, token).await });
    }
    tracker.spawn(scheduler::scheduler_loop(
        store.clone(),
        settings.schedulers.clone(),
        ids.clone(),
        wakeups.clone(),
        settings.poll_interval(),
        token.clone(),
    ));
    let runner = RunnerContext {
        store: store.clone(),
        master_id: id,
        work_dir: settings.master.work_dir.clone(),
        shutdown: token.clone(),
        running: Default::default(),
        metrics: metrics.clone(),
    };
    tracker.spawn(crate::runner::stop_watch_loop(
        store.clone(),
        id,
        runner.running.clone(),
        wakeups.stops.clone(),
        settings.poll_interval(),
        token.clone(),
    ));
    tracker.spawn(dispatch::claim_loop(
        runner,
        settings.workers.clone(),
        settings.builders.clone(),
        ids,
        wakeups.requests.clone(),
        settings.poll_interval(),
        tracker.clone(),
    ));
    maintenance::heartbeat_loop(
        store.clone(),
        id,
        incarnation,
        settings.heartbeat_interval(),
        settings.expiry(),
        token.clone(),
    )
    .await?;
    Ok(Some(id))
}
