-- 0001: the hash-chained audit log, and the default privileges of later tables.
--
-- Runs as datapunk_owner inside one transaction. Migrations are append-only: never edit this
-- file after release; add the next number instead.
--
-- The audit table can only grow, and only through datapunk.audit_append():
--   * no role but the owner holds INSERT, UPDATE, DELETE or TRUNCATE on it;
--   * triggers refuse UPDATE, DELETE and TRUNCATE for every role, the owner included;
--   * each row carries the SHA-256 of its canonical encoding, which includes the previous
--     row's hash, so editing, inserting or removing a row breaks the chain for
--     `datapunk audit verify`. A superuser can still rebuild the whole chain; the head
--     anchored outside the database catches that.

CREATE TABLE datapunk.audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_us           bigint NOT NULL,
    actor_uid       bigint NOT NULL,
    actor_component text   NOT NULL,
    action          text   NOT NULL,
    integration     text,
    dataset         text,
    outcome         text   NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    details         jsonb  NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    -- Unique: two rows claiming the same predecessor would fork the chain.
    prev_hash       bytea  NOT NULL UNIQUE CHECK (octet_length(prev_hash) = 32),
    hash            bytea  NOT NULL UNIQUE CHECK (octet_length(hash) = 32)
);

COMMENT ON TABLE datapunk.audit IS
    'Append-only, hash-chained audit log; write through datapunk.audit_append() only.';
COMMENT ON COLUMN datapunk.audit.at_us IS
    'When the row was appended, in microseconds since 1970-01-01 UTC.';

-- One field of the canonical encoding: NULL is "-\n", a value is "<octets>:<bytes>\n".
CREATE FUNCTION datapunk.audit_field(field bytea) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog
AS $$
    SELECT CASE
        WHEN field IS NULL THEN decode('2d0a', 'hex')
        ELSE convert_to(octet_length(field)::text || ':', 'UTF8') || field || decode('0a', 'hex')
    END
$$;

-- The canonical encoding of a row, version 1. It uses no session setting: times are integer
-- microseconds, integers are their decimal text, text is UTF-8, details are jsonb's text form
-- (keys ordered and spaced by jsonb itself) and every field is length-prefixed. The Rust
-- verifier in datapunk-store implements the same encoding independently.
CREATE FUNCTION datapunk.audit_canonical(
    id bigint, at_us bigint, actor_uid bigint, actor_component text, action text,
    integration text, dataset text, outcome text, details jsonb, prev_hash bytea
) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog
AS $$
    SELECT convert_to('datapunk-audit-v1', 'UTF8') || decode('0a', 'hex')
        || datapunk.audit_field(convert_to(id::text, 'UTF8'))
        || datapunk.audit_field(convert_to(at_us::text, 'UTF8'))
        || datapunk.audit_field(convert_to(actor_uid::text, 'UTF8'))
        || datapunk.audit_field(convert_to(actor_component, 'UTF8'))
        || datapunk.audit_field(convert_to(action, 'UTF8'))
        || datapunk.audit_field(convert_to(integration, 'UTF8'))
        || datapunk.audit_field(convert_to(dataset, 'UTF8'))
        || datapunk.audit_field(convert_to(outcome, 'UTF8'))
        || datapunk.audit_field(convert_to(details::text, 'UTF8'))
        || datapunk.audit_field(prev_hash)
$$;

-- The only way to write the audit log. SECURITY DEFINER so that the caller needs EXECUTE
-- here and nothing on the table; the search_path is pinned so that the caller cannot
-- substitute objects.
CREATE FUNCTION datapunk.audit_append(
    actor_uid bigint, component text, action text, integration text, dataset text,
    outcome text, details jsonb
) RETURNS TABLE (id bigint, hash bytea)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, datapunk, pg_temp
AS $$
DECLARE
    new_id   bigint;
    new_at   bigint;
    new_prev bytea;
    new_hash bytea;
    payload  jsonb := coalesce(details, '{}'::jsonb);
BEGIN
    -- Under REPEATABLE READ the snapshot could predate the last append, so the row would
    -- name a stale predecessor; the unique prev_hash would then refuse it anyway.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'datapunk.audit_append must run at READ COMMITTED isolation'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF actor_uid IS NULL OR component IS NULL OR action IS NULL OR outcome IS NULL THEN
        RAISE EXCEPTION 'actor_uid, component, action and outcome are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'details must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Serialise appenders until commit, so each reads the hash its predecessor committed. The
    -- key is 'datapunk' in ASCII.
    PERFORM pg_advisory_xact_lock(7233190438381121131);

    SELECT a.hash INTO new_prev FROM datapunk.audit AS a ORDER BY a.id DESC LIMIT 1;
    new_prev := coalesce(new_prev, decode(repeat('00', 32), 'hex'));
    new_id := nextval(pg_get_serial_sequence('datapunk.audit', 'id'));
    new_at := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    new_hash := sha256(datapunk.audit_canonical(
        new_id, new_at, actor_uid, component, action, integration, dataset, outcome, payload,
        new_prev));

    INSERT INTO datapunk.audit (id, at_us, actor_uid, actor_component, action, integration,
                                dataset, outcome, details, prev_hash, hash)
        OVERRIDING SYSTEM VALUE
        VALUES (new_id, new_at, actor_uid, component, action, integration, dataset, outcome,
                payload, new_prev, new_hash);

    RETURN QUERY SELECT new_id, new_hash;
END
$$;

CREATE FUNCTION datapunk.audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
BEGIN
    RAISE EXCEPTION 'datapunk.audit is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_no_update_or_delete
    BEFORE UPDATE OR DELETE ON datapunk.audit
    FOR EACH ROW EXECUTE FUNCTION datapunk.audit_refuse_change();

CREATE TRIGGER audit_no_truncate
    BEFORE TRUNCATE ON datapunk.audit
    FOR EACH STATEMENT EXECUTE FUNCTION datapunk.audit_refuse_change();

-- Functions are executable by PUBLIC unless revoked.
REVOKE ALL ON FUNCTION datapunk.audit_field(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION datapunk.audit_canonical(bigint, bigint, bigint, text, text, text, text,
                                                text, jsonb, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION datapunk.audit_refuse_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION datapunk.audit_append(bigint, text, text, text, text, text, jsonb)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION datapunk.audit_append(bigint, text, text, text, text, text, jsonb)
    TO datapunk_app;

REVOKE ALL ON TABLE datapunk.audit FROM PUBLIC;
GRANT SELECT ON TABLE datapunk.audit TO datapunk_app, datapunk_reader, datapunk_backup;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA datapunk TO datapunk_backup;

-- Later tables and sequences created by the owner follow these defaults. A later migration
-- whose table must not be writable by the app (like the audit table) revokes explicitly.
ALTER DEFAULT PRIVILEGES FOR ROLE datapunk_owner
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE datapunk_owner IN SCHEMA datapunk
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO datapunk_app;
ALTER DEFAULT PRIVILEGES FOR ROLE datapunk_owner IN SCHEMA datapunk
    GRANT SELECT ON TABLES TO datapunk_reader, datapunk_backup;
ALTER DEFAULT PRIVILEGES FOR ROLE datapunk_owner IN SCHEMA datapunk
    GRANT USAGE, SELECT ON SEQUENCES TO datapunk_app;
ALTER DEFAULT PRIVILEGES FOR ROLE datapunk_owner IN SCHEMA datapunk
    GRANT SELECT ON SEQUENCES TO datapunk_backup;
