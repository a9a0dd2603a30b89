use std::net::SocketAddr;

use axum::{Router, routing::get};
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::key::ClientIp;
use tower_freqlimit::{FreqLimitLayer, FreqLimitParams};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let limit = FreqLimitLayer::server(
        FreqLimitParams::per_second(2).with_burst(5),
        InMemoryBackend::new(),
    )
    .key(ClientIp::peer());
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(limit);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
