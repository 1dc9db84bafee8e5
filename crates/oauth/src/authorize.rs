//! The authorization request and what comes back to the redirect URI.
//!
//! [`Authorization::begin`] builds the URL the person's browser opens: the authorization code
//! flow with PKCE (`S256`, RFC 7636) and a random `state`, asking for the scopes of the chosen
//! datasets. The provider sends the browser back to the redirect URI with a query, which
//! [`Redirect`] holds, whether it came to the loopback listener ([`crate::loopback`]) or was
//! pasted by a person on a machine without a browser. [`Authorization::accept`] checks its
//! `state` in constant time before anything else, and only then looks at the code or the
//! error, so a forged redirect learns nothing and changes nothing.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope,
};
use url::Url;

use crate::provider::{Dataset, Endpoints, Provider};

/// An authorization in progress: the URL to open, and what checking the redirect needs.
/// `Debug` leaves out the URL, which carries the `state`.
pub struct Authorization {
    provider: Provider,
    url: Url,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
    redirect_uri: Url,
    scopes: Vec<String>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("provider", &self.provider)
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What a successful redirect gives the token exchange: the one-time code, the PKCE verifier
/// and the redirect URI, which the token endpoint checks against the authorization request.
#[derive(Debug)]
pub struct Granted {
    /// The authorization code.
    pub code: AuthorizationCode,
    /// The PKCE verifier whose challenge went with the authorization request.
    pub verifier: PkceCodeVerifier,
    /// The redirect URI of the authorization request.
    pub redirect_uri: Url,
    /// The scopes asked for; the token response says which were granted.
    pub requested_scopes: Vec<String>,
}

/// The query of a redirect back from the provider. `Debug` shows which parameters are there,
/// not the code or the state.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redirect {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl std::fmt::Debug for Redirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirect")
            .field("state", &self.state.as_ref().map(|_| "[redacted]"))
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Authorization {
    /// Starts an authorization of `datasets` of `provider` for the client `client_id`, whose
    /// browser will come back to `redirect_uri`.
    ///
    /// # Errors
    ///
    /// [`AuthorizeError::Endpoint`] when the authorization endpoint or the redirect URI is not
    /// a URL; [`AuthorizeError::NoDatasets`] when `datasets` is empty.
    pub fn begin(
        provider: Provider,
        endpoints: &Endpoints,
        client_id: &str,
        redirect_uri: &Url,
        datasets: &[&Dataset],
    ) -> Result<Self, AuthorizeError> {
        if datasets.is_empty() {
            return Err(AuthorizeError::NoDatasets);
        }
        let mut scopes: Vec<String> =
            provider.base_scopes().iter().map(|scope| (*scope).to_owned()).collect();
        for scope in datasets.iter().flat_map(|dataset| dataset.scopes) {
            if !scopes.iter().any(|known| known == scope) {
                scopes.push((*scope).to_owned());
            }
        }

        let auth_url = AuthUrl::new(endpoints.authorize.clone())
            .map_err(|_| AuthorizeError::Endpoint { which: "authorization endpoint" })?;
        let client = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_auth_uri(auth_url)
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        for (name, value) in provider.authorize_params() {
            request = request.add_extra_param(*name, *value);
        }
        let (url, state) = request.url();

        Ok(Self { provider, url, state, verifier, redirect_uri: redirect_uri.clone(), scopes })
    }

    /// The URL to open in the browser.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The provider being connected.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The redirect URI the browser comes back to.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// The scopes asked for.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Checks a redirect and, when it carries this authorization's code, returns what the
    /// token exchange needs. The authorization is used up either way: a code is accepted once.
    ///
    /// # Errors
    ///
    /// [`RedirectError::StateMismatch`] when `state` is missing or not this authorization's
    /// (checked first, in constant time); [`RedirectError::Denied`] when the person refused;
    /// [`RedirectError::Provider`] for another error the provider reported;
    /// [`RedirectError::NoCode`] when the redirect carries neither a code nor an error.
    pub fn accept(self, redirect: &Redirect) -> Result<Granted, RedirectError> {
        let Some(state) = &redirect.state else {
            return Err(RedirectError::StateMismatch);
        };
        // Constant-time comparison (oauth2's `timing-resistant-secret-traits`).
        if CsrfToken::new(state.clone()) != self.state {
            return Err(RedirectError::StateMismatch);
        }
        if let Some(error) = &redirect.error {
            if error == "access_denied" {
                return Err(RedirectError::Denied);
            }
            return Err(RedirectError::Provider {
                error: printable(error),
                description: redirect.error_description.as_deref().map(printable),
            });
        }
        let Some(code) = &redirect.code else {
            return Err(RedirectError::NoCode);
        };

        Ok(Granted {
            code: AuthorizationCode::new(code.clone()),
            verifier: self.verifier,
            redirect_uri: self.redirect_uri,
            requested_scopes: self.scopes,
        })
    }
}

impl Redirect {
    /// Reads the query string of a redirect (`state=...&code=...`). Unknown parameters are
    /// ignored; a parameter given twice counts as malformed, since which one the provider
    /// meant is unknown.
    ///
    /// # Errors
    ///
    /// [`RedirectError::Malformed`] for a repeated parameter.
    pub fn from_query(query: &str) -> Result<Self, RedirectError> {
        let mut redirect = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "state" => &mut redirect.state,
                "code" => &mut redirect.code,
                "error" => &mut redirect.error,
                "error_description" => &mut redirect.error_description,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(RedirectError::Malformed { reason: format!("`{name}` appears twice") });
            }
        }
        Ok(redirect)
    }

    /// Reads a whole redirect URL, as a person pastes it from the browser's address bar on a
    /// machine where the loopback listener cannot be reached. It must lead to `redirect_uri`
    /// (same scheme, host, port and path).
    ///
    /// # Errors
    ///
    /// [`RedirectError::Malformed`] when it is not a URL, leads elsewhere or repeats a
    /// parameter.
    pub fn from_pasted_url(pasted: &str, redirect_uri: &Url) -> Result<Self, RedirectError> {
        let url = Url::parse(pasted.trim()).map_err(|_| RedirectError::Malformed {
            reason: "that is not a URL; paste the whole address the browser shows".to_owned(),
        })?;
        let same = url.scheme() == redirect_uri.scheme()
            && url.host() == redirect_uri.host()
            && url.port_or_known_default() == redirect_uri.port_or_known_default()
            && url.path() == redirect_uri.path();
        if !same {
            return Err(RedirectError::Malformed {
                reason: format!("the address does not lead to {redirect_uri}"),
            });
        }
        Self::from_query(url.query().unwrap_or(""))
    }
}

