//! The configured OAuth clients: each provider's endpoints with the configuration's
//! replacements, and its client credentials read from a file or a systemd credential.

use anyhow::Context as _;
use datapunk_config::{Config, Environment, ProviderSettings};
use datapunk_oauth::provider::{Endpoints, Provider};
use datapunk_oauth::token::Credentials;
use datapunk_vault::secret::SecretString;

/// A provider's client as configured: where to talk to it and as whom.
#[derive(Clone, Debug)]
pub struct ProviderClient {
    /// The provider.
    pub provider: Provider,
    /// Its endpoints.
    pub endpoints: Endpoints,
    /// The client id and secret.
    pub credentials: Credentials,
}

impl ProviderClient {
    /// The client configured for `provider`, with its secret read now.
    ///
    /// # Errors
    ///
    /// When `[providers.NAME]` is missing, or its client secret cannot be read.
    pub fn configured(config: &Config, provider: Provider) -> anyhow::Result<Self> {
        let settings = config.providers.get(provider.as_str()).with_context(|| {
            format!(
                "no OAuth client is configured for {provider}: add a `[providers.{provider}]` \
                 table with `client_id` (see `datapunk config example`)"
            )
        })?;
        Ok(Self {
            provider,
            endpoints: endpoints(provider, settings),
            credentials: credentials(settings, provider)?,
        })
    }
}

/// The provider's endpoints, with the configuration's replacements.
fn endpoints(provider: Provider, settings: &ProviderSettings) -> Endpoints {
    let mut endpoints = provider.default_endpoints();
    let replace = |target: &mut String, value: &Option<String>| {
        if let Some(url) = value {
            target.clone_from(url);
        }
    };
    replace(&mut endpoints.authorize, &settings.authorize_url);
    replace(&mut endpoints.token, &settings.token_url);
    replace(&mut endpoints.api_base, &settings.api_base);
    replace(&mut endpoints.account, &settings.account_url);
    if let Some(url) = &settings.people_api_base {
        endpoints.people_api_base = Some(url.clone());
    }
    if let Some(url) = &settings.revoke_url {
        endpoints.revoke = Some(url.clone());
    }
    endpoints
}

/// The client id, and the client secret read from its file or credential. The secret is read
/// into memory only: it never goes on a command line or into a child's environment.
fn credentials(settings: &ProviderSettings, provider: Provider) -> anyhow::Result<Credentials> {
    let secret = match &settings.client_secret {
        None => None,
        Some(source) => {
            let env = Environment::from_process();
            let key = format!("providers.{provider}.client_secret_file");
            let path = source
                .path(env.credentials_directory.as_deref(), &key)
                .map_err(|problem| anyhow::anyhow!("{problem}"))?;
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read the client secret file {}", path.display())
            })?;
            Some(SecretString::new(text.trim().to_owned()))
        }
    };
    Ok(Credentials { id: settings.client_id.clone(), secret })
}
