//! Reporting from a hot standby, and failover to a promoted standby.

use std::time::Duration;

use buildmaster::pgserver::StopMode;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

use crate::support::{
    DedicatedServer, PASSWORD, SUPERUSER, TestMaster, connect, count, eventually, psql,
};

const CONFIG: &str = r#"
[[workers]]
name = "local"
max_builds = 2
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "test"
command = "echo replicated"
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_are_readable_on_a_streaming_standby_as_the_reader_role() {
    let primary = DedicatedServer::start().await;
    let master = TestMaster::start_with(primary.url(), CONFIG, |_| {}).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client
            .post(master.url("/api/v1/builders/unit/force"))
            .json(&json!({"branch": "main"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    eventually(
        "three builds on the primary",
        Duration::from_secs(15),
        || async {
            (count(
                primary.url(),
                "SELECT count(*) FROM buildmaster_v1.builds WHERE complete",
            )
            .await
                == 3)
                .then_some(())
        },
    )
    .await;
    let out = psql(primary.url())
        .args(["-v", "login=standby_reader", "-v", "password=reader-secret"])
        .arg("-f")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/ops/create-reader-login.sql"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let standby = primary.standby().await;
    eventually(
        "the standby to replay the builds",
        Duration::from_secs(20),
        || async {
            (count(
                standby.url(),
                "SELECT count(*) FROM buildmaster_v1.builds WHERE complete",
            )
            .await
                == 3)
                .then_some(())
        },
    )
    .await;
    let reader_url = format!(
        "postgresql://standby_reader:reader-secret@127.0.0.1:{}/buildmaster",
        standby.port
    );
    let reader = connect(&reader_url).await;
    let in_recovery: bool = reader
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "this must be the standby");
    let views: Vec<String> = reader
        .query("SELECT table_name::text FROM information_schema.views WHERE table_schema = 'buildmaster_v1'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(views.len() >= 14, "{views:?}");
    for view in &views {
        reader
            .query(
                &format!("SELECT * FROM buildmaster_v1.{view} LIMIT 10"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading {view} on the standby: {e}"));
    }
    let lines: i64 = reader
        .query_one(
            "SELECT count(*) FROM buildmaster_v1.log_lines WHERE content = 'replicated'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lines, 3);
    let refused = reader
        .batch_execute(
            "SET default_transaction_read_only = off; SELECT 1 FROM buildmaster_private.builds",
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_a_multi_host_url_follows_a_failover_and_loses_no_acknowledged_change() {
    let primary = DedicatedServer::start().await;
    let standby = primary.standby().await;
    let url = format!(
        "postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/buildmaster?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let master = TestMaster::start(&url, |_| {}).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let poster = {
        let (endpoint, stop) = (master.url("/api/v1/changes"), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut acked, mut failures) = (Vec::new(), Vec::new());
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let revision = format!("r{n}");
                match client
                    .post(&endpoint)
                    .json(&json!({"author": "dev", "branch": "main", "revision": revision}))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        acked.push((revision, body["change_id"].as_i64().unwrap()));
                    }
                    Ok(r) => failures.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failures)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    primary.stop(StopMode::Fast).await;
    standby.promote().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (acked, failures) = poster.await.unwrap();
    assert!(failures.is_empty(), "clients saw errors: {failures:?}");
    let after_failover = acked.len();
    assert!(
        after_failover > 50,
        "too few changes posted: {after_failover}"
    );
    let stored: Vec<(String, i64)> = connect(standby.url())
        .await
        .query(
            "SELECT revision, change_id FROM buildmaster_v1.changes ORDER BY change_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut expected = acked.clone();
    expected.sort_by_key(|(_, id)| *id);
    assert_eq!(
        stored, expected,
        "the new primary must hold every acknowledged change, once"
    );
    let (status, _) = {
        let r = reqwest::get(master.url("/readyz")).await.unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 200, "the master must be ready on the new primary");
    println!(
        "failover: {after_failover} changes posted across the promotion, all on the new primary once"
    );
    master.stop().await.unwrap();
}
