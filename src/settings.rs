//! Settings: a TOML file, then environment variables, then command-line
//! flags, each overriding the one before. Every key is documented in
//! `docs/configuration.md`; unknown keys and wrong types are errors that
//! name the key, the line and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{BuilderConfig, SchedulerConfig, WorkerConfig};
use crate::store::StoreOptions;

/// Name of the configuration file looked for in the working directory when
/// neither `--config` nor `BUILDMASTER_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "buildmaster.toml";

/// Everything the master reads from its configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[database]`
    pub database: DatabaseSettings,
    /// `[http]`
    pub http: HttpSettings,
    /// `[master]`
    pub master: MasterSettings,
    /// `[embedded]`
    pub embedded: EmbeddedSettings,
    /// `[hooks]`
    pub hooks: HooksSettings,
    /// `[[workers]]`
    pub workers: Vec<WorkerConfig>,
    /// `[[builders]]`
    pub builders: Vec<BuilderConfig>,
    /// `[[schedulers]]`
    pub schedulers: Vec<SchedulerConfig>,
}

/// `[database]`: where the database is and how patiently to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// libpq URL or key=value string. Unset: the embedded server.
    pub url: Option<String>,
    /// Largest number of pooled connections.
    pub pool_size: usize,
    /// Seconds allowed to open one connection.
    pub connect_timeout_s: f64,
    /// Server-side statement timeout, seconds.
    pub statement_timeout_s: f64,
    /// How long an HTTP request waits for an unreachable database before
    /// answering 503, seconds.
    pub request_deadline_s: f64,
    /// Seconds an unanswered TCP connection is trusted (TCP_USER_TIMEOUT,
    /// keepalive idle time).
    pub tcp_user_timeout_s: f64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let store = StoreOptions::default();
        DatabaseSettings {
            url: None,
            pool_size: store.pool_size,
            connect_timeout_s: store.connect_timeout.as_secs_f64(),
            statement_timeout_s: store.statement_timeout.as_secs_f64(),
            request_deadline_s: 30.0,
            tcp_user_timeout_s: store.tcp_user_timeout.as_secs_f64(),
        }
    }
}

/// `[http]`: the HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Bearer token for write endpoints; unset: writes from loopback only.
    pub write_token: Option<Secret>,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8010)),
            write_token: None,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// A secret string: its `Debug` output is redacted so it never reaches a log.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[hooks]`: push webhooks; each is enabled by setting its secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSettings {
    /// Secret of the GitHub webhook (`POST /hooks/github`).
    pub github_secret: Option<Secret>,
    /// Secret token of the GitLab webhook (`POST /hooks/gitlab`).
    pub gitlab_token: Option<Secret>,
}

/// `[master]`: this master process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterSettings {
    /// Name of this master's row in `masters`; unique per database.
    /// Default: `<hostname>:<http port>`.
    pub name: Option<String>,
    /// Seconds between heartbeats.
    pub heartbeat_interval_s: f64,
    /// Seconds without a heartbeat (counted while the database was up)
    /// after which another master takes a master's unfinished work back.
    pub expiry_s: f64,
    /// Seconds between polls of the queue and the schedulers (LISTEN/NOTIFY
    /// wakes them sooner).
    pub poll_interval_s: f64,
    /// Directory holding one work directory per builder.
    pub work_dir: PathBuf,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings {
            name: None,
            heartbeat_interval_s: 5.0,
            expiry_s: 60.0,
            poll_interval_s: 1.0,
            work_dir: PathBuf::from(".buildmaster/work"),
        }
    }
}

