//! A private D-Bus session bus with an unlocked GNOME Keyring on it.
//!
//! [`session_bus`] starts, once per test process, a `dbus-daemon --session` of its own,
//! listening on a socket in a fresh directory, and then `gnome-keyring-daemon` with only its
//! Secret Service component. Both run as [`account()`], and a child that should use them gets
//! [`SessionBus::envs`] (or is built with [`SessionBus::command`]).
//!
//! The keyring daemon is started explicitly rather than by D-Bus activation: an activated
//! daemon inherits the bus daemon's environment, not the test's, and without `--unlock` it has
//! no unlocked default collection. Started with `--unlock` and a throwaway password on its
//! standard input, it creates the collection `login`, unlocks it and makes it the default.
//! There is no display (`DISPLAY` and `WAYLAND_DISPLAY` are removed), so anything that would
//! need a password prompt fails at once instead of waiting for a user.
//!
//! Locking is shared state: a test that locks the collection should use a bus of its own,
//! [`SessionBus::start`], so that tests running alongside it still see an unlocked keyring.
//!
//! A session bus accepts only connections from the user it runs as. When the tests run as root,
//! the bus is started from a configuration of its own (`bus.conf`) that also accepts root, so
//! that a D-Bus client inside the test process, such as Datapunk's vault, can talk to the
//! keyring directly; tools that should act as the user still run as [`account()`] through
//! [`SessionBus::command`].
//!
//! Layout of the bus's directory (all of it the account's, mode 0700):
//!
//! ```text
//! /tmp/dpk-XXXXXX/
//!     bus                   the bus socket
//!     bus.conf              the bus's configuration, when running as root
//!     home/                 HOME
//!     data/                 XDG_DATA_HOME; the keyring file is data/keyrings/login.keyring
//!     config/               XDG_CONFIG_HOME
//!     run/                  XDG_RUNTIME_DIR
//! ```

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::account::{account, is_root};
use crate::dirs::tempdir;
use crate::process;
use crate::reaper::Reaper;

/// The throwaway password of the test keyring.
const PASSWORD: &[u8] = b"datapunk-test-keyring";

/// The bus name of the Secret Service.
const SECRETS: &str = "org.freedesktop.secrets";

/// Object path of the collection that `gnome-keyring-daemon --unlock` creates.
pub const LOGIN_COLLECTION: &str = "/org/freedesktop/secrets/collection/login";

/// The bus configuration used when the tests run as root: the standard session bus
/// (`session.conf`, see dbus-daemon(1)) without its includes, plus a rule that lets root
/// connect. Without `<allow user>` rules a bus admits only the user it runs as.
const ROOT_BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="root"/>
  </policy>
</busconfig>
"#;

/// Stops the bus and keyring daemons and removes the directory `$1`.
///
/// The keyring daemon exits by itself once its bus is gone; stopping it explicitly as well
/// keeps it from writing into the directory while it is being removed.
const REAPER_SCRIPT: &str = r#"
stop "$(cat "$1/bus.pid" 2>/dev/null)" dbus-daemon TERM
stop "$(cat "$1/keyring.pid" 2>/dev/null)" gnome-keyring-d TERM
rm -rf -- "$1"
"#;

/// A private session bus and keyring; see the [module documentation](self).
#[derive(Debug)]
pub struct SessionBus {
    dir: PathBuf,
    address: String,
    /// The bus daemon, which prints its address on standard output and is then left running.
    bus_daemon: Mutex<(Child, ChildStdout)>,
    /// Serialises locking and unlocking, which replace the keyring daemon.
    keyring: Mutex<()>,
    /// Stops both daemons and removes `dir` when dropped or when the test process exits.
    reaper: Option<Reaper>,
}

/// The session bus shared by the tests of this test process, started on first use.
///
/// # Panics
///
/// Panics when the bus or the keyring cannot be started, with the reason; once that has
/// happened every later call panics at once with the same message.
pub fn session_bus() -> &'static SessionBus {
    static SHARED: OnceLock<Result<SessionBus, String>> = OnceLock::new();

    match SHARED.get_or_init(SessionBus::try_start) {
        Ok(bus) => bus,
        Err(err) => panic!("datapunk-testkit: {err}"),
    }
}

