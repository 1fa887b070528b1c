//! Schema migrations: SQL files applied in order, tracked by `PRAGMA user_version`.
//! A shipped file is never edited; a change is a new file appended to [`MIGRATIONS`].
use rusqlite::Connection;

use hush_store::StoreError;

/// Every migration, in order. Index + 1 is the schema version it brings.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_messaging.sql"),
    include_str!("../migrations/0003_group_names.sql"),
    include_str!("../migrations/0004_handshakes.sql"),
    include_str!("../migrations/0005_account_keys.sql"),
    include_str!("../migrations/0006_quotas.sql"),
    include_str!("../migrations/0007_consent.sql"),
    include_str!("../migrations/0008_two_factor.sql"),
    include_str!("../migrations/0009_channels.sql"),
    include_str!("../migrations/0010_files.sql"),
    include_str!("../migrations/0011_backups.sql"),
    include_str!("../migrations/0012_failures.sql"),
    include_str!("../migrations/0013_group_infos.sql"),
    include_str!("../migrations/0014_group_states.sql"),
    include_str!("../migrations/0015_revocations.sql"),
];

/// Applies the migrations the database has not seen, each in its own transaction.
/// Refuses a database from a newer hushd rather than guessing at it.
pub fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let err = |e: rusqlite::Error| StoreError::backend_from("migration", e, false);
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::backend(format!(
            "database schema version {current} is newer than this hushd knows ({known}); upgrade hushd"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::debug!(version = i + 1, "applied schema migration");
    }
    if current < known {
        // One start-up line, not one per migration.
        tracing::info!(from = current, to = known, "database schema migrated");
    }
    Ok(())
}
