-- Garbage collection, retention and quotas.
-- `blobs.deleting`: set (to the collecting run's id) while GC deletes the blob's object; a push
-- that finds it set waits for the row to go instead of relying on that object.
ALTER TABLE blobs ADD COLUMN deleting TEXT;
-- When a manifest was last pulled (Unix seconds), recorded at most once a minute.
ALTER TABLE manifests ADD COLUMN last_pulled_at BIGINT;
CREATE INDEX uploads_by_updated ON uploads(updated_at);

-- One row per lease (`gc`): the node holding it runs garbage collection until `expires_at`.
CREATE TABLE gc_lease (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The last report of each kind of run (`run`, `dry_run`), as JSON.
CREATE TABLE gc_reports (
    kind        TEXT PRIMARY KEY,
    report      TEXT NOT NULL,
    finished_at BIGINT NOT NULL
);

-- Tag retention per repository glob (`team/*`, `team/app`).
CREATE TABLE retention_policies (
    pattern          TEXT COLLATE "C" PRIMARY KEY,
    keep_last        BIGINT,
    keep_tags        TEXT,
    older_than_days  BIGINT,
    keep_pulled_days BIGINT,
    created_at       BIGINT NOT NULL
);

-- Storage quota per namespace, in bytes.
CREATE TABLE namespace_quotas (
    namespace   TEXT COLLATE "C" PRIMARY KEY,
    max_bytes   BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
