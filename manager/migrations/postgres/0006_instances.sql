-- Service instances: what the latest deploy to a service + environment +
-- infrastructure left running, as its delegate reported it.
CREATE TABLE service_instances (
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    infrastructure TEXT NOT NULL,
    instances_json TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account, org, project, service, environment, infrastructure)
);
