-- Automatic certificates over ACME (src/acme), shared by every node on the database. Private
-- keys are sealed (AES-256-GCM, src/seal.rs) with a key that is not in the database.

-- The ACME account of each directory: instant-acme's credentials (account URL and key), sealed.
CREATE TABLE acme_accounts (
    directory   TEXT PRIMARY KEY,
    credentials TEXT NOT NULL,
    contact     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- The certificate of a directory and domain list (comma-joined, as configured, lower case):
-- the PEM chain, its sealed private key, its expiry (Unix seconds). `version` grows with each
-- new certificate: nodes poll it and serve a newer one. `renew_requested_at`: set by
-- `berth tls renew`, cleared when the renewed certificate is stored.
CREATE TABLE acme_certificates (
    directory          TEXT NOT NULL,
    domains            TEXT NOT NULL,
    chain_pem          TEXT NOT NULL,
    key_sealed         TEXT NOT NULL,
    not_after          BIGINT NOT NULL,
    version            BIGINT NOT NULL,
    renew_requested_at BIGINT,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (directory, domains)
);

-- Pending challenges of the order in progress, so any node answers them: HTTP-01 by token,
-- TLS-ALPN-01 by domain. Key authorizations are public by design (RFC 8555 section 8.1).
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    domain            TEXT NOT NULL,
    key_authorization TEXT NOT NULL,
    expires_at        BIGINT NOT NULL
);
CREATE INDEX acme_challenges_by_kind ON acme_challenges(kind, expires_at);
