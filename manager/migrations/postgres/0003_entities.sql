-- Entities applied from YAML: services, environments, infrastructure definitions,
-- connectors, pipelines, input sets, overlay input sets and triggers. `yaml` is
-- the document as the user wrote it (for describe), `json` its normalised form
-- (what the pipeline engine reads).
CREATE TABLE entities (
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    identifier TEXT NOT NULL,
    name TEXT NOT NULL,
    yaml TEXT NOT NULL,
    json TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (account, org, project, kind, identifier)
);
CREATE INDEX entities_by_kind ON entities (kind, account, org, project, identifier);

-- References between entities of one scope (a pipeline's services, an overlay's
-- input sets...). A referenced entity cannot be deleted.
CREATE TABLE entity_refs (
    account TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    from_kind TEXT NOT NULL,
    from_identifier TEXT NOT NULL,
    to_kind TEXT NOT NULL,
    to_identifier TEXT NOT NULL,
    PRIMARY KEY (account, org, project, from_kind, from_identifier, to_kind, to_identifier)
);
CREATE INDEX entity_refs_by_target ON entity_refs (account, org, project, to_kind, to_identifier);
