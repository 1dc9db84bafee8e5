-- 0002: serialise audit appends with a table lock that only writers can contend for.
--
-- 0001 serialised appenders with a transaction-level advisory lock. Advisory locks are open to
-- every role that can log in, so a reader holding that key could stall every append, and the
-- daemon's shutdown with it. A SHARE ROW EXCLUSIVE lock on the table conflicts with itself and
-- with writers, but not with the ACCESS SHARE that readers take, and roles without write
-- privileges on the table cannot take a conflicting lock on it. lock_timeout bounds the wait:
-- an append that cannot get the lock in time fails, and the caller records the failure
-- elsewhere (journald) instead of hanging.

CREATE OR REPLACE FUNCTION datapunk.audit_append(
    actor_uid bigint, component text, action text, integration text, dataset text,
    outcome text, details jsonb
) RETURNS TABLE (id bigint, hash bytea)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, datapunk, pg_temp
    SET lock_timeout = '2s'
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

    -- Serialise appenders until commit, so each reads the hash its predecessor committed.
    LOCK TABLE datapunk.audit IN SHARE ROW EXCLUSIVE MODE;

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
