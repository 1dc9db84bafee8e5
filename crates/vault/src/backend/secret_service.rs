//! The `secret-service` backend: the desktop keyring over the Secret Service D-Bus API.
//!
//! Items live in the collection behind the `default` alias (GNOME Keyring's `login`), never
//! in a collection Datapunk creates: creating one needs a prompt, and the `session` collection
//! is lost at logout. Each item has three attributes, `application=datapunk`,
//! `kind=token|data-key` and `integration=<name>`, and a label such as
//! `Datapunk: google token`. Attributes and labels can be read while the keyring is locked,
//! so they hold nothing personal.
//!
//! The session with the provider is Diffie-Hellman encrypted (`EncryptionType::Dh`): a plain
//! session would send every secret over the bus in clear.
//!
//! Error mapping follows what providers do rather than what the client crate's enum suggests
//! (checked against GNOME Keyring 42): reading from a locked collection fails with the raw
//! D-Bus error `org.freedesktop.Secret.Error.IsLocked`, so errors are matched on their D-Bus
//! names; and a missing bus is a connection error of the D-Bus library, reported here as
//! [`Error::Unavailable`] naming the session bus.
//!
//! One connection is kept and reused. Before each operation it is checked against the bus:
//! when another process now owns `org.freedesktop.secrets` (the keyring daemon was replaced,
//! as `gnome-keyring-daemon --replace` does when a user unlocks) or the bus connection
//! broke, a new one is made, so no one has to restart Datapunk.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use secret_service::{Collection, EncryptionType, SecretService};
use zbus::DBusError as _;
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};

use super::{BackendKind, Error, ItemId, ItemKind, StoredItem, VaultState, Write};
use crate::secret::SecretBytes;

/// The bus name of the Secret Service.
const SECRETS: &str = "org.freedesktop.secrets";

/// The `application` attribute of every item Datapunk stores.
const APPLICATION: &str = "datapunk";

const BACKEND: BackendKind = BackendKind::SecretService;

/// How to reach the Secret Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretServiceOptions {
    /// The session bus's D-Bus address, such as `unix:path=/run/user/1000/bus`. `None` reads
    /// `$DBUS_SESSION_BUS_ADDRESS`, then falls back on `$XDG_RUNTIME_DIR/bus` when that socket
    /// exists, as D-Bus clients do.
    pub bus_address: Option<String>,
}

/// The backend; see the [module documentation](self).
pub(super) struct SecretServiceStore {
    options: SecretServiceOptions,
    /// The connection in use, if any; the lock also serialises operations.
    connection: tokio::sync::Mutex<Option<Connected>>,
}

/// An open Secret Service session.
struct Connected {
    service: SecretService<'static>,
    dbus: DBusProxy<'static>,
    /// The unique bus name of the provider the session was opened with.
    provider: OwnedUniqueName,
}

impl std::fmt::Debug for SecretServiceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretServiceStore").field("options", &self.options).finish_non_exhaustive()
    }
}

impl SecretServiceStore {
    pub(super) fn new(options: SecretServiceOptions) -> Self {
        Self { options, connection: tokio::sync::Mutex::new(None) }
    }

    pub(super) async fn put(
        &self,
        item: ItemId<'_>,
        secret: &[u8],
        write: Write,
    ) -> Result<(), Error> {
        let mut slot = self.connection.lock().await;
        let service = &self.connected(&mut slot).await?.service;

        let result = async {
            let collection = default_collection(service).await?;
            let existing = find(&collection, item).await?;
            match (existing.len(), write) {
                (0, _) | (1, Write::Replace) => {}
                (1, Write::CreateOnly) => {
                    return Err(Error::KeyExists {
                        backend: BACKEND,
                        integration: item.integration.to_owned(),
                    });
                }
                (count, _) => return Err(ambiguous(item, count)),
            }

            // With `replace`, the provider swaps the item whose attributes are identical for
            // the new one; without it, a concurrent writer adds a second item rather than
            // overwriting the first, which reading then reports as ambiguous.
            let replace = write == Write::Replace;
            let content_type = match item.kind {
                ItemKind::Token => "application/json",
                ItemKind::DataKey => "text/plain",
            };
            collection
                .create_item(&label(item), attributes(item), secret, replace, content_type)
                .await
                .map_err(|err| classify(err, &format!("store the {item}")))?;
            Ok(())
        }
        .await;

        forget_if_broken(&mut slot, &result);
        result
    }

