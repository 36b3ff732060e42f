-- The event stream (audit log and webhook outbox), pull records and webhook subscriptions.
-- `events.id` is AUTOINCREMENT so ids are never reused after pruning: webhook cursors
-- point into it. Events of changes are written in the change's own transaction.

CREATE TABLE events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,
    at_ms            BIGINT  NOT NULL,
    namespace        TEXT,
    repository       TEXT,
    tag              TEXT,
    digest           TEXT,
    previous_digest  TEXT,
    media_type       TEXT,
    size             BIGINT,
    account          TEXT,
    client           TEXT,
    user_agent       TEXT,
    count            BIGINT  NOT NULL DEFAULT 1,
    detail           TEXT
);
CREATE INDEX events_by_time ON events(at_ms);
CREATE INDEX events_by_namespace ON events(namespace, id);
CREATE INDEX events_by_repository ON events(repository, id);
CREATE INDEX events_by_account ON events(account, id);

-- Pulls per repository, tag ('' for pulls by digest), digest, client and minute.
CREATE TABLE pull_records (
    repository  TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    minute_ms   BIGINT  NOT NULL,
    digest      TEXT    NOT NULL,
    client      TEXT    NOT NULL,
    count       BIGINT  NOT NULL,
    last_ms     BIGINT  NOT NULL,
    account     TEXT,
    user_agent  TEXT,
    PRIMARY KEY (repository, tag, minute_ms, digest, client)
);
CREATE INDEX pull_records_by_time ON pull_records(minute_ms);

-- AUTOINCREMENT: a removed subscription's id is never given to a new one, so a stale
-- `berth webhook remove N` cannot remove somebody else's.
CREATE TABLE webhooks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    url              TEXT    NOT NULL,
    namespace        TEXT,
    kinds            TEXT    NOT NULL DEFAULT '',
    format           TEXT    NOT NULL,
    secret           TEXT    NOT NULL,
    created_ms       BIGINT  NOT NULL,
    cursor           BIGINT  NOT NULL,
    failures         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY,
    webhook_id  BIGINT  NOT NULL,
    event_id    BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    attempt     BIGINT  NOT NULL,
    at_ms       BIGINT  NOT NULL,
    status      BIGINT,
    error       TEXT,
    delivered   BOOLEAN NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries(webhook_id, id);
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(at_ms);
