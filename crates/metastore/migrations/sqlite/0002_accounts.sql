-- Access control: accounts (users and robots), a robot's grants, namespaces and members.
-- Kept to the SQL subset PostgreSQL also runs.

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('user', 'robot')),
    -- argon2/bcrypt PHC string for users, 'sha256:<hex>' of the secret for robots.
    secret_hash     TEXT    NOT NULL,
    registry_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT
);

-- What a robot may do: actions (comma-separated) on repositories matching a pattern.
CREATE TABLE robot_grants (
    account_id  BIGINT  NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    pattern     TEXT    NOT NULL,
    actions     TEXT    NOT NULL,
    PRIMARY KEY (account_id, pattern)
);

-- A namespace is the first path segment of its repositories.
CREATE TABLE namespaces (
    name        TEXT    PRIMARY KEY,
    public      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE members (
    namespace   TEXT    NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    account_id  BIGINT  NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('reader', 'writer', 'maintainer', 'admin')),
    PRIMARY KEY (namespace, account_id)
);
CREATE INDEX members_by_account ON members(account_id);
