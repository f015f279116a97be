//! `POST /api/v1/changes`: recorded once, idempotent, authenticated, clear
//! about bad input, and honest while the database is away.

use std::time::{Duration, Instant};

use buildmaster::pgserver::StopMode;
use buildmaster::settings::Secret;
use serde_json::{Value, json};

use crate::support::{DedicatedServer, TestDb, TestMaster, connect, count, eventually};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn post(
    master: &TestMaster,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client().post(master.url("/api/v1/changes")).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn change(revision: &str) -> Value {
    json!({
        "author": "Alice <alice@example.org>",
        "comments": "Fix the parser",
        "repository": "https://git.example.org/app.git",
        "branch": "main",
        "revision": revision,
        "files": ["src/parser.rs", "README.md"],
        "when": "2026-11-30T12:00:00Z",
        "properties": {"ticket": 42}
    })
}

#[tokio::test]
async fn a_posted_change_is_recorded_and_visible_in_the_published_view() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |_| {}).await;
    let (status, body, _) = post(&master, &change("a1b2c3"), None).await;
    assert_eq!(status, 201, "{body}");
    let id = body["change_id"].as_i64().expect("change_id");
    let audit = connect(&db.url).await;
    let row = audit
        .query_one(
            "SELECT author, branch, revision, when_at::text, properties->>'ticket', source,
                    (SELECT count(*) FROM buildmaster_v1.change_files f WHERE f.change_id = c.change_id)
               FROM buildmaster_v1.changes c WHERE change_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Alice <alice@example.org>");
    assert_eq!(row.get::<_, String>(1), "main");
    assert_eq!(row.get::<_, String>(2), "a1b2c3");
    assert_eq!(row.get::<_, String>(3), "2026-11-30 12:00:00+00");
    assert_eq!(row.get::<_, String>(4), "42");
    assert_eq!(row.get::<_, String>(5), "api");
    assert_eq!(row.get::<_, i64>(6), 2);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_creates_nothing_new() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |_| {}).await;
    let (first, body1, _) = post(&master, &change("abc"), Some("push-123")).await;
    let (second, body2, headers) = post(&master, &change("abc"), Some("push-123")).await;
    assert_eq!((first, second), (201, 201));
    assert_eq!(body1, body2);
    assert_eq!(
        headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let (reused, body, _) = post(&master, &change("other"), Some("push-123")).await;
    assert_eq!(reused, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    let count = count(&db.url, "SELECT count(*) FROM buildmaster_v1.changes").await;
    assert_eq!(count, 1);
    master.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_json_error_that_says_what_is_wrong_and_changes_nothing() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |s| s.http.max_body_bytes = 4096).await;
    let raw = |body: &'static str, content_type: &'static str| {
        client()
            .post(master.url("/api/v1/changes"))
            .header("content-type", content_type)
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (raw("{not json", "application/json"), 400, ""),
        (
            raw("{\"author\": \"a\"}", "text/plain"),
            415,
            "Content-Type",
        ),
        (
            raw("{\"comments\": \"no author\"}", "application/json"),
            422,
            "author",
        ),
        (raw("{\"author\": 7}", "application/json"), 422, "author"),
        (
            raw(
                "{\"author\": \"a\", \"branh\": \"main\"}",
                "application/json",
            ),
            422,
            "branh",
        ),
        (
            raw("{\"author\": \"   \"}", "application/json"),
            422,
            "author",
        ),
        (
            raw(
                "{\"author\": \"a\", \"when\": \"yesterday\"}",
                "application/json",
            ),
            422,
            "when",
        ),
        (
            raw("{\"author\": \"a\\u0000b\"}", "application/json"),
            422,
            "NUL",
        ),
        (
            raw(
                "{\"author\": \"a\", \"properties\": {\"k\": \"x\\u0000\"}}",
                "application/json",
            ),
            422,
            "properties.k",
        ),
        (
            raw(
                "{\"author\": \"a\", \"properties\": [1]}",
                "application/json",
            ),
            422,
            "properties",
        ),
    ];
    for (request, want, mention) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, want, "{body}");
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains(mention),
            "{mention:?} not in {body}"
        );
    }
    let big = json!({"author": "a", "comments": "x".repeat(10_000)});
    let (status, body, _) = post(&master, &big, None).await;
    assert_eq!(status, 413, "{body}");
    let (status, _, _) = post(&master, &json!({"author": "a"}), Some(&"k".repeat(300))).await;
    assert_eq!(status, 400);
    let response = client()
        .get(master.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    let count = count(&db.url, "SELECT count(*) FROM buildmaster_v1.changes").await;
    assert_eq!(count, 0, "a refused request recorded a change");
    master.stop().await.unwrap();
}

