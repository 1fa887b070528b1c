-- P330-P334: two-factor login. The TOTP secret is kept because the server checks
-- the codes (SECURITY.md); recovery codes only as SHA-256 digests.
CREATE TABLE two_factor (
    user_id   BLOB PRIMARY KEY NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    secret    BLOB NOT NULL,
    -- The last time step a code was accepted for: older and equal steps are refused.
    last_step INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A secret handed out by `TotpEnable`, waiting for a code from it.
CREATE TABLE pending_totp (
    user_id BLOB PRIMARY KEY NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    secret  BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE recovery_codes (
    user_id BLOB NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    digest  BLOB NOT NULL,
    PRIMARY KEY (user_id, digest)
) STRICT, WITHOUT ROWID;
