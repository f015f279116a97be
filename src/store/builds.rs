//! Tables `builds`, `steps` and `build_properties`: a build's life, written
//! as it happens. Every write is guarded by ownership — the request must
//! still be claimed by this master — so a master whose claim was taken over
//! learns it at its next write and stops the build.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::buildsets::{BUILDSETS_CHANNEL, REQUESTS_CHANNEL, SourceStamp};
use super::{Budget, Store, StoreError, Tx};

/// Result codes (Buildbot's).
pub mod results {
    /// Success.
    pub const SUCCESS: i16 = 0;
    /// Warnings.
    pub const WARNINGS: i16 = 1;
    /// Failure.
    pub const FAILURE: i16 = 2;
    /// Skipped.
    pub const SKIPPED: i16 = 3;
    /// Exception (the build could not run properly).
    pub const EXCEPTION: i16 = 4;
    /// Retry (to be built again).
    pub const RETRY: i16 = 5;
    /// Cancelled.
    pub const CANCELLED: i16 = 6;

    /// The worse of two results, in Buildbot's order: skipped < success <
    /// warnings < failure < exception < retry < cancelled.
    pub fn worst(a: i16, b: i16) -> i16 {
        const ORDER: [i16; 7] = [
            SKIPPED, SUCCESS, WARNINGS, FAILURE, EXCEPTION, RETRY, CANCELLED,
        ];
        let rank = |r: i16| ORDER.iter().position(|x| *x == r).unwrap_or(ORDER.len());
        if rank(a) >= rank(b) { a } else { b }
    }
}

/// A build as started.
#[derive(Debug, Clone)]
pub struct StartedBuild {
    /// Build id.
    pub id: i64,
    /// Number within its builder.
    pub number: i32,
    /// Step ids, in order.
    pub step_ids: Vec<i64>,
    /// The stdio log of each step, in the same order.
    pub log_ids: Vec<i64>,
    /// What to build.
    pub sourcestamp: SourceStamp,
    /// Buildset properties.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// Outcome of an ownership-guarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned<T> {
    /// Written.
    Yes(T),
    /// The request is no longer claimed by this master.
    ClaimLost,
}

const STILL_OURS: &str = "EXISTS (SELECT 1 FROM buildmaster_private.build_requests r
                                   WHERE r.id = $1 AND r.claimed_by_master_id = $2 AND r.state = 'claimed')";

