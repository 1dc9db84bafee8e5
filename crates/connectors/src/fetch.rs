//! Requests to the providers' data APIs: the bearer token, the one retry after a 401, and
//! throttling, server errors and timeouts retried a bounded number of times.
//!
//! [`TokenSource`] is what the daemon lends a connector: the shared HTTP client and access
//! tokens. [`RetryPolicy`] bounds the retries. Every failure ends as a [`FetchError`] whose
//! variant says what the caller does next: start a full round, wait, or give up.
//!
//! Throttling follows the providers' documents: 429 everywhere, and Google's 403 with the
//! reasons `rateLimitExceeded` and `userRateLimitExceeded`. A `Retry-After` in seconds (Graph
//! sends fractions such as `2.128`) is waited out as sent, never shortened; one longer than
//! [`RetryPolicy::max_wait`] is handed back in [`FetchError::Throttled`] instead. Without
//! one, the wait doubles from [`RetryPolicy::backoff_base`] with jitter.
//!
//! Nothing here writes a URL into a log line or an error: queries carry sync tokens, and Graph
//! and Spotify links carry them in the path's query too. Requests are named by a constant
//! label (dataset and endpoint template) instead.

use std::time::Duration;

use datapunk_vault::secret::SecretString;
use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use url::Url;

/// Where a connector gets access tokens and its HTTP client: the daemon's token keeper.
pub trait TokenSource: Send + Sync {
    /// The client all provider traffic goes through (`datapunk_oauth::token::TokenClient`).
    fn http(&self) -> &reqwest::Client;

    /// A current access token.
    fn access(&self) -> impl Future<Output = Result<SecretString, FetchError>> + Send;

    /// A new access token after the API refused `rejected` with 401.
    fn after_unauthorized(
        &self,
        rejected: &SecretString,
    ) -> impl Future<Output = Result<SecretString, FetchError>> + Send;
}

/// Why a request did not produce a page. Messages name the dataset, the request (never with
/// its query, which may hold a sync token) and what was wrong, never a token or a field value.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider dropped the sync token (Calendar 410 `fullSyncRequired`, People
    /// `EXPIRED_SYNC_TOKEN`, Graph 410 `SyncStateNotFound`), a Spotify list changed while a
    /// round read it, or the stored cursor cannot be used any more (it points away from the
    /// configured API base): start a full round.
    #[error("the provider needs a full sync: {reason}")]
    ResyncRequired {
        /// The provider's reason code.
        reason: String,
    },
    /// Still throttled (429, Google's 403 rate-limit reasons) after the retries allowed, or
    /// asked to wait longer than [`RetryPolicy::max_wait`].
    #[error("throttled by the provider")]
    Throttled {
        /// The provider's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Server errors or timeouts after the retries allowed.
    #[error("the provider is unavailable: {reason}")]
    Unavailable {
        /// What happened last.
        reason: String,
    },
    /// The answer could not be read: truncated or malformed JSON, a missing or mistyped field,
    /// an unknown value. Nothing from the page may be stored.
    #[error("unreadable answer from {what}: {reason}")]
    Malformed {
        /// Which request (dataset and endpoint, no query).
        what: String,
        /// What was wrong and where (a JSON path), without values.
        reason: String,
    },
    /// A refusal that retrying will not change (400, 403 other than rate limits, 404, a
    /// second 401 right after a refresh).
    #[error("{what} refused the request ({status}): {reason}")]
    Refused {
        /// Which request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The provider's error code.
        reason: String,
    },
    /// No access token: the token keeper's failure, as it described it.
    #[error("{0}")]
    Token(Box<dyn std::error::Error + Send + Sync>),
}

