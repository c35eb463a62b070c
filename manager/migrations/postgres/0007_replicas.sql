-- Manager replicas sharing one database, and which replica owns the live
-- state of a task or an execution (NULL: nobody yet, e.g. a queued task).
CREATE TABLE replicas (
    id TEXT PRIMARY KEY NOT NULL,
    grpc_url TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN owner TEXT;
CREATE INDEX tasks_owner ON tasks (owner);
