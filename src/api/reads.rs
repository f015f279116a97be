//! The JSON read API, served from the published views (`buildmaster_v1`):
//! what a script sees here is what a dashboard sees in SQL, with the same
//! column names (documented in `views/README.md`).
//!
//! Lists answer `{"items": [...], "limit": L, "offset": O}`, newest first;
//! `limit` is 1–1000 (default 50). Unknown query parameters are refused
//! with 400 so a typo does not silently return everything.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use crate::store::Budget;
use crate::store::reads::{Param, ViewQuery};

const RESULT_NAMES: [&str; 7] = [
    "success",
    "warnings",
    "failure",
    "skipped",
    "exception",
    "retry",
    "cancelled",
];

/// Query parameters, checked against the ones an endpoint accepts.
struct Params(HashMap<String, String>);

impl Params {
    fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
        for key in raw.keys() {
            if !allowed.contains(&key.as_str()) && key != "limit" && key != "offset" {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {key:?}; this endpoint accepts: {}, limit, offset",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Params(raw))
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn number(
        &self,
        key: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ApiError> {
        match self.0.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{key}: expected an integer in {range:?}, got {text:?}"
                    ))
                }),
        }
    }

    fn time(&self, key: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.0
            .get(key)
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "{key}: expected an RFC 3339 time, got {text:?}"
                        ))
                    })
            })
            .transpose()
    }

    fn page(&self, query: &mut ViewQuery) -> Result<(), ApiError> {
        query.limit = self.number("limit", 50, 1..=1000)?;
        query.offset = self.number("offset", 0, 0..=i64::MAX)?;
        Ok(())
    }
}

async fn list(state: &ApiState, query: ViewQuery) -> Result<Response, ApiError> {
    let items = state
        .store()
        .view_read(&query, Budget::For(state.request_deadline()))
        .await?;
    Ok(
        axum::Json(json!({ "items": items, "limit": query.limit, "offset": query.offset }))
            .into_response(),
    )
}

/// A whole view, paged.
async fn unfiltered(
    state: &ApiState,
    raw: HashMap<String, String>,
    view: &'static str,
    order: &'static str,
) -> Result<Response, ApiError> {
    let params = Params::new(raw, &[])?;
    let mut query = ViewQuery {
        view,
        order,
        ..ViewQuery::default()
    };
    params.page(&mut query)?;
    list(state, query).await
}

async fn one(state: &ApiState, mut query: ViewQuery, what: String) -> Result<Response, ApiError> {
    query.limit = 1;
    let mut items = state
        .store()
        .view_read(&query, Budget::For(state.request_deadline()))
        .await?;
    match items.pop() {
        Some(item) => Ok(axum::Json(item).into_response()),
        None => Err(ApiError::not_found(format!("no {what}"))),
    }
}

fn id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::not_found(format!("no {what} {text:?}: ids are positive integers"))
        })
}

/// `GET /api/v1/builders`: every builder with its latest build.
#[utoipa::path(
    get,
    path = "/api/v1/builders",
    tag = "read",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.builder_status", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn builders(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    unfiltered(&state, raw, "builder_status", "builder_name").await
}

