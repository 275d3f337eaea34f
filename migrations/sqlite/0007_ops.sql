-- Operations: webhooks with their delivery queue (a row per delivery, claimed by a lease so
-- several nodes can share the queue) and the audit log. Times are Unix seconds, except the
-- delivery schedule and leases, which are Unix milliseconds (retries back off from 100s of ms).

CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    namespace   TEXT,                           -- NULL: every repository; else the repositories of one namespace
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,                  -- HMAC-SHA256 key of the signature header; never returned or logged
    events      TEXT NOT NULL,                  -- comma list of push, pull, delete, mirror
    enabled     BIGINT NOT NULL DEFAULT 1,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                  INTEGER PRIMARY KEY,
    webhook_id          INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id            TEXT NOT NULL,
    action              TEXT NOT NULL,
    payload             TEXT NOT NULL,          -- the JSON body, exactly as sent
    status              TEXT NOT NULL,          -- pending, delivered or failed
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,        -- ms
    lease_until         BIGINT,                 -- ms; a node is sending it until then
    last_status_code    BIGINT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    finished_at         BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries(webhook_id, id);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,                  -- account name, 'anonymous', or 'cli'
    action      TEXT NOT NULL,                  -- login, login.failed, push, delete, user.create, ...
    target      TEXT,                           -- what it was done to (repository, account, namespace, ...)
    detail      TEXT,                           -- JSON object with the rest; never a secret
    addr        TEXT                            -- client address, when over HTTP
);
CREATE INDEX audit_log_by_actor ON audit_log(actor, id);
CREATE INDEX audit_log_by_action ON audit_log(action, id);