impl Store {
    /// Creates the build (next number of its builder) and its steps for a
    /// request claimed by `master_id`. Idempotent per `build_uuid`.
    ///
    /// Fails when the database is unreachable within `budget`.
    #[allow(clippy::too_many_arguments)]
    pub async fn build_start(
        &self,
        build_uuid: Uuid,
        request_id: i64,
        master_id: i64,
        builder_id: i64,
        worker_id: i64,
        step_names: &[(String, bool)],
        budget: Budget,
    ) -> Result<Owned<StartedBuild>, StoreError> {
        let at = Utc::now();
        self.unit("build_start", budget, |tx| {
            let step_names = step_names.to_vec();
            Box::pin(async move {
                let ours: bool = tx
                    .query_one(&format!("SELECT {STILL_OURS}"), &[&request_id, &master_id])
                    .await?
                    .get(0);
                let existing = tx
                    .query_opt(
                        "SELECT id, number FROM buildmaster_private.builds WHERE build_uuid = $1",
                        &[&build_uuid],
                    )
                    .await?;
                let (id, number): (i64, i32) = match existing {
                    Some(row) => (row.get(0), row.get(1)),
                    None if !ours => return Ok(Owned::ClaimLost),
                    None => {
                        let number: i32 = tx
                            .query_one(
                                "UPDATE buildmaster_private.builders SET next_build_number = next_build_number + 1
                                  WHERE id = $1 RETURNING next_build_number - 1",
                                &[&builder_id],
                            )
                            .await?
                            .get(0);
                        let id: i64 = tx
                            .query_one(
                                "INSERT INTO buildmaster_private.builds
                                    (build_uuid, builder_id, number, build_request_id, worker_id, master_id,
                                     started_at, state_string)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'starting') RETURNING id",
                                &[&build_uuid, &builder_id, &number, &request_id, &worker_id, &master_id, &at],
                            )
                            .await?
                            .get(0);
                        for (n, (name, always_run)) in step_names.iter().enumerate() {
                            // Each step has one stdio log for its output.
                            tx.execute(
                                "WITH step AS (
                                    INSERT INTO buildmaster_private.steps (build_id, number, name, always_run)
                                    VALUES ($1, $2, $3, $4) RETURNING id)
                                 INSERT INTO buildmaster_private.logs (step_id, name, slug, type)
                                 SELECT id, 'stdio', 'stdio', 's' FROM step",
                                &[&id, &(n as i32), name, always_run],
                            )
                            .await?;
                        }
                        (id, number)
                    }
                };
                let steps = tx
                    .query(
                        "SELECT s.id, l.id FROM buildmaster_private.steps s
                           JOIN buildmaster_private.logs l ON l.step_id = s.id AND l.slug = 'stdio'
                          WHERE s.build_id = $1 ORDER BY s.number",
                        &[&id],
                    )
                    .await?;
                let step_ids = steps.iter().map(|r| r.get(0)).collect();
                let log_ids = steps.iter().map(|r| r.get(1)).collect();
                let ss = tx
                    .query_opt(
                        "SELECT ss.repository, ss.project, ss.branch, ss.revision
                           FROM buildmaster_private.build_requests r
                           JOIN buildmaster_private.sourcestamps ss ON ss.buildset_id = r.buildset_id AND ss.codebase = ''
                          WHERE r.id = $1",
                        &[&request_id],
                    )
                    .await?;
                let sourcestamp = ss
                    .map(|r| SourceStamp {
                        repository: r.get(0),
                        project: r.get(1),
                        branch: r.get(2),
                        revision: r.get(3),
                    })
                    .unwrap_or_default();
                let properties = tx
                    .query(
                        "SELECT p.name, p.value FROM buildmaster_private.buildset_properties p
                           JOIN buildmaster_private.build_requests r ON r.buildset_id = p.buildset_id
                          WHERE r.id = $1",
                        &[&request_id],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, serde_json::Value>(1)))
                    .collect();
                Ok(Owned::Yes(StartedBuild {
                    id,
                    number,
                    step_ids,
                    log_ids,
                    sourcestamp,
                    properties,
                }))
            })
        })
        .await
    }

    /// Writes part of a build's record — step transitions, log chunks, the
    /// build's end — in one transaction, if the request is still claimed by
    /// this master. Events are applied in order; consecutive chunks of one
    /// log become one insert. Idempotent: transitions only fill empty
    /// columns and chunks are keyed by (log, first line), so a batch retried
    /// after an ambiguous commit is harmless.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn build_record(
        &self,
        build_id: i64,
        request_id: i64,
        master_id: i64,
        events: &[RecordEvent],
        budget: Budget,
    ) -> Result<Owned<()>, StoreError> {
        self.unit("build_record", budget, |tx| {
            let events = events.to_vec();
            Box::pin(async move {
                let ours: bool = tx
                    .query_one(&format!("SELECT {STILL_OURS}"), &[&request_id, &master_id])
                    .await?
                    .get(0);
                if !ours {
                    // An earlier attempt of this very batch may have ended the
                    // build (and so the claim): then it is done, not lost.
                    let ended: bool = tx
                        .query_one(
                            "SELECT finished_at IS NOT NULL FROM buildmaster_private.builds WHERE id = $1",
                            &[&build_id],
                        )
                        .await?
                        .get(0);
                    let ends_it = events.iter().any(|e| matches!(e, RecordEvent::BuildFinished { .. }));
                    return Ok(if ended && ends_it { Owned::Yes(()) } else { Owned::ClaimLost });
                }
                let mut i = 0;
                while i < events.len() {
                    match &events[i] {
                        RecordEvent::StepStarted { step_id, at } => {
                            tx.execute(
                                "UPDATE buildmaster_private.steps SET started_at = $2, state_string = 'running'
                                  WHERE id = $1 AND started_at IS NULL",
                                &[step_id, at],
                            )
                            .await?;
                            tx.execute(
                                "UPDATE buildmaster_private.builds b SET state_string = 'running ' || s.name
                                   FROM buildmaster_private.steps s WHERE s.id = $1 AND b.id = s.build_id",
                                &[step_id],
                            )
                            .await?;
                        }
                        RecordEvent::Chunk { log_id, .. } => {
                            let log_id = *log_id;
                            let (mut firsts, mut lasts, mut contents) = (Vec::new(), Vec::new(), Vec::new());
                            while let Some(RecordEvent::Chunk {
                                log_id: same,
                                first_line,
                                last_line,
                                content,
                            }) = events.get(i)
                            {
                                if *same != log_id {
                                    break;
                                }
                                firsts.push(*first_line);
                                lasts.push(*last_line);
                                contents.push(content.as_str());
                                i += 1;
                            }
                            tx.execute(
                                "INSERT INTO buildmaster_private.log_chunks (log_id, first_line, last_line, content)
                                 SELECT $1, f, l, c FROM unnest($2::int4[], $3::int4[], $4::text[]) AS t(f, l, c)
                                 ON CONFLICT (log_id, first_line) DO NOTHING",
                                &[&log_id, &firsts, &lasts, &contents],
                            )
                            .await?;
                            let last = lasts.iter().copied().max().unwrap_or(0);
                            tx.execute(
                                "UPDATE buildmaster_private.logs SET num_lines = greatest(num_lines, $2 + 1) WHERE id = $1",
                                &[&log_id, &last],
                            )
                            .await?;
                            continue;
                        }
                        RecordEvent::StepFinished { step_id, results, text, at } => {
                            tx.execute(
                                "UPDATE buildmaster_private.steps
                                    SET started_at = coalesce(started_at, $4), finished_at = greatest($4, started_at),
                                        results = $2, state_string = $3
                                  WHERE id = $1 AND finished_at IS NULL",
                                &[step_id, results, text, at],
                            )
                            .await?;
                            tx.execute(
                                "UPDATE buildmaster_private.logs SET complete = true WHERE step_id = $1",
                                &[step_id],
                            )
                            .await?;
                        }
                        RecordEvent::BuildFinished { results, text, at } => {
                            let completed = tx
                                .query_opt(
                                    "UPDATE buildmaster_private.build_requests
                                        SET state = CASE WHEN $3::smallint = 6 THEN 'cancelled' ELSE 'completed' END,
                                            completed_at = greatest($4, claimed_at), results = $3
                                      WHERE id = $1 AND claimed_by_master_id = $2 AND state = 'claimed'
                                      RETURNING buildset_id",
                                    &[&request_id, &master_id, results, at],
                                )
                                .await?;
                            tx.execute(
                                "UPDATE buildmaster_private.builds
                                    SET finished_at = greatest($4, started_at), results = $2, state_string = $3
                                  WHERE id = $1 AND finished_at IS NULL",
                                &[&build_id, results, text, at],
                            )
                            .await?;
                            if let Some(row) = completed {
                                complete_buildset_if_done(tx, row.get(0)).await?;
                            }
                        }
                    }
                    i += 1;
                }
                Ok(Owned::Yes(()))
            })
        })
        .await
    }
}

