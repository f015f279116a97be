//! Background upkeep of a running master: the heartbeat of its `masters`
//! row, and the expiry of masters that stopped heartbeating (their claimed
//! requests go back to the queue, their unfinished builds end as retry).
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

/// Heartbeats master `id` every `interval` until `shutdown` is cancelled,
/// and expires masters silent for longer than `expiry`.
///
/// Returns an error when the row is lost or on a permanent database error.
pub async fn heartbeat_loop(
    store: Store,
    id: i64,
    incarnation: Uuid,
    interval: Duration,
    expiry: Duration,
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
        match store
            .master_expire_dead(id, expiry, Budget::For(interval))
            .await
        {
            Ok(expired) => {
                for name in expired {
                    tracing::warn!(
                        master = %name,
                        expiry_s = expiry.as_secs_f64(),
                        "master stopped heartbeating: its unfinished builds end as retry and its requests return to the queue"
                    );
                }
            }
            Err(error) if error.is_unavailable() => {}
            Err(error) => tracing::error!(%error, "expiring dead masters failed"),
        }
    }
}
