//! The OpenAPI 3.1 document of the API, served at `/openapi.json`.
//!
//! Kept as a checked-in JSON file; a test checks that every route the router serves is in it.

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");
