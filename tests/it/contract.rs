//! The published contract (schema buildmaster_v1): frozen by a snapshot,
//! documented from its comments, readable — and only readable — by the
//! reader role, stable across storage changes, and usable from PHP.

use std::collections::BTreeMap;
use std::time::Duration;

use buildmaster::contract;
use buildmaster::store::Budget;
use buildmaster::store::migrate::{apply_storage_change, migrate};
use tokio_postgres::error::SqlState;

use crate::support::{TestDb, connect, psql};

const BUDGET: Budget = Budget::For(Duration::from_secs(30));
const BLESS_ENV: &str = "BUILDMASTER_BLESS";

/// Views as a freshly migrated database has them.
async fn fresh_contract() -> Vec<buildmaster::store::contract::ContractView> {
    let db = TestDb::new().await;
    let (views, intruders) = db
        .store()
        .contract_read(contract::SCHEMA, BUDGET)
        .await
        .unwrap();
    assert!(
        intruders.is_empty(),
        "non-view relations in the contract schema: {intruders:?}"
    );
    views
}

/// Compares `generated` with the checked-in `path`; with BUILDMASTER_BLESS=1
/// rewrites the file instead (a deliberate, reviewed act).
fn compare_with_file(path: &str, generated: &str, how_to_update: &str) {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os(BLESS_ENV).is_some() {
        std::fs::write(&full, generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&full).unwrap_or_default();
    if on_disk != generated {
        let diff = contract::diff_lines(&on_disk, generated);
        panic!(
            "{path} does not match the migrated database:\n{}\n\nIf the change is intended: {how_to_update}",
            diff.join("\n")
        );
    }
}

#[tokio::test]
async fn the_migrated_views_match_the_checked_in_snapshot() {
    let views = fresh_contract().await;
    let problems = contract::check(contract::SNAPSHOT, &views, &[]);
    if std::env::var_os(BLESS_ENV).is_none() {
        assert!(
            problems.is_empty(),
            "the contract drifted from views/contract.snapshot:\n{}\n\nIf intended (columns only ever \
             added at the end of a view), run: {BLESS_ENV}=1 cargo test contract",
            problems.join("\n")
        );
    }
    compare_with_file(
        "views/contract.snapshot",
        &contract::render_snapshot(&views),
        &format!("{BLESS_ENV}=1 cargo test contract"),
    );
}

#[tokio::test]
async fn the_view_reference_documentation_is_up_to_date() {
    let views = fresh_contract().await;
    compare_with_file(
        "views/README.md",
        &contract::render_docs(&views),
        &format!(
            "{BLESS_ENV}=1 cargo test contract (or buildmaster contract docs > views/README.md)"
        ),
    );
}

#[tokio::test]
async fn every_view_and_column_has_a_comment_and_a_contract_type() {
    let views = fresh_contract().await;
    assert!(
        views.len() >= 14,
        "expected the 14 published views, found {}",
        views.len()
    );
    let allowed = [
        "bigint",
        "integer",
        "boolean",
        "text",
        "jsonb",
        "double precision",
        "timestamp with time zone",
    ];
    for view in &views {
        assert!(
            !view.comment.is_empty(),
            "view {} has no comment",
            view.name
        );
        for column in &view.columns {
            assert!(
                !column.comment.is_empty(),
                "{}.{} has no comment",
                view.name,
                column.name
            );
            assert!(
                allowed.contains(&column.sql_type.as_str()),
                "{}.{} has type {}, outside the contract's type rules",
                view.name,
                column.name,
                column.sql_type
            );
        }
    }
}

/// Names of the views of buildmaster_v1.
async fn published_views(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT viewname::text FROM pg_views WHERE schemaname = 'buildmaster_v1' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every view's rows, as text, keyed by view name.
async fn view_contents(url: &str) -> BTreeMap<String, Vec<String>> {
    let client = connect(url).await;
    let views = published_views(&client).await;
    let mut out = BTreeMap::new();
    for view in views {
        let rows = client
            .query(
                &format!("SELECT t::text FROM buildmaster_v1.{view} t ORDER BY t::text"),
                &[],
            )
            .await
            .unwrap();
        out.insert(view, rows.iter().map(|r| r.get(0)).collect());
    }
    out
}

#[tokio::test]
async fn a_storage_change_under_the_views_keeps_their_rows_and_their_contract() {
    let db = TestDb::new().await;
    db.load_history().await;
    let store = db.store();
    let before = view_contents(&db.url).await;
    assert!(before["builds"].len() >= 4 && before["log_lines"].len() >= 8);

    // A change that breaks a view (a column it reads is renamed) is refused
    // as a whole: the transaction rolls back and the views stay as they were.
    let error = apply_storage_change(
        &store,
        BUDGET,
        "ALTER TABLE buildmaster_private.builds ALTER COLUMN number TYPE bigint;
         ALTER TABLE buildmaster_private.builds RENAME COLUMN state_string TO state_text;",
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("state_string"), "{error}");
    let after_failed = view_contents(&db.url).await;
    assert_eq!(
        before, after_failed,
        "a failed storage change must leave everything as it was"
    );

    // Columns that views read change type: PostgreSQL refuses ALTER ... TYPE
    // while a view depends on the column, so the runner drops and recreates
    // the published views around the change — never with CASCADE.
    apply_storage_change(
        &store,
        BUDGET,
        "ALTER TABLE buildmaster_private.builds ALTER COLUMN number TYPE bigint;
         ALTER TABLE buildmaster_private.steps ALTER COLUMN number TYPE bigint;
         ALTER TABLE buildmaster_private.log_chunks ALTER COLUMN content TYPE varchar;",
    )
    .await
    .unwrap();
    let after = view_contents(&db.url).await;
    assert_eq!(
        before, after,
        "the views return other rows after the storage change"
    );
    let (views, intruders) = store.contract_read(contract::SCHEMA, BUDGET).await.unwrap();
    let problems = contract::check(contract::SNAPSHOT, &views, &intruders);
    assert!(
        problems.is_empty(),
        "the contract changed:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn an_outside_view_on_a_published_view_stops_the_upgrade_instead_of_being_dropped() {
    let db = TestDb::new().await;
    let client = connect(&db.url).await;
    client
        .batch_execute("CREATE VIEW public.my_report AS SELECT build_id FROM buildmaster_v1.builds")
        .await
        .unwrap();
    let error = migrate(&db.store(), BUDGET).await.unwrap_err().to_string();
    assert!(error.contains("depend"), "{error}");
    let still_there: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.views WHERE table_name = 'my_report'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still_there, 1, "the user's view was dropped");
}

/// Runs `sql` as the reader and returns the SQLSTATE it failed with.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> SqlState {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("the reader was allowed to run: {sql}"),
        Err(e) => e.code().cloned().unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

#[tokio::test]
async fn a_reader_login_reads_every_view_and_nothing_else() {
    let db = TestDb::new().await;
    db.load_history().await;
    // A database copied from a template does not inherit the template's
    // database-level grants; the master re-applies them at every start.
    migrate(&db.store(), BUDGET).await.unwrap();
    let (_login, reader_url) = db.reader_login();
    let admin = connect(&db.url).await;
    let reader = connect(&reader_url).await;

    let timezone: String = reader.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(timezone, "UTC");

    let views = published_views(&admin).await;
    assert!(views.len() >= 14);
    for view in &views {
        reader
            .query(&format!("SELECT * FROM buildmaster_v1.{view} LIMIT 5"), &[])
            .await
            .unwrap_or_else(|e| panic!("the reader cannot read {view}: {e}"));
    }

    // The sessions are read-only by default; lift that so that what is
    // tested below is the privileges themselves.
    reader
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    let tables: Vec<String> = admin
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'buildmaster_private'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tables.len() >= 20,
        "expected the private tables, found {tables:?}"
    );
    for table in &tables {
        let code = refused(
            &reader,
            &format!("SELECT 1 FROM buildmaster_private.{table} LIMIT 1"),
        )
        .await;
        assert_eq!(
            code,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "reading private table {table}"
        );
    }
    for view in &views {
        for sql in [
            format!("INSERT INTO buildmaster_v1.{view} DEFAULT VALUES"),
            {
                let column = last_column(&admin, view).await;
                format!("UPDATE buildmaster_v1.{view} SET {column} = {column}")
            },
            format!("DELETE FROM buildmaster_v1.{view}"),
        ] {
            // Either refusal will do: no privilege (42501), or a view that
            // is not updatable at all (55000), which PostgreSQL checks first.
            let code = refused(&reader, &sql).await;
            assert!(
                code == SqlState::INSUFFICIENT_PRIVILEGE
                    || code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                "{sql}: {code:?}"
            );
        }
    }
    for sql in [
        "CREATE TABLE buildmaster_v1.x (a int)",
        "CREATE VIEW buildmaster_v1.x AS SELECT 1",
        "CREATE TABLE public.x (a int)",
        "CREATE TEMP TABLE x (a int)",
        "CREATE SCHEMA x",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        let code = refused(&reader, sql).await;
        assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
    }

    let owners: Vec<(String, bool)> = admin
        .query(
            "SELECT DISTINCT r.rolname::text, r.rolsuper FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner
              WHERE n.nspname = 'buildmaster_v1'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(owners, vec![("buildmaster_views".to_owned(), false)]);
}

async fn last_column(admin: &tokio_postgres::Client, view: &str) -> String {
    admin
        .query_one(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = 'buildmaster_v1' AND table_name = $1
              ORDER BY ordinal_position DESC LIMIT 1",
            &[&view],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_php_example_reads_every_view_with_the_promised_types() {
    let php = which("php").unwrap_or_else(|| {
        panic!(
            "php is not installed: the contract is proven from PHP. Install php-cli and \
             php-pgsql (Debian: apt-get install php-cli php-pgsql); .ci/run does this."
        )
    });
    let db = TestDb::new().await;
    db.load_history().await;
    let (login, _url) = db.reader_login();
    let port = crate::support::shared_server_port();
    let out = std::process::Command::new(php)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/ops/examples/report.php"
        ))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGDATABASE", &db.name)
        .env("PGUSER", &login)
        .env("PGPASSWORD", "reader-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "report.php failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all values have the types the contract promises"),
        "{stdout}"
    );
    assert!(stdout.contains("builder_status"), "{stdout}");
    assert!(stdout.contains("unit"), "{stdout}");
    println!("{stdout}");
}

#[tokio::test]
async fn the_psql_and_grafana_examples_run_as_the_reader() {
    let db = TestDb::new().await;
    db.load_history().await;
    let (_login, reader_url) = db.reader_login();
    for (file, expect) in [
        ("ops/examples/recent-builds.sql", "success"),
        ("ops/examples/grafana-daily-failures.sql", "unit"),
    ] {
        let out = psql(&reader_url)
            .arg("-f")
            .arg(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(expect),
            "{file} printed no {expect:?}: {stdout}"
        );
    }
}

#[tokio::test]
async fn contract_check_passes_on_a_migrated_database_and_fails_on_drift() {
    let db = TestDb::new().await;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_buildmaster"))
            .args(["contract", "check", "--database-url", &db.url])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let ok = run();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("matches the contract"));

    let client = connect(&db.url).await;
    client
        .batch_execute("COMMENT ON COLUMN buildmaster_v1.builds.number IS 'renumbered'")
        .await
        .unwrap();
    let drift = run();
    let stdout = String::from_utf8_lossy(&drift.stdout);
    assert!(!drift.status.success());
    assert!(
        stdout.contains("- ") && stdout.contains("+ ") && stdout.contains("renumbered"),
        "{stdout}"
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
