//! The Tower layer (`src/layer`) and what it answers with (`src/http.rs`,
//! `src/grpc.rs`, `src/metrics.rs`): the service contract on mocks, a real
//! axum application, a real tonic server, metrics, and the README's recipe.

#[path = "../support/mod.rs"]
mod support;

mod abandoned;
mod attacks;
mod compound;
mod compound_http;
mod grpc;
mod http_axum;
mod metrics;
mod readme_recipe;
mod service;
