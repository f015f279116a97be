//! The test harness: real PostgreSQL servers started from this machine's
//! binaries (no mocks, no Docker).
//!
//! - [`shared_server`]: one server per test run, with a template database
//!   migrated once; [`TestDb::new`] copies it for each test, so tests run in
//!   parallel without seeing each other.
//! - [`DedicatedServer`]: a server of a test's own, which the test may
//!   restart, stop, crash and start again.
//!
//! Every server is stopped and its directory removed when the test process
//! exits, however it exits (see `Cluster::stop_when_process_exits`).
//! Binaries are found by `PgBinaries::locate` (`BUILDMASTER_PG_BINDIR`,
//! `pg_config --bindir`, `/usr/lib/postgresql/*/bin`); when none are found
//! the tests fail with a message that says how to install them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use buildmaster::pgserver::{Cluster, ClusterOptions, PgBinaries, StopMode};
use buildmaster::store::migrate::migrate;
use buildmaster::store::{Budget, Store, StoreOptions, connection_config};

pub const SUPERUSER: &str = "bmtest";
pub const PASSWORD: &str = "bmtest-password";
const TEMPLATE: &str = "bm_template";

/// Settings that make a throwaway server fast without weakening what the
/// tests check: fsync only matters when the machine itself crashes, and
/// synchronous_commit stays on so an acknowledged commit survives kill -9.
fn test_settings() -> Vec<(String, String)> {
    [
        ("fsync", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "200"),
        ("log_timezone", "UTC"),
        ("log_line_prefix", "'%m [%p] '"),
        ("shared_buffers", "32MB"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn binaries() -> PgBinaries {
    match PgBinaries::locate() {
        Ok(binaries) => binaries,
        Err(error) => panic!("the tests need a PostgreSQL server: {error}"),
    }
}

/// Makes a directory for a server under the system temp dir.
fn server_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary directory for a test server");
    dir.keep()
}

fn new_cluster(prefix: &str) -> (Cluster, PathBuf) {
    let dir = server_dir(prefix);
    let cluster = Cluster::open(
        binaries(),
        &dir.join("data"),
        &dir,
        ClusterOptions {
            superuser: SUPERUSER.to_owned(),
            password: PASSWORD.to_owned(),
            settings: test_settings(),
        },
    )
    .unwrap_or_else(|e| panic!("initialising a test server in {}: {e}", dir.display()));
    cluster
        .stop_when_process_exits(std::process::id(), &dir)
        .expect("starting the server watchdog");
    (cluster, dir)
}

/// A store with short timeouts, pointed at `url`.
pub fn store_for(url: &str) -> Store {
    let options = test_store_options();
    let config = connection_config(url, &options).expect("test URL");
    Store::new(config, &options).expect("test store")
}

pub fn test_store_options() -> StoreOptions {
    StoreOptions {
        pool_size: 8,
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(10),
        ..StoreOptions::default()
    }
}

/// Runs `body` on a fresh runtime in another thread (for set-up work that
/// happens inside a `OnceLock` initialiser, itself inside a test runtime).
fn block_on_fresh_runtime<T: Send + 'static>(
    body: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body)
    })
    .join()
    .expect("set-up thread panicked")
}

/// Connects once as the superuser and runs `sql`.
pub async fn admin_execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("admin connection: {e}"));
    let task = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = task.await;
}

/// A direct client (no pool, no retry), for audits.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting for an audit: {e}"));
    tokio::spawn(connection);
    client
}

/// `SELECT count(*) ...` on a fresh connection.
pub async fn count(url: &str, sql: &str) -> i64 {
    connect(url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

pub struct SharedServer {
    cluster: Cluster,
    next_db: AtomicU32,
}

/// The server shared by the tests of this run, with its template database.
pub fn shared_server() -> &'static SharedServer {
    static SHARED: OnceLock<SharedServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (mut cluster, _dir) = new_cluster("bm-shared-");
        cluster
            .start(0)
            .unwrap_or_else(|e| panic!("starting the shared test server: {e}"));
        let admin = cluster.url("postgres");
        let template_url = cluster.url(TEMPLATE);
        block_on_fresh_runtime(async move {
            admin_execute(&admin, &format!("CREATE DATABASE {TEMPLATE}")).await;
            let store = store_for(&template_url);
            migrate(&store, Budget::For(Duration::from_secs(60)))
                .await
                .unwrap_or_else(|e| panic!("migrating the template database: {e}"));
            store.close();
        });
        SharedServer {
            cluster,
            next_db: AtomicU32::new(0),
        }
    })
}

/// Port of the shared server.
pub fn shared_server_port() -> u16 {
    shared_server().cluster.port()
}