/// How often and how long a request is retried when the provider throttles, fails or does not
/// answer in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least one is always made).
    pub attempts: u32,
    /// The first wait when the provider names none; it doubles with each retry.
    pub backoff_base: Duration,
    /// The longest wait the doubling reaches.
    pub backoff_max: Duration,
    /// The longest `Retry-After` waited out inside a fetch; a longer one ends the fetch with
    /// [`FetchError::Throttled`] carrying it, for the daemon to schedule.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// Four attempts, waits of 1 s, 2 s and 4 s (with jitter) when the provider names none,
    /// and a provider's `Retry-After` of up to two minutes waited out.
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(32),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// The most of a successful answer read into memory: far above a 2500-event Calendar page.
const MAX_BODY: usize = 64 << 20;

/// The most of an error answer read: only its codes are used.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Google's 403 reasons that mean "slow down" rather than "forbidden".
const RATE_LIMIT_REASONS: [&str; 2] = ["rateLimitExceeded", "userRateLimitExceeded"];

/// One GET request of a connector.
pub(crate) struct Get<'a> {
    /// The constant label of the request: dataset and endpoint template, no query.
    pub(crate) what: &'a str,
    /// The URL, query included.
    pub(crate) url: Url,
    /// A `Prefer` header (Graph's page size).
    pub(crate) prefer: Option<String>,
}

/// What a provider's error answer said, reduced to its status and codes.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// HTTP status.
    pub(crate) status: u16,
    /// The machine-readable codes of the answer (Google's `errors[].reason`, `details[].reason`
    /// and `status`, Graph's `code`, Spotify's `reason`), in that order.
    pub(crate) codes: Vec<String>,
}

impl Refusal {
    /// Whether one of the codes is `code`, compared without case (Graph spells the same code
    /// `syncStateNotFound` in its documents and `SyncStateNotFound` on the wire).
    pub(crate) fn has_code(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c.eq_ignore_ascii_case(code))
    }
}

/// What one attempt came to.
enum Attempt {
    Answer(Vec<u8>),
    Unauthorized(Refusal),
    Retry { error: FetchError, retry_after: Option<Duration> },
    Fail(FetchError),
}

