//! Integration tests, one binary, a module per capability. Every test talks
//! to a real PostgreSQL server started by `support` from this machine's
//! binaries.

mod support;

mod api_changes;
mod api_reads;
mod builds;
mod cli;
mod contract;
mod hooks;
mod master_up;
mod multi_master;
mod replication;
mod scheduling;
mod schema;
mod store_restarts;
mod store_unit;
mod web;
