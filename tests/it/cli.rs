//! The `buildmaster` binary's subcommands, run as a user would.

use std::process::Command;

use crate::support::{TestDb, free_port};

fn buildmaster() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_buildmaster"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("BUILDMASTER_CONFIG")
        .env("RUST_LOG", "warn");
    cmd
}

#[tokio::test]
async fn migrate_applies_the_schema_once_and_then_reports_nothing_to_do() {
    let db = TestDb::empty().await;
    let first = buildmaster()
        .args(["migrate", "--database-url", &db.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("applied migration V1__private_schema"),
        "{stdout}"
    );

    let second = buildmaster()
        .args(["migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{stdout}");
    assert!(stdout.contains("no migration applied"), "{stdout}");
}

#[tokio::test]
async fn migrate_gives_up_with_a_clear_message_when_the_database_is_unreachable() {
    let url = format!("postgresql://u:hunter2@127.0.0.1:{}/db", free_port());
    let started = std::time::Instant::now();
    let out = buildmaster()
        .args(["migrate", "--database-url", &url, "--wait", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("database unavailable"), "{stderr}");
    assert!(
        stderr.contains("127.0.0.1"),
        "the message should say which server: {stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
    assert!(started.elapsed().as_secs() < 10);
}

#[tokio::test]
async fn migrate_reports_bad_credentials_at_once() {
    let db = TestDb::empty().await;
    let url = db.url.replace(crate::support::PASSWORD, "wrong-password");
    let out = buildmaster()
        .args(["migrate", "--database-url", &url, "--wait", "30"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_with_its_name_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buildmaster.toml");
    std::fs::write(
        &path,
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[master]\nheartbeat_secs = 5\n",
    )
    .unwrap();
    let out = buildmaster()
        .args(["up", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("heartbeat_secs"), "{stderr}");
    assert!(stderr.contains("line 5"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[test]
fn a_bad_flag_value_is_refused_with_usage() {
    let out = buildmaster()
        .args(["up", "--listen", "not-an-address"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_lists_the_subcommands() {
    let out = buildmaster().arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["up", "migrate", "--config", "--log-format"] {
        assert!(
            stdout.contains(word),
            "--help does not mention {word}: {stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendchange_and_force_talk_to_a_running_master() {
    let db = TestDb::new().await;
    let config = r#"
[[workers]]
name = "local"
[[builders]]
name = "unit"
workers = ["local"]
[[builders.steps]]
name = "test"
command = ["true"]
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
"#;
    let master = crate::support::TestMaster::start_with(&db.url, config, |_| {}).await;
    let base = master.base.clone();
    let run = move |args: Vec<String>| {
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                buildmaster()
                    .args(&args)
                    .args(["--master", &base, "--wait", "2"])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run([
        "sendchange",
        "--branch",
        "main",
        "--revision",
        "abc123",
        "--author",
        "dev",
        "-m",
        "Fix",
        "-p",
        "ticket=7",
        "src/a.rs",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("change recorded"));
    let out = run([
        "force",
        "unit",
        "--reason",
        "release check",
        "--branch",
        "main",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("build forced"));
    let out = run(["force", "nope"].map(String::from).to_vec()).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no builder named"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        crate::support::count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.changes WHERE revision = 'abc123' AND properties->>'ticket' = '7'"
        )
        .await,
        1
    );
    assert_eq!(
        crate::support::count(
            &db.url,
            "SELECT count(*) FROM buildmaster_v1.buildsets WHERE reason = 'release check'"
        )
        .await,
        1
    );
    master.stop().await.unwrap();
}

#[test]
fn sendchange_gives_up_with_a_clear_message_when_no_master_answers() {
    let out = buildmaster()
        .args([
            "sendchange",
            "--master",
            &format!("http://127.0.0.1:{}", free_port()),
            "--wait",
            "1",
            "-b",
            "main",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gave up"), "{stderr}");
}