/// Sends `request` with the retries `policy` allows and returns the body of its 2xx answer.
/// `resync` says which refusals mean the sync token is gone, returning the reason to report.
pub(crate) async fn get<T: TokenSource>(
    tokens: &T,
    policy: &RetryPolicy,
    request: &Get<'_>,
    resync: fn(&Refusal) -> Option<String>,
) -> Result<Vec<u8>, FetchError> {
    let mut token = tokens.access().await?;
    let mut refreshed = false;
    let mut attempt = 1;

    loop {
        let (error, retry_after) = match send(tokens.http(), &token, request, resync).await {
            Attempt::Answer(body) => return Ok(replace_lone_surrogates(body, request.what)),
            Attempt::Fail(error) => return Err(error),
            Attempt::Unauthorized(refusal) if refreshed => {
                return Err(refused(request.what, &refusal));
            }
            Attempt::Unauthorized(_) => {
                tracing::debug!(what = request.what, "access token refused; refreshing once");
                token = tokens.after_unauthorized(&token).await?;
                refreshed = true;
                continue;
            }
            Attempt::Retry { error, retry_after } => (error, retry_after),
        };

        if attempt >= policy.attempts.max(1) {
            return Err(error);
        }
        let wait = match retry_after {
            Some(wait) if wait > policy.max_wait => {
                return Err(FetchError::Throttled { retry_after: Some(wait) });
            }
            Some(wait) => wait,
            None => backoff(policy, attempt),
        };
        tracing::debug!(
            what = request.what,
            attempt,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            reason = %error,
            "retrying"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn send(
    http: &reqwest::Client,
    token: &SecretString,
    request: &Get<'_>,
    resync: fn(&Refusal) -> Option<String>,
) -> Attempt {
    let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())) else {
        return Attempt::Fail(FetchError::Token("the access token is not a valid header".into()));
    };
    bearer.set_sensitive(true);
    let mut builder = http.get(request.url.clone()).header(AUTHORIZATION, bearer);
    if let Some(prefer) = &request.prefer {
        builder = builder.header("Prefer", prefer);
    }

    let response = match builder.send().await {
        Ok(response) => response,
        Err(error) => return Attempt::Retry { error: transport(&error), retry_after: None },
    };
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(parse_retry_after);

    if status.is_success() {
        return match read_body(response, MAX_BODY).await {
            Ok(Some(body)) => Attempt::Answer(body),
            Ok(None) => Attempt::Fail(malformed(request.what, "the answer is too large")),
            Err(error) => Attempt::Retry { error: transport(&error), retry_after: None },
        };
    }
    let body = read_body(response, MAX_ERROR_BODY).await.ok().flatten().unwrap_or_default();
    let refusal = Refusal { status: status.as_u16(), codes: error_codes(&body) };

    if status == StatusCode::UNAUTHORIZED {
        Attempt::Unauthorized(refusal)
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && RATE_LIMIT_REASONS.iter().any(|reason| refusal.has_code(reason)))
    {
        Attempt::Retry { error: FetchError::Throttled { retry_after }, retry_after }
    } else if status.is_server_error() {
        let reason = format!("HTTP {}", status.as_u16());
        Attempt::Retry { error: FetchError::Unavailable { reason }, retry_after }
    } else if let Some(reason) = resync(&refusal) {
        Attempt::Fail(FetchError::ResyncRequired { reason })
    } else {
        Attempt::Fail(refused(request.what, &refusal))
    }
}

/// Reads at most `limit` bytes of the body; `None` when there are more.
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A transport failure, described without the URL that reqwest's own message carries.
fn transport(error: &reqwest::Error) -> FetchError {
    let reason = if error.is_timeout() {
        "the request timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    FetchError::Unavailable { reason: reason.to_owned() }
}

fn refused(what: &str, refusal: &Refusal) -> FetchError {
    FetchError::Refused {
        what: what.to_owned(),
        status: refusal.status,
        reason: refusal.codes.first().cloned().unwrap_or_else(|| "no error code".to_owned()),
    }
}

/// `Retry-After` in seconds, whole or fractional. The HTTP-date form is not used by these
/// providers and falls back to the backoff.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    (0.0..1e9).contains(&seconds).then(|| Duration::from_secs_f64(seconds))
}

/// The wait before retry number `attempt` when the provider named none: doubling from the base,
/// capped, then drawn from the upper half so that clients throttled together spread out.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let doubled = policy.backoff_base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let ceiling = doubled.min(policy.backoff_max);
    let floor = ceiling / 2;
    if ceiling <= floor {
        return ceiling;
    }
    rand::thread_rng().gen_range(floor..=ceiling)
}

