//! Loading configuration files: defaults, errors that point at the fault, and no leaked values.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datapunk_config::{
    Config, ConfigError, DatabaseMode, EXAMPLE, Environment, Location, SecretRef, VaultBackend,
    locate,
};

fn env() -> Environment {
    Environment {
        home: Some("/home/alice".into()),
        xdg_runtime_dir: Some("/run/user/1000".into()),
        ..Environment::default()
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/datapunk/config.toml"), &env())
}

fn invalid(text: &str) -> (Location, Option<String>, String) {
    match parse(text) {
        Err(ConfigError::Invalid { location, key, problem, .. }) => (location, key, problem),
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

#[test]
fn an_empty_file_gives_xdg_defaults() {
    let config = parse("").expect("an empty file is valid");
    assert_eq!(config.daemon.runtime_dir, PathBuf::from("/run/user/1000/datapunk"));
    assert_eq!(config.daemon.state_dir, PathBuf::from("/home/alice/.local/state/datapunk"));
    assert_eq!(config.database.name, "datapunk");
    assert_eq!(config.database.pool_size, 4);
    let DatabaseMode::Managed { data_dir, pg_bin_dir } = config.database.mode else {
        panic!("managed is the default mode");
    };
    assert_eq!(data_dir, PathBuf::from("/home/alice/.local/share/datapunk/postgresql"));
    assert_eq!(pg_bin_dir, None);
    assert_eq!(config.vault.backend, VaultBackend::SecretService);
    assert_eq!(config.vault.timeout, Duration::from_secs(30));
}

#[test]
fn the_example_parses_to_the_defaults() {
    let example = parse(EXAMPLE).expect("the example is valid");
    let defaults = parse("").expect("an empty file is valid");
    assert_eq!(example, defaults);
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column_and_its_value_is_not_echoed() {
    let (location, key, problem) =
        invalid("[database]\nname = \"dp\"\n  passwd = \"hunter2-S3CRET\"\n");
    assert_eq!(location, Location { line: 3, column: 3 });
    assert_eq!(key.as_deref(), Some("database.passwd"));
    assert!(problem.contains("unknown key `passwd`"), "{problem}");
    assert!(!problem.contains("hunter2"), "{problem}");
}

#[test]
fn a_wrong_type_is_named_without_the_value() {
    let (location, key, problem) = invalid("[database]\npool_size = \"tok-3f9a7c\"\n");
    assert_eq!(location, Location { line: 2, column: 13 });
    assert_eq!(key.as_deref(), Some("database.pool_size"));
    assert!(problem.contains("wrong type"), "{problem}");
    assert!(!problem.contains("tok-3f9a7c"), "{problem}");
}

#[test]
fn an_unknown_mode_lists_the_allowed_ones_without_the_value() {
    let (_, key, problem) = invalid("[database]\nmode = \"sekrit-mode\"\n");
    assert_eq!(key.as_deref(), Some("database.mode"));
    assert!(problem.contains("`managed`") && problem.contains("`external`"), "{problem}");
    assert!(!problem.contains("sekrit"), "{problem}");
}

#[test]
fn a_syntax_error_points_at_the_line() {
    let (location, _, problem) = invalid("[database]\nname = \"unterminated\n");
    assert_eq!(location.line, 2);
    assert!(!problem.contains("unterminated"), "{problem}");
}

#[test]
fn a_password_in_the_connection_string_is_refused_without_echoing_it() {
    let text = "[database]\nmode = \"external\"\nconninfo = \"host=db password=pw-91x\"\n";
    let (location, key, problem) = invalid(text);
    assert_eq!(location.line, 3);
    assert_eq!(key.as_deref(), Some("database.conninfo"));
    assert!(problem.contains("password_file"), "{problem}");
    assert!(!problem.contains("pw-91x"), "{problem}");

    let uri = "[database]\nmode = \"external\"\nconninfo = \"postgresql://app:pw-91x@db/dp\"\n";
    let (_, _, problem) = invalid(uri);
    assert!(!problem.contains("pw-91x"), "{problem}");
}

#[test]
fn external_mode_needs_a_connection_string_and_rejects_managed_keys() {
    let (_, key, _) = invalid("[database]\nmode = \"external\"\n");
    assert_eq!(key.as_deref(), Some("database.conninfo"));
    let text = "[database]\nmode = \"external\"\nconninfo = \"host=db\"\ndata_dir = \"/x\"\n";
    let (location, key, _) = invalid(text);
    assert_eq!((location.line, key.as_deref()), (4, Some("database.data_dir")));
}

#[test]
fn a_credential_name_resolves_inside_the_credentials_directory() {
    let env = Environment { credentials_directory: Some("/run/credentials/x".into()), ..env() };
    let text = "[database]\nmode = \"external\"\nconninfo = \"host=db\"\n\
                password_credential = \"db-pass\"\ntls = true\n";
    let config = Config::parse(text, Path::new("/c.toml"), &env).expect("valid");
    let DatabaseMode::External { password: Some(source), tls, .. } = config.database.mode else {
        panic!("external mode with a password source");
    };
    assert_eq!(source.path(), Path::new("/run/credentials/x/db-pass"));
    assert!(tls.enabled);

    let (_, key, problem) = invalid(text);
    assert_eq!(key.as_deref(), Some("database.password_credential"));
    assert!(problem.contains("CREDENTIALS_DIRECTORY"), "{problem}");
}

#[test]
fn relative_paths_are_taken_from_the_file_directory() {
    let config = parse("[daemon]\nstate_dir = \"state\"\n").expect("valid");
    assert_eq!(config.daemon.state_dir, PathBuf::from("/etc/datapunk/state"));
}

#[test]
fn a_missing_explicit_file_is_an_error_but_a_missing_default_means_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Environment { xdg_config_home: Some(dir.path().to_path_buf()), ..env() };
    let located = locate(None, &env).expect("default location");
    assert!(!located.explicit);
    let config = Config::load(&located, &env).expect("defaults when the default file is absent");
    assert_eq!(config.source, None);

    let missing = dir.path().join("nope.toml");
    let located = locate(Some(&missing), &env).expect("explicit location");
    let err = Config::load(&located, &env).expect_err("explicit file must exist");
    assert!(err.to_string().contains("nope.toml"), "{err}");

    fs::write(&missing, "[log]\nlevel = \"debug\"\n").expect("write config");
    let config = Config::load(&located, &env).expect("valid file");
    assert_eq!(config.log.level, "debug");
}

#[test]
fn a_named_pipe_or_an_oversized_file_is_refused_without_waiting_or_reading_it_all() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = env();
    let pipe = dir.path().join("pipe.toml");
    let made = std::process::Command::new("mkfifo").arg(&pipe).status().expect("run mkfifo");
    assert!(made.success());
    // Opening the pipe would wait for a writer: the test would hang, not fail, without the
    // check, so it runs on a thread and is given a while.
    let (sent, received) = std::sync::mpsc::channel();
    let located = locate(Some(&pipe), &env).expect("explicit location");
    let loading = env.clone();
    std::thread::spawn(move || {
        let _ = sent.send(Config::load(&located, &loading).map(|_| ()).map_err(|e| e.to_string()));
    });
    let answer = received.recv_timeout(std::time::Duration::from_secs(20));
    let error = answer.expect("a named pipe was opened and waited on").expect_err("refused");
    assert!(error.contains("pipe.toml") && error.contains("not a regular file"), "{error}");

    let big = dir.path().join("big.toml");
    fs::write(&big, "#".repeat(2 * 1024 * 1024)).expect("write a big file");
    let located = locate(Some(&big), &env).expect("explicit location");
    let error = Config::load(&located, &env).expect_err("too big").to_string();
    assert!(error.contains("big.toml") && error.contains("larger than 1 MiB"), "{error}");
}

#[test]
fn a_runtime_directory_too_long_for_its_sockets_is_refused_where_it_is_set() {
    let dir = format!("/run/{}", "d".repeat(85));
    assert_eq!(dir.len(), 90);
    // Managed: PostgreSQL's socket, `postgresql/.s.PGSQL.5432`, would not fit in 107 bytes.
    let error = parse(&format!("[daemon]\nruntime_dir = \"{dir}\"\n")).expect_err("too long");
    let text = error.to_string();
    assert!(text.contains("config.toml:2:") && text.contains("daemon.runtime_dir"), "{text}");
    assert!(text.contains("at most 82 bytes"), "{text}");
    // External: only the control socket lives there, and it fits.
    let external = format!(
        "[daemon]\nruntime_dir = \"{dir}\"\n[database]\nmode = \"external\"\n\
         conninfo = \"host=/run/postgresql user=datapunk_app dbname=datapunk\"\n"
    );
    parse(&external).expect("the control socket fits");
}

#[test]
fn defaults_that_cannot_apply_are_not_blamed_on_a_file_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Environment {
        xdg_config_home: Some(dir.path().to_path_buf()),
        xdg_runtime_dir: None,
        ..env()
    };
    let located = locate(None, &env).expect("default location");
    let err = Config::load(&located, &env).expect_err("no runtime directory to default to");
    assert!(matches!(err, ConfigError::Defaults { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("no configuration file at "), "{message}");
    assert!(message.contains("XDG_RUNTIME_DIR is not set"), "{message}");

    // The same environment with a file: the file is named, as the place to fix it.
    fs::create_dir(dir.path().join("datapunk")).expect("config dir");
    fs::write(&located.path, "[log]\nlevel = \"debug\"\n").expect("write config");
    let err = Config::load(&located, &env).expect_err("still no runtime directory");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
}

#[test]
fn the_environment_variable_beats_the_default_location_and_the_flag_beats_both() {
    let env = Environment { datapunk_config: Some("/from/env.toml".into()), ..env() };
    assert_eq!(locate(None, &env).expect("env").path, PathBuf::from("/from/env.toml"));
    let flag = Path::new("/from/flag.toml");
    assert_eq!(locate(Some(flag), &env).expect("flag").path, PathBuf::from("/from/flag.toml"));
}

#[test]
fn an_unknown_key_that_looks_like_a_token_is_not_repeated() {
    let (location, key, problem) = invalid("[database]\n\"ghp_S3cretT0ken\" = 1\n");
    assert_eq!(location.line, 2);
    let shown = format!("{key:?} {problem}");
    assert!(!shown.contains("S3cret"), "{shown}");
    assert!(shown.contains("database"), "the table is still named: {shown}");
}

#[test]
fn the_vault_backend_is_chosen_with_its_own_keys_and_others_are_refused() {
    let config = parse("[vault]\nbackend = \"pass\"\npass_store_dir = \"store\"\n").expect("valid");
    let VaultBackend::Pass { store_dir, gnupg_home } = config.vault.backend else {
        panic!("the pass backend");
    };
    assert_eq!(store_dir, Some(PathBuf::from("/etc/datapunk/store")));
    assert_eq!(gnupg_home, None);

    let text =
        "[vault]\nbackend = \"encrypted-table\"\nmaster_key_file = \"/k\"\ntimeout_secs = 5\n";
    let config = parse(text).expect("valid");
    assert_eq!(
        config.vault.backend,
        VaultBackend::EncryptedTable { master_key: SecretRef::File("/k".into()) }
    );
    assert_eq!(config.vault.timeout, Duration::from_secs(5));

    let (location, key, problem) = invalid("[vault]\nmaster_key_file = \"/k\"\n");
    assert_eq!((location.line, key.as_deref()), (2, Some("vault.master_key_file")));
    assert!(problem.contains("encrypted-table"), "{problem}");
    let (_, key, problem) =
        invalid("[vault]\nbackend = \"encrypted-table\"\ngnupg_home = \"/g\"\n");
    assert_eq!(key.as_deref(), Some("vault.gnupg_home"));
    assert!(problem.contains("\"pass\""), "{problem}");
    let (_, key, problem) = invalid("[vault]\nbackend = \"keyring-S3CRET\"\n");
    assert_eq!(key.as_deref(), Some("vault.backend"));
    assert!(problem.contains("secret-service"), "{problem}");
    assert!(!problem.contains("S3CRET"), "{problem}");
    let (_, key, _) = invalid("[vault]\ntimeout_secs = 0\n");
    assert_eq!(key.as_deref(), Some("vault.timeout_secs"));
}

#[test]
fn the_encrypted_table_master_key_credential_is_looked_up_only_when_the_vault_opens() {
    let text = "[vault]\nbackend = \"encrypted-table\"\n";
    // Loading works without CREDENTIALS_DIRECTORY: `datapunk status` in a shell must not fail
    // because the daemon's credential is not loaded there.
    let config = parse(text).expect("valid without a credentials directory");
    let VaultBackend::EncryptedTable { master_key } = config.vault.backend else {
        panic!("the encrypted table");
    };
    assert_eq!(master_key, SecretRef::Credential("datapunk-master-key".to_owned()));
    let problem =
        master_key.path(None, "vault.master_key_file").expect_err("no credentials directory");
    assert!(problem.contains("CREDENTIALS_DIRECTORY") && problem.contains("datapunk-master-key"));
    assert!(problem.contains("vault.master_key_file"), "{problem}");
    let dir = Path::new("/run/credentials/d");
    assert_eq!(
        master_key.path(Some(dir), "vault.master_key_file"),
        Ok(dir.join("datapunk-master-key"))
    );

    let named = "[vault]\nbackend = \"encrypted-table\"\nmaster_key_credential = \"mk\"\n";
    let VaultBackend::EncryptedTable { master_key } = parse(named).expect("valid").vault.backend
    else {
        panic!("the encrypted table");
    };
    assert_eq!(master_key.path(Some(dir), "vault.master_key_file"), Ok(dir.join("mk")));
    let bad = "[vault]\nbackend = \"encrypted-table\"\nmaster_key_credential = \"../x\"\n";
    let (_, key, _) = invalid(bad);
    assert_eq!(key.as_deref(), Some("vault.master_key_credential"));
}

#[test]
fn a_path_starting_with_a_tilde_is_refused_with_a_hint() {
    let (location, key, problem) =
        invalid("[vault]\nbackend = \"pass\"\npass_store_dir = \"~/.password-store\"\n");
    assert_eq!((location.line, key.as_deref()), (3, Some("vault.pass_store_dir")));
    assert!(problem.contains("full path"), "{problem}");
}

#[test]
fn provider_tables_name_the_client_and_may_replace_endpoints() {
    let text = "[providers.google]\nclient_id = \"g-id\"\nclient_secret_file = \"google-secret\"\n\
                token_url = \"http://127.0.0.1:4000/google/token\"\n\n\
                [providers.spotify]\nclient_id = \"s-id\"\n";
    let config = parse(text).expect("valid");

    let google = &config.providers["google"];
    assert_eq!(google.client_id, "g-id");
    assert_eq!(
        google.client_secret,
        Some(SecretRef::File(PathBuf::from("/etc/datapunk/google-secret")))
    );
    assert_eq!(google.token_url.as_deref(), Some("http://127.0.0.1:4000/google/token"));
    assert_eq!(google.authorize_url, None);
    assert_eq!(config.providers["spotify"].client_secret, None);
    assert!(parse("").expect("valid").providers.is_empty());
}

#[test]
fn provider_tables_refuse_unknown_providers_plain_http_and_missing_client_ids() {
    let (_, key, problem) = invalid("[providers.dropbox]\nclient_id = \"x\"\n");
    assert_eq!(key.as_deref(), Some("providers.dropbox"));
    assert!(problem.contains("google, microsoft or spotify"), "{problem}");

    let (location, key, problem) =
        invalid("[providers.google]\nclient_id = \"x\"\ntoken_url = \"http://evil.example/t\"\n");
    assert_eq!((location.line, key.as_deref()), (3, Some("providers.google.token_url")));
    assert!(problem.contains("https://"), "{problem}");

    let (_, key, _) = invalid("[providers.spotify]\nclient_secret_file = \"s\"\n");
    assert_eq!(key.as_deref(), Some("providers.spotify.client_id"));

    let (_, key, _) =
        invalid("[providers.google]\nclient_id = \"x\"\nclient_secret = \"S3CRET\"\n");
    assert_eq!(key.as_deref(), Some("providers.google.client_secret"));

    let people = "people_api_base = \"https://people.example\"\n";
    let (location, key, problem) =
        invalid(&format!("[providers.spotify]\nclient_id = \"x\"\n{people}"));
    assert_eq!((location.line, key.as_deref()), (3, Some("providers.spotify.people_api_base")));
    assert!(problem.contains("[providers.google]"), "{problem}");
    let config = parse(&format!("[providers.google]\nclient_id = \"x\"\n{people}"))
        .expect("Google's table takes it");
    let google = config.providers.get("google").expect("the google table");
    assert_eq!(google.people_api_base.as_deref(), Some("https://people.example"));
}

#[test]
fn an_interval_that_can_lose_spotify_plays_is_warned_about() {
    let spotify = "[providers.spotify]\nclient_id = \"s-id\"\n";
    let quick = parse(&format!("[sync]\ninterval_secs = 900\n{spotify}")).expect("valid");
    assert!(quick.warnings().is_empty(), "{:?}", quick.warnings());
    let slow = parse(&format!("[sync]\ninterval_secs = 10800\n{spotify}")).expect("valid");
    let warnings = slow.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("50 plays"), "{warnings:?}");
    let without = parse("[sync]\ninterval_secs = 10800\n").expect("valid");
    assert!(without.warnings().is_empty(), "no Spotify, nothing to lose");
}

#[test]
fn a_provider_may_set_its_own_sync_interval_and_the_warning_names_the_key_that_set_it() {
    let config = parse(
        "[sync]\ninterval_secs = 3600\n\
         [providers.spotify]\nclient_id = \"s-id\"\nsync_interval_secs = 600\n\
         [providers.google]\nclient_id = \"g-id\"\n",
    )
    .expect("valid");
    assert_eq!(config.sync_interval("spotify"), Duration::from_secs(600));
    assert_eq!(config.sync_interval("google"), Duration::from_secs(3600));
    assert_eq!(config.sync_interval("microsoft"), Duration::from_secs(3600), "no table");
    assert!(
        config.warnings().is_empty(),
        "Spotify's own 600 s loses nothing: {:?}",
        config.warnings()
    );

    let slow = parse("[providers.spotify]\nclient_id = \"s-id\"\nsync_interval_secs = 10800\n")
        .expect("valid");
    let warnings = slow.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("providers.spotify.sync_interval_secs is 10800"),
        "{warnings:?}"
    );

    let (location, key, problem) =
        invalid("[providers.google]\nclient_id = \"g-id\"\nsync_interval_secs = 0\n");
    assert_eq!(key.as_deref(), Some("providers.google.sync_interval_secs"));
    assert_eq!(location.line, 3, "{location:?}");
    assert!(problem.contains("between 1 and 86400"), "{problem}");
}

#[test]
fn the_backup_table_names_recipients_by_fingerprint_and_defaults_its_directory() {
    let defaults = parse("").expect("valid");
    assert_eq!(defaults.backup.dir, PathBuf::from("/home/alice/.local/state/datapunk/backups"));
    assert!(defaults.backup.recipients.is_empty());
    assert_eq!(defaults.backup.passphrase_file, None);

    let fpr = "0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567";
    let text =
        format!("[backup]\nrecipients = [\"{fpr}\"]\ndir = \"backups\"\ngnupg_home = \"/g\"\n");
    let config = parse(&text).expect("valid");
    assert_eq!(config.backup.recipients, ["0123456789ABCDEF0123456789ABCDEF01234567"]);
    assert_eq!(config.backup.dir, PathBuf::from("/etc/datapunk/backups"));
    assert_eq!(config.backup.gnupg_home, Some(PathBuf::from("/g")));

    let config = parse("[backup]\npassphrase_file = \"pass\"\n").expect("valid");
    assert_eq!(config.backup.passphrase_file, Some(PathBuf::from("/etc/datapunk/pass")));
}

#[test]
fn the_backup_table_refuses_short_ids_both_kinds_of_key_and_unknown_keys() {
    let (location, key, problem) = invalid("[backup]\nrecipients = [\"alice@example.org\"]\n");
    assert_eq!(location, Location { line: 2, column: 15 });
    assert_eq!(key.as_deref(), Some("backup.recipients"));
    assert!(problem.contains("full fingerprint"), "{problem}");
    assert!(!problem.contains("alice"), "{problem}");
    let (_, key, _) = invalid("[backup]\nrecipients = [\"89ABCDEF01234567\"]\n");
    assert_eq!(key.as_deref(), Some("backup.recipients"));

    let both =
        format!("[backup]\nrecipients = [\"{}\"]\npassphrase_file = \"/p\"\n", "A".repeat(40));
    let (location, key, _) = invalid(&both);
    assert_eq!((location.line, key.as_deref()), (3, Some("backup.passphrase_file")));

    let (location, key, problem) = invalid("[backup]\ndir = \"/b\"\n passphrase = \"S3CRET\"\n");
    assert_eq!(location, Location { line: 3, column: 2 });
    assert_eq!(key.as_deref(), Some("backup.passphrase"));
    assert!(!problem.contains("S3CRET"), "{problem}");
}

#[test]
fn the_backup_role_password_is_for_external_servers_and_comes_from_a_file_or_a_credential() {
    let external = "[database]\nmode = \"external\"\nconninfo = \"user=datapunk_app\"\n";
    let config =
        parse(&format!("{external}[backup]\npassword_file = \"backup-pw\"\n")).expect("valid");
    let password = config.backup.password;
    assert_eq!(password, Some(SecretRef::File("/etc/datapunk/backup-pw".into())));
    assert_eq!(parse(external).expect("valid").backup.password, None);

    let text = format!("{external}[backup]\npassword_credential = \"datapunk-backup-password\"\n");
    let password = parse(&text).expect("valid without a credentials directory").backup.password;
    assert_eq!(password, Some(SecretRef::Credential("datapunk-backup-password".to_owned())));

    let both = format!("{external}[backup]\npassword_file = \"/p\"\npassword_credential = \"c\"\n");
    let (location, key, _) = invalid(&both);
    assert_eq!((location.line, key.as_deref()), (6, Some("backup.password_credential")));

    let (location, key, problem) = invalid("[backup]\npassword_file = \"/p\"\n");
    assert_eq!((location.line, key.as_deref()), (2, Some("backup.password_file")));
    assert!(problem.contains("external"), "{problem}");
}

#[test]
fn every_key_the_example_comments_out_belongs_to_the_table_it_is_written_in() {
    let mut table = String::new();
    let mut checked = 0;
    for line in EXAMPLE.lines() {
        // A table header, or a commented one such as `# [providers.google]`.
        let header = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = header.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = name.to_owned();
            continue;
        }
        let Some(assignment) = line.strip_prefix("# ") else { continue };
        let Some((key, _)) = assignment.split_once(" = ") else { continue };
        if key.contains(' ') || table.is_empty() {
            continue;
        }
        let text = format!("[{table}]\n{assignment}\n");
        if let Err(ConfigError::Invalid { problem, .. }) = parse(&text) {
            assert!(!problem.contains("unknown key"), "[{table}] {key}: {problem}");
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} commented keys were found");
}
