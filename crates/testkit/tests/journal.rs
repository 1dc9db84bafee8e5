//! Reading back what processes log to journald.

use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datapunk_testkit::{account, journal};

/// A value no earlier run has logged.
fn marker(name: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

#[test]
fn journal_reads_back_an_entry_from_the_account_with_its_pid_and_custom_fields() {
    let journal = journal();
    let mark = marker("logger");

    let mut logger = account()
        .command("logger")
        .arg("--journald")
        .stdin(Stdio::piped())
        .spawn()
        .expect("logger is part of bsdutils");
    let pid = logger.id().to_string();
    let fields = format!(
        "MESSAGE=hello from the account\n\
         SYSLOG_IDENTIFIER=datapunk-testkit\n\
         DPK_TESTKIT_MARK={mark}\n"
    );
    logger
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(fields.as_bytes())
        .expect("logger reads its standard input");
    assert!(logger.wait().expect("logger ran").success());

    let entries = journal.wait_for(&[("DPK_TESTKIT_MARK", &mark)], 1, Duration::from_secs(10));

    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["MESSAGE"], "hello from the account");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "datapunk-testkit");
    assert_eq!(entry["_PID"], pid.as_str());
    assert_eq!(entry["_UID"], account().uid.to_string().as_str());
}

#[test]
fn journal_decodes_fields_that_journalctl_prints_as_bytes() {
    let journal = journal();
    let mark = marker("binary");
    // A tab is not printable, so journalctl prints this MESSAGE as an array of bytes.
    let datagram = format!(
        "MESSAGE=tab\there\nDPK_TESTKIT_MARK={mark}\nDPK_TESTKIT_TWICE=a\nDPK_TESTKIT_TWICE=b\n"
    );

    let socket = UnixDatagram::unbound().expect("a datagram socket can be made");
    socket.send_to(datagram.as_bytes(), journal.socket_path()).expect("journald listens");
    let entries = journal.wait_for(&[("DPK_TESTKIT_MARK", &mark)], 1, Duration::from_secs(10));

    assert_eq!(entries[0]["MESSAGE"], "tab\there");
    assert_eq!(entries[0]["DPK_TESTKIT_TWICE"], serde_json::json!(["a", "b"]));
    assert_eq!(entries[0]["_PID"], std::process::id().to_string().as_str());
}

#[test]
#[should_panic(expected = "expected at least 1 journal entries")]
fn waiting_for_an_entry_that_never_comes_fails_with_what_was_found() {
    journal().wait_for(&[("DPK_TESTKIT_MARK", &marker("absent"))], 1, Duration::from_millis(200));
}
