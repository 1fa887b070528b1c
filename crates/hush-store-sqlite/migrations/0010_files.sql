-- P560-P564: files offered in conversations. The bytes live in the blob store; these
-- rows say who may fetch them and when they go. A file outlives its group and its
-- uploading device, not its uploader's account.
CREATE TABLE files (
    file_id       BLOB PRIMARY KEY,
    group_id      BLOB NOT NULL,
    uploader      BLOB NOT NULL,
    uploader_user BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    size          INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    complete      INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX files_by_user ON files(uploader_user);
CREATE INDEX files_by_age ON files(created_ms);

CREATE TABLE file_recipients (
    file_id   BLOB NOT NULL REFERENCES files(file_id) ON DELETE CASCADE,
    device_id BLOB NOT NULL,
    fetched   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (file_id, device_id)
) STRICT, WITHOUT ROWID;