/// `GET /api/v1/builders/{name}`
#[utoipa::path(
    get,
    path = "/api/v1/builders/{name}",
    tag = "read",
    params(("name" = String, Path, description = "Builder name")),
    responses(
        (status = 200, description = "A row of buildmaster_v1.builder_status", body = Object),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn builder(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut query = ViewQuery {
        view: "builder_status",
        order: "builder_id",
        ..ViewQuery::default()
    };
    query.filter("builder_name", "=", Param::Text(name.clone()));
    one(&state, query, format!("builder {name:?}")).await
}

/// `GET /api/v1/builds?builder=&branch=&result=&since=&limit=&offset=`
#[utoipa::path(
    get,
    path = "/api/v1/builds",
    tag = "read",
    params(
        ("builder" = Option<String>, Query, description = "Builder name"),
        ("branch" = Option<String>, Query, description = "Branch"),
        ("result" = Option<String>, Query, description = "Result name (success, failure, ...) or code 0-6"),
        ("since" = Option<String>, Query, description = "RFC 3339 time: builds started at or after it"),
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.builds, newest first", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn builds(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::new(raw, &["builder", "branch", "result", "since"])?;
    let mut query = ViewQuery {
        view: "builds",
        order: "build_id DESC",
        ..ViewQuery::default()
    };
    if let Some(builder) = params.text("builder") {
        query.filter("builder_name", "=", Param::Text(builder));
    }
    if let Some(branch) = params.text("branch") {
        query.filter("branch", "=", Param::Text(branch));
    }
    if let Some(result) = params.text("result") {
        let code = RESULT_NAMES
            .iter()
            .position(|n| *n == result)
            .map(|p| p as i64)
            .or_else(|| result.parse::<i64>().ok().filter(|c| (0..=6).contains(c)))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "result: expected one of {} or 0-6, got {result:?}",
                    RESULT_NAMES.join(", ")
                ))
            })?;
        query.filter("results", "=", Param::Int(code));
    }
    if let Some(since) = params.time("since")? {
        query.filter("started_at", ">=", Param::Time(since));
    }
    params.page(&mut query)?;
    list(&state, query).await
}

/// `GET /api/v1/builds/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}",
    tag = "read",
    params(("id" = i64, Path, description = "Build id")),
    responses(
        (status = 200, description = "A row of buildmaster_v1.builds", body = Object),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn build(
    State(state): State<ApiState>,
    Path(build): Path<String>,
) -> Result<Response, ApiError> {
    let build = id(&build, "build")?;
    let mut query = ViewQuery {
        view: "builds",
        order: "build_id",
        ..ViewQuery::default()
    };
    query.filter("build_id", "=", Param::Int(build));
    one(&state, query, format!("build {build}")).await
}

/// `GET /api/v1/builds/{id}/steps`: the steps, each with its logs.
#[utoipa::path(
    get,
    path = "/api/v1/builds/{id}/steps",
    tag = "read",
    params(("id" = i64, Path, description = "Build id")),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.steps, each with its logs", body = Object),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn build_steps(
    State(state): State<ApiState>,
    Path(build): Path<String>,
) -> Result<Response, ApiError> {
    let build = id(&build, "build")?;
    let mut steps = ViewQuery {
        view: "steps",
        order: "number",
        limit: 1000,
        ..ViewQuery::default()
    };
    steps.filter("build_id", "=", Param::Int(build));
    let mut logs = ViewQuery {
        view: "logs",
        order: "log_id",
        limit: 1000,
        ..ViewQuery::default()
    };
    logs.filter("build_id", "=", Param::Int(build));
    let budget = Budget::For(state.request_deadline());
    let mut items = state.store().view_read(&steps, budget).await?;
    let logs = state.store().view_read(&logs, budget).await?;
    if items.is_empty() {
        // A build without steps still exists; an unknown one does not.
        let mut query = ViewQuery {
            view: "builds",
            order: "build_id",
            limit: 1,
            ..ViewQuery::default()
        };
        query.filter("build_id", "=", Param::Int(build));
        if state.store().view_read(&query, budget).await?.is_empty() {
            return Err(ApiError::not_found(format!("no build {build}")));
        }
    }
    for step in &mut items {
        let step_logs: Vec<Value> = logs
            .iter()
            .filter(|l| l["step_id"] == step["step_id"])
            .cloned()
            .collect();
        step["logs"] = Value::Array(step_logs);
    }
    Ok(axum::Json(json!({ "items": items })).into_response())
}

