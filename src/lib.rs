//! buildmaster: a continuous-integration build master whose scheduler state
//! and build history live in PostgreSQL.
//!
//! Module map (one line each: what it owns):
//!
//! - [`cli`]: command-line flags and subcommands (`up`, `migrate`).
//! - [`settings`]: the TOML configuration, layered under environment and flags.
//! - [`telemetry`]: `tracing` output, human or JSON.
//! - [`master`]: a running master: build (bind, connect), run until stopped.
//! - [`api`]: the axum HTTP server: `POST /api/v1/changes`, `/healthz`,
//!   `/readyz`; JSON errors, write authentication, JSON body extraction.
//! - [`maintenance`]: background upkeep: the master heartbeat.
//! - [`store`]: the only module with SQL: the pool, the retrying unit of
//!   work, outage tracking, migrations, one file per table family.
//! - [`contract`]: the published views as a frozen snapshot, drift check and
//!   generated reference documentation.
//! - [`embedded`]: the local PostgreSQL `up` runs when no URL is given.
//! - [`pgserver`]: initdb/start/stop/kill of a PostgreSQL server from the
//!   machine's binaries (embedded database and test harness).
//!
//! How a request flows: HTTP in ([`api`]) → [`store`] → PostgreSQL;
//! background loops ([`maintenance`]) go through the same [`store`].

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod contract;
pub mod embedded;
pub mod maintenance;
pub mod master;
pub mod pgserver;
pub mod settings;
pub mod store;
pub mod telemetry;
