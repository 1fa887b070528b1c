//! Schema migrations: SQL files applied in order, each in its own transaction, never
//! edited once shipped. Nodes starting together take an advisory lock, so one applies
//! them and the others find them applied. A database from a newer hushd is refused.
use hush_store::StoreError;
use sqlx::PgPool;

use crate::pg;

/// The migrations, in order; the version of a database is how many it has applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    (
        "0002_lock_message_on_removal",
        include_str!("../migrations/0002_lock_message_on_removal.sql"),
    ),
    ("0003_blobs", include_str!("../migrations/0003_blobs.sql")),
    (
        "0004_group_infos",
        include_str!("../migrations/0004_group_infos.sql"),
    ),
    (
        "0005_group_states",
        include_str!("../migrations/0005_group_states.sql"),
    ),
    (
        "0006_revocations",
        include_str!("../migrations/0006_revocations.sql"),
    ),
];

/// An arbitrary constant: the advisory lock key of hush's migrations.
const LOCK: i32 = 0x6875_7368;

/// Applies pending migrations to the database behind `pool`.
pub async fn apply(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(pg)?;
    match pending(&mut tx).await {
        Ok(()) => tx.commit().await.map_err(pg),
        Err(e) => {
            // At once, not when the pool gets to it: the lock must not outlive this.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn pending(c: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    // One lock per schema: clusters in other schemas of the database do not wait.
    exec!(
        c,
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        LOCK
    );
    exec!(
        c,
        "CREATE TABLE IF NOT EXISTS hush_schema (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )"
    );
    let have = one!(c, i64, "SELECT COALESCE(MAX(version), 0) FROM hush_schema");
    let have = usize::try_from(have).unwrap_or(0);
    if have > MIGRATIONS.len() {
        return Err(StoreError::backend(format!(
            "the database is at schema version {have}, newer than this hushd knows ({}): upgrade hushd",
            MIGRATIONS.len()
        )));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(have) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *c)
            .await
            .map_err(|e| StoreError::backend_from(format!("migration {name}"), e, false))?;
        exec!(
            c,
            "INSERT INTO hush_schema (version, name) VALUES ($1, $2)",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
            *name
        );
        tracing::debug!(migration = name, "database migrated");
    }
    Ok(())
}
