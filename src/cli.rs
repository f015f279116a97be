//! Command-line interface: flags, subcommands and their help texts.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// buildmaster — a continuous-integration build master whose scheduler
/// state and build history live in PostgreSQL.
///
/// Without a database URL, `up` and `migrate` run an embedded PostgreSQL
/// from this machine's binaries in ./.buildmaster (see [embedded] data_dir).
#[derive(Debug, Parser)]
#[command(name = "buildmaster", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./buildmaster.toml when it exists.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "BUILDMASTER_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// Log format on standard error. Levels come from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master until SIGINT or SIGTERM: migrate the database,
    /// register and heartbeat this master, serve HTTP.
    Up(UpArgs),
    /// Apply pending migrations and the published views, print what was
    /// applied, and exit.
    Migrate(OneShotArgs),
    /// Send a source change to a running master (like `buildbot sendchange`).
    Sendchange(SendchangeArgs),
    /// Ask a running master to build a builder now.
    Force(ForceArgs),
    /// The published views (schema buildmaster_v1): check a database
    /// against this release's snapshot, or generate the snapshot and the
    /// reference documentation.
    #[command(subcommand)]
    Contract(ContractCommand),
}

/// `contract` subcommands. Without a database URL they use the embedded
/// database, migrated first.
#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Compare the views of a live database with the snapshot this release
    /// was built with; print every difference and exit non-zero on drift.
    /// Run it after `buildmaster migrate` when upgrading.
    Check(OneShotArgs),
    /// Print the reference documentation (Markdown) generated from the
    /// views' comments; the repository keeps it in views/README.md.
    Docs(OneShotArgs),
    /// Print the contract snapshot of a database; the repository keeps it in
    /// views/contract.snapshot. Updating that file is a deliberate act.
    Snapshot(OneShotArgs),
}

/// How to reach a running master.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// The master's base URL.
    #[arg(
        long,
        env = "BUILDMASTER_URL",
        default_value = "http://127.0.0.1:8010",
        value_name = "URL"
    )]
    pub master: String,

    /// Write token of the master ([http] write_token), if it has one.
    #[arg(
        long,
        env = "BUILDMASTER_WRITE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Seconds to keep retrying while the master or its database is
    /// unreachable (the same request is retried under one Idempotency-Key,
    /// so it is recorded at most once).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub wait: f64,
}

/// Flags of `sendchange`.
#[derive(Debug, Args)]
pub struct SendchangeArgs {
    /// The master.
    #[command(flatten)]
    pub master: MasterArgs,
    /// Branch of the change.
    #[arg(long, short = 'b')]
    pub branch: Option<String>,
    /// Revision (commit id).
    #[arg(long, short = 'r')]
    pub revision: Option<String>,
    /// Author. Default: $USER.
    #[arg(long, short = 'W', alias = "who", env = "USER", hide_env_values = true)]
    pub author: Option<String>,
    /// Commit message.
    #[arg(long, short = 'm', default_value = "")]
    pub comments: String,
    /// Repository URL or name.
    #[arg(long, default_value = "")]
    pub repository: String,
    /// Project.
    #[arg(long, default_value = "")]
    pub project: String,
    /// Category.
    #[arg(long)]
    pub category: Option<String>,
    /// When the change was made: RFC 3339 time or Unix seconds. Default: now.
    #[arg(long)]
    pub when: Option<String>,
    /// A property, NAME=VALUE (repeatable).
    #[arg(long = "property", short = 'p', value_name = "NAME=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Files touched.
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
}

/// Flags of `force`.
#[derive(Debug, Args)]
pub struct ForceArgs {
    /// The master.
    #[command(flatten)]
    pub master: MasterArgs,
    /// The builder to build.
    #[arg(value_name = "BUILDER")]
    pub builder: String,
    /// Why (shown in the buildset).
    #[arg(long)]
    pub reason: Option<String>,
    /// Branch to build.
    #[arg(long, short = 'b')]
    pub branch: Option<String>,
    /// Revision to build.
    #[arg(long, short = 'r')]
    pub revision: Option<String>,
    /// Priority of the request (higher first).
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// A property, NAME=VALUE (repeatable).
    #[arg(long = "property", short = 'p', value_name = "NAME=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string: a URL
    /// (postgresql://user:pass@host:port/db?target_session_attrs=read-write)
    /// or key=value pairs ("host=a,b dbname=ci"). Default: DATABASE_URL,
    /// then [database] url, then the embedded server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Flags of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Database location.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address for the HTTP server (overrides [http] listen; default 127.0.0.1:8010).
    #[arg(long, env = "BUILDMASTER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Bearer token for write endpoints (overrides [http] write_token). Set it
    /// through the environment: a command line is visible to other users.
    #[arg(
        long,
        env = "BUILDMASTER_WRITE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub write_token: Option<String>,

    /// State directory of the embedded database (overrides [embedded] data_dir).
    #[arg(long, env = "BUILDMASTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of the one-shot commands (`migrate`, `contract ...`): where the
/// database is and how long to wait for it.
#[derive(Debug, Args)]
pub struct OneShotArgs {
    /// Database location.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Seconds to wait for the database to become reachable before giving up.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub wait: f64,

    /// State directory of the embedded database (overrides [embedded] data_dir).
    #[arg(long, env = "BUILDMASTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if value.is_finite() && value > 0.0 && value < 1e7 {
        Ok(value)
    } else {
        Err(format!("must be a positive number of seconds, got {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_negative_wait_is_refused() {
        let err = Cli::try_parse_from(["buildmaster", "migrate", "--wait=-3"]).unwrap_err();
        assert!(err.to_string().contains("positive"), "{err}");
    }
}
