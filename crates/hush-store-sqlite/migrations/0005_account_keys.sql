-- P540, P542: each account's published Ed25519 key and its client-sealed secret key
-- (NULL for accounts made before account keys). P546: when a device last
-- authenticated.
ALTER TABLE users ADD COLUMN account_key BLOB;
ALTER TABLE users ADD COLUMN sealed_account_key BLOB;
ALTER TABLE devices ADD COLUMN last_seen INTEGER;
