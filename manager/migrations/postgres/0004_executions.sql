-- Pipeline executions: one row per execution, one per plan node.
CREATE TABLE executions (
    id TEXT PRIMARY KEY NOT NULL,
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    sequence_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    state_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    idempotency_key TEXT UNIQUE,
    UNIQUE (account, org, project, pipeline, sequence_id)
);
CREATE INDEX executions_by_status ON executions (status, created_ms);
CREATE INDEX executions_by_created ON executions (created_ms);

CREATE TABLE execution_nodes (
    execution_id TEXT NOT NULL REFERENCES executions (id),
    idx BIGINT NOT NULL,
    status TEXT NOT NULL,
    state_json TEXT NOT NULL,
    PRIMARY KEY (execution_id, idx)
);
