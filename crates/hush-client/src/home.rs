//! The client's home directory: one account on one server. It holds `hush.db` (the
//! account, MLS state, history) and `known_servers` (pins). The directory is readable
//! by its owner only.
//!
//! A home may be encrypted at rest (ADR 0006): `hush.db` is then a SQLCipher database
//! under a random key, and `hush.key` holds that key sealed under the user's passphrase
//! (`hush_crypto::home`). A plaintext home is turned into an encrypted one in place
//! ([`Home::open_with`] given a passphrase): the database is exported into
//! `hush.db.encrypting`, the key file is written (the commit point), then the export
//! replaces the old file; an interrupted migration is finished or undone on the next
//! open, so the home is never half converted.
use std::io::Write;
use std::path::{Path, PathBuf};

use hush_crypto::home::{HomeKey, HomeKeyError};
use zeroize::Zeroizing;

use hush_proto::ids::{DeviceId, SessionToken, UserId, Username};
use rusqlite::{Connection, OptionalExtension, params};

use crate::ClientError;
use crate::trust::KnownServers;

/// Every migration of the local database, in order; index + 1 is its version.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE account (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        server       TEXT NOT NULL,
        username     TEXT NOT NULL,
        user_id      BLOB NOT NULL,
        device_id    BLOB NOT NULL,
        display_name TEXT,
        email        TEXT,
        token        BLOB NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT;",
    MESSAGING,
    HANDSHAKES,
    IDENTITIES,
    SETTINGS,
    FILES,
    BACKUP,
    GROUP_INFOS,
    HARDENING,
];

/// P438: the proposals (as relayed) of each group's current epoch, which a commit that
/// includes them hands the server; P457: outbox entries that kept failing are set
/// aside (with the last error) instead of blocking the rest; P547: devices revoked by
/// their account key, remembered whatever a server lists later.
const HARDENING: &str = "
    CREATE TABLE proposal_messages (
        group_id BLOB NOT NULL,
        epoch    INTEGER NOT NULL,
        payload  BLOB NOT NULL,
        UNIQUE (group_id, epoch, payload)
    ) STRICT;
    ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN set_aside INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN last_error TEXT;
    ALTER TABLE backup_state ADD COLUMN pending_password BLOB;
    ALTER TABLE backup_state ADD COLUMN pending_recovery BLOB;
    CREATE TABLE revoked_devices (
        device_id   BLOB PRIMARY KEY,
        username    TEXT NOT NULL,
        account_key BLOB NOT NULL,
        statement   BLOB NOT NULL
    ) STRICT;
";