/// One item of a build's record (see [`Store::build_record`]). Times are
/// when things happened, on the master's clock.
#[derive(Debug, Clone)]
pub enum RecordEvent {
    /// A step started.
    StepStarted {
        /// The step.
        step_id: i64,
        /// When.
        at: DateTime<Utc>,
    },
    /// Lines `first_line..=last_line` of a log, joined by newlines.
    Chunk {
        /// The log.
        log_id: i64,
        /// First line number.
        first_line: i32,
        /// Last line number.
        last_line: i32,
        /// The lines.
        content: String,
    },
    /// A step ended (or was skipped).
    StepFinished {
        /// The step.
        step_id: i64,
        /// Its result code.
        results: i16,
        /// Its state string.
        text: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The build ended: its request (and maybe buildset) completes too.
    BuildFinished {
        /// The build's result code.
        results: i16,
        /// Its state string.
        text: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl Store {
    /// Asks for build `build_id` to stop; the master running it kills it.
    /// Returns `None` when there is no such build, `Some(false)` when it had
    /// already finished.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn build_request_stop(
        &self,
        build_id: i64,
        reason: &str,
        budget: Budget,
    ) -> Result<Option<bool>, StoreError> {
        self.unit("build_request_stop", budget, |tx| {
            let reason = reason.to_owned();
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "UPDATE buildmaster_private.builds
                            SET stop_requested_at = coalesce(stop_requested_at, now()),
                                stop_reason = coalesce(stop_reason, $2)
                          WHERE id = $1
                          RETURNING finished_at IS NULL",
                        &[&build_id, &reason],
                    )
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let running: bool = row.get(0);
                if running {
                    tx.execute(
                        "SELECT pg_notify($1, $2::text)",
                        &[&STOPS_CHANNEL, &build_id.to_string()],
                    )
                    .await?;
                }
                Ok(Some(running))
            })
        })
        .await
    }

    /// Builds of master `master_id` that someone asked to stop, with the reason.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn build_stops_pending(
        &self,
        master_id: i64,
        budget: Budget,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        self.unit("build_stops_pending", budget, |tx| {
            Box::pin(async move {
                Ok(tx
                    .query(
                        "SELECT id, coalesce(stop_reason, 'stopped') FROM buildmaster_private.builds
                          WHERE master_id = $1 AND finished_at IS NULL AND stop_requested_at IS NOT NULL",
                        &[&master_id],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect())
            })
        })
        .await
    }

    /// Cancels build request `request_id`: a pending one at once, a claimed
    /// one by asking its build to stop.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn build_request_cancel(
        &self,
        request_id: i64,
        reason: &str,
        budget: Budget,
    ) -> Result<CancelOutcome, StoreError> {
        // Set once an attempt has cancelled a pending request: if its COMMIT
        // was cut off and the retry finds the request cancelled, that was
        // this call's doing, not an earlier one's.
        let cancelled_by_us = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.unit("build_request_cancel", budget, |tx| {
            let reason = reason.to_owned();
            let cancelled_by_us = cancelled_by_us.clone();
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT state, buildset_id FROM buildmaster_private.build_requests WHERE id = $1 FOR UPDATE",
                        &[&request_id],
                    )
                    .await?;
                let Some(row) = row else { return Ok(CancelOutcome::NotFound) };
                let state: String = row.get(0);
                match state.as_str() {
                    "cancelled" if cancelled_by_us.load(std::sync::atomic::Ordering::SeqCst) => {
                        Ok(CancelOutcome::Cancelled)
                    }
                    "pending" => {
                        cancelled_by_us.store(true, std::sync::atomic::Ordering::SeqCst);
                        tx.execute(
                            "UPDATE buildmaster_private.build_requests
                                SET state = 'cancelled', completed_at = now(), results = 6 WHERE id = $1",
                            &[&request_id],
                        )
                        .await?;
                        complete_buildset_if_done(tx, row.get(1)).await?;
                        Ok(CancelOutcome::Cancelled)
                    }
                    "claimed" => {
                        let builds = tx
                            .query(
                                "UPDATE buildmaster_private.builds
                                    SET stop_requested_at = coalesce(stop_requested_at, now()),
                                        stop_reason = coalesce(stop_reason, $2)
                                  WHERE build_request_id = $1 AND finished_at IS NULL
                                  RETURNING id",
                                &[&request_id, &reason],
                            )
                            .await?;
                        for build in builds {
                            tx.execute(
                                "SELECT pg_notify($1, $2::text)",
                                &[&STOPS_CHANNEL, &build.get::<_, i64>(0).to_string()],
                            )
                            .await?;
                        }
                        Ok(CancelOutcome::Stopping)
                    }
                    other => Ok(CancelOutcome::AlreadyFinished(other.to_owned())),
                }
            })
        })
        .await
    }
}

