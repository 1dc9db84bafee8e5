-- 0004: connected accounts and the datasets chosen for each.
--
-- Runs as datapunk_owner inside one transaction. Migrations are append-only: never edit this
-- file after release; add the next number instead.
--
-- An integration is one connected account of one provider. Its tokens live in the secret
-- store; what is here is what `datapunk integrations` shows while the keyring is locked: the
-- account, the scopes asked for and granted, the state, the access token's expiry time (never
-- a token) and the last refresh and error. The default privileges of 0001 apply: datapunk_app
-- reads and writes, the reader and the backup role read.

CREATE TABLE datapunk.integrations (
    -- The rule of integration names in Rust (1 to 64 of a-z, 0-9, '-', '_').
    name             text        PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,64}$'),
    provider         text        NOT NULL CHECK (provider IN ('google', 'microsoft', 'spotify')),
    account_id       text,
    display_name     text,
    requested_scopes text[]      NOT NULL,
    granted_scopes   text[]      NOT NULL,
    state            text        NOT NULL CHECK (state IN (
                                     'active', 'needs_reauth', 'keyring_locked', 'paused',
                                     'revoked', 'token_unsaved')),
    token_expires_at timestamptz,
    last_refresh_at  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE datapunk.integration_datasets (
    integration text    NOT NULL REFERENCES datapunk.integrations (name) ON DELETE CASCADE,
    dataset     text    NOT NULL CHECK (dataset ~ '^[a-z0-9-]{1,64}$'),
    -- The person chose it (consent); the grant covers all of its scopes.
    consented   boolean NOT NULL,
    granted     boolean NOT NULL,
    PRIMARY KEY (integration, dataset)
);

COMMENT ON TABLE datapunk.integrations IS
    'Connected accounts; their tokens are in the secret store, never here.';
