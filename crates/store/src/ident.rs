//! SQL identifiers. Identifiers cannot be bind parameters, so the few statements that name a
//! database (`CREATE DATABASE`, `ALTER DATABASE`, `GRANT ... ON DATABASE`) validate the name
//! and then quote it; no other text from outside is ever put into SQL.

use crate::Error;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER: usize = 63;

/// Checks that `name` is a plain database name: a lowercase ASCII letter or `_`, then up to
/// 62 lowercase letters, digits or `_`.
pub(crate) fn validate_dbname(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= MAX_IDENTIFIER {
        return Ok(());
    }
    Err(Error::config(
        "database.name",
        format!(
            "{name:?} is not a plain database name; use 1 to {MAX_IDENTIFIER} lowercase \
             letters, digits or `_`, not starting with a digit"
        ),
    ))
}

/// Quotes `ident` as a PostgreSQL identifier, like the server's `quote_ident()` applied
/// unconditionally: wrapped in double quotes, inner double quotes doubled.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted() {
        for name in ["datapunk", "_x", "dp_2024", &"a".repeat(63)] {
            assert!(validate_dbname(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        let long = "a".repeat(64);
        for name in ["", "Datapunk", "1db", "data-punk", "db name", "db\"x", "db;drop", &long] {
            assert!(validate_dbname(name).is_err(), "{name}");
        }
    }

    #[test]
    fn quoting_doubles_inner_quotes() {
        assert_eq!(quote_ident("datapunk"), "\"datapunk\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
