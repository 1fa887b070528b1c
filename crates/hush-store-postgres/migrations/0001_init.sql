-- The hush relay's schema on PostgreSQL: the same tables and meaning as the SQLite
-- adapter's migrations 0001-0012 (see there for the history of each column), in one
-- file because this adapter starts at that shape. Never edit a shipped migration:
-- add the next file.

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    user_id            BYTEA PRIMARY KEY,
    username           TEXT NOT NULL UNIQUE,
    display_name       TEXT,
    email              TEXT,
    password_file      BYTEA NOT NULL,
    admin              BOOLEAN NOT NULL DEFAULT FALSE,
    disabled           BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         BIGINT NOT NULL,
    -- P540, P542: the published Ed25519 key and its client-sealed secret key.
    account_key        BYTEA,
    sealed_account_key BYTEA
);

CREATE TABLE devices (
    device_id    BYTEA PRIMARY KEY,
    user_id      BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    name         TEXT,
    token_digest BYTEA NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_seen    BIGINT
);
CREATE INDEX devices_by_user ON devices(user_id);

-- P412: who owned a device stays known after it logs out. Gone only with the user.
CREATE TABLE device_owners (
    device_id BYTEA PRIMARY KEY,
    user_id   BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE
);

CREATE TABLE invites (
    digest     BYTEA PRIMARY KEY,
    uses_left  BIGINT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE key_packages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    package     BYTEA NOT NULL,
    last_resort BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);

CREATE TABLE groups (
    group_id   BYTEA PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    next_seq   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by BYTEA
);
CREATE INDEX groups_by_creator ON groups(created_by, created_at);

