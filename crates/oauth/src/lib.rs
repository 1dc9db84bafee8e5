//! Datapunk's OAuth 2.0 client.
//!
//! - [`account`]: which account a token belongs to, and what a data API's refusal means.
//! - [`provider`]: Google, Microsoft and Spotify, their datasets with the narrowest read-only
//!   scopes that serve them, and their documented endpoints.
//! - [`authorize`]: the authorization code flow with PKCE (`S256`) and a random `state`, and
//!   the checks on the redirect that comes back.
//! - [`loopback`]: the listener on `127.0.0.1` that receives that redirect (RFC 8252).
//! - [`grant`]: which datasets a grant covers, from the scopes the provider granted.
//! - [`token`]: the one HTTP client for provider traffic, exchanging codes and refreshing
//!   tokens, and what each failure means for the caller.

pub mod account;
pub mod authorize;
pub mod grant;
pub mod loopback;
pub mod provider;
pub mod token;
