-- P550-P556: channels. The server keeps an argon2id hash of the password, the TOTP
-- secret (it checks the codes), and the current GroupInfo it hands to joiners.
CREATE TABLE channels (
    group_id      BLOB PRIMARY KEY NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    password_hash TEXT,
    totp_secret   BLOB,
    group_info    BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- P555: who may change the channel on the server.
CREATE TABLE channel_admins (
    group_id BLOB NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    user_id  BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) STRICT, WITHOUT ROWID;

-- P553: a device the server admitted may send one external commit until expires_at.
CREATE TABLE channel_grants (
    group_id   BLOB NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    device_id  BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, device_id)
) STRICT, WITHOUT ROWID;

-- P553: a code's time step is usable once per user and channel.
CREATE TABLE channel_totp_steps (
    group_id BLOB NOT NULL REFERENCES channels(group_id) ON DELETE CASCADE,
    user_id  BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    step     INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id, step)
) STRICT, WITHOUT ROWID;
