//! Reapers: small shell processes that clean up after a test process once it is gone.
//!
//! A reaper is `sh -c SCRIPT` whose standard input is a pipe. The test process holds the only
//! write end (the standard library opens pipes close-on-exec, so no other child inherits it).
//! The reaper blocks reading that pipe; when the test process drops the [`Reaper`] or exits in
//! any way, a crash or `SIGKILL` included, the kernel closes the write end, the read returns
//! and the reaper runs its cleanup. Reapers run in their own process group, so a Ctrl-C aimed
//! at the test run does not stop them before they have cleaned up.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::process;

/// Shell functions available to every cleanup script, followed by the wait for the pipe.
///
/// `stop PID COMM SIGNAL` sends SIGNAL to PID if that process is still the program COMM (so a
/// recycled process id is left alone), waits up to ten seconds for it to go, then kills it. A
/// zombie counts as gone: orphans are re-parented to PID 1, which may be slow to reap them.
const PRELUDE: &str = r#"
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    read -r stat < "/proc/$1/stat" || return 1
    case "${stat##*) }" in Z*|X*) return 1 ;; esac
}
stop() {
    [ -n "$1" ] || return 0
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 0
    kill -s "$3" "$1" 2>/dev/null || return 0
    n=0
    while alive "$1"; do
        n=$((n + 1))
        [ "$n" -eq 200 ] && kill -s KILL "$1" 2>/dev/null
        [ "$n" -ge 400 ] && return 0
        sleep 0.05
    done
}
read -r _ || :
"#;

/// A running reaper; dropping it runs the cleanup now and waits for it to finish.
#[derive(Debug)]
pub(crate) struct Reaper {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts a reaper that runs `script` (with `args` as `$1`, `$2`, ...) once the test process
    /// drops it or exits.
    ///
    /// The script runs as the test process's own user, which can signal and remove whatever the
    /// account started: either it is root or it is that very user.
    pub(crate) fn spawn<I, S>(name: &str, script: &str, args: I) -> Result<Reaper, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{PRELUDE}{script}"))
            .arg(format!("datapunk-testkit-reaper-{name}"))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|err| process::spawn_error(&cmd, "cannot start a cleanup process", &err))?;
        let pipe = child.stdin.take();

        Ok(Reaper { child, pipe })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.pipe.take());
        // Cleanup is best effort: a reaper that cannot be waited for has already gone.
        let _ = self.child.wait();
    }
}
