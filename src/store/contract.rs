//! Reads the published contract — the views of `buildmaster_v1`, their
//! columns, types and comments — from the database catalogue.

use super::{Budget, Store, StoreError};

/// One column of a published view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractColumn {
    /// Position, from 1.
    pub position: i32,
    /// Column name.
    pub name: String,
    /// SQL type as `format_type` spells it.
    pub sql_type: String,
    /// The column's comment ("" when missing).
    pub comment: String,
}

/// One published view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractView {
    /// View name (without schema).
    pub name: String,
    /// The view's comment ("" when missing).
    pub comment: String,
    /// Columns in order.
    pub columns: Vec<ContractColumn>,
}

/// Every relation in the contract schema that is not a view, which rule 1
/// of the contract forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractIntruder {
    /// Relation name.
    pub name: String,
    /// `pg_class.relkind`.
    pub kind: String,
}

impl Store {
    /// The views of `schema` (e.g. `buildmaster_v1`) with their columns and
    /// comments, sorted by view name, plus any relation there that is not a
    /// view.
    ///
    /// Fails when the database is unreachable within `budget`.
    pub async fn contract_read(
        &self,
        schema: &str,
        budget: Budget,
    ) -> Result<(Vec<ContractView>, Vec<ContractIntruder>), StoreError> {
        self.unit("contract_read", budget, |tx| {
            let schema = schema.to_owned();
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT c.relname::text, coalesce(obj_description(c.oid, 'pg_class'), ''),
                                a.attnum::int4, a.attname::text,
                                format_type(a.atttypid, a.atttypmod),
                                coalesce(col_description(c.oid, a.attnum), '')
                           FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
                          WHERE n.nspname = $1 AND c.relkind = 'v'
                            AND a.attnum > 0 AND NOT a.attisdropped
                          ORDER BY c.relname, a.attnum",
                        &[&schema],
                    )
                    .await?;
                let mut views: Vec<ContractView> = Vec::new();
                for row in rows {
                    let name: String = row.get(0);
                    if views.last().map(|v| &v.name) != Some(&name) {
                        views.push(ContractView {
                            name: name.clone(),
                            comment: row.get(1),
                            columns: Vec::new(),
                        });
                    }
                    if let Some(view) = views.last_mut() {
                        view.columns.push(ContractColumn {
                            position: row.get(2),
                            name: row.get(3),
                            sql_type: row.get(4),
                            comment: row.get(5),
                        });
                    }
                }
                let intruders = tx
                    .query(
                        "SELECT c.relname::text, c.relkind::text
                           FROM pg_catalog.pg_class c
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname = $1 AND c.relkind <> 'v'
                          ORDER BY c.relname",
                        &[&schema],
                    )
                    .await?
                    .into_iter()
                    .map(|row| ContractIntruder {
                        name: row.get(0),
                        kind: row.get(1),
                    })
                    .collect();
                Ok((views, intruders))
            })
        })
        .await
    }
}
