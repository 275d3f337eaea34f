-- Replication, second part: pull rules (a target's repositories copied here), tags chosen by a
-- regular expression as well as a glob, only the latest N tags, schedules (an interval or a
-- cron expression; the next run time is claimed by one node with a conditional UPDATE), and
-- executions: one row per run of a rule (on demand or on a schedule; jobs a push queues have
-- none), which its jobs point to, so progress and history read per execution and per artifact.

ALTER TABLE replication_rules ADD COLUMN tags_regex TEXT NOT NULL DEFAULT '';   -- empty: the glob
ALTER TABLE replication_rules ADD COLUMN latest BIGINT NOT NULL DEFAULT 0;      -- 0: every tag
ALTER TABLE replication_rules ADD COLUMN schedule TEXT NOT NULL DEFAULT '';     -- 30s, 10m, 1h, or cron
ALTER TABLE replication_rules ADD COLUMN next_run_at BIGINT;                   -- ms; NULL: no schedule
ALTER TABLE replication_rules ADD COLUMN last_run_at BIGINT;                   -- ms

CREATE TABLE replication_executions (
    id          INTEGER PRIMARY KEY,
    rule_id     INTEGER NOT NULL REFERENCES replication_rules(id) ON DELETE CASCADE,
    cause       TEXT NOT NULL,                  -- manual or schedule
    queued      BIGINT NOT NULL DEFAULT 0,      -- jobs it queued
    error       TEXT,                           -- why listing the source failed, if it did
    started_at  BIGINT NOT NULL                 -- ms
);
CREATE INDEX replication_executions_by_rule ON replication_executions(rule_id, id);

ALTER TABLE replication_jobs ADD COLUMN execution_id INTEGER;
CREATE INDEX replication_jobs_by_execution ON replication_jobs(execution_id);
