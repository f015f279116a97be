//! Background upkeep of a running master. In this version: the heartbeat of
//! its `masters` row.
//!
//! The heartbeat retries without limit through an outage (the store logs the
//! outage once), so it resumes within the store's backoff cap of the
//! database coming back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{Budget, Store, StoreError};

/// Why the heartbeat loop ended early.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The `masters` row no longer belongs to this process.
    #[error(
        "this master's row (id {id}) was taken over by another process or marked inactive; \
         stopping so that two masters do not act under one name"
    )]
    Lost {
        /// The row.
        id: i64,
    },
    /// A database error that retrying cannot fix.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Heartbeats master `id` every `interval` until `shutdown` is cancelled.
///
/// Returns an error when the row is lost or on a permanent database error.
pub async fn heartbeat_loop(
    store: Store,
    id: i64,
    incarnation: Uuid,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), HeartbeatError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let beat = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            beat = store.master_heartbeat(id, incarnation, Budget::Forever) => beat?,
        };
        match beat {
            Some(at) => tracing::trace!(%at, "heartbeat"),
            None => return Err(HeartbeatError::Lost { id }),
        }
    }
}
