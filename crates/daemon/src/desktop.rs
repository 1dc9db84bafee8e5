//! Desktop notifications over D-Bus (`org.freedesktop.Notifications`), for what the person
//! must act on, such as an integration that needs connecting again.
//!
//! Best effort by design: a machine without a session bus or a notification daemon (a
//! server, a container) loses nothing but the pop-up, since every such event is also in the
//! audit trail and the journal. A call never waits more than [`TIMEOUT`], and a failure is
//! logged, never returned.

use std::collections::HashMap;
use std::time::Duration;

/// How long a notification may take to be delivered.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The `urgency` hint of the specification: 2 is critical, shown until dismissed.
const CRITICAL: u8 = 2;

/// Sends a critical notification with `summary` and `body` to the session bus's notification
/// daemon. Neither may hold a secret: notification daemons keep a history.
pub async fn notify(summary: &str, body: &str) {
    match tokio::time::timeout(TIMEOUT, send(summary, body)).await {
        Ok(Ok(id)) => tracing::debug!(id, "desktop notification sent"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not send a desktop notification");
        }
        Err(_) => tracing::warn!("the desktop notification daemon did not answer in time"),
    }
}

async fn send(summary: &str, body: &str) -> zbus::Result<u32> {
    let connection = zbus::Connection::session().await?;
    let mut hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
    hints.insert("urgency", zbus::zvariant::Value::U8(CRITICAL));
    hints.insert("desktop-entry", zbus::zvariant::Value::from("datapunk"));
    let reply = connection
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &("Datapunk", 0u32, "dialog-warning", summary, body, Vec::<&str>::new(), hints, -1i32),
        )
        .await?;
    reply.body().deserialize::<u32>()
}
