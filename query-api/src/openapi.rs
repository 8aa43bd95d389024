//! The hand-written OpenAPI 3.1 document, served at `/openapi.json`.

use axum::http::header;
use axum::routing::get;

use crate::state::Routes;
use crate::store::EventStore;

/// The OpenAPI 3.1 document of every endpoint.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub const PATH: &str = "/openapi.json";

/// The route of the document.
pub fn routes<S: EventStore>() -> Routes<S> {
    Routes::new().route(
        PATH,
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
    )
}
