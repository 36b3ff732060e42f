-- Core registry metadata: repositories, blobs and their links, manifests, tags, uploads.
-- Kept to the SQL subset PostgreSQL also runs; only column types differ per engine.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL
);

-- One row per stored blob, whatever the number of repositories using it.
CREATE TABLE blobs (
    digest      TEXT    PRIMARY KEY,
    size        BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL
);

-- A blob is readable through a repository only through a row here.
CREATE TABLE repo_blobs (
    repo_id     BIGINT  NOT NULL REFERENCES repositories(id),
    digest      TEXT    NOT NULL REFERENCES blobs(digest),
    linked_at   BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);

CREATE TABLE manifests (
    id            INTEGER PRIMARY KEY,
    repo_id       BIGINT  NOT NULL REFERENCES repositories(id),
    digest        TEXT    NOT NULL,
    media_type    TEXT    NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    size          BIGINT  NOT NULL,
    content       BLOB    NOT NULL,
    pushed_at     BIGINT  NOT NULL,
    UNIQUE (repo_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repo_id, subject);

-- What a manifest references: kind 'blob' (config, layers) or 'manifest' (index children).
CREATE TABLE manifest_refs (
    manifest_id BIGINT  NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    PRIMARY KEY (manifest_id, kind, digest)
);
CREATE INDEX manifest_refs_by_digest ON manifest_refs(digest, kind);

CREATE TABLE tags (
    repo_id     BIGINT  NOT NULL REFERENCES repositories(id),
    name        TEXT    NOT NULL,
    manifest_id BIGINT  NOT NULL REFERENCES manifests(id),
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_by_manifest ON tags(manifest_id);

CREATE TABLE upload_sessions (
    id          TEXT    PRIMARY KEY,
    repo        TEXT    NOT NULL,
    algorithm   TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    started_at  BIGINT  NOT NULL
);
CREATE INDEX upload_sessions_by_start ON upload_sessions(started_at);