/// P535: the epoch of each conversation whose sealed GroupInfo the server holds from
/// this device; P536: GroupInfos this device could not join from (tried once each).
const GROUP_INFOS: &str = "
    CREATE TABLE published_group_infos (
        group_id BLOB PRIMARY KEY,
        epoch    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE failed_joins (
        group_id BLOB PRIMARY KEY,
        epoch    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE resync_needed (
        group_id BLOB PRIMARY KEY
    ) STRICT;
    CREATE TABLE processed_entries (
        n      INTEGER PRIMARY KEY,
        id     INTEGER NOT NULL,
        digest BLOB NOT NULL
    ) STRICT;
    CREATE INDEX processed_entries_by_id ON processed_entries(id);
";

/// P570–P573: this home's side of the account's encrypted backup.
const BACKUP: &str = "
    CREATE TABLE backup_state (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        key         BLOB NOT NULL,
        count       INTEGER NOT NULL DEFAULT 0,
        backed_up   INTEGER NOT NULL DEFAULT 0,
        list_digest BLOB,
        last_ms     INTEGER,
        restored_ms INTEGER
    ) STRICT;
";

/// P560: files offered in conversations (with what opens them), and uploads not yet
/// offered (so an interrupted one resumes with the same key and id).
const FILES: &str = "
    CREATE TABLE file_offers (
        message_id TEXT PRIMARY KEY,
        file_id    BLOB NOT NULL,
        group_id   BLOB NOT NULL,
        name       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        key        BLOB NOT NULL,
        sha256     BLOB NOT NULL,
        saved_to   TEXT
    ) STRICT;
    CREATE INDEX file_offers_by_file ON file_offers(file_id);
    CREATE TABLE uploads (
        file_id     BLOB PRIMARY KEY,
        group_id    BLOB NOT NULL,
        path        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        modified_ms INTEGER NOT NULL,
        key         BLOB NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
";

/// This home's preferences, by name (`invitations`: P463).
const SETTINGS: &str = "
    CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
";

/// Account keys (P540–P546): this account's key, its device certificate, the pinned
/// account keys of contacts (first seen wins), and which account each seen device is.
const IDENTITIES: &str = "
    CREATE TABLE account_key (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        secret  BLOB NOT NULL,
        public  BLOB NOT NULL
    ) STRICT;
    ALTER TABLE identity ADD COLUMN certificate BLOB;
    CREATE TABLE contacts (
        username    TEXT PRIMARY KEY,
        account_key BLOB NOT NULL UNIQUE,
        first_seen  INTEGER NOT NULL,
        verified    INTEGER NOT NULL DEFAULT 0,
        changed_key BLOB
    ) STRICT;
    CREATE TABLE device_accounts (
        device_id   BLOB PRIMARY KEY,
        account_key BLOB NOT NULL
    ) STRICT;
    ALTER TABLE seen_seqs ADD COLUMN window INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE refused_devices (
        device_id BLOB PRIMARY KEY,
        username  TEXT NOT NULL,
        reason    TEXT NOT NULL,
        at        INTEGER NOT NULL
    ) STRICT;
";

/// Handshakes recorded before they are sent (P423, P433) and leaves not yet delivered.
const HANDSHAKES: &str = "
    CREATE TABLE pending_handshakes (
        group_id    BLOB PRIMARY KEY,
        kind        TEXT NOT NULL,
        request     BLOB NOT NULL,
        effects     TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE pending_leaves (
        group_id BLOB PRIMARY KEY
    ) STRICT;
    ALTER TABLE history ADD COLUMN rejection TEXT;
";

/// Conversations, history, the outbox, and what this device has seen.
const MESSAGING: &str = "
    CREATE TABLE identity (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        public_key  BLOB NOT NULL
    ) STRICT;
    CREATE TABLE conversations (
        group_id   BLOB PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        next_seq   INTEGER NOT NULL DEFAULT 1
    ) STRICT;
    CREATE TABLE peer_devices (
        device_id BLOB PRIMARY KEY,
        username  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE seen_seqs (
        group_id  BLOB NOT NULL,
        device_id BLOB NOT NULL,
        last_seq  INTEGER NOT NULL,
        PRIMARY KEY (group_id, device_id)
    ) STRICT;
    CREATE TABLE history (
        id           INTEGER PRIMARY KEY,
        group_id     BLOB NOT NULL,
        kind         TEXT NOT NULL,
        message_id   TEXT,
        sender       TEXT,
        device       TEXT,
        sent_at      INTEGER NOT NULL,
        text         TEXT NOT NULL,
        outgoing     INTEGER NOT NULL DEFAULT 0,
        state        TEXT NOT NULL,
        unread       INTEGER NOT NULL DEFAULT 0,
        streamed     INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX history_by_group ON history(group_id, id);
    CREATE INDEX history_unstreamed ON history(id) WHERE streamed = 0;
    CREATE TABLE outbox (
        message_id BLOB PRIMARY KEY,
        group_id   BLOB NOT NULL,
        epoch      INTEGER NOT NULL,
        ciphertext BLOB NOT NULL,
        content    BLOB NOT NULL
    ) STRICT;
    CREATE TABLE sync_state (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        last_entry INTEGER NOT NULL
    ) STRICT;
    INSERT INTO sync_state (id, last_entry) VALUES (1, 0);
";

/// The account this home holds.
#[derive(Debug, Clone)]
pub struct StoredAccount {
    pub server: String,
    pub username: Username,
    pub user_id: UserId,
    pub device_id: DeviceId,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub token: SessionToken,
    pub created_at: i64,
}

pub struct Home {
    dir: PathBuf,
    db: Connection,
    known: KnownServers,
    encrypted: bool,
    /// `hush.lock`, held shared for as long as this home is open: encrypting the home
    /// replaces its database file, so it needs the lock alone (see [`Home::open_with`]).
    _lock: std::fs::File,
}

/// The database file, its key file, and the export a migration writes first.
const DB_FILE: &str = "hush.db";
const KEY_FILE: &str = "hush.key";
const ENCRYPTING: &str = "hush.db.encrypting";
const LOCK_FILE: &str = "hush.lock";

/// Takes `lock` alone (it is held shared by this process already): refused at once
/// while any other process has the home open.
fn lock_alone(lock: &std::fs::File, what: &str) -> Result<(), ClientError> {
    match lock.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(ClientError::Home(format!(
            "this home is open in another hush process (a `hush tui`, `recv --follow` or \
             another command); close it first, then {what}"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(home_err(format!("locking the home ({what}): {e}")))
        }
    }
}

/// What opens a home: nothing (a plaintext home), or the passphrase of an encrypted
/// one. Given to a plaintext or new home, a passphrase encrypts it.
#[derive(Clone, Default)]
pub enum Unlock {
    #[default]
    None,
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unlock::None => "Unlock::None",
            Unlock::Passphrase(_) => "Unlock::Passphrase(redacted)",
        })
    }
}

/// Whether the home at `dir` is encrypted at rest (it has a key file).
pub fn is_encrypted(dir: &Path) -> bool {
    dir.join(KEY_FILE).exists()
}

/// Whether `dir` holds a home database at all.
pub fn exists(dir: &Path) -> bool {
    dir.join(DB_FILE).exists()
}

fn key_err(e: HomeKeyError) -> ClientError {
    match e {
        HomeKeyError::WrongPassphrase => ClientError::WrongPassphrase,
        other => home_err(other),
    }
}

/// Writes `bytes` to `dir/name` through a temporary file, synced, then renamed.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ClientError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let fail = |e: std::io::Error| home_err(format!("writing {}: {e}", dir.join(name).display()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
        }
        f.write_all(bytes).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes a plaintext database's WAL and shared-memory files.
fn remove_sidecars(dir: &Path) {
    for side in ["hush.db-wal", "hush.db-shm", "hush.db-journal"] {
        let _ = std::fs::remove_file(dir.join(side));
    }
}

/// Finishes a migration whose key file was written, or undoes one that was not.
fn settle_migration(dir: &Path) -> Result<(), ClientError> {
    let export = dir.join(ENCRYPTING);
    if !export.exists() {
        return Ok(());
    }
    if dir.join(KEY_FILE).exists() {
        tracing::info!("finishing an interrupted encryption of the home");
        remove_sidecars(dir);
        std::fs::rename(&export, dir.join(DB_FILE))
            .map_err(|e| home_err(format!("finishing the home's encryption: {e}")))?;
        sync_dir(dir);
    } else {
        tracing::info!("undoing an interrupted encryption of the home");
        std::fs::remove_file(&export)
            .map_err(|e| home_err(format!("undoing the home's encryption: {e}")))?;
    }
    Ok(())
}

/// The raw-key pragma SQLCipher takes (no key derivation of its own: the key is random).
fn key_pragma(key: &HomeKey) -> Zeroizing<String> {
    let mut hex = Zeroizing::new(String::with_capacity(64));
    for b in key.expose() {
        hex.push_str(&format!("{b:02x}"));
    }
    Zeroizing::new(format!("\"x'{}'\"", hex.as_str()))
}

fn open_db(path: &Path, key: Option<&HomeKey>) -> Result<Connection, ClientError> {
    let db =
        Connection::open(path).map_err(|e| home_err(format!("opening {}: {e}", path.display())))?;
    if let Some(key) = key {
        db.execute_batch(&format!("PRAGMA key = {};", key_pragma(key).as_str()))
            .map_err(home_err)?;
    }
    // The first read tells a wrong key (or a damaged file) from a good one.
    db.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) if key.is_some() => home_err(format!(
                "{} does not open with this home's key: the database is damaged or was replaced",
                path.display()
            )),
            Some(rusqlite::ErrorCode::NotADatabase) => home_err(format!(
                "{} is not a plaintext database: if the home is encrypted, its key file {KEY_FILE} is missing",
                path.display()
            )),
            _ => home_err(format!("opening {}: {e}", path.display())),
        })?;
    Ok(db)
}

