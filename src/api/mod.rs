//! The HTTP API (axum).
//!
//! - `POST /api/v1/changes`: record a source change ([`changes`]).
//! - `POST /api/v1/builders/{name}/force`: build a builder now ([`force`]).
//! - `POST /api/v1/builds/{id}/stop`, `POST /api/v1/build_requests/{id}/cancel`
//!   ([`control`]).
//! - `POST /hooks/github`, `POST /hooks/gitlab`: push webhooks ([`hooks`]),
//!   authenticated by their own secrets.
//!
//! Write endpoints need [`auth::WriteAccess`] and honour `Idempotency-Key`
//! ([`idempotency`]).
//! - `GET /api/v1/builders`, `/builds`, `/builds/{id}/steps`,
//!   `/logs/{id}/lines`, `/build_requests`, `/changes`, `/workers`,
//!   `/masters`: reads from the published views ([`reads`]).
//! - `GET /api/v1/openapi.json`: the OpenAPI document, generated from the
//!   handlers ([`openapi`]).
//! - `GET /metrics`: Prometheus text format.
//! - `GET /`, `GET /builds/{id}`: the web status page ([`web`]).
//! - `GET /healthz`: 200 while the process runs, with the database state
//!   the master currently believes (`up` or `down`).
//! - `GET /readyz`: 200 when the master has started (migrated, registered,
//!   configuration synchronised), the database answers within one second
//!   and its schema is at the version this build expects; 503 otherwise,
//!   with the reason.

pub mod auth;
pub mod changes;
pub mod control;
pub mod error;
pub mod force;
pub mod hooks;
pub mod idempotency;
pub mod json;
pub mod openapi;
pub mod reads;
pub mod web;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::Metrics;
use crate::settings::{HooksSettings, Settings};
use crate::store::migrate::{expected_version, schema_version};
use crate::store::topology::TopologyIds;
use crate::store::{Budget, Store};

/// How long `/readyz` waits for the database.
const READY_PROBE_BUDGET: Duration = Duration::from_secs(1);

/// State shared by the handlers. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<ApiInner>,
}

struct ApiInner {
    store: Store,
    master_name: String,
    /// Bearer token required by write endpoints; `None`: loopback only.
    write_token: Option<String>,
    /// Webhook secrets.
    hooks: HooksSettings,
    /// How long a request waits for an unreachable database.
    request_deadline: Duration,
    /// In-process metrics.
    metrics: Metrics,
    /// What the web page showed last, for outages.
    page_cache: tokio::sync::Mutex<web::PageCache>,
    /// Set once start-up migrations have been applied by this process.
    migrated: AtomicBool,
    /// The configuration and the ids of its rows, once synchronised.
    topology: OnceLock<(Settings, TopologyIds)>,
}