#[tokio::test]
async fn with_a_write_token_a_post_needs_it() {
    let db = TestDb::new().await;
    let token = "a-very-long-write-token-0123456789";
    let master =
        TestMaster::start(&db.url, |s| s.http.write_token = Some(Secret::new(token))).await;
    let url = master.url("/api/v1/changes");
    let body = json!({"author": "a"});
    let none = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let wrong = client()
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = client()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 201);
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_a_post_waits_then_answers_503_with_retry_after() {
    let server = DedicatedServer::start().await;
    let master = TestMaster::start(server.url(), |s| s.database.request_deadline_s = 1.5).await;
    server.stop(StopMode::Fast).await;
    let started = Instant::now();
    let (status, body, headers) = post(&master, &change("down"), None).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "database_unavailable");
    assert!(headers.get("retry-after").is_some());
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    server.start_again().await;
    let (status, _, _) = post(&master, &change("up"), None).await;
    assert_eq!(status, 201);
    let audit = connect(server.url()).await;
    let revisions: Vec<String> = audit
        .query("SELECT revision FROM buildmaster_v1.changes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        revisions,
        vec!["up".to_owned()],
        "the refused change must not be stored"
    );
    master.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_posted_through_restarts_are_all_stored_once_and_every_request_built_once() {
    let server = DedicatedServer::start().await;
    let config = r#"
[[workers]]
name = "local"
max_builds = 4
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "test"
command = ["true"]
[[schedulers]]
name = "every-branch"
kind = "any-branch"
builders = ["unit"]
"#;
    let master = TestMaster::start_with(server.url(), config, |_| {}).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let (url, stop) = (master.url("/api/v1/changes"), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut acked = Vec::new();
                let mut failures = Vec::new();
                let mut n = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    let revision = format!("{p}-{n}");
                    let response = client
                        .post(&url)
                        .json(&json!({"author": "poster", "branch": format!("b{p}"), "revision": revision}))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let body: Value = r.json().await.unwrap();
                            acked.push((revision, body["change_id"].as_i64().unwrap()));
                        }
                        Ok(r) => failures.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (acked, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart(StopMode::Fast).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart(StopMode::Immediate).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.stop(StopMode::Fast).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    server.start_again().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut acked = Vec::new();
    for poster in posters {
        let (a, failures) = poster.await.unwrap();
        assert!(failures.is_empty(), "clients saw errors: {failures:?}");
        acked.extend(a);
    }
    let audit = connect(server.url()).await;
    let stored: Vec<(String, i64)> = audit
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
        "stored changes differ from acknowledged ones"
    );

    // Every change ends up in exactly one buildset, and every request is
    // built exactly once.
    eventually("every buildset to complete", Duration::from_secs(60), || async {
        let unscheduled = count(
            server.url(),
            "SELECT count(*) FROM buildmaster_private.changes c
              WHERE NOT EXISTS (SELECT 1 FROM buildmaster_private.sourcestamp_changes s WHERE s.change_id = c.id)",
        )
        .await;
        let open = count(server.url(), "SELECT count(*) FROM buildmaster_v1.buildsets WHERE NOT complete").await;
        (unscheduled == 0 && open == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(
            server.url(),
            "SELECT count(*) FROM (SELECT change_id FROM buildmaster_private.sourcestamp_changes
                                    GROUP BY change_id HAVING count(*) > 1) t"
        )
        .await,
        0,
        "a change was scheduled twice"
    );
    assert_eq!(
        count(
            server.url(),
            "SELECT count(*) FROM buildmaster_v1.build_requests r
              WHERE (SELECT count(*) FROM buildmaster_v1.builds b WHERE b.build_request_id = r.build_request_id) <> 1"
        )
        .await,
        0,
        "a request was not built exactly once"
    );
    let buildsets = count(
        server.url(),
        "SELECT count(*) FROM buildmaster_v1.buildsets",
    )
    .await;
    println!(
        "changes API through 2 restarts and a 15 s stop: {} changes posted and stored once, \
         {buildsets} buildsets, every request built once",
        acked.len()
    );
    master.stop().await.unwrap();
}