/// What cancelling a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// No such request.
    NotFound,
    /// It was pending: cancelled now.
    Cancelled,
    /// It was being built: the build was asked to stop.
    Stopping,
    /// It had already ended in this state.
    AlreadyFinished(String),
}

/// Channel notified when a build is asked to stop.
pub const STOPS_CHANNEL: &str = "buildmaster_stops";

/// Completes a buildset whose requests are all finished, with the worst of
/// their results, and tells the dependent schedulers.
async fn complete_buildset_if_done(
    tx: &Tx<'_>,
    buildset_id: i64,
) -> Result<(), tokio_postgres::Error> {
    let completed = tx
        .execute(
            "UPDATE buildmaster_private.buildsets bs
                SET completed_at = now(),
                    results = (ARRAY[3, 0, 1, 2, 4, 5, 6]::smallint[])[
                        (SELECT max(array_position(ARRAY[3, 0, 1, 2, 4, 5, 6]::smallint[], r.results))
                           FROM buildmaster_private.build_requests r WHERE r.buildset_id = bs.id)]
              WHERE bs.id = $1 AND bs.completed_at IS NULL
                AND NOT EXISTS (SELECT 1 FROM buildmaster_private.build_requests r
                                 WHERE r.buildset_id = bs.id AND r.state IN ('pending', 'claimed'))",
            &[&buildset_id],
        )
        .await?;
    if completed > 0 {
        // Dependent schedulers of this buildset's scheduler get it in their
        // inbox when it succeeded (see V6__dependent_inbox.sql).
        tx.execute(
            "INSERT INTO buildmaster_private.scheduler_upstream (scheduler_id, buildset_id)
             SELECT d.id, bs.id FROM buildmaster_private.buildsets bs
               JOIN buildmaster_private.schedulers u ON u.id = bs.scheduler_id
               JOIN buildmaster_private.schedulers d
                 ON d.kind = 'dependent' AND d.configured AND d.config->>'upstream' = u.name
              WHERE bs.id = $1 AND bs.results IN (0, 1)
             ON CONFLICT DO NOTHING",
            &[&buildset_id],
        )
        .await?;
        tx.execute(
            "SELECT pg_notify($1, $2::text)",
            &[&BUILDSETS_CHANNEL, &buildset_id.to_string()],
        )
        .await?;
    }
    Ok(())
}

