-- Web UI login sessions. The cookie carries a random secret; only its SHA-256 (hex) is stored,
-- so a copy of the database opens no session. Kept in the database so every node behind a
-- load balancer knows every session. `csrf` is the per-session token every form must echo.
CREATE TABLE ui_sessions (
    id_hash     TEXT PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX ui_sessions_by_account ON ui_sessions(account_id);
CREATE INDEX ui_sessions_by_expiry ON ui_sessions(expires_at);
