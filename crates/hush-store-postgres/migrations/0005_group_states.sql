-- P438: each group's public MLS state (ratchet tree, group context, transcript hash;
-- no secret), which the server checks every commit against. Written with the group
-- and with each accepted commit; a group without a row (made before P438) gets one
-- from the GroupInfo its next committer sends.
CREATE TABLE group_states (
    group_id BYTEA PRIMARY KEY REFERENCES groups(group_id) ON DELETE CASCADE,
    state    BYTEA NOT NULL
);
