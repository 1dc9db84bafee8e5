//! The providers Datapunk connects to, their datasets and the scopes each dataset needs.
//!
//! Every dataset asks for the narrowest read-only scopes that serve it, so that a person can
//! grant one dataset without the others and a leaked token reads only what was chosen. The
//! endpoints are the providers' documented ones; each can be replaced in the configuration
//! (`[providers.NAME]`) so that the provider sandbox, a self-hosted provider or a test server
//! can stand in.
//!
//! | provider | dataset | scopes |
//! |---|---|---|
//! | `google` | `calendar` | `https://www.googleapis.com/auth/calendar.readonly` |
//! | `google` | `contacts` | `https://www.googleapis.com/auth/contacts.readonly` |
//! | `microsoft` | `calendar` | `Calendars.Read` (and `offline_access` for every dataset) |
//! | `microsoft` | `contacts` | `Contacts.Read` (and `offline_access`) |
//! | `spotify` | `recently-played` | `user-read-recently-played` |
//! | `spotify` | `saved-tracks` | `user-library-read` |
//! | `spotify` | `playlists` | `playlist-read-private playlist-read-collaborative` |
//!
//! Besides the datasets' scopes, Google is asked for `openid email` and Microsoft for
//! `User.Read`, which let Datapunk learn which account it was given ([`crate::account`]), so
//! that reconnecting an integration to another account can be refused.

use std::fmt;
use std::str::FromStr;

/// A provider Datapunk can connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Google Calendar and Google People (contacts).
    Google,
    /// Microsoft Graph: Outlook calendar and contacts.
    Microsoft,
    /// The Spotify Web API.
    Spotify,
}

/// One kind of data a provider holds, and the scopes that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// The name used on the command line and in the database: `calendar`, `saved-tracks`.
    pub name: &'static str,
    /// What a person is told it is.
    pub description: &'static str,
    /// Every scope it needs; a grant missing one of them does not cover it.
    pub scopes: &'static [&'static str],
}

