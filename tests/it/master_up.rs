//! `buildmaster up` as a process: the embedded database by default, and a
//! master that stays alive and resumes through database restarts.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use buildmaster::pgserver::StopMode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{DedicatedServer, connect, free_port};

fn spawn_up(cwd: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_buildmaster"))
        .arg("up")
        .args(args)
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("BUILDMASTER_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning buildmaster up")
}

/// Whether `pid` is gone (or a zombie waiting to be reaped) within `limit`:
/// a postmaster removes its pid file just before it exits.
fn process_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = match state {
            None => false,
            Some(stat) => !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        };
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if status(client, url).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer {want} within {limit:?}");
}

/// Sends SIGINT and waits for the process to exit; returns its stderr.
fn interrupt_and_wait(mut child: Child) -> (std::process::ExitStatus, String) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("buildmaster did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_without_a_url_runs_an_embedded_database_and_stops_it_on_ctrl_c() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = spawn_up(cwd.path(), &["--listen", &listen]);
    let client = http();
    wait_for_status(
        &client,
        &format!("http://{listen}/healthz"),
        200,
        Duration::from_secs(60),
    )
    .await;
    wait_for_status(
        &client,
        &format!("http://{listen}/readyz"),
        200,
        Duration::from_secs(30),
    )
    .await;

    let data_dir = cwd.path().join(".buildmaster/postgres");
    let pid_file = data_dir.join("postmaster.pid");
    let postmaster: i32 = std::fs::read_to_string(&pid_file)
        .expect("the embedded server's postmaster.pid")
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let (status, stderr) = tokio::task::spawn_blocking(move || interrupt_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}\n{stderr}");
    assert!(stderr.contains("embedded PostgreSQL stopped"), "{stderr}");
    assert!(!pid_file.exists(), "postmaster.pid is still there");
    assert!(
        process_gone(postmaster, Duration::from_secs(5)),
        "the embedded PostgreSQL (pid {postmaster}) is still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stays_alive_through_database_restarts_and_resumes_its_heartbeat() {
    let server = DedicatedServer::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = cwd.path().join("buildmaster.toml");
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[master]\nname = \"it-up\"\nheartbeat_interval_s = 0.5\n"),
    )
    .unwrap();
    let child = spawn_up(cwd.path(), &["--database-url", server.url()]);
    let client = http();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_for_status(&client, &ready, 200, Duration::from_secs(30)).await;

    // Probe /healthz every 100 ms for the whole test, in the background.
    let probe_stop = tokio_util::sync::CancellationToken::new();
    let probe = {
        let (client, health, stop) = (client.clone(), health.clone(), probe_stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.is_cancelled() {
                match status(&client, &health).await {
                    Some(200) => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failed)
        })
    };

    server.restart(StopMode::Fast).await;
    wait_for_status(&client, &ready, 200, Duration::from_secs(10)).await;
    server.restart(StopMode::Immediate).await;
    wait_for_status(&client, &ready, 200, Duration::from_secs(10)).await;

    server.stop(StopMode::Fast).await;
    let mut saw_not_ready = false;
    for _ in 0..30 {
        if status(&client, &ready).await == Some(503) {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_not_ready, "/readyz never reported the database outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start_again().await;
    let back = Instant::now();
    wait_for_status(&client, &ready, 200, Duration::from_secs(10)).await;
    let ready_after = back.elapsed();

    // The heartbeat resumes: it moves past the moment the server came back.
    let audit = connect(server.url()).await;
    let restarted_at: chrono::DateTime<chrono::Utc> = audit
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .await
        .unwrap()
        .get(0);
    let mut resumed = false;
    for _ in 0..40 {
        let row = audit
            .query_one(
                "SELECT active, last_heartbeat_at FROM buildmaster_private.masters WHERE name = 'it-up'",
                &[],
            )
            .await
            .unwrap();
        let beat: chrono::DateTime<chrono::Utc> = row.get(1);
        if row.get::<_, bool>(0) && beat > restarted_at {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "the heartbeat did not resume after the restart");

    probe_stop.cancel();
    let (ok, failed) = probe.await.unwrap();
    assert_eq!(
        failed,
        0,
        "/healthz failed {failed} times out of {}",
        ok + failed
    );
    assert!(ok > 20, "too few /healthz probes ran: {ok}");

    let (status, stderr) = tokio::task::spawn_blocking(move || interrupt_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}\n{stderr}");
    assert!(
        stderr.contains("database unreachable"),
        "the outage start was not logged:\n{stderr}"
    );
    assert!(
        stderr.contains("database reachable again after"),
        "the outage end was not logged:\n{stderr}"
    );
    let row = audit
        .query_one("SELECT active, stopped_at IS NOT NULL FROM buildmaster_private.masters WHERE name = 'it-up'", &[])
        .await
        .unwrap();
    assert!(
        !row.get::<_, bool>(0) && row.get::<_, bool>(1),
        "the master was not marked stopped"
    );
    println!(
        "up: /healthz answered {ok} probes through two restarts and a stop, none failed; \
         /readyz ready {} ms after the server started",
        ready_after.as_millis()
    );
}
