//! Schema migrations (refinery, files in `sql/`) and the published views
//! (files in `views/`), applied in one transaction.
//!
//! The whole upgrade — creating the private schema, refinery's migrations,
//! the views — runs in a single transaction under a transaction-scoped
//! advisory lock, through [`Store::unit_timed`]. So two masters starting at
//! once apply it once, a server that is still starting up is simply waited
//! for, and a COMMIT cut off by a crash is retried harmlessly (the retry finds
//! the migrations applied and does nothing).

use std::time::Duration;

use refinery::Migration;
use refinery::{AsyncMigrate, Runner};
use refinery_core::traits::r#async::{AsyncQuery, AsyncTransaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Budget, Store, StoreError, Tx, WorkError};

mod embedded {
    refinery::embed_migrations!("sql");
}

/// refinery's history table, kept in the private schema.
pub const HISTORY_TABLE: &str = "buildmaster_private.refinery_schema_history";

/// Arbitrary constant naming the transaction-scoped advisory lock that
/// serialises upgrades of one database.
const MIGRATION_LOCK_KEY: i64 = 0x6275_696c_646d_7374; // "buildmst"

/// Per-attempt limit for the upgrade: migrations may rewrite large tables.
const MIGRATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The published view files, in the order they are created. A test checks
/// that this list and the folder agree.
pub const VIEW_FILES: &[(&str, &str)] = &[
    (
        "build_requests.sql",
        include_str!("../../views/build_requests.sql"),
    ),
    (
        "builder_daily_stats.sql",
        include_str!("../../views/builder_daily_stats.sql"),
    ),
    (
        "builder_status.sql",
        include_str!("../../views/builder_status.sql"),
    ),
    ("builders.sql", include_str!("../../views/builders.sql")),
    ("builds.sql", include_str!("../../views/builds.sql")),
    ("buildsets.sql", include_str!("../../views/buildsets.sql")),
    (
        "change_files.sql",
        include_str!("../../views/change_files.sql"),
    ),
    ("changes.sql", include_str!("../../views/changes.sql")),
    ("log_lines.sql", include_str!("../../views/log_lines.sql")),
    ("logs.sql", include_str!("../../views/logs.sql")),
    ("masters.sql", include_str!("../../views/masters.sql")),
    ("schedulers.sql", include_str!("../../views/schedulers.sql")),
    ("steps.sql", include_str!("../../views/steps.sql")),
    ("workers.sql", include_str!("../../views/workers.sql")),
];

/// What an upgrade did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Migrations applied by this run, as (version, name).
    pub applied: Vec<(u32, String)>,
    /// Schema version after the run.
    pub version: u32,
    /// View files (re)applied.
    pub views: Vec<String>,
}

/// The schema version this build of buildmaster expects.
pub fn expected_version() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(Migration::version)
        .max()
        .unwrap_or(0)
}

fn runner() -> Runner {
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    runner
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
}

/// Applies pending migrations and re-applies the views, retrying while the
/// database is unreachable, for at most `budget`.
///
/// Fails when the budget runs out, when a migration fails, or when the
/// database holds migrations this build does not know (a newer buildmaster
/// upgraded it).
pub async fn migrate(store: &Store, budget: Budget) -> Result<MigrationReport, StoreError> {
    let report = store
        .unit_timed("schema_migrate", budget, MIGRATION_ATTEMPT_TIMEOUT, |tx| {
            Box::pin(async move {
                tx.batch_execute(
                    "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; \
                     SET LOCAL client_min_messages = warning",
                )
                .await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                    .await?;
                tx.batch_execute("CREATE SCHEMA IF NOT EXISTS buildmaster_private")
                    .await?;
                drop_published_views(tx).await?;
                let mut adapter = RefineryTx {
                    tx,
                    last_error: None,
                };
                let outcome = runner().run_async(&mut adapter).await;
                let report = match outcome {
                    Ok(report) => report,
                    // A database failure inside refinery: hand the original
                    // error back so that the retry logic can classify it.
                    Err(error) => {
                        return Err(match adapter.last_error.take() {
                            Some(pg) => WorkError::Pg(pg),
                            None => WorkError::Rejected(error.to_string()),
                        });
                    }
                };
                let views = apply_views(tx).await?;
                let version: Option<i32> = tx
                    .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
                    .await?
                    .get(0);
                Ok(MigrationReport {
                    applied: report
                        .applied_migrations()
                        .iter()
                        .map(|m| (m.version(), m.name().to_owned()))
                        .collect(),
                    version: version.map_or(0, |v| v as u32),
                    views,
                })
            })
        })
        .await?;
    // Cached statements may name types or columns the migration changed.
    store.clear_statement_caches();
    Ok(report)
}

/// The schema version recorded in the database, or `None` when it was
/// never migrated.
///
/// Fails when the database cannot be reached within `budget`.
pub async fn schema_version(store: &Store, budget: Budget) -> Result<Option<u32>, StoreError> {
    store
        .unit("schema_version", budget, |tx| {
            Box::pin(async move {
                let row = tx
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
                    .await?;
                if !row.get::<_, bool>(0) {
                    return Ok(None);
                }
                let version: Option<i32> = tx
                    .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
                    .await?
                    .get(0);
                Ok(version.map(|v| v as u32))
            })
        })
        .await
}