/// Where a provider's OAuth and API endpoints are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The authorization endpoint the browser is sent to.
    pub authorize: String,
    /// The token endpoint.
    pub token: String,
    /// The RFC 7009 revocation endpoint, for the providers that have one.
    pub revoke: Option<String>,
    /// The base URL of the data API.
    pub api_base: String,
    /// Google only: the base URL of the People API (contacts), which has a host of its own.
    pub people_api_base: Option<String>,
    /// The endpoint that names the account a token belongs to: Google's OpenID Connect
    /// userinfo, Graph's and Spotify's `/me`.
    pub account: String,
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` (and `client_secret`, when there is one) in the request body.
    RequestBody,
    /// HTTP Basic authentication with the client id and secret, as Spotify documents for the
    /// authorization code flow.
    BasicAuth,
}

const GOOGLE_DATASETS: &[Dataset] = &[
    Dataset {
        name: "calendar",
        description: "calendars and their events",
        scopes: &["https://www.googleapis.com/auth/calendar.readonly"],
    },
    Dataset {
        name: "contacts",
        description: "contacts",
        scopes: &["https://www.googleapis.com/auth/contacts.readonly"],
    },
];

const MICROSOFT_DATASETS: &[Dataset] = &[
    Dataset {
        name: "calendar",
        description: "Outlook calendar events",
        scopes: &["Calendars.Read"],
    },
    Dataset { name: "contacts", description: "Outlook contacts", scopes: &["Contacts.Read"] },
];

const SPOTIFY_DATASETS: &[Dataset] = &[
    Dataset {
        name: "recently-played",
        description: "recently played tracks",
        scopes: &["user-read-recently-played"],
    },
    Dataset {
        name: "saved-tracks",
        description: "saved tracks (Your Library)",
        scopes: &["user-library-read"],
    },
    Dataset {
        name: "playlists",
        description: "playlists, private and collaborative ones included",
        scopes: &["playlist-read-private", "playlist-read-collaborative"],
    },
];

impl Provider {
    /// Every provider, in the order the documentation lists them.
    pub const ALL: [Provider; 3] = [Self::Google, Self::Microsoft, Self::Spotify];

    /// The name used in the configuration and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Microsoft => "microsoft",
            Self::Spotify => "spotify",
        }
    }

    /// The datasets this provider offers.
    pub const fn datasets(self) -> &'static [Dataset] {
        match self {
            Self::Google => GOOGLE_DATASETS,
            Self::Microsoft => MICROSOFT_DATASETS,
            Self::Spotify => SPOTIFY_DATASETS,
        }
    }

    /// The dataset called `name`.
    ///
    /// # Errors
    ///
    /// [`UnknownName::Dataset`], listing the provider's datasets.
    pub fn dataset(self, name: &str) -> Result<&'static Dataset, UnknownName> {
        self.datasets().iter().find(|dataset| dataset.name == name).ok_or_else(|| {
            UnknownName::Dataset {
                provider: self,
                name: name.to_owned(),
                known: self.datasets().iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            }
        })
    }

    /// Scopes asked for whatever the datasets. Microsoft issues a refresh token only for
    /// `offline_access`, and answers `/me` only for `User.Read`; Google's userinfo names the
    /// account (a stable `sub` and the address) for `openid email`. Spotify's `/me` needs no
    /// scope for the id and display name.
    pub const fn base_scopes(self) -> &'static [&'static str] {
        match self {
            Self::Google => &["openid", "email"],
            Self::Microsoft => &["offline_access", "User.Read"],
            Self::Spotify => &[],
        }
    }

    /// Extra parameters of the authorization request: Google issues a refresh token only for
    /// `access_type=offline`, and issues one again for an account that granted before only
    /// with `prompt=consent`.
    pub const fn authorize_params(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Google => &[("access_type", "offline"), ("prompt", "consent")],
            Self::Microsoft | Self::Spotify => &[],
        }
    }

    /// How the client authenticates at the token endpoint.
    pub const fn client_auth(self) -> ClientAuth {
        match self {
            Self::Spotify => ClientAuth::BasicAuth,
            Self::Google | Self::Microsoft => ClientAuth::RequestBody,
        }
    }

    /// The documented endpoints. Microsoft's use the `common` tenant, which serves both
    /// personal and work accounts.
    pub fn default_endpoints(self) -> Endpoints {
        let (authorize, token, revoke, api_base, account) = match self {
            Self::Google => (
                "https://accounts.google.com/o/oauth2/v2/auth",
                "https://oauth2.googleapis.com/token",
                Some("https://oauth2.googleapis.com/revoke"),
                "https://www.googleapis.com",
                "https://openidconnect.googleapis.com/v1/userinfo",
            ),
            Self::Microsoft => (
                "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                None,
                "https://graph.microsoft.com/v1.0",
                "https://graph.microsoft.com/v1.0/me",
            ),
            Self::Spotify => (
                "https://accounts.spotify.com/authorize",
                "https://accounts.spotify.com/api/token",
                None,
                "https://api.spotify.com/v1",
                "https://api.spotify.com/v1/me",
            ),
        };
        Endpoints {
            authorize: authorize.to_owned(),
            token: token.to_owned(),
            revoke: revoke.map(str::to_owned),
            api_base: api_base.to_owned(),
            people_api_base: (self == Self::Google)
                .then(|| "https://people.googleapis.com".to_owned()),
            account: account.to_owned(),
        }
    }

    /// Where a person removes Datapunk's access by hand when the provider has no revocation
    /// endpoint.
    pub const fn manage_access_url(self) -> &'static str {
        match self {
            Self::Google => "https://myaccount.google.com/connections",
            Self::Microsoft => "https://account.live.com/consent/Manage",
            Self::Spotify => "https://www.spotify.com/account/apps/",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|provider| provider.as_str() == name)
            .ok_or_else(|| UnknownName::Provider { name: name.to_owned() })
    }
}

/// A provider or dataset name that names nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownName {
    /// No such provider.
    #[error("unknown provider {name:?}: use google, microsoft or spotify")]
    Provider {
        /// The name given.
        name: String,
    },
    /// The provider has no such dataset.
    #[error("{provider} has no dataset {name:?}: use {known}")]
    Dataset {
        /// The provider.
        provider: Provider,
        /// The name given.
        name: String,
        /// The provider's datasets, comma-separated.
        known: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
        }
        let err = "dropbox".parse::<Provider>().expect_err("not a provider");
        assert!(err.to_string().contains("google, microsoft or spotify"), "{err}");
        let err = Provider::Spotify.dataset("calendar").expect_err("spotify has no calendar");
        assert!(err.to_string().contains("recently-played, saved-tracks, playlists"), "{err}");
    }

    #[test]
    fn every_scope_is_read_only() {
        for provider in Provider::ALL {
            for dataset in provider.datasets() {
                for scope in dataset.scopes {
                    let read_only = scope.ends_with(".readonly")
                        || scope.ends_with(".Read")
                        || scope.contains("-read-")
                        || scope.ends_with("-read");
                    assert!(read_only, "{provider} {}: {scope}", dataset.name);
                }
            }
        }
    }

    #[test]
    fn only_google_has_a_revocation_endpoint_and_endpoints_use_https() {
        for provider in Provider::ALL {
            let endpoints = provider.default_endpoints();
            assert_eq!(endpoints.revoke.is_some(), provider == Provider::Google);
            for url in
                [&endpoints.authorize, &endpoints.token, &endpoints.api_base, &endpoints.account]
            {
                assert!(url.starts_with("https://"), "{url}");
            }
        }
    }
}
