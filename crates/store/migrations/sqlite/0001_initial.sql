-- Ledgerbridge store schema, SQLite flavour.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC).
-- UUIDs are TEXT in hyphenated lower-case form. JSON is TEXT.

CREATE TABLE events (
    id          TEXT    NOT NULL PRIMARY KEY,
    source      TEXT    NOT NULL,
    dedupe_key  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    headers     TEXT    NOT NULL,
    body        BLOB    NOT NULL,
    UNIQUE (source, dedupe_key)
);

CREATE TABLE runs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    event_id         TEXT    REFERENCES events (id),
    flow             TEXT    NOT NULL,
    flow_version     TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'retrying', 'parked', 'succeeded', 'discarded')),
    input            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    first_failure_at INTEGER,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    discard_reason   TEXT
);

-- Also serves the reaper (state = 'running': few rows, one per worker slot).
CREATE INDEX runs_claim ON runs (state, next_attempt_at, seq);
CREATE INDEX runs_flow ON runs (flow, seq);

CREATE TABLE steps (
    run_id      TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        TEXT    NOT NULL,
    ord         INTEGER NOT NULL,
    output      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

CREATE TABLE intents (
    connection  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    run_id      TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'linked')),
    external_id TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (connection, kind, key)
) WITHOUT ROWID;

CREATE TABLE cursors (
    name       TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    entry     TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- One row, rewritten by `ping` to prove the database accepts writes.
CREATE TABLE health (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