/// `[embedded]`: the PostgreSQL server run when no database URL is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSettings {
    /// Directory of buildmaster's local state; the cluster lives in
    /// `<data_dir>/postgres`.
    pub data_dir: PathBuf,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        EmbeddedSettings {
            data_dir: PathBuf::from(".buildmaster"),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected keys/types.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message: key, line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("configuration{}: {key} {problem}", .path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, when the value came from one.
        path: Option<PathBuf>,
        /// The key, as `section.key`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// Reads settings from `path`, or from `./buildmaster.toml` when `path`
    /// is `None` and that file exists, or uses the defaults.
    ///
    /// Fails when the file cannot be read, is not valid TOML, has unknown
    /// keys or wrong types, or holds out-of-range values.
    pub fn load(path: Option<&Path>) -> Result<(Settings, Option<PathBuf>), SettingsError> {
        let path = match path {
            Some(path) => Some(path.to_owned()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                default.exists().then_some(default)
            }
        };
        let Some(path) = path else {
            return Ok((Settings::default(), None));
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
            path: path.clone(),
            source,
        })?;
        let settings = Settings::parse(&text, Some(&path))?;
        Ok((settings, Some(path)))
    }

    /// Parses settings from TOML text; `path` is used in error messages.
    ///
    /// Fails like [`Settings::load`].
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Settings, SettingsError> {
        let settings: Settings = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("<text>")),
            message: e.to_string().trim_end().to_owned(),
        })?;
        settings.validate(path)?;
        Ok(settings)
    }

    /// Checks ranges that the types alone do not.
    ///
    /// Fails on the first value out of range.
    pub fn validate(&self, path: Option<&Path>) -> Result<(), SettingsError> {
        let invalid = |key: &'static str, problem: String| SettingsError::Invalid {
            path: path.map(Path::to_owned),
            key,
            problem,
        };
        let positive = [
            (
                "database.connect_timeout_s",
                self.database.connect_timeout_s,
            ),
            (
                "database.statement_timeout_s",
                self.database.statement_timeout_s,
            ),
            (
                "database.request_deadline_s",
                self.database.request_deadline_s,
            ),
            (
                "database.tcp_user_timeout_s",
                self.database.tcp_user_timeout_s,
            ),
            (
                "master.heartbeat_interval_s",
                self.master.heartbeat_interval_s,
            ),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0 && value < 1e7) {
                return Err(invalid(
                    key,
                    format!("must be a positive number of seconds, got {value}"),
                ));
            }
        }
        if let Some(token) = &self.http.write_token {
            if token.expose().len() < 16 {
                return Err(invalid(
                    "http.write_token",
                    "must be at least 16 characters (use a long random string)".to_owned(),
                ));
            }
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                format!("must be at least 1024, got {}", self.http.max_body_bytes),
            ));
        }
        if self.database.pool_size == 0 || self.database.pool_size > 1000 {
            return Err(invalid(
                "database.pool_size",
                format!(
                    "must be between 1 and 1000, got {}",
                    self.database.pool_size
                ),
            ));
        }
        if let Some(name) = &self.master.name {
            if name.trim().is_empty() {
                return Err(invalid("master.name", "must not be empty".to_owned()));
            }
        }
        if self.master.expiry_s < 2.0 * self.master.heartbeat_interval_s {
            return Err(invalid(
                "master.expiry_s",
                format!(
                    "must be at least twice master.heartbeat_interval_s ({} s), got {}",
                    self.master.heartbeat_interval_s, self.master.expiry_s
                ),
            ));
        }
        crate::config::validate(&self.workers, &self.builders, &self.schedulers).map_err(
            |problem| SettingsError::Invalid {
                path: path.map(Path::to_owned),
                key: "build configuration",
                problem,
            },
        )?;
        if let Some(url) = &self.database.url {
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                return Err(invalid(
                    "database.url",
                    format!("is not a valid connection string: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// The store options these settings describe.
    pub fn store_options(&self) -> StoreOptions {
        let defaults = StoreOptions::default();
        let statement_timeout = Duration::from_secs_f64(self.database.statement_timeout_s);
        StoreOptions {
            pool_size: self.database.pool_size,
            connect_timeout: Duration::from_secs_f64(self.database.connect_timeout_s),
            statement_timeout,
            tcp_user_timeout: Duration::from_secs_f64(self.database.tcp_user_timeout_s),
            attempt_timeout: statement_timeout + Duration::from_secs(5),
            ..defaults
        }
    }

    /// How long an HTTP request waits for the database.
    pub fn request_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.database.request_deadline_s)
    }

    /// How long a silent master is trusted.
    pub fn expiry(&self) -> Duration {
        Duration::from_secs_f64(self.master.expiry_s)
    }

    /// The queue and scheduler poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.master.poll_interval_s)
    }

    /// The time between heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.master.heartbeat_interval_s)
    }

    /// This master's name: configured, or `<hostname>:<http port>`.
    pub fn master_name(&self) -> String {
        if let Some(name) = &self.master.name {
            return name.clone();
        }
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", self.http.listen.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let settings = Settings::parse("", None).unwrap();
        assert_eq!(settings.http.listen.to_string(), "127.0.0.1:8010");
        assert!(settings.database.url.is_none());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_file_and_line() {
        let err = Settings::parse(
            "[http]\nlisten = \"127.0.0.1:9000\"\nlisen = 1\n",
            Some(Path::new("bm.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bm.toml"), "{err}");
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let err = Settings::parse(
            "[database]\npool_size = \"many\"\n",
            Some(Path::new("x.toml")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pool_size") || err.contains("line 2"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = Settings::parse("[master]\nheartbeat_interval_s = 0\n", None).unwrap_err();
        assert!(
            err.to_string().contains("master.heartbeat_interval_s"),
            "{err}"
        );
        let err = Settings::parse("[database]\nurl = \"postgres://a:b@h:notaport/db\"\n", None)
            .unwrap_err();
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn the_example_build_configuration_of_the_readme_is_accepted() {
        let text = r#"
[http]
listen = "127.0.0.1:8010"
[[workers]]
name = "local-1"
kind = "local"
max_builds = 2
[[builders]]
name = "unit"
workers = ["local-1"]
[[builders.steps]]
name = "test"
command = ["sh", "-c", "echo hello"]
timeout_s = 600
[[schedulers]]
name = "main"
kind = "single-branch"
branch = "main"
tree_stable_s = 0
builders = ["unit"]
[[schedulers]]
name = "force"
kind = "force"
builders = ["unit"]
"#;
        let settings = Settings::parse(text, None).unwrap();
        assert_eq!(
            settings.builders[0].steps[0].command.argv(),
            ["sh", "-c", "echo hello"]
        );
        assert_eq!(settings.schedulers.len(), 2);
    }

    #[test]
    fn broken_references_and_unknown_scheduler_keys_are_named() {
        let base = "[[workers]]\nname = \"w\"\n[[builders]]\nname = \"unit\"\nworkers = [\"w\"]\n";
        let err = Settings::parse(
            &format!(
                "{base}[[schedulers]]\nname = \"s\"\nkind = \"force\"\nbuilders = [\"nope\"]\n"
            ),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nope") && err.contains("\"s\""), "{err}");
        let err = Settings::parse(&format!("{base}[[schedulers]]\nname = \"s\"\nkind = \"force\"\nbuilders = [\"unit\"]\nbranch = \"x\"\n"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("branch"), "{err}");
        let err = Settings::parse(
            &format!(
                "{base}[[schedulers]]\nname = \"s\"\nkind = \"hourly\"\nbuilders = [\"unit\"]\n"
            ),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hourly"), "{err}");
        let err = Settings::parse(
            "[[builders]]\nname = \"unit\"\nworkers = [\"ghost\"]\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ghost"), "{err}");
    }

    #[test]
    fn multi_host_urls_with_session_attributes_are_accepted() {
        let text = "[database]\nurl = \"host=a,b port=5432,5433 dbname=bm target_session_attrs=read-write\"\n";
        let settings = Settings::parse(text, None).unwrap();
        assert!(settings.database.url.is_some());
    }
}