    pub(super) async fn get(&self, item: ItemId<'_>) -> Result<Option<SecretBytes>, Error> {
        let mut slot = self.connection.lock().await;
        let service = &self.connected(&mut slot).await?.service;

        let result = async {
            let collection = default_collection(service).await?;
            let found = find(&collection, item).await?;
            match found.as_slice() {
                [] => Ok(None),
                [one] => {
                    let secret = one
                        .get_secret()
                        .await
                        .map_err(|err| classify(err, &format!("read the {item}")))?;
                    Ok(Some(SecretBytes::new(secret)))
                }
                many => Err(ambiguous(item, many.len())),
            }
        }
        .await;

        forget_if_broken(&mut slot, &result);
        result
    }

    /// Deletes every item of this kind and integration: when a race left two, deleting means
    /// deleting both.
    pub(super) async fn delete(&self, item: ItemId<'_>) -> Result<bool, Error> {
        let mut slot = self.connection.lock().await;
        let service = &self.connected(&mut slot).await?.service;

        let result = async {
            let collection = default_collection(service).await?;
            let found = find(&collection, item).await?;
            for one in &found {
                one.delete().await.map_err(|err| classify(err, &format!("delete the {item}")))?;
            }
            Ok(!found.is_empty())
        }
        .await;

        forget_if_broken(&mut slot, &result);
        result
    }

    pub(super) async fn list(&self) -> Result<Vec<StoredItem>, Error> {
        let mut slot = self.connection.lock().await;
        let service = &self.connected(&mut slot).await?.service;

        let result = async {
            let collection = default_collection(service).await?;
            let found = collection
                .search_items(HashMap::from([("application", APPLICATION)]))
                .await
                .map_err(|err| classify(err, "list the stored items"))?;

            let mut items = Vec::with_capacity(found.len());
            for one in &found {
                let attributes = one
                    .get_attributes()
                    .await
                    .map_err(|err| classify(err, "read the attributes of an item"))?;
                // Items with a kind or a name this build does not know are someone else's.
                let kind = attributes.get("kind").and_then(|kind| ItemKind::from_stored(kind));
                let integration = attributes.get("integration");
                match (kind, integration) {
                    (Some(kind), Some(name)) if super::is_integration_name(name) => {
                        items.push(StoredItem { integration: name.clone(), kind });
                    }
                    _ => tracing::debug!("skipped a keyring item with unknown attributes"),
                }
            }
            Ok(items)
        }
        .await;

        forget_if_broken(&mut slot, &result);
        result
    }

    pub(super) async fn state(&self) -> VaultState {
        let mut slot = self.connection.lock().await;
        let service = match self.connected(&mut slot).await {
            Ok(connected) => &connected.service,
            Err(err) => return state_of(&err),
        };

        let result = async {
            let collection = default_collection(service).await?;
            collection.is_locked().await.map_err(|err| classify(err, "read the keyring's state"))
        }
        .await;

        forget_if_broken(&mut slot, &result);
        match result {
            Ok(true) => VaultState::Locked,
            Ok(false) => VaultState::Ready,
            Err(err) => state_of(&err),
        }
    }

