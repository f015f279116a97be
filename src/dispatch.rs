//! The claim loop: claims pending build requests for builders that have a
//! free worker slot, and starts their builds. Woken by LISTEN/NOTIFY when
//! requests are queued and by its own builds ending; polls as a backstop.
//! Several masters may run it against one database: claims use
//! `FOR UPDATE SKIP LOCKED`, so each request is claimed once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{BuilderConfig, WorkerConfig};
use crate::runner::{BuildJob, RunnerContext, run_build};
use crate::store::Budget;
use crate::store::topology::TopologyIds;

/// Most requests claimed in one transaction.
const CLAIM_BATCH: usize = 16;

struct Slots {
    /// Running builds per worker.
    running: HashMap<String, u32>,
    /// Capacity per worker.
    max: HashMap<String, u32>,
}

impl Slots {
    fn free_for(&self, builder: &BuilderConfig) -> usize {
        builder
            .workers
            .iter()
            .map(|w| {
                self.max
                    .get(w)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(self.running.get(w).copied().unwrap_or(0))
                    as usize
            })
            .sum()
    }

    /// Takes a slot on the least busy of the builder's workers.
    fn take(&mut self, builder: &BuilderConfig) -> Option<String> {
        let worker = builder
            .workers
            .iter()
            .filter(|w| {
                self.running.get(*w).copied().unwrap_or(0) < self.max.get(*w).copied().unwrap_or(0)
            })
            .min_by_key(|w| self.running.get(*w).copied().unwrap_or(0))?
            .clone();
        *self.running.entry(worker.clone()).or_default() += 1;
        Some(worker)
    }

    fn give_back(&mut self, worker: &str) {
        if let Some(n) = self.running.get_mut(worker) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Runs the claim loop until `ctx.shutdown`; builds are spawned on `tracker`.
pub async fn claim_loop(
    ctx: RunnerContext,
    workers: Vec<WorkerConfig>,
    builders: Vec<BuilderConfig>,
    ids: TopologyIds,
    wake: Arc<Notify>,
    poll: Duration,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Mutex::new(Slots {
        running: HashMap::new(),
        max: workers
            .iter()
            .map(|w| (w.name.clone(), w.max_builds))
            .collect(),
    }));
    let builders: Vec<Arc<BuilderConfig>> = builders.into_iter().map(Arc::new).collect();
    let mut start = 0usize;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        // Only builders with pending requests and a free worker are worth
        // a claim: ask once which those are.
        let candidates: Vec<i64> = {
            let slots = slots.lock().unwrap_or_else(|p| p.into_inner());
            builders
                .iter()
                .filter(|b| slots.free_for(b) > 0)
                .filter_map(|b| ids.builders.get(&b.name).copied())
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let pending = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            pending = ctx.store.build_request_pending_builders(&candidates, Budget::Forever) => pending,
        };
        let pending = match pending {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "looking for pending build requests failed");
                continue;
            }
        };
        // Rotate the starting builder so that no builder starves the others
        // of shared workers.
        start = start.wrapping_add(1);
        for i in 0..builders.len() {
            let builder = &builders[(start + i) % builders.len()];
            let Some(&builder_id) = ids.builders.get(&builder.name) else {
                continue;
            };
            if !pending.contains(&builder_id) {
                continue;
            }
            let free = slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .free_for(builder);
            if free == 0 {
                continue;
            }
            let claim = ctx.store.build_request_claim(
                ctx.master_id,
                builder_id,
                free.min(CLAIM_BATCH) as i64,
                Uuid::new_v4(),
                Budget::Forever,
            );
            let claimed = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                claimed = claim => claimed,
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(builder = %builder.name, %error, "claiming build requests failed");
                    continue;
                }
            };
            for request in claimed {
                let worker = slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(builder);
                let Some(worker) = worker else {
                    // Cannot happen: we claimed no more than the free slots.
                    tracing::error!(
                        request = request.id,
                        "claimed a request without a free worker"
                    );
                    continue;
                };
                let job = BuildJob {
                    request,
                    builder: builder.clone(),
                    worker_id: ids.workers.get(&worker).copied().unwrap_or_default(),
                    worker_name: worker.clone(),
                };
                let (ctx, slots, wake) = (ctx.clone(), slots.clone(), wake.clone());
                tracker.spawn(async move {
                    run_build(&ctx, job).await;
                    slots
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .give_back(&worker);
                    // A slot is free again: look for more work.
                    wake.notify_one();
                });
            }
        }
    }
}
