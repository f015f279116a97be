//! The unit-of-work helper: what it retries, what it does not, and how it
//! reports an unreachable database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use buildmaster::store::changes::NewChange;
use buildmaster::store::{Budget, StoreError, WorkError};
use uuid::Uuid;

use crate::support::{TestDb, free_port, store_for};

#[tokio::test]
async fn an_unreachable_database_gives_unavailable_after_the_budget() {
    let store = store_for(&format!(
        "postgresql://nobody:secret-password@127.0.0.1:{}/nothing",
        free_port()
    ));
    let started = Instant::now();
    let error = store
        .unit("probe", Budget::For(Duration::from_millis(600)), |tx| {
            Box::pin(async move {
                tx.execute("SELECT 1", &[]).await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error}");
    assert!(
        waited >= Duration::from_millis(400),
        "gave up too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "overran its budget: {waited:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("probe") && text.contains("attempts"),
        "{text}"
    );
    assert!(
        !text.contains("secret-password"),
        "the password leaked: {text}"
    );
    let health = store.health().snapshot();
    assert!(health.down, "the outage was not recorded");
    assert!(
        health.retries >= 3,
        "expected several retries, saw {}",
        health.retries
    );
}

#[tokio::test]
async fn a_permanent_error_is_returned_at_once_without_retrying() {
    let db = TestDb::new().await;
    let store = db.store();
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    let error = store
        .unit("bad_sql", Budget::For(Duration::from_secs(10)), move |tx| {
            let counter = counter.clone();
            Box::pin(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tx.execute("SELECT * FROM buildmaster_private.no_such_table", &[])
                    .await?;
                Ok(())
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Database { .. }), "{error}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(store.health().snapshot().retries, 0);
}

#[tokio::test]
async fn a_rejection_rolls_back_and_is_not_retried() {
    let db = TestDb::new().await;
    let store = db.store();
    let uuid = Uuid::new_v4();
    let error = store
        .unit(
            "reject_after_write",
            Budget::For(Duration::from_secs(10)),
            move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO buildmaster_private.changes (change_uuid, author, when_at)
                     VALUES ($1, 'a', now())",
                        &[&uuid],
                    )
                    .await?;
                    Err::<(), _>(WorkError::Rejected("changed my mind".to_owned()))
                })
            },
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("changed my mind"), "{error}");
    let client = crate::support::connect(&db.url).await;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM buildmaster_private.changes WHERE change_uuid = $1",
            &[&uuid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "the rejected transaction was committed");
}

#[tokio::test]
async fn a_serialization_failure_is_retried_until_it_commits() {
    let db = TestDb::new().await;
    let store = db.store();
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    // The first two attempts raise SQLSTATE 40001 themselves; the third commits.
    let value = store
        .unit(
            "conflicting",
            Budget::For(Duration::from_secs(10)),
            move |tx| {
                let counter = counter.clone();
                Box::pin(async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if n < 3 {
                        tx.batch_execute(
                        "DO $$ BEGIN RAISE EXCEPTION 'lost a race' USING ERRCODE = '40001'; END $$",
                    )
                    .await?;
                    }
                    Ok(n)
                })
            },
        )
        .await
        .unwrap();
    assert_eq!(value, 3);
    let health = store.health().snapshot();
    assert_eq!(health.retries, 2);
    assert_eq!(health.outages, 0, "a conflict is not an outage");
}

#[tokio::test]
async fn inserting_the_same_change_twice_records_it_once() {
    let db = TestDb::new().await;
    let store = db.store();
    let change = NewChange {
        change_uuid: Uuid::new_v4(),
        author: "alice".to_owned(),
        branch: Some("main".to_owned()),
        revision: Some("abc123".to_owned()),
        files: vec!["src/a.rs".to_owned(), "src/b.rs".to_owned()],
        source: "api".to_owned(),
        ..NewChange::default()
    };
    let budget = Budget::For(Duration::from_secs(10));
    let first = store.change_insert(&change, budget).await.unwrap();
    let second = store.change_insert(&change, budget).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.id, second.id);
    let client = crate::support::connect(&db.url).await;
    let files: i64 = client
        .query_one(
            "SELECT count(*) FROM buildmaster_private.change_files WHERE change_id = $1",
            &[&first.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(files, 2);
}