/// A database of one test's own, copied from the migrated template.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = shared_server();
        let n = server.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{}", std::process::id(), n);
        admin_execute(
            &server.cluster.url("postgres"),
            &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"),
        )
        .await;
        TestDb {
            url: server.cluster.url(&name),
            name,
        }
    }

    /// An empty, unmigrated database on the shared server.
    pub async fn empty() -> TestDb {
        let server = shared_server();
        let n = server.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("e{}_{}", std::process::id(), n);
        admin_execute(
            &server.cluster.url("postgres"),
            &format!("CREATE DATABASE {name}"),
        )
        .await;
        TestDb {
            url: server.cluster.url(&name),
            name,
        }
    }

    pub fn store(&self) -> Store {
        store_for(&self.url)
    }

    /// Loads `tests/it/fixtures/history.sql` (a small complete history).
    pub async fn load_history(&self) {
        let sql = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/fixtures/history.sql"
        ))
        .expect("fixture file");
        admin_execute(&self.url, &sql).await;
    }

    /// Creates a login holding only `buildmaster_reader`, with the operator
    /// script `ops/create-reader-login.sql` run by psql; returns its URL.
    pub fn reader_login(&self) -> (String, String) {
        let login = format!("reader_{}", self.name);
        let password = "reader-secret";
        let out = psql(&self.url)
            .args([
                "-v",
                &format!("login={login}"),
                "-v",
                &format!("password={password}"),
            ])
            .arg("-f")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/ops/create-reader-login.sql"
            ))
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "ops/create-reader-login.sql failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = shared_server();
        let url = format!(
            "postgresql://{login}:{password}@127.0.0.1:{}/{}",
            server.cluster.port(),
            self.name
        );
        (login, url)
    }

    pub fn server_url(&self, dbname: &str) -> String {
        shared_server().cluster.url(dbname)
    }
}

/// A server a test owns: it may restart, stop, crash and start it again.
/// Database `buildmaster` on it is migrated.
pub struct DedicatedServer {
    cluster: Arc<Mutex<Cluster>>,
    dir: PathBuf,
    url: String,
    pub port: u16,
}

impl DedicatedServer {
    pub async fn start() -> DedicatedServer {
        let (cluster, dir) = tokio::task::spawn_blocking(|| {
            let (mut cluster, dir) = new_cluster("bm-own-");
            cluster
                .start(0)
                .unwrap_or_else(|e| panic!("starting a dedicated test server: {e}"));
            (cluster, dir)
        })
        .await
        .expect("server start task");
        admin_execute(&cluster.url("postgres"), "CREATE DATABASE buildmaster").await;
        let url = cluster.url("buildmaster");
        let store = store_for(&url);
        migrate(&store, Budget::For(Duration::from_secs(60)))
            .await
            .unwrap_or_else(|e| panic!("migrating the dedicated server: {e}"));
        store.close();
        DedicatedServer {
            port: cluster.port(),
            cluster: Arc::new(Mutex::new(cluster)),
            dir,
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A streaming standby of this server, started.
    pub async fn standby(&self) -> DedicatedServer {
        let primary = self.cluster.clone();
        let (cluster, dir) = tokio::task::spawn_blocking(move || {
            let dir = server_dir("bm-standby-");
            let guard = primary.lock().expect("cluster lock");
            let mut standby = guard
                .standby(&dir)
                .unwrap_or_else(|e| panic!("making a standby: {e}"));
            drop(guard);
            standby
                .stop_when_process_exits(std::process::id(), &dir)
                .expect("watchdog");
            standby
                .start(0)
                .unwrap_or_else(|e| panic!("starting the standby: {e}"));
            (standby, dir)
        })
        .await
        .expect("standby task");
        let url = cluster.url("buildmaster");
        DedicatedServer {
            port: cluster.port(),
            cluster: Arc::new(Mutex::new(cluster)),
            dir,
            url,
        }
    }

    pub async fn promote(&self) {
        self.with_cluster("promoting", |c| c.promote()).await
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn with_cluster<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Cluster) -> Result<T, buildmaster::pgserver::PgServerError> + Send + 'static,
    ) -> T {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = cluster.lock().expect("cluster lock");
            f(&mut guard).unwrap_or_else(|e| panic!("{what}: {e}\n{}", guard.log_tail(20)))
        })
        .await
        .expect("server control task")
    }

    pub async fn restart(&self, mode: StopMode) {
        self.with_cluster("restarting the server", move |c| c.restart(mode))
            .await
    }

    pub async fn stop(&self, mode: StopMode) {
        self.with_cluster("stopping the server", move |c| c.stop(mode))
            .await
    }

    pub async fn start_again(&self) {
        self.with_cluster("starting the server again", |c| c.start_again())
            .await
    }

    pub async fn kill_postmaster(&self) {
        self.with_cluster("killing the postmaster", |c| {
            c.kill_postmaster().map(|_| ())
        })
        .await;
    }

    pub async fn kill_backend(&self, pid: i32) {
        self.with_cluster("killing a backend", move |c| c.kill_process(pid))
            .await
    }

    /// When the server last said it was ready to accept connections, from
    /// its log (millisecond timestamps in UTC).
    pub async fn last_ready_at(&self) -> Option<SystemTime> {
        let log = self
            .with_cluster("reading the server log", |c| {
                Ok(std::fs::read_to_string(c.log_file()).unwrap_or_default())
            })
            .await;
        log.lines()
            .rfind(|l| l.contains("database system is ready to accept connections"))
            .and_then(|line| {
                let stamp = line.get(..23)?;
                let naive =
                    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f").ok()?;
                Some(SystemTime::from(naive.and_utc()))
            })
    }
}

