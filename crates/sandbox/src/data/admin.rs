//! The admin API.
use crate::oauth::Sandbox;
use axum::Router;
pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
}
