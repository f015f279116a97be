//! Table `idempotency_keys`: the first answer to an API write that carried
//! an `Idempotency-Key` header, so a retried request gets the same answer
//! and changes nothing. Used inside the write's own transaction.

use super::Tx;

/// An `Idempotency-Key` as the API received it.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Which endpoint (and caller) the key belongs to, e.g. `POST /api/v1/changes`.
    pub scope: String,
    /// The header's value.
    pub key: String,
    /// Hash of the request body, to tell a retry from a different request
    /// reusing the key.
    pub request_hash: String,
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// HTTP status of the first answer.
    pub status: u16,
    /// Its JSON body.
    pub body: serde_json::Value,
}

/// What an idempotent submission came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission<T> {
    /// Done now.
    Fresh(T),
    /// Done before under the same key and the same request: the first answer.
    Replayed(StoredAnswer),
    /// The key was used before for a different request.
    KeyReused,
}

/// Looks `key` up; `Err(Submission::...)` when the caller must answer without
/// doing the work again.
pub(super) async fn idempotency_check<T>(
    tx: &Tx<'_>,
    key: &IdempotencyKey,
) -> Result<Result<(), Submission<T>>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT request_hash, response_status, response_body
               FROM buildmaster_private.idempotency_keys WHERE scope = $1 AND key = $2",
            &[&key.scope, &key.key],
        )
        .await?;
    Ok(match row {
        None => Ok(()),
        Some(row) if row.get::<_, String>(0) != key.request_hash => Err(Submission::KeyReused),
        Some(row) => Err(Submission::Replayed(StoredAnswer {
            status: row.get::<_, i16>(1) as u16,
            body: row.get(2),
        })),
    })
}

/// Records the answer given under `key`. A concurrent request with the same
/// key may have recorded it first; then this is a no-op.
pub(super) async fn idempotency_record(
    tx: &Tx<'_>,
    key: &IdempotencyKey,
    answer: &StoredAnswer,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO buildmaster_private.idempotency_keys
                (scope, key, request_hash, response_status, response_body)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (scope, key) DO NOTHING",
        &[
            &key.scope,
            &key.key,
            &key.request_hash,
            &(answer.status as i16),
            &answer.body,
        ],
    )
    .await?;
    Ok(())
}