    /// The connection to use: the one in `slot` if its provider still owns the bus name,
    /// otherwise a new one, left in `slot`.
    async fn connected<'s>(&self, slot: &'s mut Option<Connected>) -> Result<&'s Connected, Error> {
        let connected = match slot.take() {
            Some(connected) if connected.is_current().await => connected,
            stale => {
                if stale.is_some() {
                    tracing::info!("the Secret Service provider changed; reconnecting");
                }
                self.connect().await?
            }
        };
        Ok(slot.insert(connected))
    }

    async fn connect(&self) -> Result<Connected, Error> {
        let address = match &self.options.bus_address {
            Some(address) => address.clone(),
            None => session_bus_address(|name| std::env::var_os(name))?,
        };

        let builder = zbus::connection::Builder::address(address.as_str()).map_err(|err| {
            let reason = format!(
                "the session bus address {address:?} is not a D-Bus address ({err}); check \
                 DBUS_SESSION_BUS_ADDRESS"
            );
            Error::unavailable(BACKEND, reason)
        })?;
        let bus = builder.build().await.map_err(|err| {
            let reason = format!(
                "cannot connect to the D-Bus session bus at {address:?}: {err}; run Datapunk in \
                 the user's session (a systemd user service gets DBUS_SESSION_BUS_ADDRESS), or \
                 choose the `pass` or `encrypted-table` backend"
            );
            Error::unavailable(BACKEND, reason)
        })?;

        // Opening the session may start the provider through D-Bus activation, so the owner is
        // asked for only afterwards.
        let service = SecretService::connect_with_existing(EncryptionType::Dh, bus.clone())
            .await
            .map_err(|err| classify(err, "open a session with the keyring"))?;
        let dbus = DBusProxy::new(&bus)
            .await
            .map_err(|err| Error::backend(BACKEND, "talk to the session bus", err))?;
        let provider = dbus.get_name_owner(secrets_name()).await.map_err(|err| {
            Error::unavailable(BACKEND, format!("the Secret Service provider left the bus: {err}"))
        })?;

        tracing::debug!(provider = %provider, "opened a Secret Service session");
        Ok(Connected { service, dbus, provider })
    }
}

impl Connected {
    /// Whether the provider this session was opened with still owns the Secret Service name.
    async fn is_current(&self) -> bool {
        match self.dbus.get_name_owner(secrets_name()).await {
            Ok(owner) => owner == self.provider,
            Err(_) => false,
        }
    }
}

/// Drops the connection after a failure that may have come from it, so that the next
/// operation starts afresh.
fn forget_if_broken<T>(slot: &mut Option<Connected>, result: &Result<T, Error>) {
    if matches!(result, Err(Error::Unavailable { .. } | Error::Backend { .. })) {
        *slot = None;
    }
}

fn secrets_name() -> BusName<'static> {
    BusName::WellKnown(WellKnownName::from_static_str_unchecked(SECRETS))
}

/// The session bus's address from the environment, read through `env`: what
/// `$DBUS_SESSION_BUS_ADDRESS` says, else `$XDG_RUNTIME_DIR/bus` if that socket exists.
fn session_bus_address(env: impl Fn(&str) -> Option<OsString>) -> Result<String, Error> {
    if let Some(address) = env("DBUS_SESSION_BUS_ADDRESS").filter(|value| !value.is_empty()) {
        return address.into_string().map_err(|_| {
            Error::unavailable(BACKEND, "DBUS_SESSION_BUS_ADDRESS is not valid UTF-8")
        });
    }
    if let Some(runtime_dir) = env("XDG_RUNTIME_DIR").filter(|value| !value.is_empty()) {
        let socket = Path::new(&runtime_dir).join("bus");
        if socket.exists() {
            return Ok(format!("unix:path={}", escape_address_value(&socket)));
        }
    }

    Err(Error::unavailable(
        BACKEND,
        "there is no D-Bus session bus: DBUS_SESSION_BUS_ADDRESS is not set and \
         $XDG_RUNTIME_DIR/bus does not exist; run Datapunk in the user's session (a systemd \
         user service), or choose the `pass` or `encrypted-table` backend",
    ))
}

