//! The scheduler loop: runs one step of every configured scheduler, woken
//! by new changes and finished buildsets (LISTEN/NOTIFY) and by its poll
//! interval, which also bounds how late a tree-stable timer or a nightly
//! run can fire. The schedulers' memory is in the database (see
//! `store::schedulers`): a master that restarts — or another master —
//! continues exactly where this one stopped.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{NightlySchedule, SchedulerConfig};
use crate::store::notify::Wakeups;
use crate::store::schedulers::{ChangeFilter, Timer};
use crate::store::topology::TopologyIds;
use crate::store::{Budget, Store};

/// Runs until `shutdown`.
pub async fn scheduler_loop(
    store: Store,
    schedulers: Vec<SchedulerConfig>,
    ids: TopologyIds,
    wakeups: Wakeups,
    poll: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.changes.notified() => {}
            _ = wakeups.buildsets.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        for scheduler in &schedulers {
            let Some(&id) = ids.schedulers.get(scheduler.name()) else {
                continue;
            };
            let step = step(&store, scheduler, id);
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = step => outcome,
            };
            match outcome {
                Ok(buildsets) => {
                    for buildset in buildsets {
                        tracing::info!(
                            scheduler = scheduler.name(),
                            buildset = buildset,
                            "buildset created"
                        );
                    }
                }
                Err(error) => {
                    tracing::error!(scheduler = scheduler.name(), %error, "scheduler step failed")
                }
            }
        }
    }
}

/// One step of one scheduler; returns the ids of new buildsets.
async fn step(
    store: &Store,
    scheduler: &SchedulerConfig,
    id: i64,
) -> Result<Vec<i64>, crate::store::StoreError> {
    let budget = Budget::Forever;
    let created = match scheduler {
        SchedulerConfig::SingleBranch {
            name,
            branch,
            tree_stable_s,
            files,
            builders,
        } => {
            let filter = ChangeFilter {
                branch: Some(branch.clone()),
                files: files.clone(),
                tree_stable_s: *tree_stable_s,
            };
            store
                .scheduler_changes_step(id, name, &filter, builders, budget)
                .await?
        }
        SchedulerConfig::AnyBranch {
            name,
            tree_stable_s,
            files,
            builders,
        } => {
            let filter = ChangeFilter {
                branch: None,
                files: files.clone(),
                tree_stable_s: *tree_stable_s,
            };
            store
                .scheduler_changes_step(id, name, &filter, builders, budget)
                .await?
        }
        SchedulerConfig::Periodic {
            name,
            period_s,
            branch,
            builders,
        } => store
            .scheduler_timer_step(
                id,
                name,
                &Timer::Periodic(*period_s),
                branch.as_deref(),
                builders,
                budget,
            )
            .await?
            .into_iter()
            .collect(),
        SchedulerConfig::Nightly {
            name,
            cron,
            timezone,
            catch_up,
            branch,
            builders,
        } => {
            // Checked when the configuration was loaded.
            let Ok(schedule) = NightlySchedule::parse(cron, timezone) else {
                return Ok(Vec::new());
            };
            store
                .scheduler_timer_step(
                    id,
                    name,
                    &Timer::Nightly(Box::new(schedule), *catch_up),
                    branch.as_deref(),
                    builders,
                    budget,
                )
                .await?
                .into_iter()
                .collect()
        }
        SchedulerConfig::Dependent { name, builders, .. } => {
            store
                .scheduler_dependent_step(id, name, builders, budget)
                .await?
        }
        SchedulerConfig::Force { .. } => Vec::new(),
    };
    Ok(created
        .into_iter()
        .filter(|b| b.created)
        .map(|b| b.buildset_id)
        .collect())
}
