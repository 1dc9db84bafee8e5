//! Recording what a daemon sends to `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use datapunk_testkit::{NotifySocket, account};

#[test]
fn notify_socket_records_what_systemd_notify_sends_as_the_account() {
    let socket = NotifySocket::new();

    let status = account()
        .command("systemd-notify")
        .args(["--ready", "--status=syncing"])
        .env("NOTIFY_SOCKET", socket.path())
        .status()
        .expect("systemd-notify is part of systemd");
    assert!(status.success(), "systemd-notify failed: {status}");

    let messages = socket.wait_for_line("READY=1", Duration::from_secs(5));
    let lines: Vec<&str> = messages.iter().flat_map(|m| m.lines()).collect();
    assert!(lines.contains(&"STATUS=syncing"), "{messages:?}");
}

#[test]
fn notify_socket_keeps_raw_datagrams_in_order() {
    let socket = NotifySocket::new();
    let sender = UnixDatagram::unbound().expect("a datagram socket can be made");

    for message in ["STATUS=starting", "READY=1", "STOPPING=1"] {
        sender.send_to(message.as_bytes(), socket.path()).expect("the socket listens");
    }

    let messages = socket.wait_for(|messages| messages.len() == 3, Duration::from_secs(5));
    assert_eq!(messages, ["STATUS=starting", "READY=1", "STOPPING=1"]);
    assert_eq!(socket.messages(), messages);
}

#[test]
#[should_panic(expected = "received: [\"STATUS=starting\"]")]
fn waiting_for_a_notification_that_never_comes_fails_with_what_arrived() {
    let socket = NotifySocket::new();
    let sender = UnixDatagram::unbound().expect("a datagram socket can be made");
    sender.send_to(b"STATUS=starting", socket.path()).expect("the socket listens");

    socket.wait_for_line("READY=1", Duration::from_millis(300));
}