/// Escapes a path for a D-Bus address: every byte outside the set the specification leaves
/// as it is becomes `%XX`.
fn escape_address_value(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;

    let mut escaped = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-_/.\\*".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(escaped, "%{byte:02x}");
        }
    }
    escaped
}

/// The collection behind the `default` alias.
/// The items stored under `item`'s attributes in the default collection; more than one means a
/// race left duplicates, which the callers treat each in their own way.
async fn find<'a>(
    collection: &'a Collection<'_>,
    item: ItemId<'_>,
) -> Result<Vec<secret_service::Item<'a>>, Error> {
    collection
        .search_items(attributes(item))
        .await
        .map_err(|err| classify(err, &format!("look up the {item}")))
}

async fn default_collection<'a>(service: &'a SecretService<'_>) -> Result<Collection<'a>, Error> {
    match service.get_default_collection().await {
        Ok(collection) => Ok(collection),
        Err(secret_service::Error::NoResult) => Err(Error::unavailable(
            BACKEND,
            "the keyring has no default collection; create a keyring and set it as default \
             (in Seahorse: right-click it, Set as default), or log in once with GNOME Keyring's \
             PAM module, which creates the `login` keyring",
        )),
        Err(err) => Err(classify(err, "find the default keyring")),
    }
}

/// The attributes that identify an item; stable, and nothing in them is secret.
fn attributes(item: ItemId<'_>) -> HashMap<&'static str, &str> {
    HashMap::from([
        ("application", APPLICATION),
        ("kind", item.kind.as_str()),
        ("integration", item.integration),
    ])
}

/// The label a keyring manager shows: `Datapunk: google token`.
fn label(item: ItemId<'_>) -> String {
    format!("Datapunk: {item}")
}

fn ambiguous(item: ItemId<'_>, count: usize) -> Error {
    Error::Ambiguous {
        backend: BACKEND,
        kind: item.kind,
        integration: item.integration.to_owned(),
        count,
    }
}

/// Maps a client error to the caller's decision, by D-Bus error name where there is one.
fn classify(err: secret_service::Error, operation: &str) -> Error {
    use secret_service::Error as E;

    let name = match &err {
        E::Locked => return Error::Locked { backend: BACKEND },
        E::Prompt => return Error::PromptDismissed { backend: BACKEND },
        E::PromptDisconnected => {
            let reason = "the connection to the keyring closed while a prompt was open";
            return Error::unavailable(BACKEND, reason);
        }
        E::Unavailable => return no_provider(),
        E::Zbus(err) => zbus_error_name(err),
        E::ZbusFdo(err) => fdo_error_name(err),
        _ => None,
    };

    match name.as_deref() {
        Some("org.freedesktop.Secret.Error.IsLocked") => Error::Locked { backend: BACKEND },
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner",
        ) => no_provider(),
        Some(
            "org.freedesktop.Secret.Error.NoSession"
            | "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.Disconnected",
        ) => Error::unavailable(
            BACKEND,
            format!("the keyring went away while trying to {operation}; trying again reconnects"),
        ),
        _ if is_transport_failure(&err) => Error::unavailable(
            BACKEND,
            format!("the connection to the session bus broke while trying to {operation}"),
        ),
        _ => Error::backend(BACKEND, operation, err),
    }
}

fn no_provider() -> Error {
    Error::unavailable(
        BACKEND,
        "no Secret Service provider is running on the session bus; start GNOME Keyring \
         (gnome-keyring-daemon --start --components=secrets) or another provider",
    )
}

fn zbus_error_name(err: &zbus::Error) -> Option<String> {
    match err {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(err) => fdo_error_name(err),
        _ => None,
    }
}

fn fdo_error_name(err: &zbus::fdo::Error) -> Option<String> {
    match err {
        zbus::fdo::Error::ZBus(err) => zbus_error_name(err),
        other => Some(other.name().as_str().to_owned()),
    }
}

