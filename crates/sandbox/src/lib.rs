//! The provider sandbox: a stand-in for Google's, Microsoft's and Spotify's OAuth endpoints and
//! data APIs.
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
//! consents at once, as the provider's current [`Account`], and redirects to the client's
//! redirect URI with a code.
//!
//! Beside them, each provider has an account endpoint that says whose an access token is, as
//! the providers' own do: Google's OpenID Connect userinfo at `BASE/google/userinfo`, Graph's
//! `/me` at `BASE/microsoft/api/me`, Spotify's `/me` at `BASE/spotify/api/me`
//! ([`Sandbox::account_url`]). They take `Authorization: Bearer` with an access token the
//! sandbox issued for that provider, answer 401 in the provider's shape once it has expired,
//! and 403 when the grant lacks the scope the provider requires (`openid` at Google,
//! `User.Read` at Microsoft). Tokens keep the account they were issued for, so a test can
//! change who signs in ([`Sandbox::sign_in_as`]) and tell old grants from new ones.
//!
//! The data APIs serve one person's data per provider, generated from a seed
//! ([`Population`]): Google Calendar (`BASE/google/api/calendar/v3/...`) and People
//! (`BASE/google/people/v1/people/me/connections`), Graph's calendar view and contacts delta
//! queries (`BASE/microsoft/api/me/...`), and Spotify's recently-played list, saved tracks and
//! playlists (`BASE/spotify/api/me/...`). They page, issue sync tokens and delta links, list
//! changes and tombstones after [`Sandbox::add`], [`Sandbox::change`] and [`Sandbox::delete`],
//! signal a resync after [`Sandbox::invalidate_sync_tokens`], and misbehave as queued
//! [`Fault`]s say. Each wants a bearer token the sandbox issued for its provider, with the
//! dataset's scope. [`Sandbox::requests`] is the log of what was asked, [`Sandbox::truth`] the
//! records a fully synced client should hold. The same controls are served as JSON under
//! `BASE/_admin` for a process that is not the sandbox's; `docs/sandbox.md` describes them.
//!
//! [`Sandbox::start`] runs it inside a test's process; the `datapunk-sandbox` binary runs it on
//! its own.

// serde_json's `json!` recurses once per key; Graph's events and contacts have fifty.
#![recursion_limit = "256"]
#![allow(
    clippy::result_large_err,
    reason = "an endpoint's error is the HTTP response it sends, built once per request"
)]

