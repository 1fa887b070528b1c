-- P535, P536: per user and group, the GroupInfo of the latest epoch a device of the
-- user reported, sealed by the client for its own account's devices (the server cannot
-- open it). A new device of the user joins the group from it by an external commit.
CREATE TABLE group_infos (
    user_id  BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    group_id BYTEA NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    epoch    BIGINT NOT NULL,
    sealed   BYTEA NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX group_infos_by_group ON group_infos(group_id);
