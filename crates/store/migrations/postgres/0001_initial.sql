-- Ledgerbridge store schema, PostgreSQL flavour.

CREATE TABLE events (
    id          uuid        NOT NULL PRIMARY KEY,
    source      text        NOT NULL,
    dedupe_key  text        NOT NULL,
    received_at timestamptz NOT NULL,
    headers     jsonb       NOT NULL,
    body        bytea       NOT NULL,
    UNIQUE (source, dedupe_key)
);

CREATE TABLE runs (
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               uuid        NOT NULL UNIQUE,
    event_id         uuid        REFERENCES events (id),
    flow             text        NOT NULL,
    flow_version     text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('queued', 'running', 'retrying', 'parked', 'succeeded', 'discarded')),
    input            jsonb       NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    first_failure_at timestamptz,
    last_error       jsonb,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    discard_reason   text
);

-- Also serves the reaper (state = 'running': few rows, one per worker slot).
CREATE INDEX runs_claim ON runs (state, next_attempt_at, seq);
CREATE INDEX runs_flow ON runs (flow, seq);

CREATE TABLE steps (
    run_id      uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step        text        NOT NULL,
    ord         integer     NOT NULL,
    output      jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE intents (
    connection  text        NOT NULL,
    kind        text        NOT NULL,
    key         text        NOT NULL,
    run_id      uuid        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('pending', 'linked')),
    external_id text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (connection, kind, key)
);

CREATE TABLE cursors (
    name       text        NOT NULL PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL
);

-- `entry` is `json` (not `jsonb`) so the text we hashed is kept verbatim.
CREATE TABLE audit (
    seq       bigint      NOT NULL PRIMARY KEY,
    at        timestamptz NOT NULL,
    entry     json        NOT NULL,
    prev_hash text        NOT NULL,
    hash      text        NOT NULL
);

-- One row, rewritten by `ping` to prove the database accepts writes.
CREATE TABLE health (
    id integer     NOT NULL PRIMARY KEY CHECK (id = 1),
    at timestamptz NOT NULL
);
