-- Replication: copies of images in other registries. A target is another registry (its
-- password or token sealed with the node's secret key, never returned); a rule says which
-- repositories and tags go there and under which name. Every copy or delete to carry out is a
-- job in a queue, claimed by one node at a time under a lease (as webhook deliveries are),
-- retried with growing waits, and kept with its outcome as the rule's history.

CREATE TABLE replication_targets (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,                  -- https://registry.example.com
    username        TEXT NOT NULL,                  -- empty: anonymous
    secret_sealed   TEXT NOT NULL,                  -- empty, or sealed by src/seal.rs
    ca_file         TEXT NOT NULL,                  -- empty: the system's roots
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE replication_rules (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    target_id           INTEGER NOT NULL REFERENCES replication_targets(id) ON DELETE CASCADE,
    direction           TEXT NOT NULL,              -- push (local to target)
    repositories        TEXT NOT NULL,              -- glob: team/*
    tags                TEXT NOT NULL,              -- glob: * or v1.*
    destination_prefix  TEXT NOT NULL,              -- mirror: team/app goes to mirror/team/app
    replicate_deletes   BIGINT NOT NULL DEFAULT 0,
    enabled             BIGINT NOT NULL DEFAULT 1,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE replication_jobs (
    id              INTEGER PRIMARY KEY,
    rule_id         INTEGER NOT NULL REFERENCES replication_rules(id) ON DELETE CASCADE,
    action          TEXT NOT NULL,                  -- copy or delete
    repository      TEXT NOT NULL,                  -- the local repository
    reference       TEXT NOT NULL,                  -- tag or digest
    status          TEXT NOT NULL,                  -- pending, done or failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,                -- ms
    lease_until     BIGINT,                         -- ms; a node works on it until then
    copied          BIGINT NOT NULL DEFAULT 0,      -- blobs and manifests sent
    skipped         BIGINT NOT NULL DEFAULT 0,      -- already at the target
    bytes           BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX replication_jobs_due ON replication_jobs(status, next_attempt_at);
CREATE INDEX replication_jobs_by_rule ON replication_jobs(rule_id, id);
