-- Users provisioned from an external identity provider are found again by the token's `sub`. Local accounts
-- (password or development tokens) have none; UNIQUE ignores NULLs.
ALTER TABLE users ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX users_external_id_key ON users (external_id);
