//! The `Idempotency-Key` header of write endpoints: a client that retries a
//! request with the same key gets the first answer and changes nothing; the
//! same key with a different body is a `409`.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use crate::store::idempotency::{IdempotencyKey, Submission};

/// Longest key accepted.
const MAX_KEY: usize = 255;

/// Namespace of the uuids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c0e_8d2b_4e47_9a51_c0de_c4a9_6e01);

/// Reads the header, if any, for a request to `scope` with body `body`.
///
/// Fails with 400 when the header is empty, too long or not visible ASCII.
pub fn idempotency_key(
    headers: &HeaderMap,
    scope: &str,
    body: &impl Serialize,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
            ))
        })?;
    // The body is hashed as parsed (canonical JSON), so whitespace or key
    // order do not make a retry look like another request.
    let canonical =
        serde_json::to_vec(&serde_json::to_value(body).unwrap_or_default()).unwrap_or_default();
    Ok(Some(IdempotencyKey {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: format!("{:x}", Sha256::digest(&canonical)),
    }))
}

/// The uuid of what the request creates: derived from the key (so a retry
/// of the whole request finds the same row), else random. Fixed before the
/// first attempt either way.
pub fn derived_uuid(key: Option<&IdempotencyKey>) -> Uuid {
    match key {
        Some(key) => Uuid::new_v5(
            &KEY_NAMESPACE,
            format!("{}\n{}", key.scope, key.key).as_bytes(),
        ),
        None => Uuid::new_v4(),
    }
}

/// The answer for a submission that was not done now: the first answer
/// again, or 409 for a key reused with another body.
pub fn replayed<T>(submission: Submission<T>) -> Result<Response, ApiError> {
    match submission {
        Submission::Replayed(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::CREATED);
            let mut response = (status, axum::Json(answer.body)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Submission::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was already used for a different request",
        )),
        Submission::Fresh(_) => Err(ApiError::conflict(
            "internal: a fresh submission is not a replay",
        )),
    }
}