impl Drop for DedicatedServer {
    fn drop(&mut self) {
        if let Ok(cluster) = self.cluster.lock() {
            let _ = cluster.stop(StopMode::Immediate);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A psql command connected to `url`, quiet, stopping at the first error.
pub fn psql(url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(binaries().bin("psql"));
    cmd.arg("-X")
        .arg("-q")
        .args(["-v", "ON_ERROR_STOP=1"])
        .arg(url);
    cmd
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    buildmaster::pgserver::free_port().expect("free port")
}

/// A master running inside the test process, on a free port.
pub struct TestMaster {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestMaster {
    /// Starts a master on `url` with the build configuration `toml` (the
    /// `[[workers]]`, `[[builders]]`, `[[schedulers]]` tables), then
    /// `adjust`, and waits until it is ready.
    pub async fn start_with(
        url: &str,
        toml: &str,
        adjust: impl FnOnce(&mut buildmaster::settings::Settings),
    ) -> TestMaster {
        let settings =
            buildmaster::settings::Settings::parse(toml, None).expect("test configuration");
        TestMaster::start_settings(url, settings, adjust).await
    }

    /// Starts a master on `url` with `adjust` applied to default settings,
    /// and waits until it is ready.
    pub async fn start(
        url: &str,
        adjust: impl FnOnce(&mut buildmaster::settings::Settings),
    ) -> TestMaster {
        TestMaster::start_settings(url, buildmaster::settings::Settings::default(), adjust).await
    }

    async fn start_settings(
        url: &str,
        mut settings: buildmaster::settings::Settings,
        adjust: impl FnOnce(&mut buildmaster::settings::Settings),
    ) -> TestMaster {
        use buildmaster::master::{DatabaseSource, Master};
        settings.http.listen = "127.0.0.1:0".parse().unwrap();
        settings.master.name = Some(format!("test-master-{}", uuid::Uuid::new_v4().simple()));
        settings.master.heartbeat_interval_s = 0.5;
        settings.master.poll_interval_s = 0.5;
        settings.master.work_dir =
            std::env::temp_dir().join(format!("bm-work-{}", uuid::Uuid::new_v4().simple()));
        adjust(&mut settings);
        let master = Master::build(settings, DatabaseSource::Url(url.to_owned()))
            .await
            .expect("building the master");
        let base = format!("http://{}", master.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(master.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return TestMaster {
                        base,
                        stop: Some(tx),
                        task: Some(task),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the test master did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the master and returns how its run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("master task panicked"),
            None => Ok(()),
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `buildmaster up` process with its own directory and configuration.
pub struct UpProcess {
    pub child: std::process::Child,
    dir: Option<tempfile::TempDir>,
    pub port: u16,
}

impl UpProcess {
    /// Starts `buildmaster up` against `url` with `config` (TOML, without
    /// `[http]`, which is added) in a fresh directory; waits until ready.
    pub async fn start(url: &str, config: &str) -> UpProcess {
        let dir = tempfile::tempdir().unwrap();
        UpProcess::start_in(url, config, dir).await
    }

    /// Like `start`, in `dir` (to restart a master with its state).
    pub async fn start_in(url: &str, config: &str, dir: tempfile::TempDir) -> UpProcess {
        let port = free_port();
        std::fs::write(
            dir.path().join("buildmaster.toml"),
            format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("master.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_buildmaster"))
            .args(["up", "--database-url", url])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("BUILDMASTER_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning buildmaster up");
        let process = UpProcess {
            child,
            dir: Some(dir),
            port,
        };
        let client = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{port}/readyz");
        eventually("the master to be ready", Duration::from_secs(30), || {
            let (client, ready) = (client.clone(), ready.clone());
            async move {
                let r = client.get(&ready).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(std::path::Path::new("/nonexistent"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("master.log")).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone; returns the directory.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("directory")
    }

    /// SIGINT and wait (up to 30 s) for a clean exit.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("master did not stop within 30 s of SIGINT:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A build configuration with one local worker running `max_builds` builds,
/// one builder of one step (`command` run by `sh -c`), and a force
/// scheduler for it.
pub fn force_config(builder: &str, step: &str, command: &str, max_builds: u32) -> String {
    format!(
        "[[workers]]\nname = \"local\"\nmax_builds = {max_builds}\n\
         [[builders]]\nname = \"{builder}\"\nworkers = [\"local\"]\n\
         [[builders.steps]]\nname = \"{step}\"\ncommand = {command:?}\n\
         [[schedulers]]\nname = \"force\"\nkind = \"force\"\nbuilders = [\"{builder}\"]\n"
    )
}