impl SessionBus {
    /// Starts a bus and keyring of their own, stopped and removed when dropped.
    ///
    /// # Panics
    ///
    /// Panics when the bus or the keyring cannot be started.
    pub fn start() -> SessionBus {
        SessionBus::try_start().unwrap_or_else(|err| panic!("datapunk-testkit: {err}"))
    }

    /// The bus address, as in `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The environment a child needs to use this bus and its keyring:
    /// `DBUS_SESSION_BUS_ADDRESS` and `XDG_RUNTIME_DIR`. The child must also not inherit
    /// `DISPLAY` or `WAYLAND_DISPLAY`; [`SessionBus::command`] takes care of both.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".to_owned(), self.address.clone()),
            ("XDG_RUNTIME_DIR".to_owned(), self.runtime_dir().to_string_lossy().into_owned()),
        ]
    }

    /// A command that runs `program` as [`account()`] with [`SessionBus::envs`] and without a
    /// display.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = account().command(program);
        cmd.envs(self.envs()).env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY");
        cmd
    }

    /// The directory holding the keyring files (`login.keyring`).
    pub fn keyring_dir(&self) -> PathBuf {
        self.dir.join("data/keyrings")
    }

    /// Locks the `login` collection through `org.freedesktop.Secret.Service.Lock`, as a screen
    /// locker would. Reading a secret then fails until [`SessionBus::unlock`].
    ///
    /// # Panics
    ///
    /// Panics when the call fails or the collection is still unlocked after it.
    pub fn lock_collection(&self) {
        let _serial = self.keyring.lock().unwrap_or_else(PoisonError::into_inner);
        self.call(
            SECRETS,
            "/org/freedesktop/secrets",
            "org.freedesktop.Secret.Service.Lock",
            &[&format!("array:objpath:{LOGIN_COLLECTION}")],
        )
        .unwrap_or_else(|err| panic!("datapunk-testkit: cannot lock the keyring: {err}"));

        if !self.is_locked() {
            panic!("datapunk-testkit: the login collection is still unlocked after Lock");
        }
    }

    /// Unlocks the `login` collection the way a user logging in would: by starting the keyring
    /// daemon again with `--replace --unlock` and the password. Stored items are kept.
    ///
    /// # Panics
    ///
    /// Panics when the new daemon cannot be started or the collection stays locked.
    pub fn unlock(&self) {
        let _serial = self.keyring.lock().unwrap_or_else(PoisonError::into_inner);
        self.start_keyring(true).unwrap_or_else(|err| panic!("datapunk-testkit: {err}"));

        if self.is_locked() {
            panic!("datapunk-testkit: the login collection is still locked after unlocking");
        }
    }

    /// Whether the `login` collection is locked, read from its `Locked` property.
    ///
    /// # Panics
    ///
    /// Panics when the property cannot be read.
    pub fn is_locked(&self) -> bool {
        let reply = self
            .call(
                SECRETS,
                LOGIN_COLLECTION,
                "org.freedesktop.DBus.Properties.Get",
                &["string:org.freedesktop.Secret.Collection", "string:Locked"],
            )
            .unwrap_or_else(|err| panic!("datapunk-testkit: cannot read the keyring state: {err}"));
        reply.contains("boolean true")
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Makes the directory, starts the bus daemon and then the keyring daemon.
    fn try_start() -> Result<SessionBus, String> {
        let dir = tempdir();
        for name in ["home", "data", "config", "run"] {
            dir.create_dir(name, 0o700);
        }
        let dir = dir.keep();
        // From here on the reaper owns the directory: an early return drops it, which cleans up.
        let reaper = Reaper::spawn("session-bus", REAPER_SCRIPT, [&dir])?;

        let socket = dir.join("bus");
        let mut cmd = account().command("dbus-daemon");
        if is_root() {
            let config = dir.join("bus.conf");
            fs::write(&config, ROOT_BUS_CONFIG)
                .map_err(|err| format!("cannot write {}: {err}", config.display()))?;
            account().chown(&config);
            cmd.arg(format!("--config-file={}", config.display()));
        } else {
            cmd.arg("--session");
        }
        cmd.args(["--nofork", "--print-address"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(log_file(&dir.join("bus.log"))?)
            .process_group(0);
        daemon_env(&mut cmd, &dir);
        let mut child = cmd
            .spawn()
            .map_err(|err| process::spawn_error(&cmd, "cannot start a D-Bus session bus", &err))?;
        write_pid(&dir.join("bus.pid"), child.id())?;
        let stdout = child.stdout.take().expect("standard output was set to a pipe above");

        let mut stdout = BufReader::new(stdout);
        let mut address = String::new();
        // The daemon prints its address once it listens; end of file means it failed.
        if stdout.read_line(&mut address).map_err(|err| err.to_string())? == 0 {
            return Err(format!(
                "dbus-daemon exited without printing its address:\n{}",
                process::log_tail(&dir.join("bus.log"), 20)
            ));
        }

        let bus = SessionBus {
            address: address.trim().to_owned(),
            bus_daemon: Mutex::new((child, stdout.into_inner())),
            keyring: Mutex::new(()),
            reaper: Some(reaper),
            dir,
        };
        bus.start_keyring(false)?;
        Ok(bus)
    }

    /// Starts `gnome-keyring-daemon --unlock` (with `--replace` when one runs already), waits
    /// until it owns `org.freedesktop.secrets` and records its process id for the reaper.
    fn start_keyring(&self, replace: bool) -> Result<(), String> {
        let previous = if replace { self.secrets_owner_pid() } else { None };

        let mut cmd = account().command("gnome-keyring-daemon");
        if replace {
            cmd.arg("--replace");
        }
        // --daemonize forks; the daemon keeps whatever standard output it inherited, so that
        // goes to a file rather than a pipe that would never reach end of file.
        let log = self.dir.join("keyring.log");
        daemon_env(&mut cmd, &self.dir);
        cmd.args(["--unlock", "--components=secrets", "--daemonize"])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?);
        let mut child = cmd
            .spawn()
            .map_err(|err| process::spawn_error(&cmd, "cannot start gnome-keyring-daemon", &err))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            // A daemon that exits without reading the password is reported by its status.
            let _ = stdin.write_all(PASSWORD);
        }
        let status = child.wait().map_err(|err| err.to_string())?;
        if !status.success() {
            return Err(format!(
                "gnome-keyring-daemon failed with {status}:\n{}",
                process::log_tail(&log, 20)
            ));
        }

        let owner = process::poll(Duration::from_secs(10), Duration::from_millis(20), || {
            self.secrets_owner_pid().filter(|pid| Some(*pid) != previous)
        });
        let pid = owner.ok_or_else(|| {
            format!(
                "gnome-keyring-daemon did not take the name org.freedesktop.secrets within \
                 10 s:\n{}",
                process::log_tail(&log, 20)
            )
        })?;
        write_pid(&self.dir.join("keyring.pid"), pid)
    }

    /// The process id of whoever owns `org.freedesktop.secrets` on this bus, if anyone does.
    fn secrets_owner_pid(&self) -> Option<u32> {
        let reply = self
            .call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                &[&format!("string:{SECRETS}")],
            )
            .ok()?;
        reply.split_whitespace().last()?.parse().ok()
    }

    /// Calls a method with `dbus-send` as the account and returns the literal reply.
    fn call(&self, dest: &str, path: &str, method: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command("dbus-send");
        cmd.arg(format!("--bus={}", self.address))
            .arg(format!("--dest={dest}"))
            .args(["--print-reply=literal", "--reply-timeout=5000", path, method])
            .args(args);
        process::run(&mut cmd, None, &format!("D-Bus call {method}"))
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        drop(self.reaper.take());
        let (bus_daemon, _) = self.bus_daemon.get_mut().unwrap_or_else(PoisonError::into_inner);
        // The reaper has stopped it; waiting only collects its exit status.
        let _ = bus_daemon.wait();
    }
}

/// The environment both daemons run with: everything under the bus's directory, no display.
fn daemon_env(cmd: &mut Command, dir: &Path) {
    cmd.env("HOME", dir.join("home"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
}

/// Opens `path` for appending, as a daemon's output.
fn log_file(path: &Path) -> Result<File, String> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| format!("cannot open {}: {err}", path.display()))
}

fn write_pid(path: &Path, pid: u32) -> Result<(), String> {
    fs::write(path, pid.to_string())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}
