//! The SQLite adapter of the hush storage port: the default, single-node backend.
//!
//! One database file in WAL mode with `synchronous=FULL`, so a method that returned
//! `Ok` survives a power cut. Other processes (`hushd user ...`) may open the same file
//! while the server runs; SQLite's locking and a busy timeout serialise them.
//!
//! Modules: [`migrations`] (schema files, applied in order, never edited once shipped).
//! A new operation: implement the new `Store` method here as one transaction.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod migrations;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hush_proto::ids::{DeviceId, UserId, Username};
use hush_store::{
    NewDevice, NewInvite, NewUser, Session, Store, StoreError, UserRecord, UserSummary,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// A [`Store`] on one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(backend)?;
        migrations::apply(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection off the async runtime's worker threads.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Backend("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

fn id16(bytes: Vec<u8>) -> Result<[u8; 16], StoreError> {
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| backend("stored id is not 16 bytes"))
}

fn username(s: String) -> Result<Username, StoreError> {
    Username::parse(&s).map_err(|e| backend(format!("stored username: {e}")))
}

fn user_id_of(conn: &Connection, name: &Username) -> Result<Vec<u8>, StoreError> {
    conn.query_row(
        "SELECT user_id FROM users WHERE username = ?1",
        [name.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::UserNotFound)
}

fn insert_device(conn: &Connection, user: &[u8], d: &NewDevice) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO devices (device_id, user_id, name, token_digest, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            d.device_id.as_bytes().as_slice(),
            user,
            d.name,
            d.token_digest.as_slice(),
            d.created_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn set_flag(
    conn: &Connection,
    column: &str,
    name: &Username,
    value: bool,
) -> Result<(), StoreError> {
    // `column` is one of two literals chosen below, never input.
    let sql = format!("UPDATE users SET {column} = ?1 WHERE username = ?2");
    let changed = conn
        .execute(&sql, params![value, name.as_str()])
        .map_err(backend)?;
    if changed == 0 {
        return Err(StoreError::UserNotFound);
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn secret_or_init(&self, name: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO server_secrets (name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, init],
            )
            .map_err(backend)?;
            let value: Vec<u8> = tx
                .query_row(
                    "SELECT value FROM server_secrets WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(value)
        })
        .await
    }

    async fn create_user(&self, user: NewUser) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let taken: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                    [user.username.as_str()],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if taken {
                return Err(StoreError::UsernameTaken);
            }
            if let Some(digest) = user.invite {
                let used = tx
                    .execute(
                        "UPDATE invites SET uses_left = uses_left - 1
                         WHERE digest = ?1 AND uses_left > 0
                           AND (expires_at IS NULL OR expires_at > ?2)",
                        params![digest.as_slice(), user.created_at],
                    )
                    .map_err(backend)?;
                if used != 1 {
                    return Err(StoreError::InviteInvalid);
                }
            }
            let uid = user.user_id.as_bytes().as_slice();
            tx.execute(
                "INSERT INTO users (user_id, username, display_name, email, password_file, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    uid,
                    user.username.as_str(),
                    user.display_name,
                    user.email,
                    user.password_file,
                    user.created_at
                ],
            )
            .map_err(backend)?;
            insert_device(&tx, uid, &user.device)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn user_by_name(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT user_id, display_name, email, password_file, admin, disabled, created_at
                     FROM users WHERE username = ?1",
                    [name.as_str()],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            row.map(
                |(id, display_name, email, password_file, admin, disabled, created_at)| {
                    Ok(UserRecord {
                        user_id: UserId::from_bytes(id16(id)?),
                        username: name.clone(),
                        display_name,
                        email,
                        password_file,
                        admin,
                        disabled,
                        created_at,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn add_device(&self, user: UserId, device: NewDevice) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = ?1)",
                    [user.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if !exists {
                return Err(StoreError::UserNotFound);
            }
            insert_device(&tx, user.as_bytes(), &device)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn session(&self, token_digest: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        let digest = *token_digest;
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT d.device_id, u.user_id, u.username, u.display_name, u.email,
                            u.admin, u.disabled, u.created_at
                     FROM devices d JOIN users u ON u.user_id = d.user_id
                     WHERE d.token_digest = ?1",
                    [digest.as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            row.map(
                |(d, u, name, display_name, email, admin, disabled, created_at)| {
                    Ok(Session {
                        device_id: DeviceId::from_bytes(id16(d)?),
                        user_id: UserId::from_bytes(id16(u)?),
                        username: username(name)?,
                        display_name,
                        email,
                        admin,
                        disabled,
                        created_at,
                    })
                },
            )
            .transpose()
        })
        .await
    }

    async fn remove_device(&self, device: DeviceId) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM devices WHERE device_id = ?1",
                [device.as_bytes().as_slice()],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO invites (digest, uses_left, expires_at, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    invite.digest.as_slice(),
                    invite.uses,
                    invite.expires_at,
                    invite.created_at
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn invite_usable(&self, digest: &[u8; 32], now: i64) -> Result<bool, StoreError> {
        let digest = *digest;
        self.run(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM invites WHERE digest = ?1 AND uses_left > 0
                                AND (expires_at IS NULL OR expires_at > ?2))",
                params![digest.as_slice(), now],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT u.user_id, u.username, u.display_name, u.admin, u.disabled, u.created_at,
                            (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.user_id)
                     FROM users u ORDER BY u.username",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, display_name, admin, disabled, created_at, devices) =
                    row.map_err(backend)?;
                out.push(UserSummary {
                    user_id: UserId::from_bytes(id16(id)?),
                    username: username(name)?,
                    display_name,
                    admin,
                    disabled,
                    devices,
                    created_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn set_disabled(&self, name: &Username, disabled: bool) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| set_flag(conn, "disabled", &name, disabled))
            .await
    }

    async fn set_admin(&self, name: &Username, admin: bool) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| set_flag(conn, "admin", &name, admin))
            .await
    }

    async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        let name = name.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let id = user_id_of(&tx, &name)?;
            tx.execute("DELETE FROM devices WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            tx.execute("DELETE FROM users WHERE user_id = ?1", [&id])
                .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }
}
