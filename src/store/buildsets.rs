//! Tables `buildsets`, `sourcestamps`, `sourcestamp_changes`,
//! `buildset_properties` and the requests a buildset creates: one per
//! builder. Every insert is keyed by a uuid chosen before the first attempt
//! (derived from the scheduler's decision or the API's idempotency key), so a
//! retried submission finds the buildset the first attempt stored.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::idempotency::{
    IdempotencyKey, StoredAnswer, Submission, idempotency_check, idempotency_record,
};
use super::{Budget, Store, StoreError, Tx, WorkError};

/// Channel notified when requests are queued.
pub const REQUESTS_CHANNEL: &str = "buildmaster_requests";
/// Channel notified when a buildset completes.
pub const BUILDSETS_CHANNEL: &str = "buildmaster_buildsets";

/// What to build: one source stamp (the default codebase).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStamp {
    /// Repository URL or name.
    pub repository: String,
    /// Project.
    pub project: String,
    /// Branch; `None`: the default branch.
    pub branch: Option<String>,
    /// Revision; `None`: the branch tip at build time.
    pub revision: Option<String>,
}

/// A buildset to create.
#[derive(Debug, Clone, Default)]
pub struct NewBuildset {
    /// Idempotency key of the buildset.
    pub uuid: Uuid,
    /// Why, in words.
    pub reason: String,
    /// Creating scheduler, if any.
    pub scheduler_id: Option<i64>,
    /// For dependent buildsets: the upstream buildset.
    pub parent_buildset_id: Option<i64>,
    /// The source stamp.
    pub sourcestamp: SourceStamp,
    /// Changes included.
    pub change_ids: Vec<i64>,
    /// Properties given to the builds.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Builders (by name) that get a request each.
    pub builders: Vec<String>,
    /// Priority of the requests.
    pub priority: i32,
}

/// A stored buildset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildsetCreated {
    /// Its id.
    pub buildset_id: i64,
    /// Its requests' ids.
    pub request_ids: Vec<i64>,
    /// False when an earlier attempt or submission had stored it.
    pub created: bool,
}

/// Inserts a buildset, its source stamp, properties and requests, once per
/// uuid, and wakes the masters' claim loops.
pub(super) async fn insert_buildset(
    tx: &Tx<'_>,
    buildset: &NewBuildset,
) -> Result<BuildsetCreated, WorkError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO buildmaster_private.buildsets (buildset_uuid, reason, scheduler_id, parent_buildset_id)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (buildset_uuid) DO NOTHING RETURNING id",
            &[&buildset.uuid, &buildset.reason, &buildset.scheduler_id, &buildset.parent_buildset_id],
        )
        .await?;
    let Some(row) = inserted else {
        let row = tx
            .query_one(
                "SELECT id FROM buildmaster_private.buildsets WHERE buildset_uuid = $1",
                &[&buildset.uuid],
            )
            .await?;
        let buildset_id: i64 = row.get(0);
        let request_ids = tx
            .query(
                "SELECT id FROM buildmaster_private.build_requests WHERE buildset_id = $1 ORDER BY id",
                &[&buildset_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        return Ok(BuildsetCreated {
            buildset_id,
            request_ids,
            created: false,
        });
    };
    let buildset_id: i64 = row.get(0);
    let ss = &buildset.sourcestamp;
    let sourcestamp_id: i64 = tx
        .query_one(
            "INSERT INTO buildmaster_private.sourcestamps (buildset_id, repository, project, branch, revision)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&buildset_id, &ss.repository, &ss.project, &ss.branch, &ss.revision],
        )
        .await?
        .get(0);
    if !buildset.change_ids.is_empty() {
        tx.execute(
            "INSERT INTO buildmaster_private.sourcestamp_changes (sourcestamp_id, change_id)
             SELECT $1, c FROM unnest($2::bigint[]) AS c ON CONFLICT DO NOTHING",
            &[&sourcestamp_id, &buildset.change_ids],
        )
        .await?;
    }
    for (name, value) in &buildset.properties {
        tx.execute(
            "INSERT INTO buildmaster_private.buildset_properties (buildset_id, name, value, source)
             VALUES ($1, $2, $3, 'buildset')",
            &[&buildset_id, name, value],
        )
        .await?;
    }
    let request_ids: Vec<i64> = tx
        .query(
            "INSERT INTO buildmaster_private.build_requests (buildset_id, builder_id, priority)
             SELECT $1, b.id, $3 FROM buildmaster_private.builders b
              WHERE b.name = ANY($2) AND b.configured
             ORDER BY b.name
             RETURNING id",
            &[&buildset_id, &buildset.builders, &buildset.priority],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if request_ids.len() != buildset.builders.len() {
        return Err(WorkError::Rejected(format!(
            "some of the builders {:?} are not configured",
            buildset.builders
        )));
    }
    tx.execute("SELECT pg_notify($1, '')", &[&REQUESTS_CHANNEL])
        .await?;
    Ok(BuildsetCreated {
        buildset_id,
        request_ids,
        created: true,
    })
}

impl Store {
    /// Creates a buildset, once per `buildset.uuid`.
    ///
    /// Fails when the database is unreachable within `budget`, or (rejected)
    /// when a builder is not configured.
    pub async fn buildset_create(
        &self,
        buildset: &NewBuildset,
        budget: Budget,
    ) -> Result<BuildsetCreated, StoreError> {
        self.unit("buildset_create", budget, |tx| {
            let buildset = buildset.clone();
            Box::pin(async move { insert_buildset(tx, &buildset).await })
        })
        .await
    }

    /// Creates a forced buildset, honouring an idempotency key like
    /// [`Store::change_submit`].
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn buildset_force(
        &self,
        buildset: &NewBuildset,
        key: Option<&IdempotencyKey>,
        budget: Budget,
    ) -> Result<Submission<BuildsetCreated>, StoreError> {
        self.unit("buildset_force", budget, |tx| {
            let buildset = buildset.clone();
            let key = key.cloned();
            Box::pin(async move {
                if let Some(key) = &key {
                    if let Err(answer) = idempotency_check(tx, key).await? {
                        return Ok(answer);
                    }
                }
                let created = insert_buildset(tx, &buildset).await?;
                if let Some(key) = &key {
                    let answer = StoredAnswer {
                        status: 201,
                        body: serde_json::json!({
                            "buildset_id": created.buildset_id,
                            "build_request_ids": created.request_ids,
                        }),
                    };
                    idempotency_record(tx, key, &answer).await?;
                }
                Ok(Submission::Fresh(created))
            })
        })
        .await
    }
}