/// Whether the bus connection itself failed, rather than a call on it.
fn is_transport_failure(err: &secret_service::Error) -> bool {
    let zbus = match err {
        secret_service::Error::Zbus(err) => err,
        secret_service::Error::ZbusFdo(zbus::fdo::Error::ZBus(err)) => err,
        _ => return false,
    };
    matches!(zbus, zbus::Error::InputOutput(_) | zbus::Error::Connection(..))
}

/// The state that an error while connecting or asking stands for.
fn state_of(err: &Error) -> VaultState {
    match err {
        Error::Locked { .. } => VaultState::Locked,
        Error::Unavailable { reason, .. } => VaultState::Unavailable { reason: reason.clone() },
        other => VaultState::Unavailable { reason: error_chain(other) },
    }
}

/// An error and its causes on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let _ = write!(text, ": {err}");
        cause = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| value.into())
    }

    #[test]
    fn the_bus_address_comes_from_the_environment_variable_first() {
        let vars = [("DBUS_SESSION_BUS_ADDRESS", "unix:path=/x/bus"), ("XDG_RUNTIME_DIR", "/")];

        assert_eq!(session_bus_address(env(&vars)).expect("set"), "unix:path=/x/bus");
    }

    #[test]
    fn without_an_address_the_runtime_directory_socket_is_used_if_it_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bus"), b"").expect("stand-in for the socket");
        let runtime_dir = dir.path().to_str().expect("UTF-8 temp path");

        let address = session_bus_address(env(&[("XDG_RUNTIME_DIR", runtime_dir)]));

        let expected = format!("unix:path={}", escape_address_value(&dir.path().join("bus")));
        assert_eq!(address.expect("found"), expected);
    }

    #[test]
    fn with_no_session_bus_at_all_the_error_names_the_missing_bus() {
        for vars in [&[][..], &[("DBUS_SESSION_BUS_ADDRESS", ""), ("XDG_RUNTIME_DIR", "/nowhere")]]
        {
            let err = session_bus_address(env(vars)).expect_err("no bus");

            let Error::Unavailable { reason, .. } = &err else { panic!("{err:?}") };
            assert!(reason.contains("DBUS_SESSION_BUS_ADDRESS"), "{reason}");
            assert!(reason.contains("session bus"), "{reason}");
        }
    }

    #[test]
    fn address_values_are_escaped_as_the_dbus_specification_asks() {
        let escaped = escape_address_value(Path::new("/run/user/1000/a b;c=d,é"));

        assert_eq!(escaped, "/run/user/1000/a%20b%3bc%3dd%2c%c3%a9");
    }

    #[test]
    fn attributes_and_labels_name_the_item_and_nothing_else() {
        let item = ItemId { kind: ItemKind::DataKey, integration: "google" };

        let attributes = attributes(item);

        assert_eq!(attributes.len(), 3);
        assert_eq!(attributes["application"], "datapunk");
        assert_eq!(attributes["kind"], "data-key");
        assert_eq!(attributes["integration"], "google");
        assert_eq!(label(item), "Datapunk: google data key");
        let token = ItemId { kind: ItemKind::Token, integration: "spotify" };
        assert_eq!(label(token), "Datapunk: spotify token");
    }

    #[test]
    fn client_errors_map_to_what_the_caller_does_next() {
        use secret_service::Error as E;

        assert!(matches!(classify(E::Locked, "x"), Error::Locked { .. }));
        assert!(matches!(classify(E::Prompt, "x"), Error::PromptDismissed { .. }));
        assert!(matches!(classify(E::Unavailable, "x"), Error::Unavailable { .. }));
        assert!(matches!(classify(E::Crypto("bad padding"), "x"), Error::Backend { .. }));
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let broken = E::Zbus(zbus::Error::InputOutput(io.into()));
        assert!(matches!(classify(broken, "x"), Error::Unavailable { .. }));
    }
}
