//! Running helper programs and turning their failures into readable messages.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion, feeding it `input` on standard input, and returns its standard
/// output.
///
/// Fails with a message naming `what` was attempted, the command line, the exit status and what
/// the program printed, or the reason it could not be started.
pub(crate) fn run(cmd: &mut Command, input: Option<&[u8]>, what: &str) -> Result<String, String> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|err| spawn_error(cmd, what, &err))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input is reported by its status below.
        let _ = stdin.write_all(input);
    }
    let output = child.wait_with_output().map_err(|err| format!("{what}: {err}"))?;

    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failure(cmd, what, &output))
    }
}

/// Describes a program that could not be started, hinting at a missing package.
pub(crate) fn spawn_error(cmd: &Command, what: &str, err: &std::io::Error) -> String {
    let program = cmd.get_program().to_string_lossy();
    let hint = if err.kind() == std::io::ErrorKind::NotFound {
        "; is it installed and on PATH?"
    } else {
        ""
    };
    format!("{what}: cannot run `{program}`: {err}{hint}")
}

/// Describes a program that ran and failed, with everything it printed.
fn failure(cmd: &Command, what: &str, output: &Output) -> String {
    let mut message = format!("{what}: `{}` failed with {}", command_line(cmd), output.status);
    for (name, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(text);
        if !text.trim().is_empty() {
            let _ = write!(message, "\n--- {name} ---\n{}", text.trim_end());
        }
    }
    message
}

/// The program and its arguments, separated by spaces, for messages.
pub(crate) fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Calls `ready` every `interval` until it returns `Some` or `timeout` has passed; the last
/// call happens at or after the deadline.
pub(crate) fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

/// The last `lines` lines of a log file, for failure messages.
pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
