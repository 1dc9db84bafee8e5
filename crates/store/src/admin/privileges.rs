//! What each Datapunk role can effectively do in one database, read from PostgreSQL's
//! `has_*_privilege()` functions so that grants through `PUBLIC`, memberships and ownership
//! all count. [`PrivilegeTable`] renders the result as plain text.

use std::fmt;

use serde::Serialize;
use tokio_postgres::Client;

use crate::{Error, Role};

/// The effective rights of one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RolePrivileges {
    /// The role.
    pub role: Role,
    /// False when the role does not exist; every other field is then empty or false.
    pub exists: bool,
    /// May open connections.
    pub login: bool,
    /// Is a superuser, which bypasses every check below.
    pub superuser: bool,
    /// May create databases.
    pub createdb: bool,
    /// May create roles.
    pub createrole: bool,
    /// May start replication or bypasses row-level security.
    pub replication_or_bypassrls: bool,
    /// Every role it belongs to, directly or through another role.
    pub member_of: Vec<String>,
    /// Rights on the database.
    pub database: DatabasePrivileges,
    /// Rights on each non-system schema.
    pub schemas: Vec<SchemaPrivileges>,
    /// Rights on each table and view in schema `datapunk`.
    pub tables: Vec<TablePrivileges>,
    /// Rights on each function of schema `datapunk` that does not belong to an extension.
    pub functions: Vec<FunctionPrivileges>,
}

/// Rights on a database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DatabasePrivileges {
    /// The database.
    pub name: String,
    /// `CONNECT`.
    pub connect: bool,
    /// `CREATE` (schemas).
    pub create: bool,
    /// `TEMPORARY` (temporary tables).
    pub temporary: bool,
}

/// Rights on a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchemaPrivileges {
    /// The schema.
    pub schema: String,
    /// `USAGE`: may look up objects in it.
    pub usage: bool,
    /// `CREATE`: may create objects in it.
    pub create: bool,
}

/// Rights on a table or view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TablePrivileges {
    /// The table, schema-qualified.
    pub table: String,
    /// `SELECT`.
    pub select: bool,
    /// `INSERT`.
    pub insert: bool,
    /// `UPDATE`.
    pub update: bool,
    /// `DELETE`.
    pub delete: bool,
    /// `TRUNCATE`.
    pub truncate: bool,
}

/// Rights on a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionPrivileges {
    /// The function with its argument types, schema-qualified:
    /// `datapunk.audit_append(bigint, text, ...)`.
    pub function: String,
    /// `EXECUTE`.
    pub execute: bool,
}

/// Reports the effective rights of the four roles in `dbname`. `client` must be connected to
/// `dbname` (table and schema rights are per database) as a role that can see the catalogs,
/// which every role can.
///
/// # Errors
///
/// [`Error::Config`] when `client` is connected to another database; query errors otherwise.
pub async fn privileges(client: &Client, dbname: &str) -> Result<Vec<RolePrivileges>, Error> {
    let current: String = client.query_one("SELECT current_database()::text", &[]).await?.get(0);
    if current != dbname {
        let reason = format!("the connection is to database {current:?}, not {dbname:?}");
        return Err(Error::config("database.name", reason));
    }

    let mut report = Vec::with_capacity(Role::ALL.len());
    for role in Role::ALL {
        report.push(role_privileges(client, role, dbname).await?);
    }
    Ok(report)
}

