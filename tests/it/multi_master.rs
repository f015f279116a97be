//! Several masters on one database: every request is built exactly once,
//! a dead master's work is taken over after its expiry, a database restart
//! does not make live masters look dead, and a master whose claim was taken
//! stops that build.

use std::collections::HashMap;
use std::time::Duration;

use buildmaster::pgserver::StopMode;

use crate::support::{DedicatedServer, TestDb, TestMaster, UpProcess, connect, count, eventually};

fn config(name: &str, step: &str, expiry_s: f64) -> String {
    format!(
        r#"
[master]
name = "{name}"
heartbeat_interval_s = 0.5
expiry_s = {expiry_s}
poll_interval_s = 0.5
[[workers]]
name = "local"
max_builds = 4
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "step"
command = "{step}"
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
"#
    )
}

async fn force(master: &str, n: usize) {
    let client = reqwest::Client::new();
    for _ in 0..n {
        let response = client
            .post(format!("{master}/api/v1/builders/unit/force"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

/// Every request completed, each by exactly one successful build; returns
/// builds per master.
async fn audit_each_request_built_once(url: &str, requests: i64) -> HashMap<String, i64> {
    let client = connect(url).await;
    let bad: i64 = client
        .query_one(
            "SELECT count(*) FROM buildmaster_v1.build_requests r
              WHERE r.state <> 'completed'
                 OR (SELECT count(*) FROM buildmaster_v1.builds b WHERE b.build_request_id = r.build_request_id) <> 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bad, 0, "requests not built exactly once");
    assert_eq!(
        count(url, "SELECT count(*) FROM buildmaster_v1.build_requests").await,
        requests
    );
    assert_eq!(
        count(
            url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE results = 0"
        )
        .await,
        requests
    );
    let numbers_gap_free: bool = client
        .query_one(
            "SELECT max(number) = count(*) AND count(DISTINCT number) = count(*) FROM buildmaster_v1.builds",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        numbers_gap_free,
        "build numbers must be unique and gap-free"
    );
    client
        .query(
            "SELECT master_name, count(*) FROM buildmaster_v1.builds GROUP BY master_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn many_masters_build_every_request_exactly_once(masters: usize, requests: usize) {
    let db = TestDb::new().await;
    let mut processes = Vec::new();
    for m in 0..masters {
        processes.push(UpProcess::start(&db.url, &config(&format!("m{m}"), "true", 30.0)).await);
    }
    // Submit through every master, interleaved.
    let per_master = requests / masters;
    let submitters: Vec<_> = processes
        .iter()
        .map(|p| {
            let url = p.url("");
            tokio::spawn(async move { force(&url, per_master).await })
        })
        .collect();
    for s in submitters {
        s.await.unwrap();
    }
    let total = (per_master * masters) as i64;
    eventually(
        "every request to complete",
        Duration::from_secs(180),
        || async {
            (count(
                &db.url,
                "SELECT count(*) FROM buildmaster_v1.build_requests WHERE state = 'completed'",
            )
            .await
                == total)
                .then_some(())
        },
    )
    .await;
    let per = audit_each_request_built_once(&db.url, total).await;
    println!("{masters} masters built {total} forced requests exactly once each: {per:?}");
    assert!(
        per.len() >= 2,
        "the work should be shared by the masters: {per:?}"
    );
    for p in processes {
        assert!(p.interrupt().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_build_500_forced_requests_exactly_once() {
    many_masters_build_every_request_exactly_once(2, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_build_501_forced_requests_exactly_once() {
    many_masters_build_every_request_exactly_once(3, 501).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_masters_build_is_marked_retry_and_rebuilt_by_a_survivor_after_the_expiry() {
    let db = TestDb::new().await;
    let a = UpProcess::start(&db.url, &config("a", "sleep 3", 3.0)).await;
    force(&a.url(""), 1).await;
    eventually(
        "master a to start the build",
        Duration::from_secs(10),
        || async {
            (count(
                &db.url,
                "SELECT count(*) FROM buildmaster_v1.builds WHERE master_name = 'a'",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    let b = UpProcess::start(&db.url, &config("b", "sleep 3", 3.0)).await;
    let _dir = a.kill9();
    eventually("master b to rebuild the request", Duration::from_secs(30), || async {
        (count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE master_name = 'b' AND results_name = 'success'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    let client = connect(&db.url).await;
    let builds: Vec<(String, String, i32)> = client
        .query(
            "SELECT master_name, results_name, number FROM buildmaster_v1.builds ORDER BY number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        builds,
        vec![
            ("a".to_owned(), "retry".to_owned(), 1),
            ("b".to_owned(), "success".to_owned(), 2)
        ]
    );
    let active: bool = client
        .query_one(
            "SELECT active FROM buildmaster_v1.masters WHERE name = 'a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!active, "the dead master must be marked inactive");
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.build_requests WHERE state = 'completed' AND results = 0").await,
        1
    );
    assert!(b.log().contains("stopped heartbeating"), "{}", b.log());
    assert!(b.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_longer_than_the_expiry_does_not_make_live_masters_look_dead() {
    let server = DedicatedServer::start().await;
    let a = UpProcess::start(server.url(), &config("a", "sleep 8", 3.0)).await;
    let b = UpProcess::start(server.url(), &config("b", "sleep 8", 3.0)).await;
    force(&a.url(""), 4).await;
    force(&b.url(""), 4).await;
    eventually(
        "builds on both masters",
        Duration::from_secs(10),
        || async {
            (count(
                server.url(),
                "SELECT count(DISTINCT master_name) FROM buildmaster_v1.builds",
            )
            .await
                == 2)
                .then_some(())
        },
    )
    .await;
    server.stop(StopMode::Fast).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.start_again().await;
    eventually(
        "all 8 builds to succeed",
        Duration::from_secs(40),
        || async {
            (count(
                server.url(),
                "SELECT count(*) FROM buildmaster_v1.builds WHERE results = 0",
            )
            .await
                == 8)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        count(
            server.url(),
            "SELECT count(*) FROM buildmaster_v1.builds WHERE results <> 0"
        )
        .await,
        0,
        "no build may be retried because of the database outage"
    );
    assert_eq!(
        count(
            server.url(),
            "SELECT count(*) FROM buildmaster_v1.masters WHERE active"
        )
        .await,
        2
    );
    assert!(a.interrupt().success());
    assert!(b.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_finds_its_claim_taken_stops_the_build() {
    let db = TestDb::new().await;
    let marker = tempfile::tempdir().unwrap();
    let marker_file = marker.path().join("second-step-ran");
    let config = format!(
        r#"
[[workers]]
name = "local"
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "first"
command = "sleep 2"
[[builders.steps]]
name = "second"
command = "touch {}"
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
"#,
        marker_file.display()
    );
    let master = TestMaster::start_with(&db.url, &config, |_| {}).await;
    force(&master.base, 1).await;
    eventually("the first step to start", Duration::from_secs(10), || async {
        (count(&db.url, "SELECT count(*) FROM buildmaster_v1.steps WHERE name = 'first' AND started_at IS NOT NULL").await
            == 1)
            .then_some(())
    })
    .await;
    // Another master takes the request over (as if this one had been
    // presumed dead).
    let client = connect(&db.url).await;
    client
        .batch_execute(
            "INSERT INTO buildmaster_private.masters (name, incarnation, started_at, last_heartbeat_at)
             VALUES ('usurper', gen_random_uuid(), now(), now());
             UPDATE buildmaster_private.build_requests
                SET claimed_by_master_id = (SELECT id FROM buildmaster_private.masters WHERE name = 'usurper')",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !marker_file.exists(),
        "the build went on after its claim was taken"
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.build_requests WHERE state = 'completed'"
        )
        .await,
        0,
        "the master must not complete a request it no longer owns"
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_requests_are_claimed_first() {
    let db = TestDb::new().await;
    let master = TestMaster::start_with(
        &db.url,
        &config("prio", "sleep 1", 30.0).replace("max_builds = 4", "max_builds = 1"),
        |_| {},
    )
    .await;
    let client = reqwest::Client::new();
    let force_with = |priority: i32, reason: &'static str| {
        client
            .post(master.url("/api/v1/builders/unit/force"))
            .json(&serde_json::json!({"priority": priority, "reason": reason}))
            .send()
    };
    assert_eq!(force_with(0, "first").await.unwrap().status(), 201);
    eventually(
        "the first build to start",
        Duration::from_secs(10),
        || async {
            (count(&db.url, "SELECT count(*) FROM buildmaster_v1.builds").await == 1).then_some(())
        },
    )
    .await;
    for (priority, reason) in [(1, "low"), (10, "high"), (5, "middle")] {
        assert_eq!(force_with(priority, reason).await.unwrap().status(), 201);
    }
    eventually("all four builds", Duration::from_secs(20), || async {
        (count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE complete",
        )
        .await
            == 4)
            .then_some(())
    })
    .await;
    let order: Vec<String> = connect(&db.url)
        .await
        .query(
            "SELECT bs.reason FROM buildmaster_v1.builds b JOIN buildmaster_v1.buildsets bs USING (buildset_id)
              ORDER BY b.number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, ["first", "high", "middle", "low"]);
    master.stop().await.unwrap();
}
