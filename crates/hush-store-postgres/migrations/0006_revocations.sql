-- P547: devices an account revoked, with the statement its account key signed, handed
-- to every client that lists the account's devices; clients remember them, so a
-- revoked device the server brings back is never added again.
CREATE TABLE revocations (
    user_id   BYTEA NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    device_id BYTEA NOT NULL,
    statement BYTEA NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