async fn role_privileges(
    client: &Client,
    role: Role,
    dbname: &str,
) -> Result<RolePrivileges, Error> {
    let name = role.name();
    let attributes = client
        .query_opt(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole,
                    rolreplication OR rolbypassrls
             FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await?;
    let Some(attributes) = attributes else {
        return Ok(RolePrivileges {
            role,
            exists: false,
            login: false,
            superuser: false,
            createdb: false,
            createrole: false,
            replication_or_bypassrls: false,
            member_of: Vec::new(),
            database: DatabasePrivileges { name: dbname.to_owned(), ..Default::default() },
            schemas: Vec::new(),
            tables: Vec::new(),
            functions: Vec::new(),
        });
    };

    let member_of = client
        .query(
            "WITH RECURSIVE up(oid) AS (
                 SELECT a.roleid FROM pg_auth_members a
                 JOIN pg_roles r ON r.oid = a.member WHERE r.rolname = $1
                 UNION
                 SELECT a.roleid FROM pg_auth_members a JOIN up ON a.member = up.oid
             )
             SELECT rolname::text FROM pg_roles WHERE oid IN (SELECT oid FROM up) ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let row = client
        .query_one(
            "SELECT has_database_privilege($1, $2, 'CONNECT'),
                    has_database_privilege($1, $2, 'CREATE'),
                    has_database_privilege($1, $2, 'TEMPORARY')",
            &[&name, &dbname],
        )
        .await?;
    let database = DatabasePrivileges {
        name: dbname.to_owned(),
        connect: row.get(0),
        create: row.get(1),
        temporary: row.get(2),
    };

    let schemas = client
        .query(
            "SELECT nspname::text,
                    has_schema_privilege($1, oid, 'USAGE'),
                    has_schema_privilege($1, oid, 'CREATE')
             FROM pg_namespace
             WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
             ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| SchemaPrivileges { schema: row.get(0), usage: row.get(1), create: row.get(2) })
        .collect();

    let tables = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname),
                    has_table_privilege($1, c.oid, 'SELECT'),
                    has_table_privilege($1, c.oid, 'INSERT'),
                    has_table_privilege($1, c.oid, 'UPDATE'),
                    has_table_privilege($1, c.oid, 'DELETE'),
                    has_table_privilege($1, c.oid, 'TRUNCATE')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'datapunk' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY c.relname",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| TablePrivileges {
            table: row.get(0),
            select: row.get(1),
            insert: row.get(2),
            update: row.get(3),
            delete: row.get(4),
            truncate: row.get(5),
        })
        .collect();

    let functions = client
        .query(
            "SELECT format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)),
                    has_function_privilege($1, p.oid, 'EXECUTE')
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'datapunk'
               AND NOT EXISTS (SELECT FROM pg_depend d
                               WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                 AND d.deptype = 'e')
             ORDER BY p.proname, 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|row| FunctionPrivileges { function: row.get(0), execute: row.get(1) })
        .collect();

    Ok(RolePrivileges {
        role,
        exists: true,
        login: attributes.get(0),
        superuser: attributes.get(1),
        createdb: attributes.get(2),
        createrole: attributes.get(3),
        replication_or_bypassrls: attributes.get(4),
        member_of,
        database,
        schemas,
        tables,
        functions,
    })
}

/// Renders a privilege report as a plain-text table: one row per right or object, one column
/// per role. Object rights use PostgreSQL's ACL letters, explained in a legend below the
/// table; `-` means none.
///
/// ```text
/// object                     datapunk_owner  datapunk_app  datapunk_reader  datapunk_backup
/// login                      no              yes           yes              yes
/// database datapunk          cCT             c             c                c
/// schema datapunk            UC              U             U                U
/// table datapunk.audit       rawdD           r             r                r
/// ```
pub struct PrivilegeTable<'a>(pub &'a [RolePrivileges]);

