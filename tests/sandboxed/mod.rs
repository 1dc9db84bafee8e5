//! What the OAuth tests share: an installation wired to the provider sandbox, and
//! `datapunk connect` driven with the test acting as the browser.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};

use datapunk_sandbox::Sandbox;
use datapunk_testkit::SessionBus;
use datapunk_tests::Setup;
use datapunk_vault::backend::{SecretServiceOptions, Vault};

/// The vault the CLI and the daemon of a setup use: the keyring on `bus`.
pub(crate) fn vault(bus: &SessionBus) -> Vault {
    Vault::secret_service(SecretServiceOptions { bus_address: Some(bus.address().to_owned()) })
}

/// An installation whose configuration points at `sandbox`, with `extra` added to it, and
/// a keyring of its own.
pub(crate) fn setup(sandbox: &Sandbox, extra: &str) -> (Setup, SessionBus) {
    let setup = Setup::external();
    assert!(setup.init().status.success());
    setup_on(setup, sandbox, extra)
}

/// As [`setup`], for an installation whose database is already set up.
pub(crate) fn setup_on(setup: Setup, sandbox: &Sandbox, extra: &str) -> (Setup, SessionBus) {
    let scratch = tempfile::tempdir().expect("a directory");
    let written = scratch.path().join("providers.toml");
    sandbox.write_config(&written).expect("the sandbox's configuration");
    let mut providers = std::fs::read_to_string(&written).expect("read it");
    // The client secret must be readable by the account the CLI runs as.
    let secret_file = scratch.path().join("sandbox-google-client-secret");
    let secret = std::fs::read(&secret_file).expect("the client secret");
    let own = setup.write_file("google-client-secret", &secret);
    providers = providers.replace(&secret_file.display().to_string(), &own.display().to_string());
    let config = std::fs::read_to_string(&setup.config).expect("the configuration");
    setup.write_config(&format!("{config}\n{extra}\n{providers}"));
    (setup, SessionBus::start())
}

pub(crate) fn connect(setup: &Setup, bus: &SessionBus, args: &[&str]) -> Child {
    setup
        .command("datapunk")
        .arg("connect")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start datapunk connect")
}

/// Reads the CLI's output up to the authorization address and returns it.
pub(crate) fn authorization_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the CLI printed the address").expect("a line");
        if line.starts_with("http://") {
            // The rest of the output is read by `wait_with_output` later.
            std::thread::spawn(move || lines.for_each(drop));
            return line;
        }
    }
}

/// Opens `url` as a browser would, following one redirect, and returns the final page.
pub(crate) async fn browse(url: &str) -> (reqwest::StatusCode, String) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a browser");
    let answer = browser.get(url).send().await.expect("open the address");
    assert_eq!(answer.status(), 302);
    let location = answer.headers()["location"].to_str().expect("a location").to_owned();
    let page = browser.get(location).send().await.expect("follow the redirect");
    (page.status(), page.text().await.expect("the page"))
}

pub(crate) fn finish(child: Child) -> (bool, String) {
    let output = child.wait_with_output().expect("wait for datapunk connect");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Connects `name` through the CLI, the test acting as the browser.
pub(crate) async fn connected(setup: &Setup, bus: &SessionBus, name: &str, datasets: &str) {
    let mut child = connect(setup, bus, &[name, "--datasets", datasets, "--no-browser"]);
    let url = authorization_url(&mut child);
    browse(&url).await;
    let (ok, stderr) = tokio::task::spawn_blocking(move || finish(child)).await.expect("join");
    assert!(ok, "{name}: {stderr}");
}