/// Encrypts the plaintext home at `dir` under a new key sealed with `passphrase`.
fn encrypt_in_place(dir: &Path, passphrase: &[u8]) -> Result<HomeKey, ClientError> {
    let key = HomeKey::generate();
    let sealed = key.seal(passphrase).map_err(key_err)?;
    let export = dir.join(ENCRYPTING);
    let _ = std::fs::remove_file(&export);
    {
        let db = open_db(&dir.join(DB_FILE), None)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(home_err)?;
        // Nobody else may be writing while the copy is made.
        db.execute_batch("BEGIN EXCLUSIVE; COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| {
                home_err(format!(
                    "the home is in use by another hush process; close it first ({e})"
                ))
            })?;
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(home_err)?;
        let target = export
            .to_str()
            .ok_or_else(|| home_err("the home's path is not UTF-8"))?
            .replace('\'', "''");
        db.execute_batch(&format!(
            "ATTACH DATABASE '{target}' AS encrypted KEY {};
             SELECT sqlcipher_export('encrypted');
             PRAGMA encrypted.user_version = {version};
             DETACH DATABASE encrypted;",
            key_pragma(&key).as_str()
        ))
        .map_err(|e| home_err(format!("encrypting the home: {e}")))?;
    }
    if let Ok(f) = std::fs::File::open(&export) {
        f.sync_all()
            .map_err(|e| home_err(format!("encrypting the home: {e}")))?;
    }
    write_atomically(dir, KEY_FILE, &sealed)?;
    settle_migration(dir)?;
    tracing::info!("the home is now encrypted at rest");
    Ok(key)
}

