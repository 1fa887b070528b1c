-- P412: who owned a device stays known after the device logs out, so messages it
-- sent before keep their author's name. Gone only with the user.
CREATE TABLE device_owners (
    device_id BLOB PRIMARY KEY,
    user_id   BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
INSERT INTO device_owners (device_id, user_id) SELECT device_id, user_id FROM devices;

-- P423, P433: the result of each group creation and commit by its client key, so a
-- retry after a lost answer is answered with the first result and applied once.
CREATE TABLE handshakes (
    sender_device BLOB NOT NULL,
    client_key    BLOB NOT NULL,
    group_id      BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    group_seq     INTEGER NOT NULL,
    stored_at     INTEGER NOT NULL,
    PRIMARY KEY (sender_device, client_key)
) STRICT, WITHOUT ROWID;
