-- Where other replicas reach a replica's HTTP endpoints (webhooks are forwarded
-- to the leader), and since when it leads (NULL: it never did).
ALTER TABLE replicas ADD COLUMN http_url TEXT NOT NULL DEFAULT '';
ALTER TABLE replicas ADD COLUMN leader_ms INTEGER;
