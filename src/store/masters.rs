//! Table `masters`: one row per master process name, heartbeated.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Budget, Store, StoreError};

/// A master's row as registered.
#[derive(Debug, Clone)]
pub struct MasterRow {
    /// Primary key.
    pub id: i64,
    /// Configured name.
    pub name: String,
    /// Identity of this process's run.
    pub incarnation: Uuid,
    /// When the registration took place.
    pub started_at: DateTime<Utc>,
}

/// What registration found about the master that held the name before.
#[derive(Debug, Clone)]
pub struct Registration {
    /// This master's row.
    pub master: MasterRow,
    /// Seconds since the previous incarnation's last heartbeat, when that
    /// incarnation was still marked active (a crash or kill -9), measured
    /// from the database's clock.
    pub previous_active_heartbeat_age_s: Option<f64>,
}

impl Store {
    /// Registers (or re-activates) the master called `name` as a new
    /// incarnation.
    ///
    /// Idempotent for one `incarnation`: an attempt retried after an
    /// ambiguous commit re-reads the row it wrote. Fails when the database
    /// is unreachable within `budget`.
    pub async fn master_register(
        &self,
        name: &str,
        incarnation: Uuid,
        budget: Budget,
    ) -> Result<Registration, StoreError> {
        self.unit("master_register", budget, |tx| {
            let name = name.to_owned();
            Box::pin(async move {
                let previous = tx
                    .query_opt(
                        "SELECT incarnation, active,
                                extract(epoch FROM now() - last_heartbeat_at)::float8
                           FROM buildmaster_private.masters WHERE name = $1 FOR UPDATE",
                        &[&name],
                    )
                    .await?;
                let previous_active_heartbeat_age_s = previous.as_ref().and_then(|row| {
                    let was: Uuid = row.get(0);
                    let active: bool = row.get(1);
                    (active && was != incarnation).then(|| row.get::<_, f64>(2))
                });
                let row = tx
                    .query_one(
                        "INSERT INTO buildmaster_private.masters
                                (name, incarnation, active, started_at, last_heartbeat_at)
                         VALUES ($1, $2, true, now(), now())
                         ON CONFLICT (name) DO UPDATE
                            SET incarnation = EXCLUDED.incarnation,
                                active = true,
                                stopped_at = NULL,
                                started_at = CASE WHEN masters.incarnation = EXCLUDED.incarnation
                                                  THEN masters.started_at ELSE EXCLUDED.started_at END,
                                last_heartbeat_at = EXCLUDED.last_heartbeat_at
                         RETURNING id, started_at",
                        &[&name, &incarnation],
                    )
                    .await?;
                Ok(Registration {
                    master: MasterRow {
                        id: row.get(0),
                        name,
                        incarnation,
                        started_at: row.get(1),
                    },
                    previous_active_heartbeat_age_s,
                })
            })
        })
        .await
    }

    /// Records a heartbeat of master `id`, returning the database's time.
    ///
    /// Returns `None` when the row no longer belongs to this incarnation
    /// (another process took the name, or the master was expired and
    /// marked inactive): the caller must stop claiming work. Fails when the
    /// database is unreachable within `budget`.
    pub async fn master_heartbeat(
        &self,
        id: i64,
        incarnation: Uuid,
        budget: Budget,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.unit("master_heartbeat", budget, |tx| {
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "UPDATE buildmaster_private.masters
                            SET last_heartbeat_at = greatest(last_heartbeat_at, now())
                          WHERE id = $1 AND incarnation = $2 AND active
                      RETURNING last_heartbeat_at",
                        &[&id, &incarnation],
                    )
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
        })
        .await
    }

    /// Marks master `id` inactive at a graceful shutdown. Idempotent.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn master_deactivate(
        &self,
        id: i64,
        incarnation: Uuid,
        budget: Budget,
    ) -> Result<(), StoreError> {
        self.unit("master_deactivate", budget, |tx| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE buildmaster_private.masters
                        SET active = false, stopped_at = greatest(now(), last_heartbeat_at)
                      WHERE id = $1 AND incarnation = $2 AND active",
                    &[&id, &incarnation],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// The last heartbeat of the master called `name`, if it exists.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn master_last_heartbeat(
        &self,
        name: &str,
        budget: Budget,
    ) -> Result<Option<(bool, DateTime<Utc>)>, StoreError> {
        self.unit("master_last_heartbeat", budget, |tx| {
            let name = name.to_owned();
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT active, last_heartbeat_at FROM buildmaster_private.masters WHERE name = $1",
                        &[&name],
                    )
                    .await?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })
        })
        .await
    }

    /// Finds masters (other than `me`) whose last heartbeat is older than
    /// `expiry`, counting only time the database itself was up — a database
    /// restart does not make live masters look dead — marks them stopped,
    /// returns their claimed requests to the queue and finishes their
    /// unfinished builds as retry. Returns the names of the masters expired.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn master_expire_dead(
        &self,
        me: i64,
        expiry: std::time::Duration,
        budget: Budget,
    ) -> Result<Vec<String>, StoreError> {
        self.unit("master_expire_dead", budget, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "UPDATE buildmaster_private.masters
                            SET active = false, stopped_at = greatest(now(), last_heartbeat_at)
                          WHERE id IN (SELECT id FROM buildmaster_private.masters
                                        WHERE active AND id <> $1
                                          AND now() - greatest(last_heartbeat_at, pg_postmaster_start_time())
                                              > make_interval(secs => $2)
                                        FOR UPDATE SKIP LOCKED)
                          RETURNING id, name",
                        &[&me, &expiry.as_secs_f64()],
                    )
                    .await?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                let names: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
                super::builds::release_work(
                    tx,
                    &ids,
                    &format!("retry: master {} stopped heartbeating", names.join(", ")),
                )
                .await?;
                Ok(names)
            })
        })
        .await
    }
}
