//! The web status page in a real headless browser (Debian's chromium): the
//! running build appears on the front page, its log follows the step's
//! output, and the page renders during a database outage. Screenshots are
//! saved under `target/test-screenshots/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use buildmaster::pgserver::StopMode;
use serde_json::json;

use crate::support::{DedicatedServer, TestMaster, count, eventually};

const CONFIG: &str = r#"
[[workers]]
name = "local"
max_builds = 2
[[builders]]
name = "ticker"
workers = ["local"]
[[builders.steps]]
name = "count"
command = "for i in $(seq 1 60); do echo tick-$i; sleep 0.2; done"
[[builders]]
name = "quick"
workers = ["local"]
[[builders.steps]]
name = "test"
command = ["true"]
[[schedulers]]
name = "force"
kind = "force"
builders = ["ticker", "quick"]
"#;

fn chromium() -> PathBuf {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "the web page is tested in a real browser and none is installed: \
                 apt-get install chromium (.ci/run does this)"
        )
    })
}

/// Loads `url` headless, lets its scripts run for `budget_ms` of virtual
/// time, saves a screenshot, and returns the DOM.
fn browse(url: &str, budget_ms: u32, width: u32, screenshot: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let run = |extra: Vec<String>| {
        let out = Command::new(chromium())
            .args(common)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},900"))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .args(extra)
            .arg(url)
            .output()
            .expect("running chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shot = dir.join(screenshot);
    run(vec![format!("--screenshot={}", shot.display())]);
    println!(
        "screenshot: {}",
        shot.canonicalize().unwrap_or(shot).display()
    );
    run(vec!["--dump-dom".to_owned()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_running_build_follows_its_log_and_survives_an_outage() {
    let server = DedicatedServer::start().await;
    let master = TestMaster::start_with(server.url(), CONFIG, |s| {
        s.database.request_deadline_s = 1.0
    })
    .await;
    let client = reqwest::Client::new();
    for builder in ["quick", "ticker"] {
        let r = client
            .post(master.url(&format!("/api/v1/builders/{builder}/force")))
            .json(&json!({"branch": "main"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let build_id: i64 = eventually("the ticker to print", Duration::from_secs(15), || async {
        let row = crate::support::connect(server.url())
            .await
            .query_opt(
                "SELECT b.build_id FROM buildmaster_v1.builds b JOIN buildmaster_v1.logs l USING (build_id)
                  WHERE b.builder_name = 'ticker' AND l.num_lines > 3",
                &[],
            )
            .await
            .unwrap()?;
        Some(row.get(0))
    })
    .await;
    eventually("the quick build", Duration::from_secs(15), || async {
        (count(
            server.url(),
            "SELECT count(*) FROM buildmaster_v1.builds WHERE builder_name = 'quick' AND complete",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    let front_url = master.url("/");
    let front = tokio::task::spawn_blocking(move || browse(&front_url, 1000, 1100, "front.png"))
        .await
        .unwrap();
    assert!(
        front.contains("ticker") && front.contains("quick"),
        "{front}"
    );
    assert!(
        front.contains("running"),
        "the running build must show: {front}"
    );
    assert!(front.contains(&format!("/builds/{build_id}")), "{front}");

    let build_url = master.url(&format!("/builds/{build_id}"));
    let first = {
        let url = build_url.clone();
        tokio::task::spawn_blocking(move || browse(&url, 1500, 420, "build-phone.png"))
            .await
            .unwrap()
    };
    let ticks_first = first.matches("tick-").count();
    assert!(ticks_first >= 3, "the log must show in the page: {first}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = {
        let url = build_url.clone();
        tokio::task::spawn_blocking(move || browse(&url, 1500, 420, "build-phone-later.png"))
            .await
            .unwrap()
    };
    let ticks_second = second.matches("tick-").count();
    assert!(
        ticks_second > ticks_first,
        "the log did not follow the step: {ticks_first} then {ticks_second}"
    );

    server.stop(StopMode::Fast).await;
    let front_url = master.url("/");
    let during =
        tokio::task::spawn_blocking(move || browse(&front_url, 1000, 1100, "front-outage.png"))
            .await
            .unwrap();
    assert!(during.contains("database is unreachable"), "{during}");
    assert!(
        during.contains("ticker"),
        "the page still shows what the master knew: {during}"
    );
    server.start_again().await;
    master.stop().await.unwrap();
}
