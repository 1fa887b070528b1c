-- Key packages, groups, and per-device mailboxes.
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY,
    device_id   BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    package     BLOB NOT NULL,
    last_resort INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX key_packages_by_device ON key_packages(device_id, last_resort, id);

CREATE TABLE groups (
    group_id   BLOB PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    next_seq   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_members (
    group_id  BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    device_id BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, device_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX group_members_by_device ON group_members(device_id);

-- The 1:1 group of a pair of users, user_a < user_b.
CREATE TABLE direct_groups (
    user_a   BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    user_b   BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    group_id BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    PRIMARY KEY (user_a, user_b)
) STRICT;

-- One row per stored message (one ciphertext for every recipient) ...
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    group_id      BLOB NOT NULL,
    kind          INTEGER NOT NULL,
    sender_device BLOB NOT NULL,
    group_seq     INTEGER NOT NULL,
    payload       BLOB NOT NULL,
    stored_at     INTEGER NOT NULL
) STRICT;

-- ... and one per recipient device until it acknowledges. The id orders a mailbox.
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE
) STRICT;
CREATE INDEX deliveries_by_device ON deliveries(device_id, id);
CREATE INDEX deliveries_by_message ON deliveries(message_id);

-- Idempotency of sends: a retry with the same client message id is answered again.
CREATE TABLE sent_messages (
    sender_device     BLOB NOT NULL,
    client_message_id BLOB NOT NULL,
    epoch             INTEGER NOT NULL,
    group_seq         INTEGER NOT NULL,
    stored_at         INTEGER NOT NULL,
    PRIMARY KEY (sender_device, client_message_id)
) STRICT, WITHOUT ROWID;
