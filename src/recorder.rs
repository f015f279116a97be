//! The ordered write queue of one build.
//!
//! The runner never waits for the database: it hands step transitions and
//! log lines to a [`Recorder`], which batches lines into chunks (flushed
//! every [`CHUNK_LINES`] lines, [`CHUNK_BYTES`] bytes or [`CHUNK_AGE`],
//! whichever comes first) and queues everything, in order, to a writer task
//! that writes through the store — retrying, when the database is away,
//! until it is back. Timestamps are taken when things happen, not when they
//! are written, so a build's times stay right through an outage.
//!
//! Memory is bounded: the queue holds at most [`QUEUE_EVENTS`] events (so at
//! most about 16 MiB of log text). When it is full, the runner stops reading
//! the step's output; the step's process then blocks on its next write once
//! the pipe's buffer is full, and resumes when the database accepts writes
//! again. Output is delayed, never dropped.
//!
//! Every write is idempotent (log chunks are keyed by log and first line;
//! transitions only fill empty columns), so a write retried after an
//! ambiguous commit is harmless. Step transitions are guarded by ownership:
//! if one finds that the build's request is no longer claimed by this
//! master, the writer cancels `claim_lost` and drops the rest of the queue
//! (another master owns the request now). Between steps the runner waits
//! for the queue to settle (briefly, and only while the database is up), so
//! a lost claim stops the build before its next step.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::builds::{Owned, RecordEvent};
use crate::store::{Budget, Store};

/// Lines per log chunk at most.
pub const CHUNK_LINES: usize = 1000;
/// Bytes per log chunk at most (a longer line is cut in pieces).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Age of the oldest unflushed line before its chunk is flushed.
pub const CHUNK_AGE: Duration = Duration::from_secs(1);
/// Log bytes written in one transaction at most when events queue up.
const BATCH_BYTES: usize = 1024 * 1024;
/// Events written in one transaction at most.
const BATCH_EVENTS: usize = 512;
/// Events queued at most (backpressure beyond).
pub const QUEUE_EVENTS: usize = 256;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A line written by the master (the command, an error).
    Header,
}

impl Stream {
    fn prefix(self) -> char {
        match self {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
            Stream::Header => 'h',
        }
    }
}

enum Event {
    /// Part of the build's record.
    Record(RecordEvent),
    /// Answered once everything before it is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Identity of the build being recorded.
#[derive(Debug, Clone, Copy)]
pub struct BuildIds {
    /// The build.
    pub build_id: i64,
    /// Its request.
    pub request_id: i64,
    /// This master.
    pub master_id: i64,
}

/// The runner's side of the queue.
pub struct Recorder {
    sender: mpsc::Sender<Event>,
    /// The chunk being filled: log, first line, text, lines, first line's time.
    pending: Option<(i64, i32, String, usize, Instant)>,
    /// Next line number per log.
    next_line: std::collections::HashMap<i64, i32>,
    /// Cancelled by the writer when the claim is found taken.
    pub claim_lost: CancellationToken,
}

/// Starts the writer task; returns the recorder and the task's handle.
pub fn start(
    store: Store,
    ids: BuildIds,
    metrics: crate::metrics::Metrics,
) -> (Recorder, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(QUEUE_EVENTS);
    let claim_lost = CancellationToken::new();
    let writer = tokio::spawn(write_all(store, ids, receiver, claim_lost.clone(), metrics));
    (
        Recorder {
            sender,
            pending: None,
            next_line: Default::default(),
            claim_lost,
        },
        writer,
    )
}

impl Recorder {
    async fn send(&mut self, event: Event) {
        // The writer only goes away after `claim_lost`: then nothing more
        // is to be written.
        let _ = self.sender.send(event).await;
    }

    /// A step starts now.
    pub async fn step_started(&mut self, step_id: i64) {
        self.send(Event::Record(RecordEvent::StepStarted {
            step_id,
            at: Utc::now(),
        }))
        .await;
    }

    /// A step ended now (its log is flushed first).
    pub async fn step_finished(&mut self, step_id: i64, results: i16, text: &str) {
        self.flush().await;
        self.send(Event::Record(RecordEvent::StepFinished {
            step_id,
            results,
            text: text.to_owned(),
            at: Utc::now(),
        }))
        .await;
    }

    /// The build ended now.
    pub async fn build_finished(&mut self, results: i16, text: &str) {
        self.flush().await;
        self.send(Event::Record(RecordEvent::BuildFinished {
            results,
            text: text.to_owned(),
            at: Utc::now(),
        }))
        .await;
    }

