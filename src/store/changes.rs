//! Tables `changes` and `change_files`: source changes as submitted.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::idempotency::{
    IdempotencyKey, StoredAnswer, Submission, idempotency_check, idempotency_record,
};
use super::{Budget, Store, StoreError, Tx};

/// Channel notified when a change is recorded.
pub const CHANGES_CHANNEL: &str = "buildmaster_changes";

/// A change to record. `change_uuid` is the idempotency key: submitting the
/// same uuid twice records one change.
#[derive(Debug, Clone, Default)]
pub struct NewChange {
    /// Idempotency key chosen by the submitter.
    pub change_uuid: Uuid,
    /// Who wrote the change.
    pub author: String,
    /// Who committed it, when different.
    pub committer: Option<String>,
    /// Commit message.
    pub comments: String,
    /// Repository URL or name.
    pub repository: String,
    /// Project name.
    pub project: String,
    /// Branch, when the change is on one.
    pub branch: Option<String>,
    /// Revision (commit id).
    pub revision: Option<String>,
    /// Free-form category.
    pub category: Option<String>,
    /// Link to the revision in a web UI.
    pub revlink: Option<String>,
    /// Where the change came from: api, github, gitlab, cli.
    pub source: String,
    /// Codebase name; empty for the default codebase.
    pub codebase: String,
    /// When the change was made; `None` means now.
    pub when: Option<DateTime<Utc>>,
    /// Files touched.
    pub files: Vec<String>,
    /// Extra properties (a JSON object).
    pub properties: serde_json::Value,
}

/// The outcome of [`Store::change_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeInserted {
    /// The change's id.
    pub id: i64,
    /// False when an earlier submission with the same uuid had stored it.
    pub created: bool,
}

impl Store {
    /// Records a change and its files, once per `change_uuid`.
    ///
    /// Safe to retry after any failure: a second call with the same uuid
    /// returns the first call's id with `created = false`. Fails when the
    /// database is unreachable within `budget`.
    pub async fn change_insert(
        &self,
        change: &NewChange,
        budget: Budget,
    ) -> Result<ChangeInserted, StoreError> {
        self.unit("change_insert", budget, |tx| {
            let change = change.clone();
            Box::pin(async move { Ok(insert_change(tx, &change).await?) })
        })
        .await
    }

    /// Records several changes (a push) in one transaction, once per uuid
    /// each.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn change_insert_many(
        &self,
        changes: &[NewChange],
        budget: Budget,
    ) -> Result<Vec<ChangeInserted>, StoreError> {
        self.unit("change_insert_many", budget, |tx| {
            let changes = changes.to_vec();
            Box::pin(async move {
                let mut inserted = Vec::with_capacity(changes.len());
                for change in &changes {
                    inserted.push(insert_change(tx, change).await?);
                }
                Ok(inserted)
            })
        })
        .await
    }

    /// Records a change submitted through the API. With an idempotency key,
    /// a repeated submission returns the first answer (and a key reused for
    /// another request is refused); either way nothing is recorded twice.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn change_submit(
        &self,
        change: &NewChange,
        key: Option<&IdempotencyKey>,
        budget: Budget,
    ) -> Result<Submission<ChangeInserted>, StoreError> {
        self.unit("change_submit", budget, |tx| {
            let change = change.clone();
            let key = key.cloned();
            Box::pin(async move {
                if let Some(key) = &key {
                    if let Err(answer) = idempotency_check(tx, key).await? {
                        return Ok(answer);
                    }
                }
                let inserted = insert_change(tx, &change).await?;
                if let Some(key) = &key {
                    let answer = StoredAnswer {
                        status: 201,
                        body: serde_json::json!({ "change_id": inserted.id }),
                    };
                    idempotency_record(tx, key, &answer).await?;
                }
                Ok(Submission::Fresh(inserted))
            })
        })
        .await
    }
}

/// Inserts a change and its files once per uuid; returns the stored id.
async fn insert_change(
    tx: &Tx<'_>,
    change: &NewChange,
) -> Result<ChangeInserted, tokio_postgres::Error> {
    let properties = if change.properties.is_null() {
        serde_json::json!({})
    } else {
        change.properties.clone()
    };
    let inserted = tx
        .query_opt(
            "INSERT INTO buildmaster_private.changes
                (change_uuid, author, committer, comments, repository, project,
                 branch, revision, category, revlink, source, when_at, properties, codebase)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                     coalesce($12, now()), $13, $14)
             ON CONFLICT (change_uuid) DO NOTHING
             RETURNING id",
            &[
                &change.change_uuid,
                &change.author,
                &change.committer,
                &change.comments,
                &change.repository,
                &change.project,
                &change.branch,
                &change.revision,
                &change.category,
                &change.revlink,
                &change.source,
                &change.when,
                &properties,
                &change.codebase,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        // An earlier attempt (or submission) committed it.
        let row = tx
            .query_one(
                "SELECT id FROM buildmaster_private.changes WHERE change_uuid = $1",
                &[&change.change_uuid],
            )
            .await?;
        return Ok(ChangeInserted {
            id: row.get(0),
            created: false,
        });
    };
    let id: i64 = row.get(0);
    // Every change-driven scheduler gets the change in its inbox, in this
    // same transaction, so none can miss it (see V5__scheduler_inbox.sql).
    tx.execute(
        "INSERT INTO buildmaster_private.scheduler_changes (scheduler_id, change_id, classified)
         SELECT s.id, $1, false FROM buildmaster_private.schedulers s
          WHERE s.configured AND s.kind IN ('single-branch', 'any-branch')",
        &[&id],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, '')", &[&CHANGES_CHANNEL])
        .await?;
    if !change.files.is_empty() {
        tx.execute(
            "INSERT INTO buildmaster_private.change_files (change_id, filename)
             SELECT $1, f FROM unnest($2::text[]) AS f
             ON CONFLICT DO NOTHING",
            &[&id, &change.files],
        )
        .await?;
    }
    Ok(ChangeInserted { id, created: true })
}
