//! Writing a whole database in, table by table, in one transaction (`hushd migrate`
//! from SQLite). Refused unless the database holds no account, group or message.
//! Usage counters are not copied: the triggers recount them from the rows, and the
//! devices' missed counts are set last ([`Import::set_missed`]).
use hush_store::StoreError;
use hush_store::dump::{Row, Value, is_identifier};
use sqlx::{Postgres, QueryBuilder, Transaction};

use crate::{PgStore, pg};

/// The tables copied, in an order that satisfies every foreign key.
pub const TABLES: &[&str] = &[
    "server_secrets",
    "users",
    "devices",
    "device_owners",
    "invites",
    "key_packages",
    "groups",
    "group_members",
    "group_names",
    "direct_groups",
    "messages",
    "deliveries",
    "held",
    "sent_messages",
    "handshakes",
    "consent",
    "two_factor",
    "pending_totp",
    "recovery_codes",
    "channels",
    "channel_admins",
    "channel_grants",
    "channel_totp_steps",
    "files",
    "file_recipients",
    "backups",
    "backup_chunks",
    "failures",
    "group_infos",
    "group_states",
    "revocations",
];

/// Tables whose `id` is an identity column: copied as they are, then their
/// sequences moved past the largest id.
const IDENTITY: &[&str] = &["key_packages", "messages", "deliveries", "held"];

/// One value in its column's type.
enum Typed {
    Bytes(Option<Vec<u8>>),
    Big(Option<i64>),
    Int(Option<i32>),
    Bool(Option<bool>),
    Text(Option<String>),
}

fn typed(table: &str, column: &str, ty: &str, v: Value) -> Result<Typed, StoreError> {
    let bad = |v: &Value| {
        StoreError::backend(format!(
            "{table}.{column}: {v:?} does not fit a column of type {ty}"
        ))
    };
    Ok(match (ty, v) {
        ("bytea", Value::Bytes(b)) => Typed::Bytes(Some(b)),
        ("bytea", Value::Null) => Typed::Bytes(None),
        ("bigint", Value::Int(n)) => Typed::Big(Some(n)),
        ("bigint", Value::Null) => Typed::Big(None),
        ("integer", Value::Int(n)) => {
            Typed::Int(Some(i32::try_from(n).map_err(|_| bad(&Value::Int(n)))?))
        }
        ("integer", Value::Null) => Typed::Int(None),
        ("boolean", Value::Int(n)) => Typed::Bool(Some(n != 0)),
        ("boolean", Value::Null) => Typed::Bool(None),
        ("text", Value::Text(t)) => Typed::Text(Some(t)),
        ("text", Value::Null) => Typed::Text(None),
        (_, v) => return Err(bad(&v)),
    })
}

/// A copy in progress: nothing is visible until [`Import::commit`].
pub struct Import {
    tx: Transaction<'static, Postgres>,
}

impl PgStore {
    /// Starts a copy into this database, refused unless it is empty.
    pub async fn import(&self) -> Result<Import, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        let c = &mut *tx;
        // Nodes started meanwhile would write: hold them off until the commit.
        exec!(c, "LOCK TABLE users, groups, messages IN EXCLUSIVE MODE");
        let empty = one!(
            c,
            bool,
            "SELECT NOT EXISTS (SELECT 1 FROM users)
                AND NOT EXISTS (SELECT 1 FROM groups)
                AND NOT EXISTS (SELECT 1 FROM messages)"
        );
        if !empty {
            return Err(StoreError::backend(
                "the database already holds accounts or groups: migrate only into an empty one",
            ));
        }
        Ok(Import { tx })
    }
}

impl Import {
    /// The columns of `table`, in their order, with their types.
    pub async fn columns(&mut self, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        let c = &mut *self.tx;
        Ok(rows!(
            c,
            (String, String),
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            table
        ))
    }

    /// Inserts `rows` (values of `columns`, typed as `columns` says) into `table`.
    pub async fn insert(
        &mut self,
        table: &str,
        columns: &[(String, String)],
        rows: Vec<Row>,
    ) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if !is_identifier(table) || !columns.iter().all(|(c, _)| is_identifier(c)) {
            return Err(StoreError::backend(format!(
                "not a table to copy: {table:?}"
            )));
        }
        let mut typed_rows = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != columns.len() {
                return Err(StoreError::backend(format!(
                    "{table}: a row of {} values for {} columns",
                    row.len(),
                    columns.len()
                )));
            }
            let mut out = Vec::with_capacity(row.len());
            for (v, (name, ty)) in row.into_iter().zip(columns) {
                out.push(typed(table, name, ty, v)?);
            }
            typed_rows.push(out);
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let overriding = if IDENTITY.contains(&table) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "INSERT INTO {table} ({}){overriding} ",
            names.join(", ")
        ));
        let n = typed_rows.len() as u64;
        q.push_values(typed_rows, |mut b, row| {
            for v in row {
                match v {
                    Typed::Bytes(x) => b.push_bind(x),
                    Typed::Big(x) => b.push_bind(x),
                    Typed::Int(x) => b.push_bind(x),
                    Typed::Bool(x) => b.push_bind(x),
                    Typed::Text(x) => b.push_bind(x),
                };
            }
        });
        q.build()
            .execute(&mut *self.tx)
            .await
            .map_err(|e| StoreError::backend_from(format!("copying {table}"), e, false))?;
        Ok(n)
    }

    /// Sets a device's count of messages it missed (P450).
    pub async fn set_missed(&mut self, device: &[u8], missed: i64) -> Result<(), StoreError> {
        let c = &mut *self.tx;
        exec!(
            c,
            "INSERT INTO mailbox_usage (device_id, missed)
             SELECT device_id, $2 FROM devices WHERE device_id = $1
             ON CONFLICT (device_id) DO UPDATE SET missed = EXCLUDED.missed",
            device,
            missed
        );
        Ok(())
    }

    /// Moves the id sequences past the copied ids, and past `last_ids` (the largest
    /// id the source ever handed out per table, deleted rows included), then makes the
    /// copy visible. Mailbox entry ids thus keep growing across the migration: a
    /// client skips entries at or below the last id it processed.
    pub async fn commit(mut self, last_ids: &[(String, i64)]) -> Result<(), StoreError> {
        for table in IDENTITY {
            let floor = last_ids
                .iter()
                .find(|(t, _)| t == table)
                .map_or(0, |(_, n)| *n);
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(COALESCE(MAX(id), 0), $1) + 1, false) FROM {table}"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(floor)
                .execute(&mut *self.tx)
                .await
                .map_err(pg)?;
        }
        self.tx.commit().await.map_err(pg)
    }
}
