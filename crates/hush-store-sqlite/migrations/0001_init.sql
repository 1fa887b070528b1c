-- Accounts, devices, invites and server-wide secrets.
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE users (
    user_id       BLOB PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT,
    email         TEXT,
    password_file BLOB NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    device_id    BLOB PRIMARY KEY,
    user_id      BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    name         TEXT,
    token_digest BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX devices_by_user ON devices(user_id);

CREATE TABLE invites (
    digest     BLOB PRIMARY KEY,
    uses_left  INTEGER NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
