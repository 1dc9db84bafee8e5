//! The provider sandbox: a stand-in for Google's, Microsoft's and Spotify's OAuth endpoints.
//!
//! It follows what the providers document, so that a client passing against it works against
//! them: authorization codes bound to the PKCE challenge (`S256` only), the redirect URI and
//! the client, usable once; refresh tokens that Google keeps, Microsoft rotates on every
//! refresh, and Spotify replaces (the old one dies, and the new one may be left out); RFC 7009
//! revocation where Google has it. Switches make it misbehave the way providers do:
//! `invalid_grant`, server errors, slow and malformed answers, scopes the "user" unticks.
//!
//! Each provider lives under its name: `BASE/google/authorize`, `BASE/google/token`,
//! `BASE/google/revoke`, and so on. The authorization endpoint plays the person too: it
//! consents at once and redirects to the client's redirect URI with a code.
//!
//! [`Sandbox::start`] runs it inside a test's process; the `datapunk-sandbox` binary runs it on
//! its own. The data APIs join it with the sync work.

mod oauth;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use oauth::{Client, Failure, Provider, Stats};

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    base_url: String,
    state: Arc<Mutex<oauth::State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Serves on `addr` (port 0 picks a free one) from the current Tokio runtime, with the
    /// built-in clients ([`Client::builtin`]).
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(oauth::State::new(&base_url)));
        let app = oauth::router(Arc::clone(&state));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("datapunk-sandbox: the server stopped: {error}");
            }
        });
        Ok(Self { base_url, state, server })
    }

    /// The base URL, such as `http://127.0.0.1:38211`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The endpoint `name` (`authorize`, `token`, `revoke`) of `provider`.
    pub fn endpoint(&self, provider: Provider, name: &str) -> String {
        format!("{}/{}/{name}", self.base_url, provider.as_str())
    }

    /// The client registered for `provider`.
    pub fn client(&self, provider: Provider) -> Client {
        self.with(|state| state.provider(provider).client.clone())
    }

    /// Makes the "person" untick `scopes` at the next authorizations of `provider`.
    pub fn withhold_scopes(&self, provider: Provider, scopes: &[&str]) {
        self.with(|state| {
            state.provider_mut(provider).withheld =
                scopes.iter().map(|s| (*s).to_owned()).collect();
        });
    }

    /// Makes the next token requests to `provider` fail as `failures` say, one each, in order.
    pub fn fail_next(&self, provider: Provider, failures: &[Failure]) {
        self.with(|state| state.provider_mut(provider).failures.extend(failures.iter().cloned()));
    }

    /// Makes Spotify leave the refresh token out of refresh responses (it may, and then the old
    /// one stays valid).
    pub fn spotify_omits_refresh_tokens(&self, omit: bool) {
        self.with(|state| state.spotify_omits_refresh_tokens = omit);
    }

    /// Kills every refresh token issued for `provider`, as a password change or an expired
    /// grant does: the next refresh gets `invalid_grant`.
    pub fn expire_refresh_tokens(&self, provider: Provider) {
        self.with(|state| state.provider_mut(provider).refresh.clear());
    }

    /// Whether `token` is a refresh token `provider` would accept now.
    pub fn refresh_token_alive(&self, provider: Provider, token: &str) -> bool {
        self.with(|state| state.provider(provider).refresh.contains_key(token))
    }

    /// What `provider`'s endpoints have seen.
    pub fn stats(&self, provider: Provider) -> Stats {
        self.with(|state| state.provider(provider).stats.clone())
    }

    /// Every access and refresh token issued so far, by any provider: what a test searches
    /// logs and output for.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.with(|state| state.issued.clone())
    }

    /// How long a [`Failure::Slow`] answer waits.
    pub const SLOW: Duration = oauth::SLOW;

    fn with<T>(&self, f: impl FnOnce(&mut oauth::State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}
