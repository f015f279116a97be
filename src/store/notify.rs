//! LISTEN/NOTIFY as a wake-up hint. A dedicated connection (not from the
//! pool) listens on the channels the store notifies; it is reconnected with
//! backoff when it breaks, and every (re)connection wakes every waiter, who
//! then re-polls fully — a notification sent while we were not listening is
//! never relied upon. Polling remains the backstop.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::builds::STOPS_CHANNEL;
use super::buildsets::{BUILDSETS_CHANNEL, REQUESTS_CHANNEL};
use super::changes::CHANGES_CHANNEL;

/// Waiters woken by notifications. Cheap to clone.
#[derive(Clone, Default)]
pub struct Wakeups {
    /// Build requests were queued (claim loop).
    pub requests: Arc<Notify>,
    /// Changes were recorded (schedulers).
    pub changes: Arc<Notify>,
    /// Buildsets completed (dependent schedulers).
    pub buildsets: Arc<Notify>,
    /// Builds asked to stop (stop watcher).
    pub stops: Arc<Notify>,
}

impl Wakeups {
    fn wake_all(&self) {
        self.requests.notify_one();
        self.changes.notify_one();
        self.buildsets.notify_one();
        self.stops.notify_one();
    }

    fn wake(&self, channel: &str) {
        match channel {
            REQUESTS_CHANNEL => self.requests.notify_one(),
            CHANGES_CHANNEL => self.changes.notify_one(),
            BUILDSETS_CHANNEL => self.buildsets.notify_one(),
            STOPS_CHANNEL => self.stops.notify_one(),
            _ => {}
        }
    }
}

impl Store {
    /// Listens until `shutdown`, waking `wakeups` on notifications and
    /// after every (re)connection.
    pub async fn listen(&self, wakeups: Wakeups, shutdown: CancellationToken) {
        let mut delays = self.retry.delays();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.listen_once(&wakeups, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    // The next connection wakes everyone, so nothing is missed.
                    tracing::debug!(%error, "notification connection lost; reconnecting");
                    let delay = delays.next().unwrap_or(self.retry.max_delay);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection's life: `Ok` at shutdown, `Err` when it broke.
    async fn listen_once(
        &self,
        wakeups: &Wakeups,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let (client, mut connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| super::error_chain(&e))?;
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if sender.send(Ok(n.channel().to_owned())).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                    None => return,
                }
            }
        });
        let listened = client
            .batch_execute(&format!(
                "LISTEN {REQUESTS_CHANNEL}; LISTEN {CHANGES_CHANNEL}; LISTEN {BUILDSETS_CHANNEL}; LISTEN {STOPS_CHANNEL}"
            ))
            .await;
        if let Err(error) = listened {
            driver.abort();
            return Err(super::error_chain(&error));
        }
        // Anything notified before LISTEN took effect is found by this re-poll.
        wakeups.wake_all();
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                message = receiver.recv() => match message {
                    Some(Ok(channel)) => wakeups.wake(&channel),
                    Some(Err(error)) => break Err(super::error_chain(&error)),
                    None => break Err("the server closed the connection".to_owned()),
                },
            }
        };
        driver.abort();
        drop(client);
        outcome
    }
}
