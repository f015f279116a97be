//! Server-level statements that cannot run in a transaction, so not through
//! [`Store::unit`](super::Store::unit): creating the embedded server's
//! database at start-up. Idempotent: an existing database is left alone.

use anyhow::Context;
use tokio_postgres::error::SqlState;

/// Creates database `name` through the maintenance connection `admin_url`
/// unless it exists; returns whether it was created.
///
/// Fails when the server cannot be reached or refuses.
pub async fn database_create_if_missing(admin_url: &str, name: &str) -> anyhow::Result<bool> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .context("connecting to the server's maintenance database")?;
    let task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    let created = if exists {
        false
    } else {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
        {
            Ok(()) => true,
            // Created by someone else between the check and here.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => false,
            Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
        }
    };
    drop(client);
    let _ = task.await;
    Ok(created)
}
