-- Named groups: a name is unique on the server.
CREATE TABLE group_names (
    name     TEXT PRIMARY KEY,
    group_id BLOB NOT NULL UNIQUE REFERENCES groups(group_id) ON DELETE CASCADE
) STRICT;