/// An open write transaction; rolled back on drop unless committed (also on unwind).
struct Transaction<'a> {
    db: &'a Connection,
    done: bool,
}

impl<'a> Transaction<'a> {
    fn begin(db: &'a Connection) -> Result<Self, ClientError> {
        db.execute_batch("BEGIN IMMEDIATE").map_err(home_err)?;
        Ok(Transaction { db, done: false })
    }

    fn commit(mut self) -> Result<(), ClientError> {
        self.done = true;
        self.db.execute_batch("COMMIT").map_err(home_err)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.db.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "rolling back a local transaction failed");
        }
    }
}

pub(crate) fn home_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Home(e.to_string())
}

impl Home {
    /// Opens (creating if needed) a plaintext home at `dir`; an encrypted one needs
    /// [`Home::open_with`] and its passphrase.
    pub fn open(dir: &Path) -> Result<Home, ClientError> {
        Home::open_with(dir, &Unlock::None)
    }

    /// Opens (creating if needed) the home at `dir`. An encrypted home needs its
    /// passphrase (`PassphraseNeeded` without, `WrongPassphrase` with another one,
    /// the home untouched either way); a passphrase given to a new or plaintext home
    /// encrypts it.
    pub fn open_with(dir: &Path, unlock: &Unlock) -> Result<Home, ClientError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| home_err(format!("creating {}: {e}", dir.display())))?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| home_err(format!("restricting {}: {e}", dir.display())))?;
        }
        // Every open holds the lock shared; what replaces the database file (finishing
        // an interrupted encryption, encrypting a plaintext home) holds it alone, so a
        // process that has the home open never writes into a file that was replaced.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| home_err(format!("opening the home's lock file: {e}")))?;
        lock.lock_shared()
            .map_err(|e| home_err(format!("locking the home: {e}")))?;
        if dir.join(ENCRYPTING).exists() {
            lock_alone(&lock, "open it again")?;
            settle_migration(dir)?;
        }
        let key = match (is_encrypted(dir), unlock) {
            (true, Unlock::None) => return Err(ClientError::PassphraseNeeded),
            (true, Unlock::Passphrase(p)) => {
                let sealed = std::fs::read(dir.join(KEY_FILE))
                    .map_err(|e| home_err(format!("reading the home's key file: {e}")))?;
                Some(HomeKey::open(&sealed, p.as_bytes()).map_err(key_err)?)
            }
            (false, Unlock::Passphrase(p)) if exists(dir) => {
                lock_alone(&lock, "encrypt it")?;
                Some(encrypt_in_place(dir, p.as_bytes())?)
            }
            (false, Unlock::Passphrase(p)) => {
                let key = HomeKey::generate();
                write_atomically(dir, KEY_FILE, &key.seal(p.as_bytes()).map_err(key_err)?)?;
                Some(key)
            }
            (false, Unlock::None) => None,
        };
        // Back to sharing the home (a no-op unless it was taken alone above).
        lock.lock_shared()
            .map_err(|e| home_err(format!("locking the home: {e}")))?;
        let path = dir.join(DB_FILE);
        let mut db = open_db(&path, key.as_ref())?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(home_err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(home_err)?;
        migrate(&mut db)?;
        crate::mls::migrate(&mut db).map_err(|e| home_err(format!("MLS storage: {e}")))?;
        Ok(Home {
            dir: dir.to_owned(),
            db,
            known: KnownServers::new(dir),
            encrypted: key.is_some(),
            _lock: lock,
        })
    }

    /// Whether this home is encrypted at rest.
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The home's database: MLS state, history and the account share it.
    pub(crate) fn db(&self) -> &Connection {
        &self.db
    }

    /// Runs `f` in one write transaction: all of it is stored, or none. `f` is
    /// synchronous on purpose: no network I/O ever happens inside a local transaction,
    /// so the write lock is held for milliseconds and a dropped future cannot leave a
    /// transaction open.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce() -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let tx = Transaction::begin(&self.db)?;
        let value = f()?;
        tx.commit()?;
        Ok(value)
    }

    pub fn known_servers(&self) -> &KnownServers {
        &self.known
    }

    /// A preference of this home, if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>, ClientError> {
        self.db
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(home_err)
    }

    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), ClientError> {
        self.db
            .execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [name, value],
            )
            .map_err(home_err)?;
        Ok(())
    }

    /// P463: whose group invitations this device accepts by itself.
    pub fn invitation_policy(&self) -> Result<InvitationPolicy, ClientError> {
        Ok(match self.setting("invitations")?.as_deref() {
            Some("known") => InvitationPolicy::Known,
            _ => InvitationPolicy::Everyone,
        })
    }

    pub fn account(&self) -> Result<Option<StoredAccount>, ClientError> {
        let row = self
            .db
            .query_row(
                "SELECT server, username, user_id, device_id, display_name, email, token, created_at
                 FROM account WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .optional()
            .map_err(home_err)?;
        let Some((server, username, user_id, device_id, display_name, email, token, created_at)) =
            row
        else {
            return Ok(None);
        };
        let corrupt = |e: hush_proto::ProtoError| {
            home_err(format!("the home's account record is damaged: {e}"))
        };
        Ok(Some(StoredAccount {
            server,
            username: Username::parse(&username).map_err(corrupt)?,
            user_id: UserId::from_slice(&user_id).map_err(corrupt)?,
            device_id: DeviceId::from_slice(&device_id).map_err(corrupt)?,
            display_name,
            email,
            token: SessionToken::from_slice(&token).map_err(corrupt)?,
            created_at,
        }))
    }

    pub fn save_account(&self, a: &StoredAccount) -> Result<(), ClientError> {
        self.db
            .execute(
                "INSERT OR REPLACE INTO account
                 (id, server, username, user_id, device_id, display_name, email, token, created_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    a.server,
                    a.username.as_str(),
                    a.user_id.as_bytes().as_slice(),
                    a.device_id.as_bytes().as_slice(),
                    a.display_name,
                    a.email,
                    a.token.expose().as_slice(),
                    a.created_at
                ],
            )
            .map_err(home_err)?;
        Ok(())
    }

    pub fn clear_account(&self) -> Result<(), ClientError> {
        self.db
            .execute("DELETE FROM account", [])
            .map_err(home_err)?;
        Ok(())
    }
}

