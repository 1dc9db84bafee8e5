//! `datapunk db init` gives each role exactly the privileges it needs, checked by connecting
//! as each role and trying what it must not do.

use datapunk_tests::{ROLES, Setup};

async fn denied(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected `{sql}` to be refused, but it succeeded"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("`{sql}` failed oddly: {e}"));
            db.message().to_owned()
        }
    }
}

fn init(setup: &Setup) {
    let output = setup.init();
    assert!(output.status.success(), "db init failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn the_app_role_cannot_change_the_schema_or_write_the_audit_table() {
    let setup = Setup::external();
    init(&setup);
    let app = setup.connect_as("datapunk_app").await.expect("app logs in");

    for sql in [
        "CREATE TABLE datapunk.evil (x int)",
        "CREATE TABLE public.evil (x int)",
        "ALTER TABLE datapunk.audit ADD COLUMN evil int",
        "DROP TABLE datapunk.audit",
        "CREATE TEMP TABLE evil (x int)",
        "CREATE SCHEMA evil",
    ] {
        let message = denied(&app, sql).await;
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{sql}: {message}"
        );
    }
    for sql in [
        "INSERT INTO datapunk.audit (at_us, actor_uid, actor_component, action, outcome, prev_hash, hash) \
         VALUES (0, 0, 'x', 'forged', 'success', '\\x00', '\\x01')",
        "UPDATE datapunk.audit SET action = 'forged'",
        "DELETE FROM datapunk.audit",
        "TRUNCATE datapunk.audit",
    ] {
        let message = denied(&app, sql).await;
        assert!(message.contains("permission denied"), "{sql}: {message}");
    }

    // What it may do: append through the function, and read.
    let row = app
        .query_one(
            "SELECT id FROM datapunk.audit_append(1000, 'test', 'test.append', NULL, NULL, 'success', '{}')",
            &[],
        )
        .await
        .expect("the app role appends through the function");
    let id: i64 = row.get(0);
    assert!(id > 0);
}

#[tokio::test]
async fn the_reader_and_backup_roles_only_read() {
    let setup = Setup::external();
    init(&setup);
    for role in ["datapunk_reader", "datapunk_backup"] {
        let client = setup.connect_as(role).await.expect("role logs in");
        client.query("SELECT * FROM datapunk.audit", &[]).await.expect("reading is allowed");
        for sql in [
            "INSERT INTO datapunk.audit (at_us, actor_uid, actor_component, action, outcome, prev_hash, hash) \
             VALUES (0, 0, 'x', 'forged', 'success', '\\x00', '\\x01')",
            "SELECT datapunk.audit_append(1, 'x', 'x', NULL, NULL, 'success', '{}')",
            "SELECT lo_creat(-1)",
            "CREATE TABLE public.evil (x int)",
            "CREATE TABLE datapunk.evil (x int)",
        ] {
            let message = denied(&client, sql).await;
            assert!(message.contains("permission denied"), "{role}: {sql}: {message}");
        }
    }
}

#[tokio::test]
async fn the_owner_cannot_log_in_nor_create_in_public_and_even_it_cannot_rewrite_the_audit() {
    let setup = Setup::external();
    init(&setup);
    assert!(setup.connect_as("datapunk_owner").await.is_err(), "the owner is NOLOGIN");

    let admin = setup.admin().await;
    admin
        .batch_execute("SELECT datapunk.audit_append(1, 'x', 'x', NULL, NULL, 'success', '{}')")
        .await
        .expect("superuser appends");
    admin.batch_execute("SET ROLE datapunk_owner").await.expect("admin becomes the owner");
    let message = denied(&admin, "CREATE TABLE public.evil (x int)").await;
    assert!(message.contains("permission denied"), "{message}");
    for sql in [
        "UPDATE datapunk.audit SET action = 'x'",
        "DELETE FROM datapunk.audit",
        "TRUNCATE datapunk.audit",
    ] {
        let message = denied(&admin, sql).await;
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
}

#[tokio::test]
async fn a_role_outside_the_four_cannot_connect_and_no_role_is_privileged() {
    let setup = Setup::external();
    init(&setup);
    let admin = setup.admin().await;
    let intruder = format!("intruder_{}", setup.db_name);
    admin.batch_execute(&format!("CREATE ROLE {intruder} LOGIN")).await.expect("create intruder");
    let Err(err) = setup.connect_as(&intruder).await else {
        panic!("the intruder must be refused");
    };
    let message =
        err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_else(|| err.to_string());
    assert!(message.contains("permission denied for database"), "{message}");

    for role in ROLES {
        let row = admin
            .query_one(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, \
                        pg_has_role($1, 'pg_monitor', 'MEMBER'), \
                        pg_has_role($1, 'pg_read_all_stats', 'MEMBER'), \
                        pg_has_role($1, 'pg_read_all_data', 'MEMBER'), \
                        has_database_privilege($1, current_database(), 'CREATE'), \
                        has_database_privilege($1, current_database(), 'TEMPORARY'), \
                        has_schema_privilege($1, 'public', 'CREATE') \
                 FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap_or_else(|e| panic!("{role} exists: {e}"));
        let flags: Vec<bool> = (0..8).map(|i| row.get(i)).collect();
        assert_eq!(flags, vec![false; 8], "{role} has an attribute or membership it must not");
        let create_public: bool = row.get(10);
        assert!(!create_public, "{role} may create in public");
        if role != "datapunk_owner" {
            let (create_db, temp): (bool, bool) = (row.get(8), row.get(9));
            assert!(!create_db && !temp, "{role} has CREATE or TEMP on the database");
        }
    }
    let public_connect: bool = admin
        .query_one(
            "SELECT coalesce(bool_or(a.grantee = 0 AND a.privilege_type = 'CONNECT'), false) \
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()",
            &[],
        )
        .await
        .expect("read the database ACL")
        .get(0);
    assert!(!public_connect, "PUBLIC still has CONNECT");
}

#[tokio::test]
async fn init_is_idempotent_and_roles_prints_the_effective_privileges() {
    let setup = Setup::external();
    init(&setup);
    init(&setup);
    let admin = datapunk_testkit::cluster().conninfo("postgres", "postgres");
    let table = setup.cli_ok(&["db", "roles", "--admin-url", &admin]);
    for role in ROLES {
        assert!(table.contains(role), "{role} missing from:\n{table}");
    }
    assert!(table.contains("audit"), "the audit table is missing from:\n{table}");
}

#[test]
fn db_shell_opens_psql_as_the_reader_by_default_and_as_the_role_asked_for() {
    let setup = Setup::external();
    init(&setup);
    let who = |extra: &[&str]| {
        let mut args = vec!["db", "shell"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "-At", "-c", "SELECT current_user"]);
        setup.cli_ok(&args).trim().to_owned()
    };
    assert_eq!(who(&[]), "datapunk_reader");
    assert_eq!(who(&["--role", "app"]), "datapunk_app");
    assert_eq!(who(&["--role", "backup"]), "datapunk_backup");

    let refused = setup.cli(&[
        "db",
        "shell",
        "--",
        "-c",
        "INSERT INTO datapunk.schema_migrations VALUES (99)",
    ]);
    assert!(!refused.status.success(), "the reader shell must not write");
}
