//! Runs a PostgreSQL server from the machine's own binaries: the embedded
//! database of `buildmaster up` when no URL is given, and the throwaway
//! servers of the test suite.
//!
//! PostgreSQL refuses to run as root. When we are root, every server
//! command runs as an unprivileged OS user (`postgres` by default, or
//! `BUILDMASTER_PG_USER`) and the data directory is handed to that user.
//!
//! The server is started in a process group of its own, so a Ctrl-C in the
//! terminal reaches the master (which then stops the server in order) and
//! not the server directly.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

/// Environment variable naming the directory that holds `initdb`,
/// `pg_ctl` and `postgres`.
pub const BINDIR_ENV: &str = "BUILDMASTER_PG_BINDIR";
/// Environment variable naming the OS user that runs the server when
/// buildmaster runs as root.
pub const RUN_AS_ENV: &str = "BUILDMASTER_PG_USER";

/// Why a server could not be found, prepared, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "no PostgreSQL server binaries found (looked in ${BINDIR_ENV}, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin and PATH).\n\
         Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install \
         postgresql-server`; macOS: `brew install postgresql`), set {BINDIR_ENV} to the directory \
         that holds initdb and pg_ctl, or give buildmaster a database with --database-url / DATABASE_URL."
    )]
    NoBinaries,
    /// Running as root and the unprivileged user does not exist.
    #[error(
        "PostgreSQL refuses to run as root and user {0:?} does not exist; create it \
         (`useradd --system {0}`), name another with {RUN_AS_ENV}, or run buildmaster as a normal user"
    )]
    NoRunAsUser(String),
    /// A server command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// Exit status and output.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgServerError {
    let what = what.into();
    move |source| PgServerError::Io { what, source }
}

/// A directory of PostgreSQL server binaries.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries: `$BUILDMASTER_PG_BINDIR`, then
    /// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`,
    /// then `/usr/local/pgsql/bin`, then `initdb` on `PATH`.
    ///
    /// Fails with [`PgServerError::NoBinaries`] when none holds `initdb`,
    /// `pg_ctl` and `postgres`.
    pub fn locate() -> Result<PgBinaries, PgServerError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os(BINDIR_ENV) {
            // An explicit choice is not second-guessed.
            let dir = PathBuf::from(dir);
            return if Self::usable(&dir) {
                Ok(PgBinaries { dir })
            } else {
                Err(PgServerError::Command {
                    what: format!("using {BINDIR_ENV}={}", dir.display()),
                    detail: "that directory does not hold initdb, pg_ctl and postgres".to_owned(),
                })
            };
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
        }
        if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.0));
            candidates.extend(versions.into_iter().map(|(_, p)| p));
        }
        candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        candidates
            .into_iter()
            .find(|dir| Self::usable(dir))
            .map(|dir| PgBinaries { dir })
            .ok_or(PgServerError::NoBinaries)
    }

    fn usable(dir: &Path) -> bool {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The unprivileged OS user that runs the server when we are root.
#[derive(Debug, Clone)]
pub struct RunAs {
    uid: Uid,
    gid: Gid,
    name: String,
}

impl RunAs {
    /// `None` when not root (the server runs as us); otherwise the user
    /// named by `BUILDMASTER_PG_USER`, default `postgres`.
    ///
    /// Fails when we are root and that user does not exist.
    pub fn for_current_process() -> Result<Option<RunAs>, PgServerError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let name = std::env::var(RUN_AS_ENV).unwrap_or_else(|_| "postgres".to_owned());
        match User::from_name(&name) {
            Ok(Some(user)) => Ok(Some(RunAs {
                uid: user.uid,
                gid: user.gid,
                name,
            })),
            _ => Err(PgServerError::NoRunAsUser(name)),
        }
    }

    /// Checks that this user can reach `dir`: every ancestor must let it
    /// search (x). PostgreSQL's own error for this is obscure.
    ///
    /// Fails naming the first directory it cannot enter.
    pub fn check_reachable(&self, dir: &Path) -> Result<(), PgServerError> {
        use std::os::unix::fs::MetadataExt;
        for ancestor in dir.ancestors().skip(1) {
            let Ok(meta) = fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let can_enter = if meta.uid() == self.uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !can_enter {
                return Err(PgServerError::Command {
                    what: format!("preparing {} for user {}", dir.display(), self.name),
                    detail: format!(
                        "PostgreSQL runs as user {} (we are root), which cannot enter {}; \
                         make it traversable (chmod o+x {}) or choose another data directory",
                        self.name,
                        ancestor.display(),
                        ancestor.display()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) -> Result<(), PgServerError> {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|errno| {
            PgServerError::Io {
                what: format!("giving {} to user {}", path.display(), self.name),
                source: errno.into(),
            }
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How `pg_ctl stop` / `restart` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients (FATAL 57P01), then checkpoint.
    Fast,
    /// Abort: no checkpoint, crash recovery at the next start.
    Immediate,
}

impl fmt::Display for StopMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        })
    }
}

/// How to initialise and run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Superuser created by initdb.
    pub superuser: String,
    /// Its password (scram-sha-256 authentication on every connection).
    pub password: String,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

/// One PostgreSQL cluster (data directory) and the server running on it.
#[derive(Debug)]
pub struct Cluster {
    binaries: PgBinaries,
    data_dir: PathBuf,
    socket_dir: Option<PathBuf>,
    log_file: PathBuf,
    run_as: Option<RunAs>,
    options: ClusterOptions,
    port: u16,
}

/// Longest socket directory we use: the socket path must fit in 107 bytes.
const MAX_SOCKET_DIR_LEN: usize = 90;

impl Cluster {
    /// Prepares a cluster in `data_dir`, running `initdb` when the directory
    /// holds no cluster yet. `work_dir` receives the server log and socket.
    ///
    /// Fails when the directories cannot be created or handed to the server
    /// user, or when initdb fails.
    pub fn open(
        binaries: PgBinaries,
        data_dir: &Path,
        work_dir: &Path,
        options: ClusterOptions,
    ) -> Result<Cluster, PgServerError> {
        let run_as = RunAs::for_current_process()?;
        fs::create_dir_all(work_dir).map_err(io_err(format!("creating {}", work_dir.display())))?;
        let work_dir = work_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", work_dir.display())))?;
        let socket_dir = work_dir.join("run");
        let socket_dir = (socket_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN).then_some(socket_dir);
        if let Some(dir) = &socket_dir {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        if let Some(user) = &run_as {
            user.check_reachable(&work_dir)?;
            user.chown(&work_dir)?;
            if let Some(dir) = &socket_dir {
                user.chown(dir)?;
            }
        }
        let data_dir = if data_dir.is_absolute() {
            data_dir.to_owned()
        } else {
            std::env::current_dir()
                .map_err(io_err("reading the current directory"))?
                .join(data_dir)
        };
        let cluster = Cluster {
            binaries,
            data_dir,
            socket_dir,
            log_file: work_dir.join("postgres.log"),
            run_as,
            options,
            port: 0,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        Ok(cluster)
    }

    fn initdb(&self) -> Result<(), PgServerError> {
        fs::create_dir_all(&self.data_dir)
            .map_err(io_err(format!("creating {}", self.data_dir.display())))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("restricting {}", self.data_dir.display())))?;
        if let Some(user) = &self.run_as {
            user.chown(&self.data_dir)?;
        }
        // The password reaches initdb through a file only the server user reads.
        let pwfile = self.log_file.with_file_name("initdb.pw");
        {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&pwfile)
                .map_err(io_err("writing initdb's password file"))?;
            writeln!(file, "{}", self.options.password)
                .map_err(io_err("writing initdb's password file"))?;
        }
        if let Some(user) = &self.run_as {
            user.chown(&pwfile)?;
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--username")
            .arg(&self.options.superuser)
            .arg("--pwfile")
            .arg(&pwfile)
            .args([
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ]);
        let result = run(cmd, "initdb");
        let _ = fs::remove_file(&pwfile);
        result.map(|_| ())
    }

    /// A command for one of the server binaries, run as the server user.
    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.binaries.bin(binary));
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            // initdb and pg_ctl want a working directory they can read.
            cmd.current_dir("/");
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd
    }

    /// The port the server listens on (0 before the first start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The superuser's connection URL for `dbname` (over TCP on 127.0.0.1).
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            self.options.superuser, self.options.password, self.port, dbname
        )
    }

    /// PID of the postmaster, read from `postmaster.pid`, if a live one exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        alive.then_some(pid)
    }

    /// The port written in `postmaster.pid` by a running server.
    fn running_port(&self) -> Option<u16> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().nth(3)?.trim().parse().ok()
    }

    /// Starts the server on `port` (0: a free one), or adopts a server
    /// already running on this data directory. Waits until it accepts
    /// connections.
    ///
    /// Fails when the server does not come up within a minute; the error
    /// holds the end of the server log.
    pub fn start(&mut self, port: u16) -> Result<(), PgServerError> {
        if self.postmaster_pid().is_some() {
            if let Some(port) = self.running_port() {
                self.port = port;
                return self.wait_ready(Duration::from_secs(60));
            }
        }
        // A server killed with -9 leaves backends that hold shared memory for
        // a moment; a refused start is retried for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut port = if port == 0 { free_port()? } else { port };
        loop {
            match self.pg_ctl_start(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(error) if Instant::now() < deadline => {
                    let log = self.log_tail(5);
                    if log.contains("could not bind") || log.contains("Address already in use") {
                        port = free_port()?;
                    }
                    tracing::debug!(%error, "server start refused; trying again");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn pg_ctl_start(&self, port: u16) -> Result<(), PgServerError> {
        let mut server_opts = format!("-p {port} -c listen_addresses=127.0.0.1");
        match &self.socket_dir {
            Some(dir) => server_opts.push_str(&format!(" -k {}", dir.display())),
            None => server_opts.push_str(" -k ''"),
        }
        for (name, value) in &self.options.settings {
            server_opts.push_str(&format!(" -c {name}={value}"));
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o"])
            .arg(server_opts)
            // Keep terminal signals (Ctrl-C) away from the server.
            .process_group(0);
        run(cmd, "starting PostgreSQL")
            .map(|_| ())
            .map_err(|e| match e {
                PgServerError::Command { what, detail } => PgServerError::Command {
                    what,
                    detail: format!(
                        "{detail}\n--- end of {} ---\n{}",
                        self.log_file.display(),
                        self.log_tail(15)
                    ),
                },
                other => other,
            })
    }

    /// Waits until the server accepts connections (`pg_isready`).
    fn wait_ready(&self, limit: Duration) -> Result<(), PgServerError> {
        let deadline = Instant::now() + limit;
        loop {
            let status = Command::new(self.binaries.bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(io_err("running pg_isready"))?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PgServerError::Command {
                    what: "waiting for PostgreSQL".to_owned(),
                    detail: format!("not ready after {limit:?}\n{}", self.log_tail(15)),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a no-op when it is not running).
    ///
    /// Fails when pg_ctl reports an error other than "not running".
    pub fn stop(&self, mode: StopMode) -> Result<(), PgServerError> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-m"])
            .arg(mode.to_string());
        run(cmd, "stopping PostgreSQL").map(|_| ())
    }

    /// Restarts the server on the same port with `pg_ctl restart`.
    ///
    /// Fails when the restart fails.
    pub fn restart(&self, mode: StopMode) -> Result<(), PgServerError> {
        self.stop(mode)?;
        self.pg_ctl_start(self.port)
    }

    /// Starts the server again on the port it had, after a stop or a crash.
    ///
    /// Fails when it does not come up within 30 s.
    pub fn start_again(&mut self) -> Result<(), PgServerError> {
        let port = self.port;
        self.start(port)
    }

    /// Makes a streaming-replication standby of this (running) server in
    /// `work_dir` with `pg_basebackup`, ready to start.
    ///
    /// Fails when the base backup fails.
    pub fn standby(&self, work_dir: &Path) -> Result<Cluster, PgServerError> {
        fs::create_dir_all(work_dir).map_err(io_err(format!("creating {}", work_dir.display())))?;
        if let Some(user) = &self.run_as {
            user.check_reachable(work_dir)?;
            user.chown(work_dir)?;
        }
        let data_dir = work_dir.join("data");
        let mut cmd = self.command("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.options.superuser)
            .arg("-D")
            .arg(&data_dir)
            .args(["-R", "-X", "stream", "-c", "fast"])
            .env("PGPASSWORD", &self.options.password);
        run(cmd, "pg_basebackup")?;
        Cluster::open(
            self.binaries.clone(),
            &data_dir,
            work_dir,
            self.options.clone(),
        )
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    ///
    /// Fails when `pg_ctl promote` fails.
    pub fn promote(&self) -> Result<(), PgServerError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("promote")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60"]);
        run(cmd, "promoting the standby").map(|_| ())
    }

    /// Sends SIGKILL to the postmaster (simulating a crash of the server).
    ///
    /// Fails when no postmaster is running.
    pub fn kill_postmaster(&self) -> Result<i32, PgServerError> {
        let pid = self
            .postmaster_pid()
            .ok_or_else(|| PgServerError::Command {
                what: "killing the postmaster".to_owned(),
                detail: "no postmaster is running".to_owned(),
            })?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|errno| PgServerError::Io {
            what: format!("killing postmaster {pid}"),
            source: errno.into(),
        })?;
        // Wait for it to be gone so that "stopped" is true when we return.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.postmaster_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pid)
    }

    /// Starts a detached watchdog that stops this server (immediate mode)
    /// and deletes `remove` once process `pid` has exited, however it
    /// exits. The test harness uses it so that no server outlives a test
    /// run, even one killed with SIGKILL.
    ///
    /// Fails when the watchdog cannot be spawned.
    pub fn stop_when_process_exits(&self, pid: u32, remove: &Path) -> Result<(), PgServerError> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             '{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; rm -rf '{remove}'",
            pg_ctl = self.binaries.bin("pg_ctl").display(),
            data = self.data_dir.display(),
            remove = remove.display(),
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .current_dir("/");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err("spawning the server watchdog"))?;
        Ok(())
    }

    /// Sends SIGKILL to process `pid` (a backend of this server).
    ///
    /// Fails when the signal cannot be sent.
    pub fn kill_process(&self, pid: i32) -> Result<(), PgServerError> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|errno| PgServerError::Io {
            what: format!("killing process {pid}"),
            source: errno.into(),
        })
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
///
/// Fails when no port can be bound at all.
pub fn free_port() -> Result<u16, PgServerError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(io_err("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port();
    Ok(port)
}

fn run(mut cmd: Command, what: &str) -> Result<Output, PgServerError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("{what}: running {:?}", cmd.get_program())))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(PgServerError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}
