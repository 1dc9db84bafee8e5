//! Why a configuration file was refused, told so that nothing from the file's values leaks.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A configuration file that could not be used.
///
/// The message names the file, the line and column and the key at fault. It never repeats a
/// value from the file: a value typed into the wrong key may be a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
    /// The file was read but is not valid configuration.
    #[error("{}{}: {problem}", path.display(), location.suffix())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file, when known.
        location: Location,
        /// The dotted key at fault, when known (`database.mode`).
        key: Option<String>,
        /// What is wrong, worded without the offending value.
        problem: String,
    },
    /// No file exists at the default location, and the defaults cannot be worked out from
    /// this environment (`XDG_RUNTIME_DIR` unset, for example).
    #[error("no configuration file at {}, and the defaults do not apply: {problem}", path.display())]
    Defaults {
        /// The default location, where no file is.
        path: PathBuf,
        /// What is missing, as a sentence.
        problem: String,
    },
    /// No path was given and none of the default locations could be worked out.
    #[error(
        "no configuration path: pass --config, or set DATAPUNK_CONFIG or XDG_CONFIG_HOME or HOME"
    )]
    NoPath,
}

/// A 1-based line and column in a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column, counted in characters; 0 when unknown.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Self { line, column }
    }
}

impl Location {
    /// `:line:column` to put after a path, or nothing when the place is unknown.
    fn suffix(&self) -> String {
        if self.line == 0 { String::new() } else { format!(":{self}") }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Rewords a serde or TOML message so that it names what was expected but never the value
/// that was found. Keys and the names of allowed variants come from our own types and are safe.
pub(crate) fn sanitize(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = split_expected(rest);
        let kind = found.split_whitespace().next().unwrap_or("value");
        return format!("wrong type: expected {expected}, found {}", article(kind));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let (_, expected) = split_expected(rest);
        return format!("invalid value: expected {expected}");
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        let (_, expected) = split_expected(rest);
        return format!("invalid length: expected {expected}");
    }
    if message.starts_with("unknown variant ") {
        let (_, expected) = split_expected(message);
        return format!("unknown value: expected {expected}");
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = split_expected(rest);
        if plausible_key(field.trim_matches('`')) {
            return format!("unknown key {field}; allowed keys here: {expected}");
        }
        return format!("unknown key (name not shown); allowed keys here: {expected}");
    }
    if message.starts_with("missing field ") || message.starts_with("duplicate ") {
        return message.to_owned();
    }
    // Errors of our own validation are worded by us and carry no values. Anything else from the
    // parser is reduced to its first clause, which never quotes the input.
    message.split(['\n']).next().unwrap_or("invalid configuration").to_owned()
}

/// Whether a key name from the file may be repeated in messages. Real keys are short
/// lowercase words; anything else (a pasted token used as a key) is not shown.
pub(crate) fn plausible_key(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn split_expected(text: &str) -> (&str, &str) {
    match text.split_once(", expected ") {
        Some((found, expected)) => (found, expected),
        None => (text, "something else"),
    }
}

fn article(kind: &str) -> String {
    match kind {
        "integer" => "an integer".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean".into(),
        "floating" => "a float".into(),
        "map" => "a table".into(),
        "sequence" => "an array".into(),
        other => format!("a {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_message_drops_the_found_value() {
        let got = sanitize(r#"invalid type: string "hunter2", expected u32"#);
        assert_eq!(got, "wrong type: expected u32, found a string");
    }

    #[test]
    fn unknown_variant_message_drops_the_found_value() {
        let got = sanitize("unknown variant `s3cret`, expected `managed` or `external`");
        assert_eq!(got, "unknown value: expected `managed` or `external`");
    }

    #[test]
    fn an_unknown_key_that_looks_like_a_token_is_not_named() {
        let got = sanitize("unknown field `ghp_SECRETTOKEN123`, expected `mode` or `name`");
        assert!(!got.contains("SECRET"), "{got}");
        let got = sanitize("unknown field `passwd`, expected `mode` or `name`");
        assert!(got.contains("`passwd`"), "{got}");
    }

    #[test]
    fn location_counts_lines_and_characters() {
        let text = "a = 1\n[b]\nxé = 2\n";
        assert_eq!(Location::of_offset(text, 0), Location { line: 1, column: 1 });
        let at = text.find('=').map(|_| text.rfind("= 2").unwrap_or(0)).unwrap_or(0);
        assert_eq!(Location::of_offset(text, at), Location { line: 3, column: 4 });
    }
}