/// The codes of an error answer in the shapes the providers use. Codes that do not look like
/// codes (too long, or with characters other than letters, digits, `_`, `-` and `.`) are left
/// out: they could be echoed input.
fn error_codes(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    let error = &value["error"];
    for list in ["errors", "details"] {
        if let Some(items) = error[list].as_array() {
            codes.extend(items.iter().filter_map(|item| item["reason"].as_str()));
        }
    }
    for key in ["code", "reason", "status"] {
        codes.extend(error[key].as_str());
    }
    // OAuth-style answers: `{"error": "invalid_token", ...}`.
    codes.extend(error.as_str());

    codes
        .into_iter()
        .filter(|code| {
            !code.is_empty()
                && code.len() <= 64
                && code.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

/// A [`FetchError::Malformed`] for request `what`.
pub(crate) fn malformed(what: &str, reason: impl Into<String>) -> FetchError {
    FetchError::Malformed { what: what.to_owned(), reason: reason.into() }
}

/// `body` with every `\uXXXX` escape of a lone UTF-16 surrogate replaced by `\uFFFD`, the
/// replacement character. A provider now and then cuts a string between the halves of a pair;
/// serde and PostgreSQL's `jsonb` both refuse the half, and the page with it would be refused
/// at every sync. Anything else, invalid JSON included, is left for the parser to judge.
fn replace_lone_surrogates(mut body: Vec<u8>, what: &str) -> Vec<u8> {
    let mut replaced = 0_usize;
    let mut at = 0;
    while let Some(found) = body.get(at..).and_then(|rest| rest.iter().position(|&b| b == b'\\')) {
        at += found;
        let step = match escaped_unit(&body, at) {
            Some(0xD800..=0xDBFF)
                if matches!(escaped_unit(&body, at + 6), Some(0xDC00..=0xDFFF)) =>
            {
                12
            }
            Some(0xD800..=0xDFFF) => {
                body[at + 2..at + 6].copy_from_slice(b"FFFD");
                replaced += 1;
                6
            }
            Some(_) => 6,
            // `\\`, `\"` and the like: the escaped character is never the start of another.
            None => 2,
        };
        at += step;
    }
    if replaced > 0 {
        tracing::debug!(what, replaced, "lone UTF-16 surrogates replaced with U+FFFD");
    }
    body
}

/// The code unit of a `\uXXXX` escape starting at `at`.
fn escaped_unit(body: &[u8], at: usize) -> Option<u16> {
    match body.get(at..at + 6)? {
        [b'\\', b'u', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit) => {
            u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        }
        _ => None,
    }
}

/// Parses `json` as `T`, reporting a failure with its JSON path (after `prefix`) and without
/// the value serde would quote.
pub(crate) fn parse<T: DeserializeOwned>(
    what: &str,
    prefix: &str,
    json: &[u8],
) -> Result<T, FetchError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        malformed(what, describe(prefix, &error.path().to_string(), error.inner()))
    })?;
    deserializer.end().map_err(|error| malformed(what, describe(prefix, ".", &error)))?;
    Ok(value)
}

fn describe(prefix: &str, path: &str, inner: &serde_json::Error) -> String {
    let place = match (prefix, path) {
        ("", ".") => "the top level".to_owned(),
        (prefix, ".") => prefix.to_owned(),
        ("", path) => path.to_owned(),
        (prefix, path) if path.starts_with('[') => format!("{prefix}{path}"),
        (prefix, path) => format!("{prefix}.{path}"),
    };
    let what = match inner.classify() {
        serde_json::error::Category::Eof => "truncated JSON".to_owned(),
        serde_json::error::Category::Syntax => {
            format!("invalid JSON at line {} column {}", inner.line(), inner.column())
        }
        serde_json::error::Category::Io => "unreadable JSON".to_owned(),
        serde_json::error::Category::Data => {
            // Only the missing-field message is free of values: it names our own field.
            let message = inner.to_string();
            match message.strip_prefix("missing field `") {
                Some(rest) => match rest.split_once('`') {
                    Some((field, _)) => format!("missing field `{field}`"),
                    None => "missing field".to_owned(),
                },
                None => "unexpected type or value".to_owned(),
            }
        }
    };
    format!("{what} at {place}")
}

