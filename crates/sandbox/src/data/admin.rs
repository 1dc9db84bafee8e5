//! The admin API under `BASE/_admin`: the Rust API on [`Sandbox`](crate::Sandbox), in JSON
//! over HTTP, for a demo or a test in another process.
//!
//! | request | effect |
//! |---|---|
//! | `GET /_admin/state` | the change sequence and the population |
//! | `GET /_admin/requests`, `DELETE /_admin/requests` | the request log; empty it |
//! | `POST /_admin/{provider}/faults` `[Fault, ...]` | queue faults |
//! | `POST /_admin/{provider}/{dataset}/add` | add a record; answers `{"id": ...}` |
//! | `POST /_admin/{provider}/{dataset}/change` `{"id": ...}` | change a record |
//! | `POST /_admin/{provider}/{dataset}/delete` `{"id": ...}` | delete a record |
//! | `POST /_admin/{provider}/{dataset}/invalidate` `{"after_pages": N}` (optional) | kill tokens |
//! | `GET /_admin/{provider}/{dataset}/truth` | the live records |
//! | `PUT /_admin/playlist-shape` `{"shape": "tracks" or "items"}` | Spotify's playlist shape |
//!
//! Requests to it are not written to the request log.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::{Dataset, Fault, PlaylistShape};
use crate::oauth::{Provider, Sandbox, lock};

/// The admin routes.
pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/_admin/state", get(state))
        .route("/_admin/requests", get(requests).delete(clear_requests))
        .route("/_admin/playlist-shape", put(playlist_shape))
        .route("/_admin/{provider}/faults", post(faults))
        .route("/_admin/{provider}/{dataset}/{action}", post(mutate))
        .route("/_admin/{provider}/{dataset}/truth", get(truth))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The JSON body, or `T::default()` for an empty one.
fn body<T: for<'a> Deserialize<'a> + Default>(bytes: &Bytes) -> Result<T, Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|error| refuse(StatusCode::BAD_REQUEST, &format!("bad JSON body: {error}")))
}

fn dataset(provider: &str, name: &str) -> Result<Dataset, Response> {
    Provider::from_path(provider)
        .and_then(|provider| Dataset::find(provider, name))
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, &format!("no dataset {provider}/{name}")))
}

async fn state(Shared(shared): Shared<Sandbox>) -> Response {
    let state = lock(&shared);
    axum::Json(json!({ "seq": state.data.seq, "population": state.data.population }))
        .into_response()
}

async fn requests(Shared(shared): Shared<Sandbox>) -> Response {
    axum::Json(lock(&shared).data.log.clone()).into_response()
}

async fn clear_requests(Shared(shared): Shared<Sandbox>) -> StatusCode {
    lock(&shared).data.log.clear();
    StatusCode::NO_CONTENT
}

#[derive(Default, Deserialize)]
struct Shape {
    shape: PlaylistShape,
}

async fn playlist_shape(Shared(shared): Shared<Sandbox>, bytes: Bytes) -> Response {
    match body::<Shape>(&bytes) {
        Ok(Shape { shape }) => {
            lock(&shared).data.playlist_shape = shape;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refusal,
    }
}

async fn faults(
    Shared(shared): Shared<Sandbox>,
    Path(provider): Path<String>,
    bytes: Bytes,
) -> Response {
    let Some(provider) = Provider::from_path(&provider) else {
        return refuse(StatusCode::NOT_FOUND, &format!("no provider {provider}"));
    };
    match body::<Vec<Fault>>(&bytes) {
        Ok(faults) => {
            lock(&shared).data.inject(provider, &faults);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refusal,
    }
}

#[derive(Default, Deserialize)]
struct Target {
    #[serde(default)]
    id: String,
    #[serde(default)]
    after_pages: u32,
}

async fn mutate(
    Shared(shared): Shared<Sandbox>,
    Path((provider, name, action)): Path<(String, String, String)>,
    bytes: Bytes,
) -> Response {
    let dataset = match dataset(&provider, &name) {
        Ok(dataset) => dataset,
        Err(refusal) => return refusal,
    };
    let target = match body::<Target>(&bytes) {
        Ok(target) => target,
        Err(refusal) => return refusal,
    };

    let mut state = lock(&shared);
    let result = match action.as_str() {
        "add" => {
            let account = state.provider(dataset.provider()).account.clone();
            let id = state.data.add(dataset, &account);
            return axum::Json(json!({ "id": id })).into_response();
        }
        "change" => state.data.mutate(dataset, &target.id, false),
        "delete" => state.data.mutate(dataset, &target.id, true),
        "invalidate" => {
            state.data.invalidate(dataset, target.after_pages);
            Ok(())
        }
        _ => return refuse(StatusCode::NOT_FOUND, &format!("no action {action}")),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => refuse(StatusCode::NOT_FOUND, &error.to_string()),
    }
}

async fn truth(
    Shared(shared): Shared<Sandbox>,
    Path((provider, name)): Path<(String, String)>,
) -> Response {
    let dataset = match dataset(&provider, &name) {
        Ok(dataset) => dataset,
        Err(refusal) => return refusal,
    };
    let state = lock(&shared);
    let account = state.provider(dataset.provider()).account.clone();
    axum::Json(state.data.truth(dataset, &account, &state.base_url)).into_response()
}