    /// Waits until everything recorded so far is written — at most
    /// `limit`, and not at all while the database is known to be down (the
    /// build goes on through an outage). Used between steps so that a lost
    /// claim is noticed before the next step starts.
    pub async fn settle(&mut self, store: &Store, limit: Duration) {
        if store.health().is_down() {
            return;
        }
        self.flush().await;
        let (reply, done) = tokio::sync::oneshot::channel();
        self.send(Event::Barrier(reply)).await;
        let _ = tokio::time::timeout(limit, done).await;
    }

    /// Adds one line (without its newline) to log `log_id`. Text that the
    /// database cannot store (NUL) is replaced.
    pub async fn line(&mut self, log_id: i64, stream: Stream, text: &str) {
        let clean = text.replace('\0', "\u{fffd}");
        let fits = matches!(&self.pending, Some((log, _, content, lines, _))
            if *log == log_id && *lines < CHUNK_LINES && content.len() + clean.len() + 2 <= CHUNK_BYTES);
        if !fits {
            self.flush().await;
        }
        let next = self.next_line.entry(log_id).or_insert(0);
        let number = *next;
        *next += 1;
        match &mut self.pending {
            Some((_, _, content, lines, _)) => {
                content.push('\n');
                content.push(stream.prefix());
                content.push_str(&clean);
                *lines += 1;
            }
            None => {
                let mut content = String::with_capacity(clean.len() + 1);
                content.push(stream.prefix());
                content.push_str(&clean);
                self.pending = Some((log_id, number, content, 1, Instant::now()));
            }
        }
    }

    /// Flushes the pending chunk when its oldest line is older than
    /// [`CHUNK_AGE`]; call it on a timer while a step runs.
    pub async fn flush_if_old(&mut self) {
        if matches!(&self.pending, Some((.., since)) if since.elapsed() >= CHUNK_AGE) {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if let Some((log_id, first_line, content, lines, _)) = self.pending.take() {
            let last_line = first_line + lines as i32 - 1;
            self.send(Event::Record(RecordEvent::Chunk {
                log_id,
                first_line,
                last_line,
                content,
            }))
            .await;
        }
    }

    /// Ends the queue; the writer finishes what is queued and stops.
    pub async fn close(mut self) {
        self.flush().await;
    }
}

async fn write_all(
    store: Store,
    ids: BuildIds,
    mut events: mpsc::Receiver<Event>,
    claim_lost: CancellationToken,
    metrics: crate::metrics::Metrics,
) {
    // A barrier taken from the queue while batching, to answer next.
    let mut barrier: Option<tokio::sync::oneshot::Sender<()>> = None;
    loop {
        if let Some(reply) = barrier.take() {
            let _ = reply.send(());
        }
        let first = match events.recv().await {
            Some(Event::Record(event)) => event,
            Some(Event::Barrier(reply)) => {
                let _ = reply.send(());
                continue;
            }
            None => return,
        };
        // Whatever else is already queued goes into the same transaction:
        // a short step's whole record is one commit, and a writer that fell
        // behind (a fast step, the end of an outage) catches up quickly.
        let mut batch = vec![first];
        let mut bytes = 0;
        while batch.len() < BATCH_EVENTS && bytes < BATCH_BYTES {
            match events.try_recv() {
                Ok(Event::Record(event)) => {
                    if let RecordEvent::Chunk { content, .. } = &event {
                        bytes += content.len() + 1;
                    }
                    batch.push(event);
                }
                Ok(Event::Barrier(reply)) => {
                    barrier = Some(reply);
                    break;
                }
                Err(_) => break,
            }
        }
        let log_bytes: usize = batch
            .iter()
            .map(|e| match e {
                RecordEvent::Chunk { content, .. } => content.len() + 1,
                _ => 0,
            })
            .sum();
        match store
            .build_record(
                ids.build_id,
                ids.request_id,
                ids.master_id,
                &batch,
                Budget::Forever,
            )
            .await
        {
            Ok(Owned::Yes(())) => metrics.log_stored(log_bytes),
            Ok(Owned::ClaimLost) => {
                claim_lost.cancel();
                return;
            }
            Err(error) => {
                // Not an outage (those are retried): a bug or a refusal.
                // Log it and go on with the rest of the build's record.
                tracing::error!(build_id = ids.build_id, %error, "recording the build failed");
            }
        }
    }
}
