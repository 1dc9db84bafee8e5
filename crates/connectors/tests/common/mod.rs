//! A stand-in provider for the connectors' HTTP tests: a local server that answers each request
//! with the next scripted reply and records what it was asked, and a token source that counts
//! refreshes.

#![allow(dead_code, reason = "each test file uses part of the harness")]
#![allow(unreachable_pub, reason = "a test harness module")]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use datapunk_connectors::{Connector, FetchError, Options, RetryPolicy, TokenSource};
use datapunk_oauth::provider::Provider;
use datapunk_vault::secret::SecretString;

/// One scripted answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Self {
        Self { status: 200, headers: Vec::new(), body: body.into() }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the server was asked.
#[derive(Clone, Debug)]
pub struct Asked {
    /// Path and query.
    pub uri: String,
    pub authorization: String,
    pub prefer: Option<String>,
}

impl Asked {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The decoded query parameters.
    pub fn query(&self) -> Vec<(String, String)> {
        let url = url::Url::parse(&format!("http://x{}", self.uri)).expect("a path and query");
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    asked: Vec<Asked>,
}

/// The stand-in provider.
pub struct Stand {
    pub base: String,
    script: Arc<Mutex<Script>>,
}

impl Stand {
    pub async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = Arc::clone(&script);
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let script = Arc::clone(&shared);
            async move { answer(&script, request.uri().to_string(), request.headers()) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        let base = format!("http://{}", listener.local_addr().expect("the bound address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { base, script }
    }

    pub fn reply(&self, reply: Reply) {
        self.script.lock().expect("the script lock").replies.push_back(reply);
    }

    pub fn asked(&self) -> Vec<Asked> {
        self.script.lock().expect("the script lock").asked.clone()
    }
}

fn answer(script: &Mutex<Script>, uri: String, headers: &HeaderMap) -> Response<Body> {
    let header =
        |name: &str| headers.get(name).map(|v| v.to_str().expect("a text header").to_owned());
    let mut script = script.lock().expect("the script lock");
    script.asked.push(Asked {
        uri,
        authorization: header("authorization").unwrap_or_default(),
        prefer: header("prefer"),
    });
    let reply = script
        .replies
        .pop_front()
        .unwrap_or_else(|| Reply::status(599, r#"{"error": "no reply scripted"}"#));
    let mut response = Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("a status"))
        .header("content-type", "application/json");
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(reply.body)).expect("a response")
}

/// Tokens `token-1`, then `token-2` and so on after each 401.
pub struct Tokens {
    http: reqwest::Client,
    refreshes: AtomicUsize,
}

impl Tokens {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        Self { http, refreshes: AtomicUsize::new(0) }
    }

    pub fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

impl TokenSource for Tokens {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn access(&self) -> Result<SecretString, FetchError> {
        Ok(SecretString::new(format!("token-{}", self.refreshes() + 1)))
    }

    async fn after_unauthorized(&self, _: &SecretString) -> Result<SecretString, FetchError> {
        let count = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::new(format!("token-{}", count + 1)))
    }
}

/// Options with short backoff, as tests wait for real.
pub fn quick() -> Options {
    Options {
        retry: RetryPolicy {
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..Options::default()
    }
}

/// The connector for `provider`'s `dataset`, reading from `server`.
pub fn connector(
    provider: Provider,
    dataset: &str,
    server: &Stand,
    options: &Options,
) -> Connector {
    let mut endpoints = provider.default_endpoints();
    endpoints.api_base = match provider {
        Provider::Google => server.base.clone(),
        Provider::Microsoft => format!("{}/v1.0", server.base),
        Provider::Spotify => format!("{}/v1", server.base),
    };
    endpoints.people_api_base = Some(server.base.clone());
    Connector::new(provider, dataset, &endpoints, options).expect("a connector")
}
