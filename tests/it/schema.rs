//! The private schema: invariants enforced by the database itself, roles,
//! and migrations that are safe to run concurrently.

use std::time::Duration;

use buildmaster::store::Budget;
use buildmaster::store::migrate::{expected_version, migrate, schema_version};
use tokio_postgres::error::SqlState;

use crate::support::{TestDb, connect};

/// Inserts a master, a builder and a buildset; returns their ids.
async fn fixtures(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let master: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.masters (name, incarnation, started_at, last_heartbeat_at)
             VALUES ('m1', gen_random_uuid(), now(), now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let builder: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.builders (name) VALUES ('unit') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let buildset: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.buildsets (buildset_uuid, reason)
             VALUES (gen_random_uuid(), 'test') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (master, builder, buildset)
}

fn assert_check_violation(result: Result<u64, tokio_postgres::Error>, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(
        error.code(),
        Some(&SqlState::CHECK_VIOLATION),
        "{what}: {error}"
    );
}

#[tokio::test]
async fn build_request_states_require_their_columns() {
    let db = TestDb::new().await;
    let client = connect(&db.url).await;
    let (master, builder, buildset) = fixtures(&client).await;
    let insert = "INSERT INTO buildmaster_private.build_requests
                    (buildset_id, builder_id, state, claimed_by_master_id, claimed_at, completed_at, results)
                  VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let none_i64: Option<i64> = None;
    let none_ts: Option<chrono::DateTime<chrono::Utc>> = None;
    let none_res: Option<i16> = None;
    let now = Some(chrono::Utc::now());
    assert_check_violation(
        client
            .execute(
                insert,
                &[
                    &buildset, &builder, &"claimed", &none_i64, &none_ts, &none_ts, &none_res,
                ],
            )
            .await,
        "a claimed request without an owner",
    );
    assert_check_violation(
        client
            .execute(
                insert,
                &[
                    &buildset,
                    &builder,
                    &"completed",
                    &none_i64,
                    &now,
                    &none_ts,
                    &none_res,
                ],
            )
            .await,
        "a completed request without completion time and results",
    );
    assert_check_violation(
        client
            .execute(
                insert,
                &[
                    &buildset,
                    &builder,
                    &"pending",
                    &Some(master),
                    &now,
                    &none_ts,
                    &none_res,
                ],
            )
            .await,
        "a pending request with an owner",
    );
    assert_check_violation(
        client
            .execute(
                insert,
                &[
                    &buildset,
                    &builder,
                    &"cancelled",
                    &none_i64,
                    &none_ts,
                    &now,
                    &Some(0i16),
                ],
            )
            .await,
        "a cancelled request whose result is not 'cancelled'",
    );
    assert_check_violation(
        client
            .execute(
                insert,
                &[
                    &buildset,
                    &builder,
                    &"exploded",
                    &none_i64,
                    &none_ts,
                    &none_ts,
                    &none_res,
                ],
            )
            .await,
        "an unknown state",
    );
    client
        .execute(
            insert,
            &[
                &buildset,
                &builder,
                &"claimed",
                &Some(master),
                &now,
                &none_ts,
                &none_res,
            ],
        )
        .await
        .expect("a well-formed claimed request");
}

#[tokio::test]
async fn build_numbers_are_unique_per_builder_and_log_chunks_per_first_line() {
    let db = TestDb::new().await;
    let client = connect(&db.url).await;
    let (master, builder, buildset) = fixtures(&client).await;
    let request: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.build_requests (buildset_id, builder_id) VALUES ($1, $2) RETURNING id",
            &[&buildset, &builder],
        )
        .await
        .unwrap()
        .get(0);
    let insert_build = "INSERT INTO buildmaster_private.builds
                          (build_uuid, builder_id, number, build_request_id, master_id, started_at)
                        VALUES (gen_random_uuid(), $1, 1, $2, $3, now()) RETURNING id";
    let build: i64 = client
        .query_one(insert_build, &[&builder, &request, &master])
        .await
        .unwrap()
        .get(0);
    let error = client
        .query_one(insert_build, &[&builder, &request, &master])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::UNIQUE_VIOLATION), "{error}");

    let step: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.steps (build_id, number, name) VALUES ($1, 0, 'test') RETURNING id",
            &[&build],
        )
        .await
        .unwrap()
        .get(0);
    let log: i64 = client
        .query_one(
            "INSERT INTO buildmaster_private.logs (step_id, name, slug) VALUES ($1, 'stdio', 'stdio') RETURNING id",
            &[&step],
        )
        .await
        .unwrap()
        .get(0);
    let append =
        "INSERT INTO buildmaster_private.log_chunks (log_id, first_line, last_line, content)
                  VALUES ($1, 0, 1, 'ohello\noworld') ON CONFLICT DO NOTHING";
    assert_eq!(client.execute(append, &[&log]).await.unwrap(), 1);
    assert_eq!(
        client.execute(append, &[&log]).await.unwrap(),
        0,
        "a retried append must be a no-op"
    );
    assert_check_violation(
        client
            .execute(
                "UPDATE buildmaster_private.builds SET finished_at = now() WHERE id = $1",
                &[&build],
            )
            .await,
        "a finished build without results",
    );
}

#[tokio::test]
async fn concurrent_migrations_of_one_database_apply_it_once() {
    let db = TestDb::empty().await;
    let stores: Vec<_> = (0..3).map(|_| db.store()).collect();
    let budget = Budget::For(Duration::from_secs(60));
    let (a, b, c) = tokio::join!(
        migrate(&stores[0], budget),
        migrate(&stores[1], budget),
        migrate(&stores[2], budget)
    );
    let reports = [a.unwrap(), b.unwrap(), c.unwrap()];
    let applied: usize = reports.iter().map(|r| r.applied.len()).sum();
    assert_eq!(
        applied,
        expected_version() as usize,
        "each migration applied exactly once"
    );
    for report in &reports {
        assert_eq!(report.version, expected_version());
    }
    assert_eq!(
        schema_version(&stores[0], budget).await.unwrap(),
        Some(expected_version())
    );
}

#[tokio::test]
async fn the_reader_role_exists_and_sees_nothing_private() {
    let db = TestDb::new().await;
    let client = connect(&db.url).await;
    let row = client
        .query_one(
            "SELECT rolcanlogin, rolsuper,
                    has_schema_privilege('buildmaster_reader', 'buildmaster_v1', 'USAGE'),
                    has_schema_privilege('buildmaster_reader', 'buildmaster_private', 'USAGE'),
                    has_schema_privilege('buildmaster_reader', 'buildmaster_v1', 'CREATE')
               FROM pg_roles WHERE rolname = 'buildmaster_reader'",
            &[],
        )
        .await
        .expect("role buildmaster_reader exists");
    assert!(!row.get::<_, bool>(0), "the reader role must be NOLOGIN");
    assert!(!row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2), "USAGE on buildmaster_v1");
    assert!(!row.get::<_, bool>(3), "no USAGE on buildmaster_private");
    assert!(!row.get::<_, bool>(4), "no CREATE on buildmaster_v1");
    let public_tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(public_tables, 0, "nothing of ours belongs in schema public");
}