/// `GET /api/v1/logs/{id}/lines?from=&to=`: lines `from..=to` (default the
/// first 1000), each `{line_number, stream, content}`.
#[utoipa::path(
    get,
    path = "/api/v1/logs/{id}/lines",
    tag = "read",
    params(
        ("id" = i64, Path, description = "Log id"),
        ("from" = Option<i64>, Query, description = "First line (default 0)"),
        ("to" = Option<i64>, Query, description = "Last line, at most from + 9999 (default from + 999)"),
    ),
    responses(
        (status = 200, description = "The log and rows of buildmaster_v1.log_lines", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "No such log", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn log_lines(
    State(state): State<ApiState>,
    Path(log): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let log = id(&log, "log")?;
    let params = Params::new(raw, &["from", "to"])?;
    let from = params.number("from", 0, 0..=i64::from(i32::MAX))?;
    let to = params.number("to", from + 999, from..=from + 9999)?;
    let mut query = ViewQuery {
        view: "log_lines",
        order: "line_number",
        limit: to - from + 1,
        ..ViewQuery::default()
    };
    query.filter("log_id", "=", Param::Int(log));
    // The chunk bounds let the index skip the chunks outside the range.
    query.filter("chunk_last_line", ">=", Param::Int(from));
    query.filter("chunk_first_line", "<=", Param::Int(to));
    query.filter("line_number", ">=", Param::Int(from));
    query.filter("line_number", "<=", Param::Int(to));
    let lines = state
        .store()
        .view_read(&query, Budget::For(state.request_deadline()))
        .await?;
    let mut info = ViewQuery {
        view: "logs",
        order: "log_id",
        limit: 1,
        ..ViewQuery::default()
    };
    info.filter("log_id", "=", Param::Int(log));
    let Some(info) = state
        .store()
        .view_read(&info, Budget::For(state.request_deadline()))
        .await?
        .pop()
    else {
        return Err(ApiError::not_found(format!("no log {log}")));
    };
    Ok(axum::Json(json!({ "log": info, "from": from, "to": to, "lines": lines })).into_response())
}

/// `GET /api/v1/build_requests?state=&builder=`
#[utoipa::path(
    get,
    path = "/api/v1/build_requests",
    tag = "read",
    params(
        ("state" = Option<String>, Query, description = "pending, claimed, completed or cancelled"),
        ("builder" = Option<String>, Query, description = "Builder name"),
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.build_requests, newest first", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn build_requests(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::new(raw, &["state", "builder"])?;
    let mut query = ViewQuery {
        view: "build_requests",
        order: "build_request_id DESC",
        ..ViewQuery::default()
    };
    if let Some(wanted) = params.text("state") {
        if !["pending", "claimed", "completed", "cancelled"].contains(&wanted.as_str()) {
            return Err(ApiError::bad_request(format!(
                "state: expected pending, claimed, completed or cancelled, got {wanted:?}"
            )));
        }
        query.filter("state", "=", Param::Text(wanted));
    }
    if let Some(builder) = params.text("builder") {
        query.filter("builder_name", "=", Param::Text(builder));
    }
    params.page(&mut query)?;
    list(&state, query).await
}

/// `GET /api/v1/changes?branch=`
#[utoipa::path(
    get,
    path = "/api/v1/changes",
    tag = "read",
    params(
        ("branch" = Option<String>, Query, description = "Branch"),
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.changes, newest first", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn changes(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let params = Params::new(raw, &["branch"])?;
    let mut query = ViewQuery {
        view: "changes",
        order: "change_id DESC",
        ..ViewQuery::default()
    };
    if let Some(branch) = params.text("branch") {
        query.filter("branch", "=", Param::Text(branch));
    }
    params.page(&mut query)?;
    list(&state, query).await
}

/// `GET /api/v1/workers`
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "read",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.workers", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn workers(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    unfiltered(&state, raw, "workers", "name").await
}

/// `GET /api/v1/masters`
#[utoipa::path(
    get,
    path = "/api/v1/masters",
    tag = "read",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1-1000 (default 50)"),
        ("offset" = Option<i64>, Query, description = "Rows skipped (default 0)"),
    ),
    responses(
        (status = 200, description = "Rows of buildmaster_v1.masters", body = Object),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn masters(
    State(state): State<ApiState>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    unfiltered(&state, raw, "masters", "name").await
}
