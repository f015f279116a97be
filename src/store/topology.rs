//! Tables `workers`, `builders`, `builder_workers` and `schedulers` as the
//! configuration describes them: synchronised at start-up. Entries removed
//! from the configuration are marked `configured = false`, never deleted,
//! so their history stays readable.

use std::collections::HashMap;

use crate::config::{BuilderConfig, SchedulerConfig, WorkerConfig};

use super::{Budget, Store, StoreError};

/// Ids of the synchronised rows, by name.
#[derive(Debug, Clone, Default)]
pub struct TopologyIds {
    /// Worker ids.
    pub workers: HashMap<String, i64>,
    /// Builder ids.
    pub builders: HashMap<String, i64>,
    /// Scheduler ids.
    pub schedulers: HashMap<String, i64>,
}

impl Store {
    /// Writes the configured workers, builders and schedulers, marks the
    /// others unconfigured, and returns the ids by name. Idempotent.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn topology_sync(
        &self,
        workers: &[WorkerConfig],
        builders: &[BuilderConfig],
        schedulers: &[SchedulerConfig],
        budget: Budget,
    ) -> Result<TopologyIds, StoreError> {
        self.unit("topology_sync", budget, |tx| {
            let (workers, builders, schedulers) = (workers.to_vec(), builders.to_vec(), schedulers.to_vec());
            Box::pin(async move {
                let mut ids = TopologyIds::default();
                for worker in &workers {
                    let row = tx
                        .query_one(
                            "INSERT INTO buildmaster_private.workers (name, kind, max_builds, configured)
                             VALUES ($1, $2, $3, true)
                             ON CONFLICT (name) DO UPDATE
                                SET kind = EXCLUDED.kind, max_builds = EXCLUDED.max_builds, configured = true
                             RETURNING id",
                            &[&worker.name, &worker.kind, &(worker.max_builds as i32)],
                        )
                        .await?;
                    ids.workers.insert(worker.name.clone(), row.get(0));
                }
                let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
                tx.execute(
                    "UPDATE buildmaster_private.workers SET configured = false
                      WHERE configured AND NOT (name = ANY($1))",
                    &[&names],
                )
                .await?;

                for builder in &builders {
                    let config = serde_json::to_value(builder).unwrap_or_default();
                    let row = tx
                        .query_one(
                            "INSERT INTO buildmaster_private.builders (name, description, tags, config, configured)
                             VALUES ($1, $2, $3, $4, true)
                             ON CONFLICT (name) DO UPDATE
                                SET description = EXCLUDED.description, tags = EXCLUDED.tags,
                                    config = EXCLUDED.config, configured = true, updated_at = now()
                             RETURNING id",
                            &[&builder.name, &builder.description, &builder.tags, &config],
                        )
                        .await?;
                    let id: i64 = row.get(0);
                    ids.builders.insert(builder.name.clone(), id);
                    let worker_ids: Vec<i64> = builder.workers.iter().filter_map(|w| ids.workers.get(w).copied()).collect();
                    tx.execute(
                        "DELETE FROM buildmaster_private.builder_workers WHERE builder_id = $1 AND NOT (worker_id = ANY($2))",
                        &[&id, &worker_ids],
                    )
                    .await?;
                    tx.execute(
                        "INSERT INTO buildmaster_private.builder_workers (builder_id, worker_id)
                         SELECT $1, w FROM unnest($2::bigint[]) AS w ON CONFLICT DO NOTHING",
                        &[&id, &worker_ids],
                    )
                    .await?;
                }
                let names: Vec<&str> = builders.iter().map(|b| b.name.as_str()).collect();
                tx.execute(
                    "UPDATE buildmaster_private.builders SET configured = false, updated_at = now()
                      WHERE configured AND NOT (name = ANY($1))",
                    &[&names],
                )
                .await?;

                for scheduler in &schedulers {
                    let config = serde_json::to_value(scheduler).unwrap_or_default();
                    // A scheduler whose kind or settings changed starts its
                    // clock over: its old next run meant something else.
                    let row = tx
                        .query_one(
                            "INSERT INTO buildmaster_private.schedulers (name, kind, config, configured)
                             VALUES ($1, $2, $3, true)
                             ON CONFLICT (name) DO UPDATE
                                SET config = EXCLUDED.config, configured = true, updated_at = now(),
                                    next_run_at = CASE WHEN schedulers.kind = EXCLUDED.kind
                                                       AND schedulers.config = EXCLUDED.config
                                                       THEN schedulers.next_run_at END,
                                    kind = EXCLUDED.kind
                             RETURNING id",
                            &[&scheduler.name(), &scheduler.kind(), &config],
                        )
                        .await?;
                    ids.schedulers.insert(scheduler.name().to_owned(), row.get(0));
                }
                let names: Vec<&str> = schedulers.iter().map(|s| s.name()).collect();
                tx.execute(
                    "UPDATE buildmaster_private.schedulers SET configured = false, updated_at = now()
                      WHERE configured AND NOT (name = ANY($1))",
                    &[&names],
                )
                .await?;
                Ok(ids)
            })
        })
        .await
    }
}
