//! Builds on local workers: real commands, their logs and results, stops
//! and cancels, and builds that keep running through a database outage or
//! survive their master being killed.

use std::time::{Duration, Instant};

use buildmaster::pgserver::StopMode;
use serde_json::json;

use crate::support::{
    DedicatedServer, TestDb, TestMaster, UpProcess, connect, count, eventually, force_config,
};

async fn force(base: &str, builder: &str, body: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/builders/{builder}/force"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn wait_for_build_end(url: &str, limit: Duration) {
    // One query: two could see no build, then a build that just started.
    eventually("the build to finish", limit, || async {
        (count(
            url,
            "SELECT CASE WHEN count(*) > 0 AND bool_and(complete) THEN 1::bigint ELSE 0 END
               FROM buildmaster_v1.builds",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
}

/// (step name, results name, state string) of every step of the only build.
async fn steps(url: &str) -> Vec<(String, String, String)> {
    connect(url)
        .await
        .query(
            "SELECT name, coalesce(results_name, '(unfinished)'), state_string FROM buildmaster_v1.steps ORDER BY number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The stdout/stderr/header lines of a step's log, in order.
async fn log_of(url: &str, step: &str) -> Vec<(i32, String, String)> {
    connect(url)
        .await
        .query(
            "SELECT ll.line_number, ll.stream, ll.content FROM buildmaster_v1.log_lines ll
               JOIN buildmaster_v1.logs l USING (log_id) JOIN buildmaster_v1.steps s USING (step_id)
              WHERE s.name = $1 ORDER BY ll.line_number",
            &[&step],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn process_with_argument_exists(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_commands_produce_the_expected_builds_steps_and_logs() {
    let db = TestDb::new().await;
    let config = r#"
[[workers]]
name = "local"
[[builders]]
name = "real"
workers = ["local"]
[[builders.steps]]
name = "version"
command = ["git", "--version"]
[[builders.steps]]
name = "props"
command = ["sh", "-c", "echo %(prop:branch)s $BUILDMASTER_BRANCH %(prop:ticket)s no.%(prop:buildnumber)s"]
[[builders.steps]]
name = "warn"
command = "echo oops >&2; exit 3"
flunk_on_failure = false
warn_on_failure = true
halt_on_failure = false
[[builders.steps]]
name = "lines"
command = "seq 1 100000"
[[builders.steps]]
name = "timeout"
command = "sleep 61.25 & sleep 61.5"
timeout_s = 1
halt_on_failure = false
[[builders.steps]]
name = "missing"
command = ["/nonexistent/tool", "--flag"]
[[builders.steps]]
name = "after"
command = ["true"]
[[builders.steps]]
name = "cleanup"
command = ["sh", "-c", "echo cleaned"]
always_run = true
[[schedulers]]
name = "force"
kind = "force"
builders = ["real"]
"#;
    let master = TestMaster::start_with(&db.url, config, |_| {}).await;
    force(
        &master.base,
        "real",
        json!({"branch": "main", "properties": {"ticket": 42}}),
    )
    .await;
    wait_for_build_end(&db.url, Duration::from_secs(60)).await;

    let expected = [
        ("version", "success", "exit code 0"),
        ("props", "success", "exit code 0"),
        ("warn", "failure", "exit code 3"),
        ("lines", "success", "exit code 0"),
        ("timeout", "failure", "timed out after 1 s"),
        ("missing", "exception", ""),
        ("after", "skipped", "skipped"),
        ("cleanup", "success", "exit code 0"),
    ];
    let actual = steps(&db.url).await;
    assert_eq!(actual.len(), expected.len(), "{actual:?}");
    for ((name, result, state), (a_name, a_result, a_state)) in expected.iter().zip(&actual) {
        assert_eq!(
            (name, result),
            (&a_name.as_str(), &a_result.as_str()),
            "{actual:?}"
        );
        assert!(a_state.starts_with(state), "{name}: {a_state:?}");
    }
    let build = connect(&db.url)
        .await
        .query_one(
            "SELECT results_name, state_string, duration_s FROM buildmaster_v1.builds",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        build.get::<_, String>(0),
        "exception",
        "the worst result of the build's steps"
    );
    assert!(build.get::<_, f64>(2) > 1.0);

    let version = log_of(&db.url, "version").await;
    assert_eq!(version[0].1, "header");
    assert!(
        version
            .iter()
            .any(|(_, s, c)| s == "stdout" && c.starts_with("git version")),
        "{version:?}"
    );
    let props = log_of(&db.url, "props").await;
    assert!(
        props.iter().any(|(_, _, c)| c == "main main 42 no.1"),
        "{props:?}"
    );
    let warn = log_of(&db.url, "warn").await;
    assert!(
        warn.iter().any(|(_, s, c)| s == "stderr" && c == "oops"),
        "{warn:?}"
    );
    let missing = log_of(&db.url, "missing").await;
    assert!(
        missing
            .iter()
            .any(|(_, _, c)| c.contains("/nonexistent/tool")),
        "the reason must be in the log: {missing:?}"
    );

    let lines = log_of(&db.url, "lines").await;
    assert_eq!(lines.len(), 100_001, "a header and 100,000 lines");
    for (i, (number, stream, content)) in lines.iter().enumerate().skip(1) {
        assert_eq!((*number as usize, stream.as_str()), (i, "stdout"));
        assert_eq!(content, &i.to_string());
    }
    assert_eq!(
        count(&db.url, "SELECT num_lines::bigint FROM buildmaster_v1.logs l JOIN buildmaster_v1.steps s USING (step_id) WHERE s.name = 'lines'").await,
        100_001
    );
    assert!(
        !process_with_argument_exists("61.25") && !process_with_argument_exists("61.5"),
        "the timed-out step's process group must be gone"
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_build_ends_cancelled_within_a_second_and_runs_only_always_run_steps() {
    let db = TestDb::new().await;
    let config = r#"
[[workers]]
name = "local"
[[builders]]
name = "slow"
workers = ["local"]
[[builders.steps]]
name = "long"
command = "sleep 37.75"
[[builders.steps]]
name = "next"
command = ["true"]
[[builders.steps]]
name = "cleanup"
command = ["sh", "-c", "echo cleaned"]
always_run = true
[[schedulers]]
name = "force"
kind = "force"
builders = ["slow"]
"#;
    let master = TestMaster::start_with(&db.url, config, |_| {}).await;
    force(&master.base, "slow", json!({})).await;
    let build_id: i64 = eventually("the long step to start", Duration::from_secs(10), || async {
        let row = connect(&db.url)
            .await
            .query_opt(
                "SELECT build_id FROM buildmaster_v1.steps WHERE name = 'long' AND started_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap()?;
        Some(row.get(0))
    })
    .await;
    assert!(process_with_argument_exists("37.75"));
    let client = reqwest::Client::new();
    let stopped_at = Instant::now();
    let response = client
        .post(master.url(&format!("/api/v1/builds/{build_id}/stop")))
        .json(&json!({"reason": "no longer needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eventually(
        "the process to be killed",
        Duration::from_secs(3),
        || async { (!process_with_argument_exists("37.75")).then_some(()) },
    )
    .await;
    let killed_after = stopped_at.elapsed();
    assert!(
        killed_after < Duration::from_secs(1),
        "killed {killed_after:?} after the stop"
    );
    wait_for_build_end(&db.url, Duration::from_secs(10)).await;
    assert_eq!(
        steps(&db.url).await,
        [
            (
                "long".to_owned(),
                "cancelled".to_owned(),
                "cancelled: no longer needed".to_owned()
            ),
            (
                "next".to_owned(),
                "skipped".to_owned(),
                "skipped".to_owned()
            ),
            (
                "cleanup".to_owned(),
                "success".to_owned(),
                "exit code 0".to_owned()
            ),
        ]
    );
    let row = connect(&db.url)
        .await
        .query_one(
            "SELECT b.results_name, r.state, r.results_name FROM buildmaster_v1.builds b
               JOIN buildmaster_v1.build_requests r USING (build_request_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        (
            "cancelled".to_owned(),
            "cancelled".to_owned(),
            "cancelled".to_owned()
        )
    );
    let again = client
        .post(master.url(&format!("/api/v1/builds/{build_id}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let unknown = client
        .post(master.url("/api/v1/builds/999999/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let garbage = client
        .post(master.url("/api/v1/builds/abc/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 404);
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_can_be_cancelled_and_is_never_built() {
    let db = TestDb::new().await;
    let config = force_config("slow", "wait", "sleep 2", 1);
    let config = config.as_str();
    let master = TestMaster::start_with(&db.url, config, |_| {}).await;
    force(&master.base, "slow", json!({})).await;
    let second = force(&master.base, "slow", json!({})).await;
    let request = second["build_request_ids"][0].as_i64().unwrap();
    let client = reqwest::Client::new();
    let response = client
        .post(master.url(&format!("/api/v1/build_requests/{request}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let again = client
        .post(master.url(&format!("/api/v1/build_requests/{request}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.builds").await,
        1,
        "the cancelled request was built"
    );
    assert_eq!(
        count(
            &db.url,
            &format!("SELECT count(*) FROM buildmaster_v1.build_requests WHERE build_request_id = {request} AND state = 'cancelled' AND results = 6")
        )
        .await,
        1
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_keeps_running_through_a_ten_second_database_outage_and_loses_no_line() {
    let server = DedicatedServer::start().await;
    let config = force_config(
        "chatty",
        "print",
        "i=1; while [ $i -le 400 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done",
        1,
    );
    let config = config.as_str();
    let master = TestMaster::start_with(server.url(), config, |_| {}).await;
    force(&master.base, "chatty", json!({})).await;
    eventually(
        "some output to be stored",
        Duration::from_secs(10),
        || async {
            (count(
                server.url(),
                "SELECT count(*) FROM buildmaster_v1.log_lines",
            )
            .await
                > 20)
                .then_some(())
        },
    )
    .await;
    let outage_started = Instant::now();
    server.stop(StopMode::Fast).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.start_again().await;
    let outage = outage_started.elapsed();
    wait_for_build_end(server.url(), Duration::from_secs(60)).await;

    let lines = log_of(server.url(), "print").await;
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(_, s, _)| s == "stdout")
        .map(|(_, _, c)| c.as_str())
        .collect();
    let expected: Vec<String> = (1..=400).map(|i| format!("line-{i}")).collect();
    assert_eq!(stdout, expected, "every line exactly once, in order");
    let numbers: Vec<i32> = lines.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        numbers,
        (0..lines.len() as i32).collect::<Vec<_>>(),
        "line numbers without gaps"
    );
    let row = connect(server.url())
        .await
        .query_one(
            "SELECT results_name, duration_s FROM buildmaster_v1.builds",
            &[],
        )
        .await
        .unwrap();
    let duration: f64 = row.get(1);
    assert_eq!(row.get::<_, String>(0), "success");
    assert!(
        (19.0..30.0).contains(&duration),
        "the build's times must be when things happened: {duration:.1} s for a 20 s step"
    );
    println!(
        "build through a {:.1} s database outage: 400 lines stored once in order, duration {duration:.1} s",
        outage.as_secs_f64()
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_restarted_master_marks_its_build_retry_and_builds_the_request_again() {
    let db = TestDb::new().await;
    let config = r#"
[master]
name = "phoenix"
heartbeat_interval_s = 0.5
poll_interval_s = 0.5
[[workers]]
name = "local"
[[builders]]
name = "slow"
workers = ["local"]
[[builders.steps]]
name = "wait"
command = "sleep 3"
[[schedulers]]
name = "force"
kind = "force"
builders = ["slow"]
"#;
    let master = UpProcess::start(&db.url, config).await;
    force(&master.url(""), "slow", json!({})).await;
    eventually("the build to start", Duration::from_secs(10), || async {
        (count(&db.url, "SELECT count(*) FROM buildmaster_v1.builds").await == 1).then_some(())
    })
    .await;
    let dir = master.kill9();
    let master = UpProcess::start_in(&db.url, config, dir).await;
    eventually(
        "the request to be built again",
        Duration::from_secs(20),
        || async {
            (count(
                &db.url,
                "SELECT count(*) FROM buildmaster_v1.builds WHERE results_name = 'success'",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    let builds: Vec<(i32, String)> = connect(&db.url)
        .await
        .query(
            "SELECT number, results_name FROM buildmaster_v1.builds ORDER BY number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(builds, [(1, "retry".to_owned()), (2, "success".to_owned())]);
    assert!(master.interrupt().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_returns_running_builds_to_the_queue_as_retry() {
    let db = TestDb::new().await;
    let config = force_config("slow", "wait", "sleep 43.25", 1);
    let config = config.as_str();
    let master = UpProcess::start(&db.url, config).await;
    force(&master.url(""), "slow", json!({})).await;
    eventually("the build to start", Duration::from_secs(10), || async {
        process_with_argument_exists("43.25").then_some(())
    })
    .await;
    let started = Instant::now();
    assert!(master.interrupt().success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        !process_with_argument_exists("43.25"),
        "the step's process must be killed"
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE results_name = 'retry'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.build_requests WHERE state = 'pending'"
        )
        .await,
        1
    );
}