/// Whether `link` may be followed with the bearer token: the same scheme, host and port as
/// `base`, and below its path.
pub(crate) fn within(base: &Url, link: &Url) -> bool {
    let prefix = base.path().trim_end_matches('/');
    base.origin() == link.origin()
        && link
            .path()
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `base` with `path` appended to its path (`base` may have a path of its own, as Graph's
/// `/v1.0` and Spotify's `/v1`).
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay() {
        let body = br#"{"a": "cut \ud83d", "b": "\ud83d\ude00", "c": "\udE00 x", "d": "\\ud800",
            "e": "\u00e9\uD800\u0041"}"#;
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_err(), "a lone half");

        let fixed = replace_lone_surrogates(body.to_vec(), "test");
        let expected =
            br#"{"a": "cut \uFFFD", "b": "\ud83d\ude00", "c": "\uFFFD x", "d": "\\ud800",
            "e": "\u00e9\uFFFD\u0041"}"#;
        assert_eq!(String::from_utf8_lossy(&fixed), String::from_utf8_lossy(expected));
        let value: serde_json::Value = serde_json::from_slice(&fixed).expect("it parses");
        assert_eq!(value["a"], "cut \u{FFFD}");
        assert_eq!(value["b"], "\u{1F600}");
        assert_eq!(value["d"], "\\ud800");
        assert_eq!(value["e"], "\u{e9}\u{FFFD}A");

        let short = br#"["\u12", "\ud8"]"#;
        assert_eq!(replace_lone_surrogates(short.to_vec(), "test"), short.to_vec());
    }

    #[derive(Debug, serde::Deserialize)]
    struct Item {
        #[expect(dead_code, reason = "read only to be checked")]
        id: String,
        #[expect(dead_code, reason = "read only to be checked")]
        status: Status,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Status {
        Confirmed,
    }

    fn reason(json: &str) -> String {
        match parse::<Vec<Item>>("calendar GET /x", "items", json.as_bytes()) {
            Err(FetchError::Malformed { reason, .. }) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn parse_errors_name_the_path_and_never_the_value() {
        let unknown = reason(r#"[{"id": "a", "status": "secret-value"}]"#);
        assert_eq!(unknown, "unexpected type or value at items[0].status");
        assert!(!unknown.contains("secret"));

        let mistyped = reason(r#"[{"id": 12345, "status": "confirmed"}]"#);
        assert!(!mistyped.contains("12345"), "{mistyped}");

        assert_eq!(reason(r#"[{"status": "confirmed"}]"#), "missing field `id` at items[0]");
        assert!(reason(r#"[{"id": "a", "sta"#).starts_with("truncated JSON"));
        assert!(reason(r#"[{"id": "a", "status": "confirmed"}] x"#).starts_with("invalid JSON"));
    }

    #[test]
    fn retry_after_takes_whole_and_fractional_seconds() {
        let parsed = |v: &'static str| parse_retry_after(&HeaderValue::from_static(v));
        assert_eq!(parsed("10"), Some(Duration::from_secs(10)));
        assert_eq!(parsed("2.128"), Some(Duration::from_millis(2128)));
        assert_eq!(parsed("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parsed("-1"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let first = backoff(&policy, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&policy, 3);
            assert!(third >= Duration::from_millis(150) && third <= Duration::from_millis(300));
        }
    }

    #[test]
    fn error_codes_come_from_every_provider_shape() {
        let google = br#"{"error":{"errors":[{"reason":"fullSyncRequired"}],"code":410}}"#;
        assert_eq!(error_codes(google), ["fullSyncRequired"]);
        let people = br#"{"error":{"status":"FAILED_PRECONDITION",
            "details":[{"reason":"EXPIRED_SYNC_TOKEN"}]}}"#;
        assert_eq!(error_codes(people), ["EXPIRED_SYNC_TOKEN", "FAILED_PRECONDITION"]);
        let graph = br#"{"error":{"code":"SyncStateNotFound","message":"x"}}"#;
        assert_eq!(error_codes(graph), ["SyncStateNotFound"]);
        let echoed = br#"{"error":{"code":"token abc/def=="}}"#;
        assert!(error_codes(echoed).is_empty());
    }

    #[test]
    fn links_are_followed_only_below_the_api_base() {
        let base = Url::parse("https://graph.example/v1.0").expect("a URL");
        let ok =
            Url::parse("https://graph.example/v1.0/me/contacts/delta?$skiptoken=x").expect("a URL");
        assert!(within(&base, &ok));
        for bad in [
            "https://evil.example/v1.0/me/contacts/delta",
            "http://graph.example/v1.0/me",
            "https://graph.example:444/v1.0/me",
            "https://graph.example/beta/me",
            "https://graph.example/v1.0x/me",
        ] {
            assert!(!within(&base, &Url::parse(bad).expect("a URL")), "{bad}");
        }
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_segments() {
        let base = Url::parse("https://api.example/v1/").expect("a URL");
        let url = endpoint(&base, &["calendars", "a#b@c", "events"]);
        assert_eq!(url.as_str(), "https://api.example/v1/calendars/a%23b@c/events");
    }
}
