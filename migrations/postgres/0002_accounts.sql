-- Accounts, namespaces and access: users and robots, organisations with members and roles,
-- personal access tokens and refresh tokens (stored only as SHA-256 hashes), and the key that
-- signs Docker registry tokens (shared by every node through the database).
-- Booleans are BIGINT 0/1 so the SQL stays the same on PostgreSQL.

CREATE TABLE accounts (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT COLLATE "C" NOT NULL UNIQUE,
    kind            TEXT NOT NULL,              -- 'user' or 'robot'
    password_hash   TEXT,                       -- argon2id PHC string; NULL for robots
    is_admin        BIGINT NOT NULL DEFAULT 0,
    disabled        BIGINT NOT NULL DEFAULT 0,
    robot_namespace TEXT,                       -- robots: the one namespace they act in
    robot_role      TEXT,                       -- robots: reader, writer or maintainer
    created_at      BIGINT NOT NULL,
    last_login_at   BIGINT
);

CREATE TABLE namespaces (
    name        TEXT COLLATE "C" PRIMARY KEY,
    kind        TEXT NOT NULL,                  -- 'user' (owned by the account of that name) or 'org'
    public      BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE namespace_members (
    namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
    account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,                  -- reader, writer or maintainer
    PRIMARY KEY (namespace, account_id)
);
CREATE INDEX namespace_members_by_account ON namespace_members(account_id);

CREATE TABLE access_tokens (
    id                  BIGSERIAL PRIMARY KEY,
    account_id          BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind                TEXT NOT NULL,          -- 'personal' or 'refresh'
    name                TEXT NOT NULL,
    token_hash          TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the secret
    scope               TEXT NOT NULL,          -- 'pull', 'push' (pull+push) or 'delete' (pull+push+delete)
    repository_pattern  TEXT,                   -- optional glob limiting the repositories
    expires_at          BIGINT,
    last_used_at        BIGINT,
    created_at          BIGINT NOT NULL
);
CREATE INDEX access_tokens_by_account ON access_tokens(account_id);

CREATE TABLE signing_keys (
    id          TEXT PRIMARY KEY,               -- 'registry-token'
    kid         TEXT NOT NULL,
    private_key TEXT NOT NULL,                  -- PKCS#8 DER, base64
    created_at  BIGINT NOT NULL
);
