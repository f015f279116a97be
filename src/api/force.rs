//! `POST /api/v1/builders/{name}/force`: build a builder now, through a
//! `force` scheduler that lists it.
//!
//! Body (JSON, every field optional): `reason`, `branch`, `revision`,
//! `repository`, `project`, `priority` (integer, higher first), and
//! `properties` (object). Answers `201 {"buildset_id": N,
//! "build_request_ids": [..]}`; `404` for an unknown builder; `422` when no
//! force scheduler lists the builder. `Idempotency-Key` works as for
//! changes.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::WriteAccess;
use super::error::{ApiError, ErrorBody};
use super::idempotency::{derived_uuid, idempotency_key, replayed};
use super::json::parse_json;
use crate::config::SchedulerConfig;
use crate::store::Budget;
use crate::store::buildsets::{NewBuildset, SourceStamp};
use crate::store::idempotency::Submission;

/// A force request.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceRequest {
    reason: Option<String>,
    branch: Option<String>,
    revision: Option<String>,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: BTreeMap<String, serde_json::Value>,
}

/// Build a builder now.
#[utoipa::path(
    post,
    path = "/api/v1/builders/{name}/force",
    tag = "control",
    params(
        ("name" = String, Path, description = "Builder name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first answer"),
    ),
    request_body(content = Option<ForceRequest>, description = "Optional; an empty body means all defaults"),
    responses(
        (status = 201, description = "Buildset created", body = Object),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Write token missing or wrong", body = ErrorBody),
        (status = 403, description = "Not from loopback and no write token configured", body = ErrorBody),
        (status = 404, description = "No such builder", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused for another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid fields, or no force scheduler lists the builder", body = ErrorBody),
        (status = 503, description = "Database unreachable, or the master is starting", body = ErrorBody),
    )
)]
pub async fn force_builder(
    State(state): State<ApiState>,
    _access: WriteAccess,
    Path(builder): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // An empty body means "all defaults"; otherwise it must be JSON.
    let body: ForceRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForceRequest::default()
    } else {
        parse_json(&body)?
    };
    let Some((settings, ids)) = state.topology() else {
        return Err(ApiError::unavailable(
            "the master is still starting; retry in a moment",
        ));
    };
    if !settings.builders.iter().any(|b| b.name == builder) {
        return Err(ApiError::not_found(format!("no builder named {builder:?}")));
    }
    let Some(scheduler) = settings
        .schedulers
        .iter()
        .find(|s| matches!(s, SchedulerConfig::Force { .. }) && s.builders().contains(&builder))
    else {
        return Err(ApiError::unprocessable(format!(
            "builder {builder:?} cannot be forced: no [[schedulers]] of kind \"force\" lists it"
        )));
    };
    for (text, field) in [
        (body.reason.as_deref(), "reason"),
        (body.branch.as_deref(), "branch"),
        (body.revision.as_deref(), "revision"),
        (Some(body.repository.as_str()), "repository"),
        (Some(body.project.as_str()), "project"),
    ] {
        if let Some(text) = text {
            if text.len() > 1024 || text.contains('\0') {
                return Err(ApiError::unprocessable(format!(
                    "{field}: at most 1024 bytes and no NUL characters"
                )));
            }
        }
    }
    let properties_text = serde_json::to_string(&body.properties).unwrap_or_default();
    if properties_text.contains("\\u0000") || properties_text.len() > 64 * 1024 {
        return Err(ApiError::unprocessable(
            "properties: at most 64 KiB and no NUL characters",
        ));
    }
    let key = idempotency_key(
        &headers,
        &format!("POST /api/v1/builders/{builder}/force"),
        &body,
    )?;
    let buildset = NewBuildset {
        uuid: derived_uuid(key.as_ref()),
        reason: body
            .reason
            .clone()
            .unwrap_or_else(|| format!("forced through the API ({})", scheduler.name())),
        scheduler_id: ids.schedulers.get(scheduler.name()).copied(),
        parent_buildset_id: None,
        sourcestamp: SourceStamp {
            repository: body.repository.clone(),
            project: body.project.clone(),
            branch: body.branch.clone(),
            revision: body.revision.clone(),
        },
        change_ids: Vec::new(),
        properties: body.properties.clone(),
        builders: vec![builder.clone()],
        priority: body.priority,
    };
    let outcome = state
        .store()
        .buildset_force(
            &buildset,
            key.as_ref(),
            Budget::For(state.request_deadline()),
        )
        .await?;
    match outcome {
        Submission::Fresh(created) => {
            tracing::info!(%builder, buildset = created.buildset_id, "build forced");
            Ok((
                StatusCode::CREATED,
                axum::Json(serde_json::json!({
                    "buildset_id": created.buildset_id,
                    "build_request_ids": created.request_ids,
                })),
            )
                .into_response())
        }
        other => replayed(other),
    }
}