/// Returns the claimed requests of `masters` to the queue and finishes their
/// unfinished builds as retry. Returns (requests, builds).
pub(super) async fn release_work(
    tx: &Tx<'_>,
    masters: &[i64],
    reason: &str,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let builds = tx
        .execute(
            "UPDATE buildmaster_private.builds
                SET finished_at = greatest(now(), started_at), results = 5, state_string = $2
              WHERE master_id = ANY($1) AND finished_at IS NULL",
            &[&masters, &reason],
        )
        .await?;
    tx.execute(
        "UPDATE buildmaster_private.steps s
            SET started_at = coalesce(s.started_at, now()), finished_at = now(), results = 5,
                state_string = 'interrupted'
           FROM buildmaster_private.builds b
          WHERE s.build_id = b.id AND b.master_id = ANY($1) AND s.finished_at IS NULL",
        &[&masters],
    )
    .await?;
    let requests = tx
        .execute(
            "UPDATE buildmaster_private.build_requests
                SET state = 'pending', claimed_by_master_id = NULL, claimed_at = NULL, claim_token = NULL
              WHERE claimed_by_master_id = ANY($1) AND state = 'claimed'",
            &[&masters],
        )
        .await?;
    if requests > 0 {
        tx.execute("SELECT pg_notify($1, '')", &[&REQUESTS_CHANNEL])
            .await?;
    }
    Ok((requests, builds))
}
