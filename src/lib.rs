//! buildmaster: a continuous-integration build master whose scheduler state
//! and build history live in PostgreSQL.
//!
//! Module map (one line each: what it owns):
//!
//! - [`cli`]: command-line flags and subcommands (`up`, `migrate`, `contract`,
//!   `sendchange`, `force`).
//! - [`client`]: the client side of `sendchange` and `force`.
//! - [`settings`]: the TOML configuration, layered under environment and flags.
//! - [`config`]: the build configuration (workers, builders, steps,
//!   schedulers) and its cross-reference checks.
//! - [`telemetry`]: `tracing` output, human or JSON.
//! - [`master`]: a running master: build (bind, connect), run until stopped.
//! - [`api`]: the axum HTTP server: `POST /api/v1/changes`, `/healthz`,
//!   `/readyz`; JSON errors, write authentication, JSON body extraction.
//! - [`scheduler`]: the scheduler loop: changes and clocks become buildsets.
//! - [`dispatch`]: the claim loop: pending requests become builds on free workers.
//! - [`runner`]: runs one build's steps as subprocesses, captures their output,
//!   stops builds on request.
//! - [`recorder`]: the ordered, bounded write queue of one build (rides
//!   through database outages).
//! - [`metrics`]: in-process metrics (durations, log bytes, HTTP requests)
//!   for `/metrics`.
//! - [`maintenance`]: background upkeep: heartbeat, expiry of dead masters.
//! - [`store`]: the only module with SQL: the pool, the retrying unit of
//!   work, outage tracking, migrations, one file per table family.
//! - [`contract`]: the published views as a frozen snapshot, drift check and
//!   generated reference documentation.
//! - [`embedded`]: the local PostgreSQL `up` runs when no URL is given.
//! - [`pgserver`]: initdb/start/stop/kill of a PostgreSQL server from the
//!   machine's binaries (embedded database and test harness).
//!
//! How a change flows: HTTP in ([`api`]) → [`store`] → [`scheduler`] makes a
//! buildset and its requests → [`dispatch`] claims one → [`runner`] builds it
//! on a worker. Every step goes through the same [`store`].

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod contract;
pub mod dispatch;
pub mod embedded;
pub mod maintenance;
pub mod master;
pub mod metrics;
pub mod pgserver;
pub mod recorder;
pub mod runner;
pub mod scheduler;
pub mod settings;
pub mod store;
pub mod telemetry;