fn migrate(db: &mut Connection) -> Result<(), ClientError> {
    let current: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(home_err)?;
    if current > MIGRATIONS.len() as i64 {
        return Err(home_err(
            "this home was written by a newer hush; upgrade hush to use it",
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = db.transaction().map_err(home_err)?;
        tx.execute_batch(sql).map_err(home_err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(home_err)?;
        tx.commit().map_err(home_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        assert!(home.account().unwrap().is_none());
        let a = StoredAccount {
            server: "h:1".into(),
            username: Username::parse("ann").unwrap(),
            user_id: UserId::from_bytes([1; 16]),
            device_id: DeviceId::from_bytes([2; 16]),
            display_name: Some("Ann".into()),
            email: None,
            token: SessionToken::from_bytes([3; 32]),
            created_at: 5,
        };
        home.save_account(&a).unwrap();
        drop(home);
        let home = Home::open(dir.path()).unwrap();
        let back = home.account().unwrap().unwrap();
        assert_eq!(back.username, a.username);
        assert_eq!(back.token, a.token);
        home.clear_account().unwrap();
        assert!(home.account().unwrap().is_none());
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let count = |h: &Home| -> i64 {
            h.db()
                .query_row("SELECT COUNT(*) FROM pending_leaves", [], |r| r.get(0))
                .unwrap()
        };
        let failed: Result<(), ClientError> = home.write(|| {
            home.db()
                .execute("INSERT INTO pending_leaves (group_id) VALUES (x'01')", [])
                .map_err(home_err)?;
            Err(ClientError::Invalid("changed my mind".into()))
        });
        assert!(failed.is_err());
        assert_eq!(count(&home), 0, "rolled back");
        home.write(|| {
            home.db()
                .execute("INSERT INTO pending_leaves (group_id) VALUES (x'01')", [])
                .map_err(home_err)
        })
        .unwrap();
        assert_eq!(count(&home), 1, "committed");
        // A second process on the same home is not locked out between writes.
        let other = Home::open(dir.path()).unwrap();
        other
            .write(|| {
                other
                    .db()
                    .execute("DELETE FROM pending_leaves", [])
                    .map_err(home_err)
            })
            .unwrap();
        assert_eq!(count(&home), 0);
    }

    #[test]
    fn encrypting_is_refused_while_another_opener_holds_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let first = Home::open(dir.path()).unwrap();
        first.set_setting("kept", "yes").unwrap();
        let pass = Unlock::Passphrase(Zeroizing::new("a long passphrase".into()));
        let refused = Home::open_with(dir.path(), &pass).err().unwrap();
        assert!(
            refused.to_string().contains("open in another hush process"),
            "{refused}"
        );
        // Nothing changed: the first opener keeps writing into the live database.
        assert!(!is_encrypted(dir.path()));
        first.set_setting("after", "yes").unwrap();
        drop(first);
        let home = Home::open_with(dir.path(), &pass).unwrap();
        assert!(home.encrypted());
        assert_eq!(home.setting("kept").unwrap().as_deref(), Some("yes"));
        assert_eq!(home.setting("after").unwrap().as_deref(), Some("yes"));
        // Once encrypted, other openers share it again.
        let second = Home::open_with(dir.path(), &pass).unwrap();
        assert_eq!(second.setting("after").unwrap().as_deref(), Some("yes"));
    }
}

/// P463: which group invitations from people this account has not accepted yet are
/// accepted without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationPolicy {
    /// Anyone's (the default): like a team server where everyone may add anyone.
    Everyone,
    /// None: each waits for `hush accept USER` or `hush decline USER`.
    Known,
}

impl InvitationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationPolicy::Everyone => "everyone",
            InvitationPolicy::Known => "known",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ClientError> {
        match s {
            "everyone" => Ok(InvitationPolicy::Everyone),
            "known" => Ok(InvitationPolicy::Known),
            other => Err(ClientError::Invalid(format!(
                "invitations from {other:?}? say everyone or known"
            ))),
        }
    }
}
