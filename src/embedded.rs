//! The embedded database: with no database URL, `buildmaster up` runs its
//! own PostgreSQL from the machine's binaries in `<data_dir>/postgres`,
//! initialised on first use, listening on 127.0.0.1 (and a socket in
//! `<data_dir>/run`), and stops it on exit.
//!
//! Files in `<data_dir>`:
//! - `postgres/`: the cluster;
//! - `postgres.log`: the server log;
//! - `pgpass`: host, port, user and password in libpq's pgpass format
//!   (mode 0600), for `psql` (`PGPASSFILE=<data_dir>/pgpass`);
//! - `lock`: held by the running master, so two masters do not share (and
//!   stop) one embedded server.
//!
//! A server left running by a master that was killed is adopted by the next
//! start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::pgserver::{Cluster, ClusterOptions, PgBinaries, StopMode};

/// Database created in the embedded cluster for buildmaster.
pub const DATABASE: &str = "buildmaster";
/// Superuser of the embedded cluster.
pub const SUPERUSER: &str = "buildmaster";

/// A running embedded server. Stop it with [`EmbeddedDb::stop`].
pub struct EmbeddedDb {
    cluster: Cluster,
    data_dir: PathBuf,
    _lock: Flock<File>,
}

impl EmbeddedDb {
    /// Initialises (first use) and starts the server under `data_dir`,
    /// creating database `buildmaster` in it. Blocking.
    ///
    /// Fails when no PostgreSQL binaries are found (the message says how to
    /// install them or pass a URL), when another master holds `data_dir`,
    /// or when the server does not start.
    pub fn start(data_dir: &Path) -> anyhow::Result<EmbeddedDb> {
        let binaries = PgBinaries::locate()?;
        fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let lock = lock_data_dir(data_dir)?;
        let password = read_or_create_password(&data_dir.join("postgres.password"))?;
        let mut cluster = Cluster::open(
            binaries,
            &data_dir.join("postgres"),
            data_dir,
            ClusterOptions {
                superuser: SUPERUSER.to_owned(),
                password: password.clone(),
                settings: Vec::new(),
            },
        )?;
        let preferred_port = fs::read_to_string(data_dir.join("postgres.port"))
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
            .filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .unwrap_or(0);
        cluster.start(preferred_port).with_context(|| {
            format!(
                "starting the embedded PostgreSQL in {} (server log: {})",
                cluster.data_dir().display(),
                cluster.log_file().display()
            )
        })?;
        fs::write(data_dir.join("postgres.port"), cluster.port().to_string())
            .context("recording the embedded server's port")?;
        write_private(
            &data_dir.join("pgpass"),
            &format!("127.0.0.1:{}:*:{SUPERUSER}:{password}\n", cluster.port()),
        )?;
        Ok(EmbeddedDb {
            cluster,
            data_dir: data_dir.to_owned(),
            _lock: lock,
        })
    }

    /// Connection URL of database `buildmaster` (holds the password: never log it).
    pub fn url(&self) -> String {
        self.cluster.url(DATABASE)
    }

    /// Connection URL of the maintenance database `postgres`.
    pub fn admin_url(&self) -> String {
        self.cluster.url("postgres")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The state directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates database `buildmaster` when it does not exist yet.
    ///
    /// Fails when the server cannot be reached or refuses.
    pub async fn ensure_database(&self) -> anyhow::Result<()> {
        crate::store::admin::database_create_if_missing(&self.admin_url(), DATABASE)
            .await
            .context("preparing the embedded database")?;
        Ok(())
    }

    /// Stops the server (fast shutdown). Blocking.
    ///
    /// Fails when pg_ctl reports an error.
    pub fn stop(self) -> anyhow::Result<()> {
        self.cluster
            .stop(StopMode::Fast)
            .context("stopping the embedded PostgreSQL")
    }
}

fn lock_data_dir(data_dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = data_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => bail!(
            "another buildmaster is already using {}; stop it, or give this one another \
             [embedded] data_dir or a --database-url",
            data_dir.display()
        ),
        Err((_, errno)) => {
            Err(std::io::Error::from(errno)).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn read_or_create_password(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        let password = text.trim().to_owned();
        if !password.is_empty() {
            return Ok(password);
        }
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    write_private(path, &format!("{password}\n"))?;
    Ok(password)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
