//! A desktop notification daemon on a test's private session bus.
//!
//! [`Notifications::serve`] owns the name `org.freedesktop.Notifications` on the bus at an
//! address and answers the Desktop Notifications Specification's methods, recording every
//! `Notify` call, so that a test can assert which notifications a program sent. It is a real
//! D-Bus service: the program under test reaches it the way it reaches a desktop's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use zbus::zvariant::OwnedValue;

/// The well-known name and the object path of the specification.
const NAME: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// One `Notify` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The sending application's name.
    pub app_name: String,
    /// The one-line summary.
    pub summary: String,
    /// The body.
    pub body: String,
    /// The `urgency` hint (0 low, 1 normal, 2 critical), when given.
    pub urgency: Option<u8>,
    /// How long to show it, in milliseconds; -1 is the server's choice.
    pub expire_timeout: i32,
}

struct Server {
    received: Arc<Mutex<Vec<Notification>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        expire_timeout: i32,
    ) -> u32 {
        let urgency = hints.get("urgency").and_then(|value| u8::try_from(value).ok());
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        received.push(Notification { app_name, summary, body, urgency, expire_timeout });
        u32::try_from(received.len()).unwrap_or(u32::MAX)
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".to_owned()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("datapunk-testkit".to_owned(), "Datapunk".to_owned(), "1".to_owned(), "1.2".to_owned())
    }

    fn close_notification(&self, _id: u32) {}
}

/// A running notification daemon; dropping it leaves the bus.
pub struct Notifications {
    received: Arc<Mutex<Vec<Notification>>>,
    _connection: zbus::Connection,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications").field("received", &self.received()).finish()
    }
}

impl Notifications {
    /// Serves on the bus at `bus_address` (see [`SessionBus::address`](crate::SessionBus::address)).
    ///
    /// # Panics
    ///
    /// When the bus cannot be reached or the name is taken, saying which.
    pub async fn serve(bus_address: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let server = Server { received: Arc::clone(&received) };
        let connection = async {
            zbus::connection::Builder::address(bus_address)?
                .name(NAME)?
                .serve_at(PATH, server)?
                .build()
                .await
        }
        .await
        .unwrap_or_else(|error| {
            panic!(
                "datapunk-testkit: cannot serve {NAME} on the session bus at {bus_address}: \
                 {error}"
            )
        });
        Self { received, _connection: connection }
    }

    /// Every notification received so far, oldest first.
    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until at least `count` notifications arrived or `timeout` passed, and returns
    /// what arrived.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
