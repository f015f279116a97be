//! Schedulers: changes and clocks become buildsets, once, and restarts of
//! the master do not lose or repeat them.

use std::time::Duration;

use serde_json::json;

use crate::support::{TestDb, TestMaster, UpProcess, connect, count, eventually};

const BUILDER: &str = r#"
[[workers]]
name = "local-1"
max_builds = 2
[[builders]]
name = "unit"
workers = ["local-1"]
[[builders.steps]]
name = "test"
command = ["true"]
"#;

async fn post_change(base_url: &str, branch: &str, revision: &str) -> i64 {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/api/v1/changes"))
        .json(&json!({"author": "dev", "branch": branch, "revision": revision, "files": ["src/lib.rs"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<serde_json::Value>().await.unwrap()["change_id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_branch_scheduler_waits_for_the_tree_to_be_stable_then_builds_the_newest_revision()
{
    let db = TestDb::new().await;
    let config = format!(
        "{BUILDER}
[[schedulers]]
name = \"main\"
kind = \"single-branch\"
branch = \"main\"
tree_stable_s = 2
builders = [\"unit\"]
"
    );
    let master = TestMaster::start_with(&db.url, &config, |_| {}).await;
    for revision in ["r1", "r2", "r3"] {
        post_change(&master.base, "main", revision).await;
    }
    post_change(&master.base, "feature", "f1").await;
    let client = connect(&db.url).await;
    let (revision, waited) = eventually("a buildset", Duration::from_secs(15), || async {
        let row = client
            .query_opt(
                "SELECT bs.revision, extract(epoch FROM bs.submitted_at - (SELECT max(created_at) FROM buildmaster_v1.changes WHERE branch = 'main'))::float8
                   FROM buildmaster_v1.buildsets bs",
                &[],
            )
            .await
            .unwrap()?;
        Some((row.get::<_, String>(0), row.get::<_, f64>(1)))
    })
    .await;
    assert_eq!(
        revision, "r3",
        "the buildset must build the newest revision"
    );
    assert!(
        (2.0..4.0).contains(&waited),
        "built {waited:.2} s after the last change, expected ~2 s"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.buildsets").await,
        1
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_private.sourcestamp_changes"
        )
        .await,
        3,
        "the buildset includes the three changes on main and not the one on feature"
    );
    eventually("the build to succeed", Duration::from_secs(15), || async {
        (count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE results = 0",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_branch_scheduler_builds_each_branch_separately_and_honours_its_file_filter() {
    let db = TestDb::new().await;
    let config = format!(
        "{BUILDER}
[[schedulers]]
name = \"all\"
kind = \"any-branch\"
files = [\"src/\"]
builders = [\"unit\"]
"
    );
    let master = TestMaster::start_with(&db.url, &config, |_| {}).await;
    post_change(&master.base, "a", "a1").await;
    post_change(&master.base, "b", "b1").await;
    let docs_only = reqwest::Client::new()
        .post(master.url("/api/v1/changes"))
        .json(&json!({"author": "dev", "branch": "c", "revision": "c1", "files": ["docs/x.md"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(docs_only.status(), 201);
    eventually("two buildsets", Duration::from_secs(10), || async {
        (count(&db.url, "SELECT count(*) FROM buildmaster_v1.buildsets").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = connect(&db.url).await;
    let branches: Vec<String> = client
        .query(
            "SELECT branch FROM buildmaster_v1.buildsets ORDER BY branch",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        branches,
        ["a", "b"],
        "the docs-only change on c must not build"
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_while_a_tree_stable_timer_is_pending_builds_once_at_the_right_time_after_restart()
 {
    let db = TestDb::new().await;
    let config = format!(
        "[master]
name = \"restarting\"
heartbeat_interval_s = 0.5
poll_interval_s = 0.5
{BUILDER}
[[schedulers]]
name = \"main\"
kind = \"single-branch\"
branch = \"main\"
tree_stable_s = 4
builders = [\"unit\"]
"
    );
    let master = UpProcess::start(&db.url, &config).await;
    post_change(&master.url(""), "main", "r1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = master.kill9();
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.buildsets").await,
        0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = UpProcess::start_in(&db.url, &config, dir).await;
    let client = connect(&db.url).await;
    let mut waited = None;
    for _ in 0..150 {
        let row = client
            .query_opt(
                "SELECT extract(epoch FROM bs.submitted_at - c.created_at)::float8
                   FROM buildmaster_v1.buildsets bs, buildmaster_v1.changes c",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            waited = Some(row.get::<_, f64>(0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(waited) = waited else {
        panic!(
            "no buildset 15 s after the restart; master log:\n{}",
            master.log()
        );
    };
    assert!(
        (4.0..6.0).contains(&waited),
        "built {waited:.2} s after the change, expected ~4 s"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.buildsets").await,
        1,
        "exactly one buildset"
    );
    assert!(master.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_runs_missed_while_no_master_ran_are_caught_up_once_or_skipped() {
    let db = TestDb::new().await;
    let config = format!(
        "{BUILDER}
[[schedulers]]
name = \"nightly\"
kind = \"nightly\"
cron = \"0 3 * * *\"
timezone = \"Europe/Paris\"
builders = [\"unit\"]
[[schedulers]]
name = \"nightly-skip\"
kind = \"nightly\"
cron = \"30 2 * * *\"
catch_up = \"skip\"
builders = [\"unit\"]
[[schedulers]]
name = \"nightly-once-missed\"
kind = \"nightly\"
cron = \"15 4 * * *\"
builders = [\"unit\"]
"
    );
    let name = "nightly-master";
    let master =
        TestMaster::start_with(&db.url, &config, |s| s.master.name = Some(name.to_owned())).await;
    let client = connect(&db.url).await;
    eventually(
        "the schedulers' next runs",
        Duration::from_secs(10),
        || async {
            (count(
                &db.url,
                "SELECT count(*) FROM buildmaster_v1.schedulers WHERE next_run_at > now()",
            )
            .await
                == 3)
                .then_some(())
        },
    )
    .await;
    master.stop().await.unwrap();
    // While no master runs, three days pass for two schedulers, and one run
    // is missed by the third.
    client
        .batch_execute(
            "UPDATE buildmaster_private.schedulers SET next_run_at = now() - interval '3 days'
              WHERE name IN ('nightly', 'nightly-skip');
             UPDATE buildmaster_private.schedulers SET next_run_at = now() - interval '1 minute'
              WHERE name = 'nightly-once-missed';",
        )
        .await
        .unwrap();
    let master =
        TestMaster::start_with(&db.url, &config, |s| s.master.name = Some(name.to_owned())).await;
    eventually(
        "the catch-up buildsets",
        Duration::from_secs(10),
        || async {
            (count(&db.url, "SELECT count(*) FROM buildmaster_v1.buildsets").await == 2)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reasons: Vec<(String, String)> = client
        .query(
            "SELECT scheduler_name, reason FROM buildmaster_v1.buildsets ORDER BY scheduler_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "nightly");
    assert!(reasons[0].1.contains("catching up"), "{reasons:?}");
    assert_eq!(reasons[1].0, "nightly-once-missed");
    assert!(reasons[1].1.contains("scheduled run"), "{reasons:?}");
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.schedulers WHERE next_run_at > now()"
        )
        .await,
        3,
        "every scheduler must be set to its next run after now"
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_scheduler_builds_after_its_upstream_succeeds() {
    let db = TestDb::new().await;
    let config = r#"
[[workers]]
name = "local-1"
max_builds = 2
[[builders]]
name = "unit"
workers = ["local-1"]
[[builders.steps]]
name = "test"
command = ["true"]
[[builders]]
name = "broken"
workers = ["local-1"]
[[builders.steps]]
name = "test"
command = ["false"]
[[builders]]
name = "deploy"
workers = ["local-1"]
[[builders.steps]]
name = "deploy"
command = ["true"]
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit", "broken"]
[[schedulers]]
name = "after-force"
kind = "dependent"
upstream = "force"
builders = ["deploy"]
"#;
    let master = TestMaster::start_with(&db.url, config, |_| {}).await;
    // Let the dependent scheduler take its starting point first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::new();
    for builder in ["unit", "broken"] {
        let response = client
            .post(master.url(&format!("/api/v1/builders/{builder}/force")))
            .json(&json!({"branch": "main", "revision": format!("rev-{builder}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    eventually("the deploy build", Duration::from_secs(15), || async {
        (count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE builder_name = 'deploy' AND complete",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = connect(&db.url).await;
    let rows = audit
        .query(
            "SELECT child.revision, parent.results_name FROM buildmaster_v1.buildsets child
               JOIN buildmaster_v1.buildsets parent ON parent.buildset_id = child.parent_buildset_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "only the successful upstream buildset triggers the dependent one"
    );
    assert_eq!(rows[0].get::<_, String>(0), "rev-unit");
    assert_eq!(rows[0].get::<_, String>(1), "success");
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_scheduler_builds_every_period() {
    let db = TestDb::new().await;
    let config = format!(
        "{BUILDER}
[[schedulers]]
name = \"every-2s\"
kind = \"periodic\"
period_s = 2
branch = \"main\"
builders = [\"unit\"]
"
    );
    let master = TestMaster::start_with(&db.url, &config, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    master.stop().await.unwrap();
    let runs = count(
        &db.url,
        "SELECT count(*) FROM buildmaster_v1.buildsets WHERE branch = 'main'",
    )
    .await;
    assert!(
        (2..=4).contains(&runs),
        "expected about 3 runs in 7 s with a 2 s period, got {runs}"
    );
    let spacing: f64 = connect(&db.url)
        .await
        .query_one(
            "SELECT min(d) FROM (SELECT extract(epoch FROM submitted_at - lag(submitted_at) OVER (ORDER BY buildset_id))::float8 AS d
                                   FROM buildmaster_v1.buildsets) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        spacing >= 1.9,
        "runs closer than the period: {spacing:.2} s"
    );
}
