-- Registry core (PostgreSQL): the same schema as migrations/sqlite, with PostgreSQL types and
-- byte-order ("C") collation for names and tags, so listings sort as on SQLite.

CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A blob is readable through a repository only when a row links them.
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);

-- Manifests are stored byte for byte in `content`.
CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    config_digest TEXT,
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repository_id, subject);

-- What a manifest references: its config and layers (kind 'blob') or, for an index, its
-- children (kind 'manifest'). Used for validation, garbage collection and the UI.
CREATE TABLE manifest_references (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    parent_digest TEXT NOT NULL,
    child_digest  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    PRIMARY KEY (repository_id, parent_digest, child_digest)
);
CREATE INDEX manifest_references_by_child ON manifest_references(repository_id, child_digest);

CREATE TABLE tags (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name          TEXT COLLATE "C" NOT NULL,
    digest        TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_by_digest ON tags(repository_id, digest);

-- Upload sessions. `size` is the number of bytes acknowledged to the client; `state` is the
-- storage backend's own resumable state (JSON), if it needs any.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    size          BIGINT NOT NULL DEFAULT 0,
    state         TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
