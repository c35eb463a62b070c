-- Triggers at run time. The webhook secrets are derived from one random master
-- key (HMAC-SHA256 of the trigger's scope and identifier), so it is stored once
-- and every manager replica derives the same secrets; the secrets themselves are
-- never stored.
CREATE TABLE trigger_master_key (
    id SMALLINT PRIMARY KEY NOT NULL CHECK (id = 1),
    master_key BYTEA NOT NULL,
    created_ms BIGINT NOT NULL
);

-- What happened to each delivery and cron fire: started, duplicate, skipped,
-- refused, failed. Never the body or a secret. Pruned to the newest events per
-- trigger on every append.
CREATE TABLE trigger_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    event TEXT NOT NULL,
    reason TEXT NOT NULL,
    delivery_id TEXT,
    execution_id TEXT
);
CREATE INDEX trigger_events_by_trigger ON trigger_events (account, org, project, trigger_id, id);

-- The latest fire time a cron trigger has acted on (or first seen, for a new
-- trigger); it only ever moves forward.
CREATE TABLE trigger_cron_state (
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    last_fired_ms BIGINT NOT NULL,
    PRIMARY KEY (account, org, project, trigger_id)
);
