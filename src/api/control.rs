//! Stopping builds and cancelling requests.
//!
//! - `POST /api/v1/builds/{id}/stop` (body optional: `{"reason": "..."}`):
//!   `202` while the master running the build kills it (within about a
//!   second: it is woken by LISTEN/NOTIFY); the build ends `cancelled`, its
//!   remaining steps skipped unless `always_run`. `404` for an unknown
//!   build, `409` for a finished one.
//! - `POST /api/v1/build_requests/{id}/cancel`: a pending request is
//!   cancelled at once (`200`); one being built has its build stopped
//!   (`202`); a finished one is `409`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::auth::WriteAccess;
use super::error::{ApiError, ErrorBody};
use super::json::parse_json;
use crate::store::Budget;
use crate::store::builds::CancelOutcome;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    reason: Option<String>,
}

fn reason(body: &[u8], default: &str) -> Result<String, ApiError> {
    let request: StopRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StopRequest::default()
    } else {
        parse_json(body)?
    };
    let reason = request.reason.unwrap_or_else(|| default.to_owned());
    if reason.len() > 1024 || reason.contains('\0') {
        return Err(ApiError::unprocessable(
            "reason: at most 1024 bytes and no NUL characters",
        ));
    }
    Ok(reason)
}

fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::not_found(format!("no {what} {text:?}: ids are positive integers"))
        })
}

/// Stop a running build.
#[utoipa::path(
    post,
    path = "/api/v1/builds/{id}/stop",
    tag = "control",
    params(("id" = i64, Path, description = "Build id")),
    request_body(content = Option<Object>, description = r#"Optional: {"reason": "..."}"#),
    responses(
        (status = 202, description = "The build is being stopped", body = Object),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Write token missing or wrong", body = ErrorBody),
        (status = 403, description = "Not from loopback and no write token configured", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "Already finished", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn stop_build(
    State(state): State<ApiState>,
    _access: WriteAccess,
    Path(build_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let build_id = parse_id(&build_id, "build")?;
    let reason = reason(&body, "stopped through the API")?;
    match state
        .store()
        .build_request_stop(build_id, &reason, Budget::For(state.request_deadline()))
        .await?
    {
        None => Err(ApiError::not_found(format!("no build {build_id}"))),
        Some(false) => Err(ApiError::conflict(format!(
            "build {build_id} has already finished"
        ))),
        Some(true) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "build_id": build_id, "state": "stopping" })),
        )
            .into_response()),
    }
}

/// Cancel a build request (stopping its build if it runs).
#[utoipa::path(
    post,
    path = "/api/v1/build_requests/{id}/cancel",
    tag = "control",
    params(("id" = i64, Path, description = "Build request id")),
    request_body(content = Option<Object>, description = r#"Optional: {"reason": "..."}"#),
    responses(
        (status = 200, description = "Cancelled (it was pending)", body = Object),
        (status = 202, description = "Its build is being stopped", body = Object),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Write token missing or wrong", body = ErrorBody),
        (status = 403, description = "Not from loopback and no write token configured", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 409, description = "Already ended", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    )
)]
pub async fn cancel_request(
    State(state): State<ApiState>,
    _access: WriteAccess,
    Path(request_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request_id = parse_id(&request_id, "build request")?;
    let reason = reason(&body, "request cancelled through the API")?;
    match state
        .store()
        .build_request_cancel(request_id, &reason, Budget::For(state.request_deadline()))
        .await?
    {
        CancelOutcome::NotFound => Err(ApiError::not_found(format!(
            "no build request {request_id}"
        ))),
        CancelOutcome::Cancelled => Ok((
            StatusCode::OK,
            axum::Json(json!({ "build_request_id": request_id, "state": "cancelled" })),
        )
            .into_response()),
        CancelOutcome::Stopping => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "build_request_id": request_id, "state": "stopping" })),
        )
            .into_response()),
        CancelOutcome::AlreadyFinished(state) => Err(ApiError::conflict(format!(
            "build request {request_id} has already ended ({state})"
        ))),
    }
}
