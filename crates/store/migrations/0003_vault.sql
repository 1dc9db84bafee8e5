-- 0003: the records of the `encrypted-table` secret store.
--
-- Runs as datapunk_owner inside one transaction. Migrations are append-only: never edit this
-- file after release; add the next number instead.
--
-- For installations without a desktop keyring (vault.backend = "encrypted-table"), each
-- integration's OAuth token record and data key are kept here, one row per kind and
-- integration. `sealed` is an OpenPGP message that the daemon encrypts under a master key
-- which never reaches PostgreSQL (it is read from a file or a systemd credential), with a
-- header naming the row's kind and integration inside the encryption.
--
-- Only datapunk_app may touch the table. The reader and the backup role get nothing on it,
-- although the default privileges of 0001 would give them SELECT:
--   * a dump must never hold key material. Destroying an integration's data key is how its
--     data is shredded in every copy, backups included; a backup that also held the key
--     (even sealed, next to a master key that outlives it) would undo that;
--   * a reader has no use for sealed secrets.
-- `pg_dump` as datapunk_backup therefore needs `--exclude-table=datapunk.vault_records`; the
-- table's definition comes back from the migrations on restore, and its rows from the key
-- backup (`datapunk keys backup`) and a new OAuth grant.

CREATE TABLE datapunk.vault_records (
    kind        text        NOT NULL CHECK (kind IN ('token', 'data-key')),
    -- The rule of integration names in Rust (1 to 64 of a-z, 0-9, '-', '_').
    integration text        NOT NULL CHECK (integration ~ '^[a-z0-9_-]{1,64}$'),
    sealed      bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, integration)
);

COMMENT ON TABLE datapunk.vault_records IS
    'Secret-store records sealed under a master key outside the database; never dumped.';

REVOKE ALL ON TABLE datapunk.vault_records FROM PUBLIC, datapunk_reader, datapunk_backup;
REVOKE ALL ON TABLE datapunk.vault_records FROM datapunk_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE datapunk.vault_records TO datapunk_app;
