-- Tag history: every creation, move and deletion of a tag, written in the same transaction
-- as the change. `new_digest` is NULL for a deletion, `previous_digest` for a creation.

CREATE TABLE tag_events (
    id               INTEGER PRIMARY KEY,
    repo_id          BIGINT  NOT NULL REFERENCES repositories(id),
    tag              TEXT    NOT NULL,
    previous_digest  TEXT,
    new_digest       TEXT,
    account          TEXT,
    client           TEXT,
    user_agent       TEXT,
    at_ms            BIGINT  NOT NULL
);
CREATE INDEX tag_events_by_tag ON tag_events(repo_id, tag, at_ms);
