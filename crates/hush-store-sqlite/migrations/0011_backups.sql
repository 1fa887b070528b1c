-- P570-P573: each user's encrypted backup. Every column but the sizes and times is
-- opaque to the server: chunks are sealed by the client, the head is signed by the
-- account key, the keys are wrapped under secrets the server never sees.
CREATE TABLE backups (
    user_id          BLOB PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    count            INTEGER NOT NULL DEFAULT 0,
    head             BLOB NOT NULL DEFAULT x'',
    bytes            INTEGER NOT NULL DEFAULT 0,
    updated_ms       INTEGER NOT NULL DEFAULT 0,
    wrapped_password BLOB,
    wrapped_recovery BLOB
) STRICT;

CREATE TABLE backup_chunks (
    user_id BLOB NOT NULL REFERENCES backups(user_id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,
    chunk   BLOB NOT NULL,
    PRIMARY KEY (user_id, idx)
) STRICT, WITHOUT ROWID;
