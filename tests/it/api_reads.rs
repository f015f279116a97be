//! The JSON read API (served from the published views) and `/metrics`.

use std::time::Duration;

use buildmaster::pgserver::StopMode;
use serde_json::{Value, json};

use crate::support::{DedicatedServer, TestDb, TestMaster, count, eventually};

const CONFIG: &str = r#"
[[workers]]
name = "local"
max_builds = 2
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "test"
command = "echo hello; echo oops >&2"
[[builders]]
name = "broken"
workers = ["local"]
[[builders.steps]]
name = "fail"
command = "exit 1"
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit", "broken"]
"#;

async fn get(master: &TestMaster, path: &str) -> (u16, Value) {
    let response = reqwest::get(master.url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn force(master: &TestMaster, builder: &str, branch: &str) {
    let response = reqwest::Client::new()
        .post(master.url(&format!("/api/v1/builders/{builder}/force")))
        .json(&json!({"branch": branch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_steps_and_logs_can_be_listed_filtered_and_paged() {
    let db = TestDb::new().await;
    let master = TestMaster::start_with(&db.url, CONFIG, |_| {}).await;
    force(&master, "unit", "main").await;
    force(&master, "unit", "feature").await;
    force(&master, "broken", "main").await;
    eventually("three finished builds", Duration::from_secs(15), || async {
        (count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.builds WHERE complete",
        )
        .await
            == 3)
            .then_some(())
    })
    .await;

    let (status, all) = get(&master, "/api/v1/builds").await;
    assert_eq!(status, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, main) = get(&master, "/api/v1/builds?branch=main").await;
    assert_eq!(main["items"].as_array().unwrap().len(), 2);
    let (_, failed) = get(&master, "/api/v1/builds?result=failure").await;
    assert_eq!(failed["items"][0]["builder_name"], "broken");
    let (_, unit_main) = get(&master, "/api/v1/builds?builder=unit&branch=main&result=0").await;
    assert_eq!(unit_main["items"].as_array().unwrap().len(), 1);
    let (_, page) = get(&master, "/api/v1/builds?limit=1&offset=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["build_id"], all["items"][1]["build_id"]);
    let (_, later) = get(&master, "/api/v1/builds?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later["items"].as_array().unwrap().len(), 0);

    let build_id = unit_main["items"][0]["build_id"].as_i64().unwrap();
    let (status, build) = get(&master, &format!("/api/v1/builds/{build_id}")).await;
    assert_eq!((status, &build["results_name"]), (200, &json!("success")));
    let (_, steps) = get(&master, &format!("/api/v1/builds/{build_id}/steps")).await;
    let log_id = steps["items"][0]["logs"][0]["log_id"].as_i64().unwrap();
    let (_, lines) = get(&master, &format!("/api/v1/logs/{log_id}/lines?from=1&to=5")).await;
    let streams: Vec<(&str, &str)> = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap(),
                l["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        streams.contains(&("stdout", "hello")) && streams.contains(&("stderr", "oops")),
        "{lines}"
    );
    assert_eq!(
        lines["lines"][0]["line_number"], 1,
        "the range starts where asked"
    );

    let (_, builders) = get(&master, "/api/v1/builders").await;
    assert_eq!(builders["items"].as_array().unwrap().len(), 2);
    let (status, broken) = get(&master, "/api/v1/builders/broken").await;
    assert_eq!(
        (status, &broken["last_results_name"]),
        (200, &json!("failure"))
    );
    let (_, requests) = get(
        &master,
        "/api/v1/build_requests?state=completed&builder=unit",
    )
    .await;
    assert_eq!(requests["items"].as_array().unwrap().len(), 2);
    let (_, workers) = get(&master, "/api/v1/workers").await;
    assert_eq!(workers["items"][0]["name"], "local");
    let (_, masters) = get(&master, "/api/v1/masters").await;
    assert_eq!(masters["items"][0]["active"], true);
    let (status, _) = get(&master, "/api/v1/changes?branch=main").await;
    assert_eq!(status, 200);

    for (path, want) in [
        ("/api/v1/builds?colour=red", 400),
        ("/api/v1/builds?limit=0", 400),
        ("/api/v1/builds?limit=abc", 400),
        ("/api/v1/builds?since=yesterday", 400),
        ("/api/v1/builds?result=bogus", 400),
        ("/api/v1/build_requests?state=lost", 400),
        ("/api/v1/builds/999999", 404),
        ("/api/v1/builds/abc", 404),
        ("/api/v1/builds/999999/steps", 404),
        ("/api/v1/logs/999999/lines", 404),
        ("/api/v1/builders/nope", 404),
        (&format!("/api/v1/logs/{log_id}/lines?from=5&to=2"), 400),
    ] {
        let (status, body) = get(&master, path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{path}: {body}"
        );
    }
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_the_queue_builds_requests_and_outages() {
    let server = DedicatedServer::start().await;
    let master = TestMaster::start_with(server.url(), CONFIG, |s| {
        s.database.request_deadline_s = 1.0
    })
    .await;
    force(&master, "unit", "main").await;
    eventually("the build", Duration::from_secs(15), || async {
        (count(
            server.url(),
            "SELECT count(*) FROM buildmaster_v1.builds WHERE complete",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    server.stop(StopMode::Fast).await;
    let (status, body) = get(&master, "/api/v1/builds").await;
    assert_eq!(status, 503, "{body}");
    let during = reqwest::get(master.url("/metrics")).await.unwrap();
    assert_eq!(
        during.status(),
        200,
        "/metrics must answer during an outage"
    );
    let during = during.text().await.unwrap();
    assert!(during.contains("buildmaster_db_up 0"), "{during}");
    assert!(
        !during.contains("buildmaster_builds_running"),
        "no stale queue figures during an outage"
    );
    server.start_again().await;
    let (status, _) = get(&master, "/api/v1/builds").await;
    assert_eq!(status, 200);
    let text = reqwest::get(master.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "buildmaster_db_up 1",
        "buildmaster_db_pool_size ",
        "buildmaster_db_pool_available ",
        "buildmaster_db_pool_waiting 0",
        "buildmaster_build_requests{state=\"pending\"} 0",
        "buildmaster_builds_running 0",
        "buildmaster_build_duration_seconds_count 1",
        "buildmaster_step_duration_seconds_count 1",
        "buildmaster_http_requests_total{route=\"/api/v1/builders/{name}/force\",method=\"POST\",status=\"201\"} 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let outages: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("buildmaster_db_outages_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(outages >= 1, "the restart was not counted:\n{text}");
    let log_bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("buildmaster_log_bytes_stored_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(log_bytes > 10, "{text}");
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_api_routes_and_each_is_served() {
    let db = TestDb::new().await;
    let master = TestMaster::start_with(&db.url, CONFIG, |_| {}).await;
    let (status, doc) = get(&master, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("POST", "/api/v1/changes"),
        ("POST", "/api/v1/builders/{name}/force"),
        ("POST", "/api/v1/builds/{id}/stop"),
        ("POST", "/api/v1/build_requests/{id}/cancel"),
        ("GET", "/api/v1/builders"),
        ("GET", "/api/v1/builders/{name}"),
        ("GET", "/api/v1/builds"),
        ("GET", "/api/v1/builds/{id}"),
        ("GET", "/api/v1/builds/{id}/steps"),
        ("GET", "/api/v1/logs/{id}/lines"),
        ("GET", "/api/v1/build_requests"),
        ("GET", "/api/v1/changes"),
        ("GET", "/api/v1/workers"),
        ("GET", "/api/v1/masters"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented route is served (the fallback answers "no such endpoint").
    let client = reqwest::Client::new();
    for (method, path) in &documented {
        let url = master.url(&path.replace("{name}", "unit").replace("{id}", "1"));
        let response = match method.as_str() {
            "GET" => client.get(&url).send().await.unwrap(),
            _ => client
                .post(&url)
                .json(&json!({"author": "x"}))
                .send()
                .await
                .unwrap(),
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["detail"], "no such endpoint",
            "{method} {path} is documented but not served"
        );
    }
    master.stop().await.unwrap();
}
