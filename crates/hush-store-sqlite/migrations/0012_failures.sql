-- P320, P332, P553: failure counts per account that every process sharing the
-- database sees (logins, second factors, channel passwords), in fixed windows.
CREATE TABLE failures (
    kind  TEXT NOT NULL,
    key   BLOB NOT NULL,
    count INTEGER NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT, WITHOUT ROWID;
