//! Reads for the JSON API, from the published views of `buildmaster_v1` —
//! the master reads its own contract. Rows come back as JSON objects whose
//! keys are the views' column names (`to_jsonb` of the row), so the API
//! documents itself through `views/README.md`.

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::{Budget, Store, StoreError};

/// A read of one published view: filters (column = value, or a
/// comparison), an order and a page.
#[derive(Debug, Clone, Default)]
pub struct ViewQuery {
    /// View name in `buildmaster_v1` (a fixed name from the code, never input).
    pub view: &'static str,
    /// SQL conditions with `$n` placeholders, joined by AND.
    pub conditions: Vec<String>,
    /// The values of the placeholders, in order.
    pub params: Vec<Param>,
    /// `ORDER BY` clause (fixed text from the code).
    pub order: &'static str,
    /// Page size.
    pub limit: i64,
    /// Rows skipped.
    pub offset: i64,
}

/// A query parameter.
#[derive(Debug, Clone)]
pub enum Param {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Time.
    Time(chrono::DateTime<chrono::Utc>),
}

impl ViewQuery {
    /// Adds `column op $n` with `value`.
    pub fn filter(&mut self, column: &'static str, op: &'static str, value: Param) {
        self.params.push(value);
        let n = self.params.len();
        let cast = match self.params[n - 1] {
            Param::Text(_) => "::text",
            Param::Int(_) => "::bigint",
            Param::Time(_) => "::timestamptz",
        };
        self.conditions.push(format!("{column} {op} ${n}{cast}"));
    }
}

impl Store {
    /// Runs a [`ViewQuery`]; returns the rows as JSON objects.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn view_read(
        &self,
        query: &ViewQuery,
        budget: Budget,
    ) -> Result<Vec<Value>, StoreError> {
        let where_clause = if query.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", query.conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT to_jsonb(t) FROM (SELECT * FROM buildmaster_v1.{} {where_clause} ORDER BY {} LIMIT {} OFFSET {}) t",
            query.view,
            query.order,
            query.limit.clamp(0, 1000),
            query.offset.max(0)
        );
        self.unit("view_read", budget, |tx| {
            let (sql, params) = (sql.clone(), query.params.clone());
            Box::pin(async move {
                let boxed: Vec<Box<dyn ToSql + Sync + Send>> = params
                    .into_iter()
                    .map(|p| -> Box<dyn ToSql + Sync + Send> {
                        match p {
                            Param::Text(s) => Box::new(s),
                            Param::Int(i) => Box::new(i),
                            Param::Time(t) => Box::new(t),
                        }
                    })
                    .collect();
                let refs: Vec<&(dyn ToSql + Sync)> = boxed
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let rows = tx.query(&sql, &refs).await?;
                Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
            })
        })
        .await
    }

    /// Counts for `/metrics`: requests pending and claimed, builds running,
    /// log lines stored.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn metrics_counts(&self, budget: Budget) -> Result<MetricsCounts, StoreError> {
        self.unit("metrics_counts", budget, |tx| {
            Box::pin(async move {
                let row = tx
                    .query_one(
                        "SELECT (SELECT count(*) FROM buildmaster_private.build_requests WHERE state = 'pending'),
                                (SELECT count(*) FROM buildmaster_private.build_requests WHERE state = 'claimed'),
                                (SELECT count(*) FROM buildmaster_private.builds WHERE finished_at IS NULL)",
                        &[],
                    )
                    .await?;
                Ok(MetricsCounts {
                    requests_pending: row.get(0),
                    requests_claimed: row.get(1),
                    builds_running: row.get(2),
                })
            })
        })
        .await
    }
}

/// Queue and build counts for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsCounts {
    /// Requests waiting for a worker.
    pub requests_pending: i64,
    /// Requests being built.
    pub requests_claimed: i64,
    /// Builds running (all masters).
    pub builds_running: i64,
}
