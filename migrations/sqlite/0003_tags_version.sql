-- A counter bumped in the same transaction as every change to a repository's tags, so any
-- node can keep the tag list in memory and know from one indexed row when it is stale.
ALTER TABLE repositories ADD COLUMN tags_version BIGINT NOT NULL DEFAULT 0;