CREATE TABLE group_members (
    group_id  BYTEA NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    device_id BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX group_members_by_device ON group_members(device_id);

CREATE TABLE group_names (
    name     TEXT PRIMARY KEY,
    group_id BYTEA NOT NULL UNIQUE REFERENCES groups(group_id) ON DELETE CASCADE
);

-- The 1:1 group of a pair of users, user_a < user_b.
CREATE TABLE direct_groups (
    user_a   BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    user_b   BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    group_id BYTEA NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    PRIMARY KEY (user_a, user_b)
);
CREATE INDEX direct_groups_by_group ON direct_groups(group_id);

-- One row per stored message (one ciphertext for every recipient) ...
CREATE TABLE messages (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id      BYTEA NOT NULL,
    kind          INTEGER NOT NULL,
    sender_device BYTEA NOT NULL,
    group_seq     BIGINT NOT NULL,
    payload       BYTEA NOT NULL,
    stored_at     BIGINT NOT NULL,
    size          BIGINT NOT NULL DEFAULT 0,
    sender_user   BYTEA
);
CREATE INDEX messages_by_age ON messages(stored_at);

-- ... and one per recipient device until it acknowledges. The id orders a mailbox:
-- an id is taken only while the device's mailbox_usage row is locked, so ids of one
-- mailbox commit in increasing order (P443) however many nodes write.
CREATE TABLE deliveries (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE
);
CREATE INDEX deliveries_by_device ON deliveries(device_id, id);
CREATE INDEX deliveries_by_message ON deliveries(message_id);

CREATE TABLE sent_messages (
    sender_device     BYTEA NOT NULL,
    client_message_id BYTEA NOT NULL,
    epoch             BIGINT NOT NULL,
    group_seq         BIGINT NOT NULL,
    stored_at         BIGINT NOT NULL,
    PRIMARY KEY (sender_device, client_message_id)
);
CREATE INDEX sent_messages_by_age ON sent_messages(stored_at);

CREATE TABLE handshakes (
    sender_device BYTEA NOT NULL,
    client_key    BYTEA NOT NULL,
    group_id      BYTEA NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    epoch         BIGINT NOT NULL,
    group_seq     BIGINT NOT NULL,
    stored_at     BIGINT NOT NULL,
    PRIMARY KEY (sender_device, client_key)
);
CREATE INDEX handshakes_by_age ON handshakes(stored_at);

CREATE TABLE mailbox_usage (
    device_id BYTEA PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    entries   BIGINT NOT NULL DEFAULT 0,
    bytes     BIGINT NOT NULL DEFAULT 0,
    missed    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE user_storage (
    user_id BYTEA PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    bytes   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE consent (
    user_id BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    peer_id BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, peer_id)
);

CREATE TABLE held (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    group_id   BYTEA NOT NULL,
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    inviter    BYTEA NOT NULL,
    stored_at  BIGINT NOT NULL
);
CREATE INDEX held_by_device ON held(device_id, group_id);
CREATE INDEX held_by_group ON held(group_id);
CREATE INDEX held_by_message ON held(message_id);

CREATE TABLE two_factor (
    user_id   BYTEA PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    secret    BYTEA NOT NULL,
    last_step BIGINT NOT NULL
);

CREATE TABLE pending_totp (
    user_id BYTEA PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    secret  BYTEA NOT NULL
);

CREATE TABLE recovery_codes (
    user_id BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    digest  BYTEA NOT NULL,
    PRIMARY KEY (user_id, digest)
);

CREATE TABLE channels (
    group_id      BYTEA PRIMARY KEY REFERENCES groups(group_id) ON DELETE CASCADE,
    password_hash TEXT,
    totp_secret   BYTEA,
    group_info    BYTEA NOT NULL
);

CREATE TABLE channel_admins (
    group_id BYTEA NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    user_id  BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE channel_grants (
    group_id   BYTEA NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    device_id  BYTEA NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, device_id)
);

CREATE TABLE channel_totp_steps (
    group_id BYTEA NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    user_id  BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    step     BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id, step)
);

CREATE TABLE files (
    file_id       BYTEA PRIMARY KEY,
    group_id      BYTEA NOT NULL,
    uploader      BYTEA NOT NULL,
    uploader_user BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    size          BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    complete      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX files_by_user ON files(uploader_user);
CREATE INDEX files_by_age ON files(created_ms);

CREATE TABLE file_recipients (
    file_id   BYTEA NOT NULL REFERENCES files(file_id) ON DELETE CASCADE,
    device_id BYTEA NOT NULL,
    fetched   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (file_id, device_id)
);

CREATE TABLE backups (
    user_id          BYTEA PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    count            BIGINT NOT NULL DEFAULT 0,
    head             BYTEA NOT NULL DEFAULT ''::bytea,
    bytes            BIGINT NOT NULL DEFAULT 0,
    updated_ms       BIGINT NOT NULL DEFAULT 0,
    wrapped_password BYTEA,
    wrapped_recovery BYTEA
);

CREATE TABLE backup_chunks (
    user_id BYTEA NOT NULL REFERENCES backups(user_id) ON DELETE CASCADE,
    idx     BIGINT NOT NULL,
    chunk   BYTEA NOT NULL,
    PRIMARY KEY (user_id, idx)
);

-- P320, P332, P553: failure counts per account shared by every node, in fixed windows.
CREATE TABLE failures (
    kind  TEXT NOT NULL,
    key   BYTEA NOT NULL,
    count BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- Usage counters for quotas (P450-P452), kept by triggers so every path that adds or
-- removes a message or mailbox entry keeps them true; a message goes with its last
-- delivered or held entry.
CREATE FUNCTION hush_entry_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox_usage (device_id, entries, bytes)
        VALUES (NEW.device_id, 1, (SELECT size FROM messages WHERE id = NEW.message_id))
        ON CONFLICT (device_id) DO UPDATE SET
            entries = mailbox_usage.entries + 1,
            bytes = mailbox_usage.bytes + EXCLUDED.bytes;
    RETURN NULL;
END $$;

CREATE FUNCTION hush_entry_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailbox_usage SET
        entries = entries - 1,
        bytes = bytes - COALESCE((SELECT size FROM messages WHERE id = OLD.message_id), 0)
        WHERE device_id = OLD.device_id;
    DELETE FROM messages WHERE id = OLD.message_id
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = OLD.message_id)
        AND NOT EXISTS (SELECT 1 FROM held WHERE message_id = OLD.message_id);
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_count AFTER INSERT ON deliveries
    FOR EACH ROW EXECUTE FUNCTION hush_entry_added();
CREATE TRIGGER deliveries_uncount AFTER DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION hush_entry_removed();
CREATE TRIGGER held_count AFTER INSERT ON held
    FOR EACH ROW EXECUTE FUNCTION hush_entry_added();
CREATE TRIGGER held_uncount AFTER DELETE ON held
    FOR EACH ROW EXECUTE FUNCTION hush_entry_removed();

CREATE FUNCTION hush_message_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A copied message may outlive its sender's account (hushd migrate).
    IF NEW.sender_user IS NOT NULL THEN
        INSERT INTO user_storage (user_id, bytes)
            SELECT NEW.sender_user, NEW.size WHERE EXISTS (
                SELECT 1 FROM users WHERE user_id = NEW.sender_user)
            ON CONFLICT (user_id) DO UPDATE SET bytes = user_storage.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION hush_message_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.sender_user IS NOT NULL THEN
        UPDATE user_storage SET bytes = bytes - OLD.size WHERE user_id = OLD.sender_user;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_count AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION hush_message_added();
CREATE TRIGGER messages_uncount AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION hush_message_removed();