impl ApiState {
    /// State for a master called `master_name` using `store`.
    pub fn new(
        store: Store,
        master_name: String,
        write_token: Option<String>,
        hooks: HooksSettings,
        request_deadline: Duration,
        metrics: Metrics,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(ApiInner {
                store,
                master_name,
                write_token,
                hooks,
                request_deadline,
                metrics,
                page_cache: Default::default(),
                migrated: AtomicBool::new(false),
                topology: OnceLock::new(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The write token, if one is configured.
    pub fn write_token(&self) -> Option<&str> {
        self.inner.write_token.as_deref()
    }

    /// The web page's cache.
    pub fn page_cache(&self) -> &tokio::sync::Mutex<web::PageCache> {
        &self.inner.page_cache
    }

    /// The webhook secrets.
    pub fn hooks(&self) -> &HooksSettings {
        &self.inner.hooks
    }

    /// How long a request waits for the database before answering 503.
    pub fn request_deadline(&self) -> Duration {
        self.inner.request_deadline
    }

    /// Records the synchronised configuration (force needs it).
    pub fn set_topology(&self, settings: Settings, ids: TopologyIds) {
        let _ = self.inner.topology.set((settings, ids));
    }

    /// The synchronised configuration, once start-up has got that far.
    pub fn topology(&self) -> Option<&(Settings, TopologyIds)> {
        self.inner.topology.get()
    }

    /// Records that start-up migrations are done.
    pub fn set_migrated(&self) {
        self.inner.migrated.store(true, Ordering::Release);
    }
}

/// The router with every route of the API; request bodies over
/// `max_body_bytes` are refused with 413.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/changes", post(changes::post_change))
        .route("/api/v1/builders/{name}/force", post(force::force_builder))
        .route("/api/v1/builds/{id}/stop", post(control::stop_build))
        .route(
            "/api/v1/build_requests/{id}/cancel",
            post(control::cancel_request),
        )
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/builders", get(reads::builders))
        .route("/api/v1/builders/{name}", get(reads::builder))
        .route("/api/v1/builds", get(reads::builds))
        .route("/api/v1/builds/{id}", get(reads::build))
        .route("/api/v1/builds/{id}/steps", get(reads::build_steps))
        .route("/api/v1/logs/{id}/lines", get(reads::log_lines))
        .route("/api/v1/build_requests", get(reads::build_requests))
        .route("/api/v1/changes", get(reads::changes))
        .route("/api/v1/workers", get(reads::workers))
        .route("/api/v1/masters", get(reads::masters))
        .route("/", get(web::front))
        .route("/builds/{id}", get(web::build_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts every answer by route (the pattern, not the path) and status.
async fn count_requests(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .inner
        .metrics
        .http_request(&route, &method, response.status().as_u16());
    response
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<ApiState>) -> Response {
    use std::fmt::Write as _;
    let mut out = String::new();
    let pool = state.inner.store.pool_status();
    let health = state.inner.store.health().snapshot();
    let _ = write!(
        out,
        "# HELP buildmaster_db_pool_size Connections in the pool.\n# TYPE buildmaster_db_pool_size gauge\n\
         buildmaster_db_pool_size {}\n\
         # HELP buildmaster_db_pool_available Idle connections in the pool.\n# TYPE buildmaster_db_pool_available gauge\n\
         buildmaster_db_pool_available {}\n\
         # HELP buildmaster_db_pool_waiting Callers waiting for a connection.\n# TYPE buildmaster_db_pool_waiting gauge\n\
         buildmaster_db_pool_waiting {}\n\
         # HELP buildmaster_db_up 1 while the database answers, 0 during an outage.\n# TYPE buildmaster_db_up gauge\n\
         buildmaster_db_up {}\n\
         # HELP buildmaster_db_outages_total Database outages seen since start-up.\n# TYPE buildmaster_db_outages_total counter\n\
         buildmaster_db_outages_total {}\n\
         # HELP buildmaster_db_outage_seconds_total Time spent in database outages.\n# TYPE buildmaster_db_outage_seconds_total counter\n\
         buildmaster_db_outage_seconds_total {:.3}\n\
         # HELP buildmaster_unit_retries_total Units of work retried after a connection failure or conflict.\n\
         # TYPE buildmaster_unit_retries_total counter\n\
         buildmaster_unit_retries_total {}\n",
        pool.size,
        pool.available,
        pool.waiting,
        u8::from(!health.down),
        health.outages,
        health.outage_seconds,
        health.retries,
    );
    // Queue figures come from the database; during an outage they are left
    // out rather than reported stale.
    if let Ok(counts) = state
        .inner
        .store
        .metrics_counts(Budget::For(READY_PROBE_BUDGET))
        .await
    {
        let _ = write!(
            out,
            "# HELP buildmaster_build_requests Build requests by state (all masters).\n# TYPE buildmaster_build_requests gauge\n\
             buildmaster_build_requests{{state=\"pending\"}} {}\n\
             buildmaster_build_requests{{state=\"claimed\"}} {}\n\
             # HELP buildmaster_builds_running Builds running (all masters).\n# TYPE buildmaster_builds_running gauge\n\
             buildmaster_builds_running {}\n",
            counts.requests_pending, counts.requests_claimed, counts.builds_running
        );
    }
    state.inner.metrics.render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint")
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let health = state.inner.store.health().snapshot();
    (
        StatusCode::OK,
        Json(json!({
            "status": "alive",
            "master": state.inner.master_name,
            "database": if health.down { "down" } else { "up" },
        })),
    )
        .into_response()
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "status": "not ready", "reason": reason })),
        )
            .into_response()
    };
    if !state.inner.migrated.load(Ordering::Acquire) {
        return not_ready("start-up migrations have not completed yet".to_owned());
    }
    if state.topology().is_none() {
        return not_ready(
            "the master is still starting (registering, synchronising its configuration)"
                .to_owned(),
        );
    }
    let expected = expected_version();
    match schema_version(&state.inner.store, Budget::For(READY_PROBE_BUDGET)).await {
        Ok(Some(version)) if version == expected => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "schema_version": version })),
        )
            .into_response(),
        Ok(Some(version)) => not_ready(format!(
            "database schema is at version {version}, this master expects {expected}"
        )),
        Ok(None) => not_ready("database has not been migrated".to_owned()),
        Err(error) => not_ready(error.to_string()),
    }
}
