-- Tag immutability rules: tags (patterns, all when empty) of repositories matching a
-- pattern that may never move to another digest or be deleted; `except` stays mutable.
-- Tag pattern lists are stored comma-separated (tag characters never include a comma).

CREATE TABLE immutability_rules (
    id            INTEGER PRIMARY KEY,
    repositories  TEXT    NOT NULL,
    tags          TEXT    NOT NULL DEFAULT '',
    except_tags   TEXT    NOT NULL DEFAULT '',
    created_at    BIGINT  NOT NULL
);