impl fmt::Display for PrivilegeTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles = self.0;
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut add = |label: String, cell: &dyn Fn(&RolePrivileges) -> String| {
            rows.push((label, roles.iter().map(cell).collect()));
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();

        add("exists".into(), &|r| yes_no(r.exists));
        add("login".into(), &|r| yes_no(r.login));
        add("superuser".into(), &|r| yes_no(r.superuser));
        add("createdb".into(), &|r| yes_no(r.createdb));
        add("createrole".into(), &|r| yes_no(r.createrole));
        add("replication/bypassrls".into(), &|r| yes_no(r.replication_or_bypassrls));
        add("member of".into(), &|r| dash_if_empty(r.member_of.join(",")));

        let database = roles.iter().map(|r| r.database.name.clone()).find(|n| !n.is_empty());
        add(format!("database {}", database.unwrap_or_default()), &|r| {
            let d = &r.database;
            letters(&[(d.connect, 'c'), (d.create, 'C'), (d.temporary, 'T')])
        });
        for schema in union(roles, |r| r.schemas.iter().map(|s| s.schema.clone()).collect()) {
            add(format!("schema {schema}"), &|r| {
                r.schemas
                    .iter()
                    .find(|s| s.schema == schema)
                    .map_or_else(|| "-".to_owned(), |s| letters(&[(s.usage, 'U'), (s.create, 'C')]))
            });
        }
        for table in union(roles, |r| r.tables.iter().map(|t| t.table.clone()).collect()) {
            add(format!("table {table}"), &|r| {
                r.tables.iter().find(|t| t.table == table).map_or_else(
                    || "-".to_owned(),
                    |t| {
                        letters(&[
                            (t.select, 'r'),
                            (t.insert, 'a'),
                            (t.update, 'w'),
                            (t.delete, 'd'),
                            (t.truncate, 'D'),
                        ])
                    },
                )
            });
        }
        let functions = union(roles, |r| r.functions.iter().map(|p| p.function.clone()).collect());
        for function in &functions {
            add(format!("function {}", short_signature(function, &functions)), &|r| {
                r.functions
                    .iter()
                    .find(|p| &p.function == function)
                    .map_or_else(|| "-".to_owned(), |p| letters(&[(p.execute, 'X')]))
            });
        }

        let label_width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0).max(6);
        let widths: Vec<usize> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cells = rows.iter().map(|(_, cells)| cells[i].len());
                cells.max().unwrap_or(0).max(r.role.name().len())
            })
            .collect();

        write!(f, "{:label_width$}", "object")?;
        for (role, width) in roles.iter().zip(&widths) {
            write!(f, "  {:width$}", role.role.name())?;
        }
        writeln!(f)?;
        for (label, cells) in &rows {
            let mut line = format!("{label:label_width$}");
            for (cell, width) in cells.iter().zip(&widths) {
                line.push_str(&format!("  {cell:width$}"));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "c connect, C create, T temporary, U usage, r select, a insert, w update, \
             d delete, D truncate, X execute, - none"
        )
    }
}

/// `schema.name` without the argument types, unless another function has the same name.
fn short_signature<'a>(function: &'a str, all: &[String]) -> &'a str {
    fn name(function: &str) -> &str {
        function.split_once('(').map_or(function, |(name, _)| name)
    }
    let overloaded = all.iter().filter(|other| name(other) == name(function)).count() > 1;
    if overloaded { function } else { name(function) }
}

fn letters(flags: &[(bool, char)]) -> String {
    dash_if_empty(flags.iter().filter(|(on, _)| *on).map(|(_, c)| *c).collect())
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() { "-".to_owned() } else { text }
}

/// Every name that `names` gives for any role, in first-seen order.
fn union(roles: &[RolePrivileges], names: impl Fn(&RolePrivileges) -> Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for name in roles.iter().flat_map(names) {
        if !all.contains(&name) {
            all.push(name);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(role: Role, login: bool, table: [bool; 5]) -> RolePrivileges {
        RolePrivileges {
            role,
            exists: true,
            login,
            superuser: false,
            createdb: false,
            createrole: false,
            replication_or_bypassrls: false,
            member_of: Vec::new(),
            database: DatabasePrivileges {
                name: "datapunk".into(),
                connect: login,
                create: !login,
                temporary: false,
            },
            schemas: vec![SchemaPrivileges {
                schema: "datapunk".into(),
                usage: true,
                create: !login,
            }],
            tables: vec![TablePrivileges {
                table: "datapunk.audit".into(),
                select: table[0],
                insert: table[1],
                update: table[2],
                delete: table[3],
                truncate: table[4],
            }],
            functions: Vec::new(),
        }
    }

    #[test]
    fn the_table_has_a_column_per_role_and_a_row_per_object() {
        let report = [
            role(Role::Owner, false, [true; 5]),
            role(Role::App, true, [true, false, false, false, false]),
        ];
        let text = PrivilegeTable(&report).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "object                 datapunk_owner  datapunk_app");
        assert!(lines.contains(&"login                  no              yes"), "{text}");
        assert!(lines.contains(&"database datapunk      C               c"), "{text}");
        assert!(lines.contains(&"schema datapunk        UC              U"), "{text}");
        assert!(lines.contains(&"table datapunk.audit   rawdD           r"), "{text}");
        assert!(lines.contains(&"member of              -               -"), "{text}");
    }
}
