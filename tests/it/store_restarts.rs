//! The store rides through database restarts: four writers insert changes
//! steadily while the server is restarted, crashed or stopped; no error
//! reaches them, and an audit finds every acknowledged write exactly once.
//! Each test prints the recovery time it measured: from the moment the
//! server said it was ready to accept connections (its log) to the first
//! acknowledged write after that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use buildmaster::pgserver::StopMode;
use buildmaster::store::changes::NewChange;
use buildmaster::store::{Budget, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{DedicatedServer, connect, store_for};

/// How long one write may wait for the database: longer than any outage
/// these tests cause, so that a write never fails.
const WRITE_BUDGET: Duration = Duration::from_secs(90);
const WRITERS: usize = 4;

#[derive(Debug, Clone)]
struct Ack {
    uuid: Uuid,
    id: i64,
    at: SystemTime,
}

/// A steady load of idempotent change inserts.
struct Load {
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    writers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(store: Store) -> Load {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let writers = (0..WRITERS)
            .map(|writer| {
                let (store, acks, errors, stop) =
                    (store.clone(), acks.clone(), errors.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.is_cancelled() {
                        n += 1;
                        let change = NewChange {
                            change_uuid: Uuid::new_v4(),
                            author: format!("writer-{writer}"),
                            comments: format!("write {n}"),
                            branch: Some("main".to_owned()),
                            revision: Some(format!("{writer}-{n}")),
                            files: vec![format!("file-{n}")],
                            source: "test".to_owned(),
                            ..NewChange::default()
                        };
                        match store
                            .change_insert(&change, Budget::For(WRITE_BUDGET))
                            .await
                        {
                            Ok(inserted) => acks.lock().unwrap().push(Ack {
                                uuid: change.change_uuid,
                                id: inserted.id,
                                at: SystemTime::now(),
                            }),
                            Err(error) => errors.lock().unwrap().push(error.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            acks,
            errors,
            stop,
            writers,
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits for the first write acknowledged after `t`.
    async fn first_ack_after(&self, t: SystemTime) -> SystemTime {
        for _ in 0..600 {
            if let Some(at) = self
                .acks
                .lock()
                .unwrap()
                .iter()
                .map(|a| a.at)
                .filter(|at| *at > t)
                .min()
            {
                return at;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no write succeeded within 30 s of the server coming back");
    }

    async fn finish(self) -> (Vec<Ack>, Vec<String>) {
        self.stop.cancel();
        for writer in self.writers {
            writer.await.expect("writer task panicked");
        }
        let acks = self.acks.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (acks, errors)
    }
}

/// Every acknowledged change is stored exactly once, under the id the
/// writer was given, and nothing else is stored.
async fn audit(url: &str, acks: &[Ack]) {
    let client = connect(url).await;
    let rows = client
        .query(
            "SELECT change_uuid, id FROM buildmaster_private.changes",
            &[],
        )
        .await
        .expect("audit query");
    let mut stored: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for row in &rows {
        stored.entry(row.get(0)).or_default().push(row.get(1));
    }
    let mut lost = 0;
    let mut wrong = 0;
    for ack in acks {
        match stored.get(&ack.uuid) {
            None => lost += 1,
            Some(ids) if ids.len() != 1 || ids[0] != ack.id => wrong += 1,
            Some(_) => {}
        }
    }
    assert_eq!(lost, 0, "{lost} acknowledged writes are missing");
    assert_eq!(
        wrong, 0,
        "{wrong} acknowledged writes are duplicated or stored under another id"
    );
    assert_eq!(
        rows.len(),
        acks.len(),
        "rows stored that no writer was told about"
    );
    let files: i64 = client
        .query_one("SELECT count(*) FROM buildmaster_private.change_files", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        files as usize,
        acks.len(),
        "each change has exactly one file"
    );
}

/// Runs the load, applies `disrupt`, checks the outcome, prints recovery.
async fn writes_survive<F, Fut>(scenario: &str, disrupt: F)
where
    F: FnOnce(Arc<DedicatedServer>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let server = Arc::new(DedicatedServer::start().await);
    let store = store_for(server.url());
    let load = Load::start(store.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = load.acked();
    assert!(
        before >= 20,
        "the load is not running: {before} writes in 1 s"
    );

    let disrupted_at = SystemTime::now();
    disrupt(server.clone()).await;
    let ready_at = server
        .last_ready_at()
        .await
        .filter(|t| *t >= disrupted_at - Duration::from_millis(5))
        .expect("the server log has no 'ready to accept connections' line after the disruption");
    let first = load.first_ack_after(ready_at).await;
    let recovery = first.duration_since(ready_at).unwrap_or_default();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acks, errors) = load.finish().await;
    assert!(
        errors.is_empty(),
        "{} writes failed, first: {}",
        errors.len(),
        errors[0]
    );
    audit(server.url(), &acks).await;
    let health = store.health().snapshot();
    println!(
        "restart scenario {scenario:<24} recovery {:>4} ms (server ready -> first write); \
         {} writes acknowledged, {} retried attempts, outage {:.2} s",
        recovery.as_millis(),
        acks.len(),
        health.retries,
        health.outage_seconds
    );
    assert!(
        health.outages >= 1,
        "the store never noticed the disruption"
    );
    assert!(
        recovery < Duration::from_secs(2),
        "writes resumed {recovery:?} after the server was ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_fast_restart() {
    writes_survive("pg_ctl restart -m fast", |server| async move {
        server.restart(StopMode::Fast).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_an_immediate_restart() {
    writes_survive("pg_ctl restart -m immediate", |server| async move {
        server.restart(StopMode::Immediate).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_backend_killed_with_sigkill() {
    writes_survive("kill -9 of a backend", |server| async move {
        let client = connect(server.url()).await;
        let pid: i32 = client
            .query_one(
                "SELECT pid FROM pg_stat_activity
                  WHERE application_name = 'buildmaster' AND pid <> pg_backend_pid()
                  ORDER BY backend_start LIMIT 1",
                &[],
            )
            .await
            .expect("a backend of the store")
            .get(0);
        drop(client);
        server.kill_backend(pid).await;
        // The postmaster now resets every backend and recovers; wait for it.
        wait_until_accepting(&server).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_the_postmaster_killed_with_sigkill() {
    writes_survive("kill -9 of the postmaster", |server| async move {
        server.kill_postmaster().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.start_again().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_fifteen_second_stop() {
    writes_survive("stop 15 s, then start", |server| async move {
        server.stop(StopMode::Fast).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        server.start_again().await;
    })
    .await;
}

/// Polls until a fresh connection succeeds.
async fn wait_until_accepting(server: &DedicatedServer) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..300 {
        if tokio_postgres::connect(server.url(), tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come back after the backend was killed");
}
