-- P460-P462: who accepts group invitations from whom, and invitations held until
-- answered.

-- `user_id` accepts Welcomes from `peer_id`: it reached out to them (created a group
-- with them, added them, wrote to them in a 1:1) or accepted their request.
CREATE TABLE consent (
    user_id BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    peer_id BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, peer_id)
) STRICT, WITHOUT ROWID;
-- Users who share a group already know each other.
INSERT OR IGNORE INTO consent (user_id, peer_id)
    SELECT DISTINCT da.user_id, db.user_id
    FROM group_members a JOIN devices da ON da.device_id = a.device_id
    JOIN group_members b ON b.group_id = a.group_id JOIN devices db ON db.device_id = b.device_id
    WHERE da.user_id != db.user_id;

CREATE INDEX direct_groups_by_group ON direct_groups(group_id);

-- Entries held for a device until its user answers the invitation to their group:
-- the Welcome, and whatever the group sent it since. `inviter` is the user whose
-- Welcome it was. Released into `deliveries` in id order on accept.
CREATE TABLE held (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  BLOB NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    group_id   BLOB NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    inviter    BLOB NOT NULL,
    stored_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX held_by_device ON held(device_id, group_id);
CREATE INDEX held_by_group ON held(group_id);
CREATE INDEX held_by_message ON held(message_id);

-- Held entries count towards the mailbox like delivered ones.
CREATE TRIGGER held_count AFTER INSERT ON held BEGIN
    INSERT INTO mailbox_usage (device_id, entries, bytes)
        VALUES (NEW.device_id, 1, (SELECT size FROM messages WHERE id = NEW.message_id))
        ON CONFLICT (device_id) DO UPDATE SET
            entries = entries + 1, bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER held_uncount AFTER DELETE ON held BEGIN
    UPDATE mailbox_usage SET
        entries = entries - 1,
        bytes = bytes - COALESCE((SELECT size FROM messages WHERE id = OLD.message_id), 0)
        WHERE device_id = OLD.device_id;
    DELETE FROM messages WHERE id = OLD.message_id
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = OLD.message_id)
        AND NOT EXISTS (SELECT 1 FROM held WHERE message_id = OLD.message_id);
END;

-- A message goes with its last delivered or held entry.
DROP TRIGGER deliveries_uncount;
CREATE TRIGGER deliveries_uncount AFTER DELETE ON deliveries BEGIN
    UPDATE mailbox_usage SET
        entries = entries - 1,
        bytes = bytes - COALESCE((SELECT size FROM messages WHERE id = OLD.message_id), 0)
        WHERE device_id = OLD.device_id;
    DELETE FROM messages WHERE id = OLD.message_id
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = OLD.message_id)
        AND NOT EXISTS (SELECT 1 FROM held WHERE message_id = OLD.message_id);
END;