mod account;
mod data;
mod oauth;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use account::Account;
pub use data::{Dataset, Fault, LoggedRequest, MutateError, PlaylistShape, Population, Record};
pub use oauth::{Client, Failure, Provider, Stats};
use serde_json::Value;

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    base_url: String,
    state: Arc<Mutex<oauth::State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Serves on `addr` (port 0 picks a free one) from the current Tokio runtime, with the
    /// built-in clients ([`Client::builtin`]) and the default [`Population`].
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, Population::default()).await
    }

    /// Serves on `addr` like [`Sandbox::start`], with the data `population` describes.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn start_with(addr: SocketAddr, population: Population) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(oauth::State::new(&base_url, population)));
        let app = oauth::routes()
            .merge(account::routes())
            .merge(data::routes())
            .merge(data::admin::routes())
            .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), data::log_request))
            .with_state(Arc::clone(&state));
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

    /// The account endpoint of `provider`: `BASE/google/userinfo`, `BASE/microsoft/api/me` or
    /// `BASE/spotify/api/me`.
    pub fn account_url(&self, provider: Provider) -> String {
        format!("{}{}", self.base_url, account::path(provider))
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

    /// Makes `account` the person who signs in at the next authorizations of `provider`
    /// ([`Account::builtin`] until then). Grants made before keep their account.
    pub fn sign_in_as(&self, provider: Provider, account: Account) {
        self.with(|state| state.provider_mut(provider).account = account);
    }

    /// Makes access tokens issued for `provider` from now on live `lifetime`, rounded down to
    /// whole seconds and at least one: the `expires_in` of token responses and the expiry the
    /// account endpoint enforces. Tokens issued before keep theirs. The default is an hour.
    pub fn set_access_token_lifetime(&self, provider: Provider, lifetime: Duration) {
        let lifetime = Duration::from_secs(lifetime.as_secs().max(1));
        self.with(|state| state.provider_mut(provider).access_lifetime = lifetime);
    }

    /// Expires every access token issued for `provider` so far: the account endpoint answers
    /// them 401 from now on.
    pub fn expire_access_tokens(&self, provider: Provider) {
        let now = Instant::now();
        self.with(|state| {
            for access in state.provider_mut(provider).access.values_mut() {
                access.expires = Some(now);
            }
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

    /// Writes the `[providers.*]` part of a Datapunk configuration pointing every endpoint at
    /// this sandbox, with its clients' ids, to `path`; client secrets go to files beside it
    /// (`sandbox-google-client-secret`), created 0600, and the configuration names them by
    /// absolute path, so that the tables mean the same appended to a file anywhere.
    ///
    /// # Errors
    ///
    /// When a file cannot be written, or `path`'s directory cannot be resolved; an existing
    /// file is not overwritten.
    pub fn write_config(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let dir = dir.canonicalize()?;
        let mut text = format!(
            "# Written by datapunk-sandbox for the sandbox at {}: every endpoint is the\n\
             # sandbox's. Append it to Datapunk's configuration file.\n",
            self.base_url
        );
        for provider in [Provider::Google, Provider::Microsoft, Provider::Spotify] {
            let client = self.client(provider);
            let name = provider.as_str();
            text.push_str(&format!("\n[providers.{name}]\nclient_id = \"{}\"\n", client.id));
            if let Some(secret) = &client.secret {
                let file = dir.join(format!("sandbox-{name}-client-secret"));
                create_private(&file, secret.as_bytes())?;
                text.push_str(&format!("client_secret_file = {}\n", toml_string(&file)));
            }
            for endpoint in ["authorize", "token"] {
                let url = self.endpoint(provider, endpoint);
                text.push_str(&format!("{endpoint}_url = \"{url}\"\n"));
            }
            if provider == Provider::Google {
                text.push_str(&format!("revoke_url = \"{}\"\n", self.endpoint(provider, "revoke")));
            }
            text.push_str(&format!("api_base = \"{}/{name}/api\"\n", self.base_url));
            if provider == Provider::Google {
                text.push_str(&format!("people_api_base = \"{}/google/people\"\n", self.base_url));
            }
            text.push_str(&format!("account_url = \"{}\"\n", self.account_url(provider)));
        }
        create_private(path, text.as_bytes())
    }

    /// The base URL of `provider`'s data API, as `api_base` in the configuration:
    /// `BASE/google/api`, `BASE/microsoft/api`, `BASE/spotify/api`.
    pub fn api_base(&self, provider: Provider) -> String {
        format!("{}/{}/api", self.base_url, provider.as_str())
    }

    /// The base URL of Google's People API, as `people_api_base`: `BASE/google/people`.
    pub fn people_api_base(&self) -> String {
        format!("{}/google/people", self.base_url)
    }

    /// The change sequence: how many mutations there have been.
    pub fn change_seq(&self) -> u64 {
        self.with(|state| state.data.seq)
    }

    /// Adds a record to `dataset` and returns its id: an event in the primary Google calendar,
    /// a contact, an Outlook event, a saved track (newest), a playlist, or a play of a new
    /// track (its id is its `played_at`).
    pub fn add(&self, dataset: Dataset) -> String {
        self.with(|state| {
            let account = state.provider(dataset.provider()).account.clone();
            state.data.add(dataset, &account)
        })
    }

    /// Changes the record `id` of `dataset`: its next revision has other words, a new `etag`
    /// and `updated` time.
    ///
    /// # Errors
    ///
    /// When `dataset` has no live record `id`, or for plays, which only get added.
    pub fn change(&self, dataset: Dataset, id: &str) -> Result<(), MutateError> {
        self.with(|state| state.data.mutate(dataset, id, false))
    }

    /// Deletes the record `id` of `dataset`; deleting a recurring series deletes its
    /// exceptions too. Incremental rounds then list its tombstone.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::change`].
    pub fn delete(&self, dataset: Dataset, id: &str) -> Result<(), MutateError> {
        self.with(|state| state.data.mutate(dataset, id, true))
    }

    /// Kills every sync token, page token of an incremental round and delta link of
    /// `dataset`: Google Calendar answers 410 `fullSyncRequired`, People 400
    /// `EXPIRED_SYNC_TOKEN`, Graph 410 `SyncStateNotFound`.
    pub fn invalidate_sync_tokens(&self, dataset: Dataset) {
        self.with(|state| state.data.invalidate(dataset, 0));
    }

    /// Kills `dataset`'s tokens as [`Sandbox::invalidate_sync_tokens`] does once `pages` more
    /// incremental pages have been served (at least one), so that a round fails on a later
    /// page.
    pub fn invalidate_sync_tokens_after(&self, dataset: Dataset, pages: u32) {
        self.with(|state| state.data.invalidate(dataset, pages.max(1)));
    }

    /// Makes the next data requests to `provider` misbehave as `faults` say, one each, in
    /// order, after authentication.
    pub fn inject(&self, provider: Provider, faults: &[Fault]) {
        self.with(|state| state.data.inject(provider, faults));
    }

    /// Serves Spotify's playlists in `shape`.
    pub fn set_playlist_shape(&self, shape: PlaylistShape) {
        self.with(|state| state.data.playlist_shape = shape);
    }

    /// From now on, answers a data request it answered before with the same bytes, as long as
    /// nothing the answer depends on changed (a mutation, a token invalidation, a plant, the
    /// playlist shape). Faults still apply. For benchmarks that run the sandbox on the cores
    /// they measure: rendering the provider's JSON is the provider's work, not the client's.
    pub fn remember_answers(&self) {
        self.with(|state| state.data.remember_answers());
    }

    /// Every request answered so far, the admin API's excepted, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.with(|state| state.data.log.clone())
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.with(|state| state.data.log.clear());
    }

    /// The live records of `dataset` now, as its provider's full listing serves them: what a
    /// client that synced everything should hold. Google Calendar's come from all three
    /// calendars, each record naming its calendar, and include the cancelled occurrences of
    /// live series (a full listing with `showDeleted=true` serves them); Outlook's include the occurrences of each
    /// series; plays are newest first.
    pub fn truth(&self, dataset: Dataset) -> Vec<Record> {
        self.with(|state| {
            let account = state.provider(dataset.provider()).account.clone();
            let mut records = state.data.truth(dataset, &account, &state.base_url);
            planted(&state.data, dataset, &mut records);
            records
        })
    }

    /// Changes the record `id` of `dataset` so that its personal fields hold `marker`: an
    /// event's title and description, or a contact's first e-mail address and phone number.
    /// For the calendars and contacts of Google and Outlook, to show where such text goes.
    ///
    /// # Errors
    ///
    /// As [`Sandbox::change`]; Spotify's datasets are refused.
    pub fn plant(&self, dataset: Dataset, id: &str, marker: &str) -> Result<(), MutateError> {
        self.with(|state| state.data.plant(dataset, id, marker))
    }

    /// The Outlook events (and occurrences) a `calendarView` over `start..end` lists: what a
    /// client whose delta lineage has that window should hold.
    pub fn outlook_truth_in(
        &self,
        start: time::OffsetDateTime,
        end: time::OffsetDateTime,
    ) -> Vec<Record> {
        let window = (start.unix_timestamp(), end.unix_timestamp());
        self.with(|state| {
            let account = state.provider(Provider::Microsoft).account.clone();
            let mut records = data::graph::event_truth_in(&state.data, &account, window);
            planted(&state.data, Dataset::MicrosoftCalendar, &mut records);
            records
        })
    }

    /// The JSON of [`Sandbox::truth`]'s records.
    pub fn truth_json(&self, dataset: Dataset) -> Vec<Value> {
        self.truth(dataset).into_iter().map(|record| record.json).collect()
    }

    /// How long a [`Failure::Slow`] answer waits.
    pub const SLOW: Duration = oauth::SLOW;

    fn with<T>(&self, f: impl FnOnce(&mut oauth::State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Writes the texts planted in `dataset` into `records`.
fn planted(data: &data::Data, dataset: Dataset, records: &mut [Record]) {
    let mut jsons: Vec<serde_json::Value> = records.iter().map(|r| r.json.clone()).collect();
    data.apply_plants(dataset, &mut jsons);
    for (record, json) in records.iter_mut().zip(jsons) {
        record.json = json;
    }
}

/// Creates `path` with `content`, mode 0600, refusing to replace an existing file.
fn create_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(content)
}

/// `path` as a TOML basic string.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}
