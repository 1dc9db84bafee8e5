//! The `datapunk-sandbox` binary: it prints where it listens, and writes a configuration that
//! Datapunk accepts and that points every endpoint at it.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use datapunk_config::{Config, Environment, SecretRef};

#[test]
fn it_prints_its_base_url_first_and_writes_a_configuration_datapunk_accepts() {
    let dir = tempfile::tempdir().expect("a directory");
    let config_path = dir.path().join("providers.toml");
    // A relative path, as a person types it in the directory they are in.
    let mut child = Command::new(env!("CARGO_BIN_EXE_datapunk-sandbox"))
        .args(["--listen", "127.0.0.1:0", "--config-out", "providers.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sandbox");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut first).expect("the first line");
    let _ = child.kill();
    let _ = child.wait();

    let base = first.trim();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let env = Environment {
        xdg_runtime_dir: Some("/run/user/1".into()),
        home: Some("/h".into()),
        ..Environment::default()
    };
    let text = std::fs::read_to_string(&config_path).expect("the configuration");
    // Appended to a configuration file elsewhere, it still names the secret files beside it.
    let elsewhere = std::path::Path::new("/etc/datapunk/config.toml");
    let config = Config::parse(&text, elsewhere, &env).expect("Datapunk accepts it");
    assert_eq!(config.providers.len(), 3);
    let google = &config.providers["google"];
    assert_eq!(google.token_url.as_deref(), Some(format!("{base}/google/token").as_str()));
    assert_eq!(google.revoke_url.as_deref(), Some(format!("{base}/google/revoke").as_str()));
    assert_eq!(config.providers["microsoft"].client_secret, None);
    let Some(SecretRef::File(secret)) = &google.client_secret else { panic!("a secret file") };
    let beside =
        dir.path().canonicalize().expect("the directory").join("sandbox-google-client-secret");
    assert_eq!(secret, &beside);
    assert_eq!(std::fs::read_to_string(secret).expect("the secret"), "sandbox-google-secret");
    for file in [secret.as_path(), config_path.as_path()] {
        let mode = std::fs::metadata(file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    assert!(!text.contains("sandbox-google-secret"), "the secret is not in the configuration");
}
