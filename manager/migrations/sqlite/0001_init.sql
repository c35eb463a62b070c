-- Initial Dray schema (SQLite). Kept column-for-column identical to
-- ../postgres/0001_init.sql so both backends decode rows with the same code.
-- Ids are 32 lower-case hex digits; u64 counters are stored as BIGINT; times are
-- unix milliseconds. Journal mode, synchronous and foreign keys are connection
-- settings (see store/sqlite.rs), not part of the schema.

-- One row per task, overwritten in place by compare-and-set on `version`.
CREATE TABLE tasks (
    id                TEXT    NOT NULL PRIMARY KEY,
    spec              BLOB    NOT NULL,  -- prost-encoded dray.v1.TaskSpec
    state             INTEGER NOT NULL,  -- dray.v1.TaskState number
    epoch             BIGINT  NOT NULL,
    version           BIGINT  NOT NULL,
    delegate_id       TEXT,
    exit_code         INTEGER,
    reason            TEXT    NOT NULL,
    created_ms        BIGINT  NOT NULL,
    started_ms        BIGINT,
    finished_ms       BIGINT,
    queue_deadline_ms BIGINT  NOT NULL
);
-- list_tasks filtered by state and load_unfinished, both ordered by submission.
CREATE INDEX tasks_state_created ON tasks (state, created_ms, id);
-- list_tasks without a state filter, newest first.
CREATE INDEX tasks_created ON tasks (created_ms, id);

-- Task output. Clustered on (task_id, seq): every read is one task's lines in
-- order. No foreign key to tasks: the engine is the only writer, and a per-row
-- check would tax the hottest insert path.
CREATE TABLE task_logs (
    task_id TEXT    NOT NULL,
    seq     BIGINT  NOT NULL,
    epoch   BIGINT  NOT NULL,
    stream  INTEGER NOT NULL,  -- dray.v1.LogStream number
    text    TEXT    NOT NULL,
    at_ms   BIGINT  NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;

-- Append-only; `id` gives insertion order, which is what "newest" means.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    subject TEXT   NOT NULL,
    detail  TEXT   NOT NULL
);

-- Delegate enrolment tokens; only a SHA-256 of the secret is kept.
CREATE TABLE tokens (
    name          TEXT    NOT NULL PRIMARY KEY,
    token_hash    TEXT    NOT NULL UNIQUE,
    scope_account TEXT    NOT NULL,
    scope_org     TEXT    NOT NULL,
    scope_project TEXT    NOT NULL,
    expires_ms    BIGINT  NOT NULL,
    max_uses      BIGINT,            -- NULL = unlimited
    uses          BIGINT  NOT NULL,
    revoked       BOOLEAN NOT NULL,
    created_ms    BIGINT  NOT NULL
);

-- Enrolled delegates.
CREATE TABLE delegates (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    scope_account TEXT    NOT NULL,
    scope_org     TEXT    NOT NULL,
    scope_project TEXT    NOT NULL,
    tags          TEXT    NOT NULL,  -- JSON array of strings
    token_name    TEXT    NOT NULL,
    enrolled_ms   BIGINT  NOT NULL,
    last_seen_ms  BIGINT  NOT NULL,
    revoked       BOOLEAN NOT NULL
);
CREATE INDEX delegates_enrolled ON delegates (enrolled_ms, id);
