//! Tables `schedulers`, `scheduler_changes` and `scheduler_state`: one step
//! of a scheduler, run in one transaction under a `FOR UPDATE SKIP LOCKED`
//! lock of the scheduler's row, so that when several masters share a
//! database exactly one of them runs a given scheduler at a time. All of a
//! scheduler's memory is in these rows: a master killed at any moment
//! leaves nothing behind that the next one cannot pick up.
//!
//! Buildsets created here get uuids derived from the decision itself (the
//! scheduler, the newest change, the due time, the upstream buildset), so a
//! step retried after an ambiguous commit cannot create a second buildset.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::buildsets::{BuildsetCreated, NewBuildset, SourceStamp, insert_buildset};
use super::{Budget, Store, StoreError, Tx};
use crate::config::{CatchUp, NightlySchedule};

/// Namespace of buildset uuids derived from scheduler decisions.
const SCHEDULER_NAMESPACE: Uuid = Uuid::from_u128(0x1d6e_52a4_0b7c_4f3e_8e21_5c4e_d00d_b10c);

fn decision_uuid(scheduler_id: i64, decision: &str) -> Uuid {
    Uuid::new_v5(
        &SCHEDULER_NAMESPACE,
        format!("{scheduler_id}\n{decision}").as_bytes(),
    )
}

/// Which changes a change-driven scheduler accepts.
#[derive(Debug, Clone)]
pub struct ChangeFilter {
    /// Only this branch; `None`: any branch, each built separately.
    pub branch: Option<String>,
    /// File-path prefixes; empty: every change.
    pub files: Vec<String>,
    /// Seconds without a new change before building.
    pub tree_stable_s: f64,
}

impl ChangeFilter {
    fn accepts(&self, branch: Option<&str>, files: &[String]) -> bool {
        let branch_ok = match &self.branch {
            Some(wanted) => branch == Some(wanted.as_str()),
            None => true,
        };
        branch_ok
            && (self.files.is_empty()
                || files
                    .iter()
                    .any(|f| self.files.iter().any(|p| f.starts_with(p.as_str()))))
    }
}

/// A clock-driven scheduler's rule.
#[derive(Debug, Clone)]
pub enum Timer {
    /// Every so many seconds.
    Periodic(f64),
    /// Cron in a time zone, with a catch-up rule.
    Nightly(Box<NightlySchedule>, CatchUp),
}

impl Timer {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timer::Periodic(seconds) => {
                Some(t + chrono::Duration::milliseconds((seconds * 1000.0) as i64))
            }
            Timer::Nightly(schedule, _) => schedule.next_after(t),
        }
    }
}

/// A scheduler's row, locked for one step.
struct Locked {
    next_run_at: Option<DateTime<Utc>>,
    /// The database's clock.
    now: DateTime<Utc>,
    enabled: bool,
}

/// Locks the scheduler's row; `None` when another master holds it.
async fn lock_scheduler(
    tx: &Tx<'_>,
    scheduler_id: i64,
) -> Result<Option<Locked>, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT next_run_at, now(), enabled FROM buildmaster_private.schedulers
              WHERE id = $1 FOR UPDATE SKIP LOCKED",
            &[&scheduler_id],
        )
        .await?;
    Ok(row.map(|row| Locked {
        next_run_at: row.get(0),
        now: row.get(1),
        enabled: row.get(2),
    }))
}

