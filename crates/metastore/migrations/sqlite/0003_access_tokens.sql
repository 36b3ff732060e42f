-- Personal access tokens: secrets a user creates for scripts and CI, used like a password,
-- each with a name, an optional expiry, revocable on its own. Stored as SHA-256 digests.

CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY,
    account_id   BIGINT  NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    UNIQUE (account_id, name)
);
