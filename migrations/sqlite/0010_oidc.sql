-- OpenID Connect logins. An account made by a login through the identity provider keeps who
-- it is there (`issuer subject`), so the provider giving the same username to somebody else
-- later never opens it. A login in progress (between the redirect to the provider and its way
-- back) is kept here so that any node behind a load balancer can finish it: the browser holds
-- a random secret in a cookie, only its SHA-256 (hex) is stored, and the row is used once and
-- lives ten minutes.

ALTER TABLE accounts ADD COLUMN external_id TEXT;

CREATE TABLE oidc_logins (
    id_hash        TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    next           TEXT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX oidc_logins_by_expiry ON oidc_logins(expires_at);
