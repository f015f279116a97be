//! `POST /api/v1/changes`: record a source change.
//!
//! Body (JSON): `author` (required), `comments`, `repository`, `project`,
//! `codebase`, `branch`, `revision`, `revlink`, `category`, `committer`,
//! `when` (RFC 3339 time or Unix seconds; default now), `files` (list of
//! paths), `properties` (object). Unknown fields are refused, so a typo does
//! not silently drop data.
//!
//! Answers `201 {"change_id": N}`. With an `Idempotency-Key` header a
//! retried request returns the first answer (header `Idempotent-Replayed:
//! true`) and records nothing new; the same key with another body is `409`.
//! While the database is unreachable the request waits up to `[database]
//! request_deadline_s`, then answers `503` with `Retry-After`: a change is
//! either acknowledged and stored exactly once, or refused and not stored.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::ApiState;
use super::auth::WriteAccess;
use super::error::{ApiError, ErrorBody};
use super::idempotency::{derived_uuid, idempotency_key, replayed};
use super::json::ApiJson;
use crate::store::Budget;
use crate::store::changes::NewChange;
use crate::store::idempotency::Submission;

const MAX_TEXT: usize = 1024;
const MAX_COMMENTS: usize = 64 * 1024;
const MAX_FILES: usize = 10_000;

/// A change as posted.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// Who wrote the change.
    pub author: String,
    #[serde(default)]
    comments: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    codebase: String,
    branch: Option<String>,
    revision: Option<String>,
    revlink: Option<String>,
    category: Option<String>,
    committer: Option<String>,
    when: Option<When>,
    #[serde(default)]
    files: Vec<String>,
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A time as RFC 3339 text or Unix seconds.
#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum When {
    Seconds(f64),
    Text(String),
}

impl When {
    fn resolve(&self) -> Result<DateTime<Utc>, ApiError> {
        match self {
            When::Seconds(seconds) if seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e11 => {
                let millis = (seconds * 1000.0).round() as i64;
                Utc.timestamp_millis_opt(millis).single().ok_or_else(|| {
                    ApiError::unprocessable(format!("when: {seconds} is not a valid time"))
                })
            }
            When::Seconds(seconds) => Err(ApiError::unprocessable(format!(
                "when: {seconds} is not a valid Unix time"
            ))),
            When::Text(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::unprocessable(format!(
                        "when: {text:?} is not an RFC 3339 time (like 2026-01-31T12:00:00Z): {e}"
                    ))
                }),
        }
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::unprocessable(format!(
            "{field}: {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::unprocessable(format!(
            "{field}: NUL characters are not allowed"
        )));
    }
    Ok(())
}

fn check_json(path: &str, value: &serde_json::Value) -> Result<(), ApiError> {
    match value {
        serde_json::Value::String(s) => check_text(path, s, MAX_COMMENTS),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_json(&format!("{path}[{i}]"), v)),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_text(&format!("{path} key"), k, MAX_TEXT)?;
            check_json(&format!("{path}.{k}"), v)
        }),
        _ => Ok(()),
    }
}

impl ChangeRequest {
    /// Checks the fields and turns the request into a change to store.
    fn validate(&self, change_uuid: Uuid) -> Result<NewChange, ApiError> {
        if self.author.trim().is_empty() {
            return Err(ApiError::unprocessable("author: must not be empty"));
        }
        check_text("author", &self.author, MAX_TEXT)?;
        check_text("comments", &self.comments, MAX_COMMENTS)?;
        for (field, value) in [
            ("repository", Some(&self.repository)),
            ("project", Some(&self.project)),
            ("codebase", Some(&self.codebase)),
            ("branch", self.branch.as_ref()),
            ("revision", self.revision.as_ref()),
            ("revlink", self.revlink.as_ref()),
            ("category", self.category.as_ref()),
            ("committer", self.committer.as_ref()),
        ] {
            if let Some(value) = value {
                check_text(field, value, MAX_TEXT)?;
            }
        }
        if self.files.len() > MAX_FILES {
            return Err(ApiError::unprocessable(format!(
                "files: {} entries, at most {MAX_FILES} allowed",
                self.files.len()
            )));
        }
        for (i, file) in self.files.iter().enumerate() {
            check_text(&format!("files[{i}]"), file, 4096)?;
        }
        let properties = serde_json::Value::Object(self.properties.clone().unwrap_or_default());
        check_json("properties", &properties)?;
        let when = self.when.as_ref().map(When::resolve).transpose()?;
        Ok(NewChange {
            change_uuid,
            author: self.author.clone(),
            committer: self.committer.clone(),
            comments: self.comments.clone(),
            repository: self.repository.clone(),
            project: self.project.clone(),
            codebase: self.codebase.clone(),
            branch: self.branch.clone(),
            revision: self.revision.clone(),
            category: self.category.clone(),
            revlink: self.revlink.clone(),
            source: "api".to_owned(),
            when,
            files: self.files.clone(),
            properties,
        })
    }
}

/// Record a source change.
#[utoipa::path(
    post,
    path = "/api/v1/changes",
    tag = "changes",
    request_body = ChangeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first answer")),
    responses(
        (status = 201, description = "Recorded", body = Object, example = json!({"change_id": 1})),
        (status = 400, description = "Not JSON, or a bad header", body = ErrorBody),
        (status = 401, description = "Write token missing or wrong", body = ErrorBody),
        (status = 403, description = "Not from loopback and no write token configured", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused for another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not sent as JSON", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 503, description = "Database unreachable past the request deadline", body = ErrorBody),
    )
)]
pub async fn post_change(
    State(state): State<ApiState>,
    _access: WriteAccess,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChangeRequest>,
) -> Result<Response, ApiError> {
    const SCOPE: &str = "POST /api/v1/changes";
    let key = idempotency_key(&headers, SCOPE, &body)?;
    // The uuid is fixed before the first attempt: retries inside the store,
    // and retries of the whole request under the same key, reuse it.
    let change_uuid = derived_uuid(key.as_ref());
    let change = body.validate(change_uuid)?;
    let outcome = state
        .store()
        .change_submit(&change, key.as_ref(), Budget::For(state.request_deadline()))
        .await?;
    Ok(match outcome {
        Submission::Fresh(inserted) => {
            tracing::info!(change_id = inserted.id, branch = ?change.branch, revision = ?change.revision, "change recorded");
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "change_id": inserted.id })),
            )
                .into_response()
        }
        other => replayed(other)?,
    })
}