/// Drops every view of `buildmaster_v1`, without CASCADE: a view of
/// someone else's that depends on a published view makes this fail with
/// PostgreSQL's error naming the dependant, and the upgrade is rolled back.
async fn drop_published_views(tx: &Tx<'_>) -> Result<(), tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT c.relname FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'buildmaster_v1' AND c.relkind = 'v'",
            &[],
        )
        .await?;
    for row in rows {
        let name: String = row.get(0);
        tx.batch_execute(&format!(
            "DROP VIEW IF EXISTS buildmaster_v1.{} RESTRICT",
            quote_ident(&name)
        ))
        .await?;
    }
    Ok(())
}

/// Creates the published views from `views/` and sets their owner, grants
/// and the database-wide restrictions the reader role relies on.
async fn apply_views(tx: &Tx<'_>) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut applied = Vec::with_capacity(VIEW_FILES.len());
    for (name, sql) in VIEW_FILES {
        tx.batch_execute(sql).await?;
        applied.push((*name).to_owned());
    }
    tx.batch_execute(VIEW_PRIVILEGES).await?;
    Ok(applied)
}

/// Ownership and grants of the published views, re-applied with them.
const VIEW_PRIVILEGES: &str = r#"
GRANT USAGE ON SCHEMA buildmaster_private TO buildmaster_views;
GRANT SELECT ON ALL TABLES IN SCHEMA buildmaster_private TO buildmaster_views;
DO $owner$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT c.relname FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'buildmaster_v1' AND c.relkind = 'v'
    LOOP
        EXECUTE format('ALTER VIEW buildmaster_v1.%I OWNER TO buildmaster_views', v.relname);
    END LOOP;
END
$owner$;
REVOKE ALL ON ALL TABLES IN SCHEMA buildmaster_v1 FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA buildmaster_v1 TO buildmaster_reader;
REVOKE ALL ON SCHEMA buildmaster_v1 FROM PUBLIC;
GRANT USAGE ON SCHEMA buildmaster_v1 TO buildmaster_reader;
-- Readers get no temporary tables and no place to create objects. Only the
-- database's owner (or a superuser) may change that; otherwise say so.
DO $restrict$
BEGIN
    IF pg_has_role(current_user, (SELECT datdba FROM pg_catalog.pg_database
                                   WHERE datname = current_database()), 'USAGE')
       OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    ELSE
        RAISE WARNING 'buildmaster: not the owner of database %, so PUBLIC keeps TEMPORARY on it; '
                      'run REVOKE TEMPORARY ON DATABASE % FROM PUBLIC as its owner',
                      current_database(), current_database();
    END IF;
END
$restrict$;
"#;

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `sql` the way a migration runs: in one transaction under the
/// migration lock, with the published views dropped before and recreated
/// after, so that a storage change (`ALTER COLUMN ... TYPE`, a table split)
/// never needs `DROP ... CASCADE` on a published view. Used to rehearse
/// storage changes under a populated database.
///
/// Fails when the budget runs out or any statement fails (nothing is
/// changed then).
pub async fn apply_storage_change(
    store: &Store,
    budget: Budget,
    sql: &str,
) -> Result<Vec<String>, StoreError> {
    let views = store
        .unit_timed(
            "schema_storage_change",
            budget,
            MIGRATION_ATTEMPT_TIMEOUT,
            |tx| {
                let sql = sql.to_owned();
                Box::pin(async move {
                    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                        .await?;
                    drop_published_views(tx).await?;
                    tx.batch_execute(&sql).await?;
                    Ok(apply_views(tx).await?)
                })
            },
        )
        .await?;
    store.clear_statement_caches();
    Ok(views)
}

/// Lets refinery run inside our transaction instead of opening its own.
struct RefineryTx<'a, 't> {
    tx: &'a Tx<'t>,
    /// The last database error, kept so the caller can classify it (refinery
    /// wraps it in its own error type).
    last_error: Option<tokio_postgres::Error>,
}

#[async_trait::async_trait]
impl AsyncTransaction for RefineryTx<'_, '_> {
    type Error = MigrationDbError;

    async fn execute(&mut self, queries: &[&str]) -> Result<usize, Self::Error> {
        for query in queries {
            if let Err(error) = self.tx.batch_execute(query).await {
                let text = error.to_string();
                self.last_error = Some(error);
                return Err(MigrationDbError(text));
            }
        }
        Ok(queries.len())
    }
}

#[async_trait::async_trait]
impl AsyncQuery<Vec<Migration>> for RefineryTx<'_, '_> {
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let rows = match self.tx.query(query, &[]).await {
            Ok(rows) => rows,
            Err(error) => {
                let text = error.to_string();
                self.last_error = Some(error);
                return Err(MigrationDbError(text));
            }
        };
        let mut applied = Vec::with_capacity(rows.len());
        for row in rows {
            let applied_on: String = row.get(2);
            let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|e| {
                MigrationDbError(format!(
                    "history table holds a bad date {applied_on:?}: {e}"
                ))
            })?;
            let checksum: String = row.get(3);
            let checksum = checksum.parse::<u64>().map_err(|e| {
                MigrationDbError(format!(
                    "history table holds a bad checksum {checksum:?}: {e}"
                ))
            })?;
            applied.push(Migration::applied(
                row.get(0),
                row.get(1),
                applied_on,
                checksum,
            ));
        }
        Ok(applied)
    }
}

impl AsyncMigrate for RefineryTx<'_, '_> {}

/// A database error as refinery sees it; the original is kept aside.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MigrationDbError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_list_matches_the_views_folder() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/views");
        let mut on_disk: Vec<String> = std::fs::read_dir(folder)
            .expect("views folder")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = VIEW_FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "views/*.sql and VIEW_FILES disagree");
    }

    #[test]
    fn the_expected_version_is_the_newest_migration() {
        assert!(expected_version() >= 1);
    }
}
