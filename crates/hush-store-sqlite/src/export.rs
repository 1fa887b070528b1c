//! Reading a whole database out, table by table (`hushd migrate` to PostgreSQL).
use std::path::Path;

use hush_store::StoreError;
use hush_store::dump::{Row, Value, is_identifier};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::backend;

/// A read-only view of a server's SQLite database, at the current schema.
pub struct Export {
    conn: Connection,
}

impl Export {
    /// Opens the database at `path` (which must exist), bringing it to the current
    /// schema first, then read-only. Stop the server that uses it before reading.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::backend(format!(
                "no database at {}",
                path.display()
            )));
        }
        drop(crate::SqliteStore::open(path)?);
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend)?;
        Ok(Export { conn })
    }

    /// The largest id each AUTOINCREMENT table ever handed out (`sqlite_sequence`),
    /// also for rows deleted since: mailbox entry ids must keep growing after a
    /// migration, or clients take new entries for ones they processed already.
    pub fn last_ids(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Rows in `table`.
    pub fn count(&self, table: &str) -> Result<u64, StoreError> {
        check(table)?;
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `limit` rows of `table` after the first `offset`, with `columns` in that
    /// order. The order is the table's storage order, stable while nothing writes.
    pub fn page(
        &self,
        table: &str,
        columns: &[String],
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Row>, StoreError> {
        check(table)?;
        for c in columns {
            check(c)?;
        }
        let sql = format!(
            "SELECT {} FROM {table} LIMIT ?1 OFFSET ?2",
            columns.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(backend)?;
        let mut rows = stmt
            .query([
                i64::try_from(limit).unwrap_or(i64::MAX),
                i64::try_from(offset).unwrap_or(i64::MAX),
            ])
            .map_err(backend)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(backend)? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(match row.get_ref(i).map_err(backend)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(StoreError::backend(format!(
                            "{table}.{column}: a real number where hush stores none"
                        )));
                    }
                });
            }
            out.push(values);
        }
        Ok(out)
    }
}

fn check(name: &str) -> Result<(), StoreError> {
    if is_identifier(name) {
        Ok(())
    } else {
        Err(StoreError::backend(format!(
            "not a table or column name: {name:?}"
        )))
    }
}
