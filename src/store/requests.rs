//! Table `build_requests`: claiming (several masters may share one
//! database) and giving requests back.

use uuid::Uuid;

use super::{Budget, Store, StoreError};

/// A request this master claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRequest {
    /// The request.
    pub id: i64,
    /// Its buildset.
    pub buildset_id: i64,
    /// Its builder.
    pub builder_id: i64,
}

impl Store {
    /// Claims up to `limit` pending requests of `builder_id` for master
    /// `master_id`, highest priority first, then oldest. Requests locked by
    /// another master's claim are skipped, not waited for.
    ///
    /// `claim_token` is chosen by the caller before the first attempt: a
    /// retry after an ambiguous commit returns what the first attempt
    /// claimed instead of claiming more. Fails when the database is
    /// unreachable within `budget`.
    pub async fn build_request_claim(
        &self,
        master_id: i64,
        builder_id: i64,
        limit: i64,
        claim_token: Uuid,
        budget: Budget,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        self.unit("build_request_claim", budget, |tx| {
            Box::pin(async move {
                let to_claimed = |rows: Vec<tokio_postgres::Row>| {
                    rows.iter()
                        .map(|r| ClaimedRequest {
                            id: r.get(0),
                            buildset_id: r.get(1),
                            builder_id: r.get(2),
                        })
                        .collect::<Vec<_>>()
                };
                let earlier = tx
                    .query(
                        "SELECT id, buildset_id, builder_id FROM buildmaster_private.build_requests
                          WHERE claim_token = $1",
                        &[&claim_token],
                    )
                    .await?;
                if !earlier.is_empty() {
                    return Ok(to_claimed(earlier));
                }
                let rows = tx
                    .query(
                        "UPDATE buildmaster_private.build_requests
                            SET state = 'claimed', claimed_by_master_id = $1, claimed_at = now(),
                                claim_token = $4
                          WHERE id IN (SELECT id FROM buildmaster_private.build_requests
                                        WHERE builder_id = $2 AND state = 'pending'
                                        ORDER BY priority DESC, submitted_at, id
                                        LIMIT $3
                                        FOR UPDATE SKIP LOCKED)
                          RETURNING id, buildset_id, builder_id",
                        &[&master_id, &builder_id, &limit, &claim_token],
                    )
                    .await?;
                Ok(to_claimed(rows))
            })
        })
        .await
    }

    /// Which of `builder_ids` have pending requests: one cheap query (on
    /// the partial index of pending requests) instead of a claim per
    /// builder when the queue is idle.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn build_request_pending_builders(
        &self,
        builder_ids: &[i64],
        budget: Budget,
    ) -> Result<Vec<i64>, StoreError> {
        self.unit("build_request_pending_builders", budget, |tx| {
            let builder_ids = builder_ids.to_vec();
            Box::pin(async move {
                Ok(tx
                    .query(
                        "SELECT b FROM unnest($1::bigint[]) AS b
                          WHERE EXISTS (SELECT 1 FROM buildmaster_private.build_requests r
                                         WHERE r.builder_id = b AND r.state = 'pending')",
                        &[&builder_ids],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect())
            })
        })
        .await
    }

    /// Gives every request claimed by master `master_id` back to the queue
    /// and finishes its unfinished builds as `retry` (5): used when a master
    /// restarts (its previous run's work) and when it shuts down.
    ///
    /// Returns (requests returned, builds marked retry). Fails when the
    /// database is unreachable within `budget`.
    pub async fn master_release_work(
        &self,
        master_id: i64,
        reason: &str,
        budget: Budget,
    ) -> Result<(u64, u64), StoreError> {
        self.unit("master_release_work", budget, |tx| {
            let reason = reason.to_owned();
            Box::pin(
                async move { Ok(super::builds::release_work(tx, &[master_id], &reason).await?) },
            )
        })
        .await
    }
}