impl Store {
    /// One step of a change-driven scheduler (single-branch, any-branch):
    /// take in the changes recorded since its last step, then build every
    /// branch whose newest accepted change is older than `tree_stable_s`.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn scheduler_changes_step(
        &self,
        scheduler_id: i64,
        name: &str,
        filter: &ChangeFilter,
        builders: &[String],
        budget: Budget,
    ) -> Result<Vec<BuildsetCreated>, StoreError> {
        self.unit("scheduler_changes_step", budget, |tx| {
            let (name, filter, builders) = (name.to_owned(), filter.clone(), builders.to_vec());
            Box::pin(async move {
                let Some(locked) = lock_scheduler(tx, scheduler_id).await? else {
                    return Ok(Vec::new());
                };
                if !locked.enabled {
                    return Ok(Vec::new());
                }
                // Classify what arrived in the inbox: keep what the filter
                // accepts, drop the rest.
                let arrived = tx
                    .query(
                        "SELECT c.id, c.branch,
                                coalesce(array_agg(f.filename) FILTER (WHERE f.filename IS NOT NULL), '{}')
                           FROM buildmaster_private.scheduler_changes sc
                           JOIN buildmaster_private.changes c ON c.id = sc.change_id
                           LEFT JOIN buildmaster_private.change_files f ON f.change_id = c.id
                          WHERE sc.scheduler_id = $1 AND NOT sc.classified
                          GROUP BY c.id ORDER BY c.id LIMIT 1000",
                        &[&scheduler_id],
                    )
                    .await?;
                let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
                for change in &arrived {
                    let id: i64 = change.get(0);
                    let branch: Option<String> = change.get(1);
                    let files: Vec<String> = change.get(2);
                    if filter.accepts(branch.as_deref(), &files) {
                        accepted.push(id);
                    } else {
                        rejected.push(id);
                    }
                }
                if !accepted.is_empty() {
                    tx.execute(
                        "UPDATE buildmaster_private.scheduler_changes SET classified = true
                          WHERE scheduler_id = $1 AND change_id = ANY($2)",
                        &[&scheduler_id, &accepted],
                    )
                    .await?;
                }
                if !rejected.is_empty() {
                    tx.execute(
                        "DELETE FROM buildmaster_private.scheduler_changes
                          WHERE scheduler_id = $1 AND change_id = ANY($2)",
                        &[&scheduler_id, &rejected],
                    )
                    .await?;
                }
                // Branches whose tree has been stable long enough, judged on
                // the database's clock from when the changes were recorded.
                let ready = tx
                    .query(
                        "SELECT c.branch, max(c.id), array_agg(c.id ORDER BY c.id)
                           FROM buildmaster_private.scheduler_changes sc
                           JOIN buildmaster_private.changes c ON c.id = sc.change_id
                          WHERE sc.scheduler_id = $1 AND sc.classified
                          GROUP BY c.branch
                         HAVING max(c.created_at) + make_interval(secs => $2) <= now()",
                        &[&scheduler_id, &filter.tree_stable_s],
                    )
                    .await?;
                let mut created = Vec::new();
                for group in ready {
                    let branch: Option<String> = group.get(0);
                    let newest: i64 = group.get(1);
                    let change_ids: Vec<i64> = group.get(2);
                    let head = tx
                        .query_one(
                            "SELECT repository, project, revision FROM buildmaster_private.changes WHERE id = $1",
                            &[&newest],
                        )
                        .await?;
                    let buildset = NewBuildset {
                        uuid: decision_uuid(scheduler_id, &format!("changes {branch:?} up to {newest}")),
                        reason: format!(
                            "{name}: {} change{} on {}",
                            change_ids.len(),
                            if change_ids.len() == 1 { "" } else { "s" },
                            branch.as_deref().unwrap_or("the default branch")
                        ),
                        scheduler_id: Some(scheduler_id),
                        sourcestamp: SourceStamp {
                            repository: head.get(0),
                            project: head.get(1),
                            branch: branch.clone(),
                            revision: head.get(2),
                        },
                        change_ids: change_ids.clone(),
                        builders: builders.clone(),
                        ..NewBuildset::default()
                    };
                    created.push(insert_buildset(tx, &buildset).await?);
                    tx.execute(
                        "DELETE FROM buildmaster_private.scheduler_changes
                          WHERE scheduler_id = $1 AND change_id = ANY($2)",
                        &[&scheduler_id, &change_ids],
                    )
                    .await?;
                }
                Ok(created)
            })
        })
        .await
    }

    /// One step of a clock-driven scheduler (periodic, nightly): on first
    /// use, set the next run; when it is due, build once and set the next
    /// run after now. Runs missed while no master ran are built once
    /// (catch-up `once`) or skipped (catch-up `skip`).
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn scheduler_timer_step(
        &self,
        scheduler_id: i64,
        name: &str,
        timer: &Timer,
        branch: Option<&str>,
        builders: &[String],
        budget: Budget,
    ) -> Result<Option<BuildsetCreated>, StoreError> {
        self.unit("scheduler_timer_step", budget, |tx| {
            let (name, timer, branch, builders) = (
                name.to_owned(),
                timer.clone(),
                branch.map(str::to_owned),
                builders.to_vec(),
            );
            Box::pin(async move {
                let Some(Locked {
                    next_run_at,
                    now,
                    enabled,
                }) = lock_scheduler(tx, scheduler_id).await?
                else {
                    return Ok(None);
                };
                let set_next = |next: Option<DateTime<Utc>>| async move {
                    tx.execute(
                        "UPDATE buildmaster_private.schedulers SET next_run_at = $2 WHERE id = $1",
                        &[&scheduler_id, &next],
                    )
                    .await
                };
                let Some(due) = next_run_at else {
                    set_next(timer.next_after(now)).await?;
                    return Ok(None);
                };
                if due > now {
                    return Ok(None);
                }
                // A run is due. If more than one was missed, the catch-up
                // rule decides; in any case the next run is the first after now.
                let missed_more = timer.next_after(due).is_some_and(|second| second <= now);
                set_next(timer.next_after(now)).await?;
                let skip = matches!(timer, Timer::Nightly(_, CatchUp::Skip)) && missed_more;
                if !enabled || skip {
                    return Ok(None);
                }
                let reason = if missed_more {
                    format!(
                        "{name}: catching up on runs missed since {}",
                        due.to_rfc3339()
                    )
                } else {
                    format!("{name}: scheduled run of {}", due.to_rfc3339())
                };
                let buildset = NewBuildset {
                    uuid: decision_uuid(scheduler_id, &format!("due {}", due.to_rfc3339())),
                    reason,
                    scheduler_id: Some(scheduler_id),
                    sourcestamp: SourceStamp {
                        branch,
                        ..SourceStamp::default()
                    },
                    builders,
                    ..NewBuildset::default()
                };
                Ok(Some(insert_buildset(tx, &buildset).await?))
            })
        })
        .await
    }

    /// One step of a dependent scheduler: a buildset, with the same source
    /// stamp, for every buildset of its upstream scheduler that finished
    /// with success or warnings — taken from the scheduler's inbox, which
    /// the upstream buildset's completion fills. A new dependent scheduler
    /// starts with the upstream buildsets that finish after it appears.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn scheduler_dependent_step(
        &self,
        scheduler_id: i64,
        name: &str,
        builders: &[String],
        budget: Budget,
    ) -> Result<Vec<BuildsetCreated>, StoreError> {
        self.unit("scheduler_dependent_step", budget, |tx| {
            let (name, builders) = (name.to_owned(), builders.to_vec());
            Box::pin(async move {
                let Some(locked) = lock_scheduler(tx, scheduler_id).await? else {
                    return Ok(Vec::new());
                };
                let enabled = locked.enabled;
                let upstream = tx
                    .query(
                        "SELECT su.buildset_id, ss.repository, ss.project, ss.branch, ss.revision
                           FROM buildmaster_private.scheduler_upstream su
                           LEFT JOIN buildmaster_private.sourcestamps ss
                             ON ss.buildset_id = su.buildset_id AND ss.codebase = ''
                          WHERE su.scheduler_id = $1
                          ORDER BY su.buildset_id LIMIT 100",
                        &[&scheduler_id],
                    )
                    .await?;
                let mut created = Vec::new();
                let mut handled = Vec::with_capacity(upstream.len());
                for row in upstream {
                    let id: i64 = row.get(0);
                    handled.push(id);
                    if !enabled {
                        continue;
                    }
                    let buildset = NewBuildset {
                        uuid: decision_uuid(scheduler_id, &format!("after buildset {id}")),
                        reason: format!("{name}: upstream buildset {id} succeeded"),
                        scheduler_id: Some(scheduler_id),
                        parent_buildset_id: Some(id),
                        sourcestamp: SourceStamp {
                            repository: row.get::<_, Option<String>>(1).unwrap_or_default(),
                            project: row.get::<_, Option<String>>(2).unwrap_or_default(),
                            branch: row.get(3),
                            revision: row.get(4),
                        },
                        builders: builders.clone(),
                        ..NewBuildset::default()
                    };
                    created.push(insert_buildset(tx, &buildset).await?);
                }
                if !handled.is_empty() {
                    tx.execute(
                        "DELETE FROM buildmaster_private.scheduler_upstream
                          WHERE scheduler_id = $1 AND buildset_id = ANY($2)",
                        &[&scheduler_id, &handled],
                    )
                    .await?;
                }
                Ok(created)
            })
        })
        .await
    }
}
