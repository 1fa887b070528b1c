-- Sends and acks run at READ COMMITTED, serialised by row locks (see
-- PgStore::begin_locked). Two acks taking a message's last two entries at once
-- would each still see the other's entry and neither delete the message: the
-- message row is locked first, so the second waits for the first and then sees its
-- entry gone.
CREATE OR REPLACE FUNCTION hush_entry_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM messages WHERE id = OLD.message_id FOR UPDATE;
    UPDATE mailbox_usage SET
        entries = entries - 1,
        bytes = bytes - COALESCE((SELECT size FROM messages WHERE id = OLD.message_id), 0)
        WHERE device_id = OLD.device_id;
    DELETE FROM messages WHERE id = OLD.message_id
        AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = OLD.message_id)
        AND NOT EXISTS (SELECT 1 FROM held WHERE message_id = OLD.message_id);
    RETURN NULL;
END $$;
