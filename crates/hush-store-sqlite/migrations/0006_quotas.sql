-- P450-P453: usage counters for quotas, kept by triggers so every path that adds or
-- removes a message or mailbox entry (send, ack, retention, a deleted device or user)
-- keeps them true; missed counts; who created each group and when.
ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN sender_user BLOB;
UPDATE messages SET size = length(payload),
    sender_user = (SELECT user_id FROM device_owners o WHERE o.device_id = messages.sender_device);
CREATE INDEX messages_by_age ON messages(stored_at);
CREATE INDEX sent_messages_by_age ON sent_messages(stored_at);
CREATE INDEX handshakes_by_age ON handshakes(stored_at);

ALTER TABLE groups ADD COLUMN created_by BLOB;
CREATE INDEX groups_by_creator ON groups(created_by, created_at);

-- Per device: the entries and payload bytes waiting in its mailbox, and the messages
-- it missed (full mailbox, expiry) and has not acknowledged noticing.
CREATE TABLE mailbox_usage (
    device_id BLOB PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    entries   INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0,
    missed    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
INSERT INTO mailbox_usage (device_id, entries, bytes)
    SELECT d.device_id, COUNT(*), SUM(m.size)
    FROM deliveries d JOIN messages m ON m.id = d.message_id
    WHERE d.device_id IN (SELECT device_id FROM devices)
    GROUP BY d.device_id;

-- Per user: payload bytes of the stored messages its devices sent.
CREATE TABLE user_storage (
    user_id BLOB PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    bytes   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
INSERT INTO user_storage (user_id, bytes)
    SELECT sender_user, SUM(size) FROM messages
    WHERE sender_user IN (SELECT user_id FROM users)
    GROUP BY sender_user;

-- Messages whose recipients are all gone (deleted devices) were never collected.
DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id);

CREATE TRIGGER deliveries_count AFTER INSERT ON deliveries BEGIN
    INSERT INTO mailbox_usage (device_id, entries, bytes)
        VALUES (NEW.device_id, 1, (SELECT size FROM messages WHERE id = NEW.message_id))
        ON CONFLICT (device_id) DO UPDATE SET
            entries = entries + 1, bytes = bytes + excluded.bytes;
END;

-- A message goes with its last entry, however the entry went (ack, expiry, a deleted
-- device). Messages are never deleted while an entry refers to them.
CREATE TRIGGER deliveries_uncount AFTER DELETE ON deliveries BEGIN
    UPDATE mailbox_usage SET
        entries = entries - 1,
        bytes = bytes - COALESCE((SELECT size FROM messages WHERE id = OLD.message_id), 0)
        WHERE device_id = OLD.device_id;
    DELETE FROM messages WHERE id = OLD.message_id
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = OLD.message_id);
END;

CREATE TRIGGER messages_count AFTER INSERT ON messages WHEN NEW.sender_user IS NOT NULL BEGIN
    INSERT INTO user_storage (user_id, bytes) VALUES (NEW.sender_user, NEW.size)
        ON CONFLICT (user_id) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER messages_uncount AFTER DELETE ON messages WHEN OLD.sender_user IS NOT NULL BEGIN
    UPDATE user_storage SET bytes = bytes - OLD.size WHERE user_id = OLD.sender_user;
END;