/// At most 200 printable characters of a value from a redirect, for messages.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Why an authorization could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// An endpoint in the configuration is not a URL.
    #[error("the provider's {which} is not a URL; check `[providers.*]` in the configuration")]
    Endpoint {
        /// Which endpoint.
        which: &'static str,
    },
    /// No dataset was chosen.
    #[error("choose at least one dataset")]
    NoDatasets,
}

/// Why a redirect was not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// The `state` is missing or belongs to another authorization: the redirect was forged,
    /// replayed, or comes from an older attempt.
    #[error(
        "the redirect does not belong to this authorization (its `state` does not match); \
         nothing was stored"
    )]
    StateMismatch,
    /// The person declined.
    #[error("access was declined at the provider; nothing was stored")]
    Denied,
    /// The provider reported another error.
    #[error("the provider reported `{error}`{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider {
        /// The OAuth error code.
        error: String,
        /// The provider's explanation, if any.
        description: Option<String>,
    },
    /// The redirect carries neither a code nor an error.
    #[error("the redirect carries no authorization code")]
    NoCode,
    /// The redirect cannot be read.
    #[error("cannot read the redirect: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(provider: Provider, datasets: &[&str]) -> Authorization {
        let datasets: Vec<&Dataset> =
            datasets.iter().map(|name| provider.dataset(name).expect("a dataset")).collect();
        let redirect = Url::parse("http://127.0.0.1:4711/callback").expect("a URL");
        Authorization::begin(
            provider,
            &provider.default_endpoints(),
            "client-1",
            &redirect,
            &datasets,
        )
        .expect("begin")
    }

    fn param(url: &Url, name: &str) -> Option<String> {
        url.query_pairs().find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
    }

    #[test]
    fn the_url_asks_for_the_datasets_scopes_with_pkce_s256_and_a_random_state() {
        let auth = begin(Provider::Microsoft, &["calendar", "contacts"]);
        let url = auth.url();

        assert!(url.as_str().starts_with("https://login.microsoftonline.com/common/"), "{url}");
        assert_eq!(param(url, "response_type").as_deref(), Some("code"));
        assert_eq!(param(url, "client_id").as_deref(), Some("client-1"));
        assert_eq!(param(url, "redirect_uri").as_deref(), Some("http://127.0.0.1:4711/callback"));
        assert_eq!(
            param(url, "scope").as_deref(),
            Some("offline_access User.Read Calendars.Read Contacts.Read")
        );
        assert_eq!(param(url, "code_challenge_method").as_deref(), Some("S256"));
        let challenge = param(url, "code_challenge").expect("a challenge");
        assert_eq!(challenge.len(), 43, "base64url of a SHA-256 digest");
        let state = param(url, "state").expect("a state");
        assert!(state.len() >= 16, "{state}");
        assert_ne!(param(begin(Provider::Microsoft, &["calendar"]).url(), "state"), Some(state));
    }

    #[test]
    fn google_asks_for_offline_access_and_shared_scopes_are_asked_once() {
        let auth = begin(Provider::Google, &["calendar"]);
        assert_eq!(param(auth.url(), "access_type").as_deref(), Some("offline"));
        assert_eq!(param(auth.url(), "prompt").as_deref(), Some("consent"));
        let auth = begin(Provider::Spotify, &["playlists", "playlists"]);
        assert_eq!(auth.scopes(), ["playlist-read-private", "playlist-read-collaborative"]);
    }

    #[test]
    fn a_redirect_with_the_right_state_gives_the_code_and_the_verifier() {
        let auth = begin(Provider::Spotify, &["saved-tracks"]);
        let state = param(auth.url(), "state").expect("a state");
        let query = format!("code=abc123&state={state}");

        let granted = auth.accept(&Redirect::from_query(&query).expect("a query")).expect("ok");

        assert_eq!(granted.code.secret(), "abc123");
        assert_eq!(granted.verifier.secret().len(), 43);
        assert_eq!(granted.requested_scopes, ["user-library-read"]);
    }

    #[test]
    fn debug_output_shows_neither_the_state_nor_the_verifier_nor_the_code() {
        let auth = begin(Provider::Google, &["calendar"]);
        let state = param(auth.url(), "state").expect("a state");
        let shown = format!("{auth:?}");
        assert!(!shown.contains(&state), "{shown}");
        assert!(shown.contains("127.0.0.1:4711"), "{shown}");

        let query = format!("code=SECRET-CODE&state={state}");
        let granted = auth.accept(&Redirect::from_query(&query).expect("query")).expect("ok");
        let verifier = granted.verifier.secret().clone();
        let shown = format!("{granted:?} {:?}", Redirect::from_query(&query).expect("query"));
        assert!(!shown.contains("SECRET-CODE") && !shown.contains(&verifier), "{shown}");
    }

    #[test]
    fn a_wrong_or_missing_state_is_refused_before_the_code_or_error_is_looked_at() {
        for query in ["code=abc", "code=abc&state=forged", "error=access_denied&state=forged"] {
            let auth = begin(Provider::Google, &["contacts"]);
            let redirect = Redirect::from_query(query).expect("a query");
            assert_eq!(auth.accept(&redirect).expect_err(query), RedirectError::StateMismatch);
        }
    }

    #[test]
    fn declined_and_provider_errors_are_told_apart() {
        let auth = begin(Provider::Google, &["contacts"]);
        let state = param(auth.url(), "state").expect("a state");
        let redirect = Redirect::from_query(&format!("error=access_denied&state={state}"));
        assert_eq!(
            auth.accept(&redirect.expect("query")).expect_err("declined"),
            RedirectError::Denied
        );

        let auth = begin(Provider::Google, &["contacts"]);
        let state = param(auth.url(), "state").expect("a state");
        let query = format!("error=invalid_scope&error_description=bad%0Ascope&state={state}");
        let err = auth.accept(&Redirect::from_query(&query).expect("query")).expect_err("error");
        assert_eq!(err.to_string(), "the provider reported `invalid_scope`: badscope");
    }

    #[test]
    fn a_repeated_parameter_or_a_pasted_url_elsewhere_is_malformed() {
        assert!(matches!(
            Redirect::from_query("code=a&code=b&state=s"),
            Err(RedirectError::Malformed { .. })
        ));
        let redirect_uri = Url::parse("http://127.0.0.1:4711/callback").expect("a URL");
        let pasted = "http://127.0.0.1:4711/callback?code=c&state=s\n";
        let redirect = Redirect::from_pasted_url(pasted, &redirect_uri).expect("pasted");
        assert_eq!(redirect.code.as_deref(), Some("c"));
        for other in [
            "http://127.0.0.1:4712/callback?code=c",
            "https://evil.example/callback?code=c",
            "code=c",
        ] {
            assert!(Redirect::from_pasted_url(other, &redirect_uri).is_err(), "{other}");
        }
    }
}
