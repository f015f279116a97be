//! Push webhooks: `POST /hooks/github` and `POST /hooks/gitlab` turn pushed
//! commits into changes, one per commit.
//!
//! - GitHub: the body must carry a valid `X-Hub-Signature-256` (HMAC-SHA256
//!   of the raw body with `[hooks] github_secret`); `ping` events are
//!   answered, `push` events to branches recorded, other events ignored.
//! - GitLab: `X-Gitlab-Token` must equal `[hooks] gitlab_token`; `Push Hook`
//!   events are recorded, others ignored.
//!
//! A hook without its secret configured answers 404. Each commit's change
//! uuid is derived from the repository, branch and commit id, so a
//! redelivered webhook records nothing new.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiState;
use super::error::ApiError;
use super::json::parse_json;
use crate::store::Budget;
use crate::store::changes::NewChange;

/// Namespace of change uuids derived from pushed commits.
const COMMIT_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_8a55_21be_4d6f_a0c7_6e9b_5d2c_71a4);

#[derive(Debug, Deserialize)]
struct Person {
    name: Option<String>,
    email: Option<String>,
}

impl Person {
    fn display(&self) -> String {
        match (&self.name, &self.email) {
            (Some(name), Some(email)) => format!("{name} <{email}>"),
            (Some(name), None) => name.clone(),
            (None, Some(email)) => email.clone(),
            (None, None) => "unknown".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    #[serde(default)]
    message: String,
    timestamp: Option<DateTime<Utc>>,
    url: Option<String>,
    author: Option<Person>,
    committer: Option<Person>,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct GithubRepository {
    html_url: Option<String>,
    clone_url: Option<String>,
    full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GithubPush {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    deleted: bool,
    repository: GithubRepository,
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Debug, Deserialize)]
struct GitlabProject {
    web_url: Option<String>,
    git_http_url: Option<String>,
    path_with_namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GitlabPush {
    #[serde(rename = "ref")]
    reference: String,
    project: GitlabProject,
    #[serde(default)]
    commits: Vec<Commit>,
}

/// Turns pushed commits into changes.
fn commits_to_changes(
    source: &str,
    repository: &str,
    project: &str,
    branch: &str,
    commits: &[Commit],
) -> Vec<NewChange> {
    commits
        .iter()
        .map(|commit| {
            let mut files: Vec<String> = commit
                .added
                .iter()
                .chain(&commit.modified)
                .chain(&commit.removed)
                .cloned()
                .collect();
            files.sort();
            files.dedup();
            NewChange {
                change_uuid: Uuid::new_v5(
                    &COMMIT_NAMESPACE,
                    format!("{source}\n{repository}\n{branch}\n{}", commit.id).as_bytes(),
                ),
                author: commit
                    .author
                    .as_ref()
                    .map(Person::display)
                    .unwrap_or_else(|| "unknown".to_owned()),
                committer: commit.committer.as_ref().map(Person::display),
                comments: commit.message.clone(),
                repository: repository.to_owned(),
                project: project.to_owned(),
                branch: Some(branch.to_owned()),
                revision: Some(commit.id.clone()),
                revlink: commit.url.clone(),
                source: source.to_owned(),
                when: commit.timestamp,
                files,
                ..NewChange::default()
            }
        })
        .collect()
}

async fn record(state: &ApiState, changes: Vec<NewChange>) -> Result<Response, ApiError> {
    for change in &changes {
        let text = serde_json::to_string(&json!([change.author, change.comments, change.files]))
            .unwrap_or_default();
        if text.contains("\\u0000") {
            return Err(ApiError::unprocessable("the payload holds NUL characters"));
        }
    }
    let inserted = state
        .store()
        .change_insert_many(&changes, Budget::For(state.request_deadline()))
        .await?;
    let ids: Vec<i64> = inserted.iter().map(|c| c.id).collect();
    let new = inserted.iter().filter(|c| c.created).count();
    tracing::info!(changes = ids.len(), new, "push recorded");
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "change_ids": ids, "new": new })),
    )
        .into_response())
}

fn ignored(why: String) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({ "change_ids": [], "ignored": why })),
    )
        .into_response()
}

/// `POST /hooks/github`
pub async fn github(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = state.hooks().github_secret.as_ref() else {
        return Err(ApiError::not_found(
            "the GitHub hook is not enabled: set [hooks] github_secret",
        ));
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing X-Hub-Signature-256: configure the webhook's secret")
        })?;
    let expected = signature
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or_else(|| {
            ApiError::unauthorized("X-Hub-Signature-256 is not of the form sha256=<hex>")
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| ApiError::unauthorized("the configured secret cannot key an HMAC"))?;
    mac.update(&body);
    if mac.verify_slice(&expected).is_err() {
        return Err(ApiError::unauthorized(
            "X-Hub-Signature-256 does not match the body",
        ));
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match event {
        "ping" => Ok((StatusCode::OK, axum::Json(json!({ "pong": true }))).into_response()),
        "push" => {
            let push: GithubPush = parse_json(&body)?;
            let Some(branch) = push.reference.strip_prefix("refs/heads/") else {
                return Ok(ignored(format!("{} is not a branch", push.reference)));
            };
            if push.deleted {
                return Ok(ignored(format!("branch {branch} was deleted")));
            }
            let repository = push
                .repository
                .clone_url
                .or(push.repository.html_url)
                .unwrap_or_default();
            let project = push.repository.full_name.unwrap_or_default();
            record(
                &state,
                commits_to_changes("github", &repository, &project, branch, &push.commits),
            )
            .await
        }
        "" => Err(ApiError::bad_request("missing X-GitHub-Event")),
        other => Ok(ignored(format!("event {other} is not handled"))),
    }
}

/// `POST /hooks/gitlab`
pub async fn gitlab(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(token) = state.hooks().gitlab_token.as_ref() else {
        return Err(ApiError::not_found(
            "the GitLab hook is not enabled: set [hooks] gitlab_token",
        ));
    };
    let presented = headers
        .get("x-gitlab-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("missing X-Gitlab-Token: configure the webhook's secret token")
        })?;
    if !bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes())) {
        return Err(ApiError::unauthorized("X-Gitlab-Token is wrong"));
    }
    let event = headers
        .get("x-gitlab-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if event != "Push Hook" {
        return Ok(ignored(format!("event {event:?} is not handled")));
    }
    let push: GitlabPush = parse_json(&body)?;
    let Some(branch) = push.reference.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!("{} is not a branch", push.reference)));
    };
    let repository = push
        .project
        .git_http_url
        .or(push.project.web_url)
        .unwrap_or_default();
    let project = push.project.path_with_namespace.unwrap_or_default();
    record(
        &state,
        commits_to_changes("gitlab", &repository, &project, branch, &push.commits),
    )
    .await
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
