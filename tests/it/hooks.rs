//! Push webhooks from GitHub and GitLab: authenticated, one change per
//! commit, redeliveries harmless, bad payloads refused with a clear 4xx.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use buildmaster::settings::Secret;

use crate::support::{TestDb, TestMaster, count};

const SECRET: &str = "webhook-secret-0123456789";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn push_payload() -> Value {
    json!({
        "ref": "refs/heads/main",
        "deleted": false,
        "repository": {"clone_url": "https://github.com/example/app.git", "html_url": "https://github.com/example/app", "full_name": "example/app"},
        "commits": [
            {"id": "1111111", "message": "First", "timestamp": "2026-12-01T10:00:00Z", "url": "https://github.com/example/app/commit/1111111",
             "author": {"name": "Alice", "email": "alice@example.org"}, "added": ["a.rs"], "removed": [], "modified": []},
            {"id": "2222222", "message": "Second", "timestamp": "2026-12-01T10:05:00+02:00",
             "author": {"name": "Bob", "email": "bob@example.org"}, "added": [], "removed": ["old.rs"], "modified": ["a.rs"]}
        ]
    })
}

async fn github(
    master: &TestMaster,
    event: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(master.url("/hooks/github"))
        .header("X-GitHub-Event", event)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_signed_github_push_records_one_change_per_commit_once() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |s| {
        s.hooks.github_secret = Some(Secret::new(SECRET))
    })
    .await;
    let ping = br#"{"zen": "Keep it logically awesome."}"#;
    let (status, body) = github(&master, "ping", ping, Some(sign(ping))).await;
    assert_eq!((status, &body["pong"]), (200, &json!(true)), "{body}");

    let payload = serde_json::to_vec(&push_payload()).unwrap();
    let (status, body) = github(&master, "push", &payload, Some(sign(&payload))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["new"], 2);
    let (status, body) = github(&master, "push", &payload, Some(sign(&payload))).await;
    assert_eq!(
        (status, &body["new"]),
        (200, &json!(0)),
        "a redelivery must record nothing new: {body}"
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.changes").await,
        2
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.changes WHERE source = 'github' AND branch = 'main'
                AND repository = 'https://github.com/example/app.git' AND author = 'Bob <bob@example.org>'
                AND when_at = '2026-12-01T08:05:00Z'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.change_files").await,
        3
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_malformed_github_payloads_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |s| {
        s.hooks.github_secret = Some(Secret::new(SECRET))
    })
    .await;
    let payload = serde_json::to_vec(&push_payload()).unwrap();
    let (status, body) = github(&master, "push", &payload, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256")
    );
    let (status, _) = github(&master, "push", &payload, Some(sign(b"something else"))).await;
    assert_eq!(status, 401);
    let (status, _) = github(&master, "push", &payload, Some("sha256=zz".to_owned())).await;
    assert_eq!(status, 401);
    let broken = b"{\"ref\": ";
    let (status, body) = github(&master, "push", broken, Some(sign(broken))).await;
    assert_eq!(status, 400, "{body}");
    let wrong_shape = br#"{"ref": 7}"#;
    let (status, body) = github(&master, "push", wrong_shape, Some(sign(wrong_shape))).await;
    assert_eq!(status, 422, "{body}");
    let tag = serde_json::to_vec(&json!({"ref": "refs/tags/v1", "repository": {}, "commits": []}))
        .unwrap();
    let (status, body) = github(&master, "push", &tag, Some(sign(&tag))).await;
    assert_eq!(status, 200);
    assert!(
        body["ignored"].as_str().unwrap().contains("not a branch"),
        "{body}"
    );
    assert_eq!(
        count(&db.url, "SELECT count(*) FROM buildmaster_v1.changes").await,
        0
    );
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_hook_without_its_secret_is_not_enabled() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |_| {}).await;
    let payload = serde_json::to_vec(&push_payload()).unwrap();
    let (status, body) = github(&master, "push", &payload, Some(sign(&payload))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("github_secret"));
    master.stop().await.unwrap();
}

#[tokio::test]
async fn a_gitlab_push_with_the_right_token_records_its_commits() {
    let db = TestDb::new().await;
    let master = TestMaster::start(&db.url, |s| {
        s.hooks.gitlab_token = Some(Secret::new(SECRET))
    })
    .await;
    let payload = json!({
        "object_kind": "push",
        "ref": "refs/heads/develop",
        "project": {"git_http_url": "https://gitlab.example.org/group/app.git", "path_with_namespace": "group/app"},
        "commits": [{"id": "abc", "message": "Fix", "timestamp": "2026-12-01T10:00:00Z",
                     "author": {"name": "Carol", "email": "carol@example.org"}, "added": [], "modified": ["x"], "removed": []}]
    });
    let send = |token: &'static str| {
        reqwest::Client::new()
            .post(master.url("/hooks/gitlab"))
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", token)
            .json(&payload)
            .send()
    };
    assert_eq!(send("wrong").await.unwrap().status().as_u16(), 401);
    let response = send(SECRET).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.changes WHERE source = 'gitlab' AND branch = 'develop' AND revision = 'abc'"
        )
        .await,
        1
    );
    master.stop().await.unwrap();
}
