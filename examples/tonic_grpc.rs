//! Rate limiting a tonic gRPC server per peer.
//!
//! The server serves the standard `grpc.health.v1.Health` service from
//! `tonic-health` (so no `.proto` file and no `protoc` are needed), on a free
//! loopback port, behind a [`FreqLimitLayer`] applied with
//! `Server::builder().layer(...)`:
//!
//! * **Key:** the peer's IP address. tonic puts a
//!   [`TcpConnectInfo`] in the extensions of every `http::Request` accepted over
//!   plain TCP (it does so *outside* the user's layers, so the limiter sees it);
//!   its `remote_addr()` is the peer. (Over TLS, look for
//!   `TlsConnectInfo<TcpConnectInfo>` instead; behind a proxy, key on a header.)
//! * **Limit:** 5 calls per second per peer, 3 of them at once.
//! * **Reject, don't wait:** `max_wait(Duration::ZERO)`, as a server usually
//!   wants: an over-limit call is refused at once and consumes nothing.
//! * **Refusals as gRPC statuses:** `.on_refusal(GrpcStatus)` turns a rejection
//!   into `RESOURCE_EXHAUSTED` with a `retry-after` metadata entry (whole
//!   seconds, rounded up), which tonic sends as the call's status.
//!
//! A health client in the same process then makes ten back-to-back `Check` calls:
//! the first three are `SERVING`, the rest `RESOURCE_EXHAUSTED`. It waits the
//! `retry-after` it was given and calls once more, successfully, then shuts the
//! server down.
//!
//! Run with `cargo run --example tonic_grpc --features tonic`; it takes about a
//! second.

use std::error::Error;
use std::net::IpAddr;
use std::time::{Duration, Instant};

// The `http` crate, as re-exported by hyper: tonic's server layers see
// `http::Request<tonic::body::Body>`.
use hyper::Request;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::grpc::GrpcStatus;
use tower_freqlimit::layer::FreqLimitLayer;

/// Five calls per second per peer, three at once.
const PER_PEER: FreqLimitParams = FreqLimitParams::per_second(5).with_burst(3);

/// The peer's IP address, from the connection info tonic attaches to each request.
fn peer_ip(req: &Request<Body>) -> Option<IpAddr> {
    let info = req.extensions().get::<TcpConnectInfo>()?;
    info.remote_addr().map(|addr| addr.ip())
}

/// A gRPC status code the way the gRPC spec spells it.
fn code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED".into(),
        Code::Internal => "INTERNAL".into(),
        Code::Unavailable => "UNAVAILABLE".into(),
        other => format!("{other:?}"),
    }
}

/// One `Check` call, printed; returns the `retry-after` seconds of a refusal.
async fn check(client: &mut HealthClient<Channel>, n: u32, start: Instant) -> Option<u64> {
    let result = client.check(HealthCheckRequest::default()).await;
    let at = start.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(response) => {
            let status = response.get_ref().status().as_str_name();
            println!("  call {n:>2}  {at:>7.1} ms  {status}");
            None
        }
        Err(status) => {
            let retry_after = status
                .metadata()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            println!(
                "  call {n:>2}  {at:>7.1} ms  {}  retry-after: {}  ({})",
                code_name(status.code()),
                retry_after.map_or_else(|| "-".to_owned(), |s| format!("{s} s")),
                status.message()
            );
            retry_after
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let layer = FreqLimitLayer::new(PER_PEER, InMemoryBackend::<IpAddr>::new())
        .key(peer_ip)
        .max_wait(Duration::ZERO)
        .on_refusal(GrpcStatus);

    // The health service reports the server itself ("") as SERVING.
    let (_reporter, health) = tonic_health::server::health_reporter();

    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    println!("gRPC health server on {addr}, limited to 5 calls/s per peer IP, burst 3\n");

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);

    let start = Instant::now();
    println!("Ten back-to-back Check calls:");
    let mut retry_after = None;
    for n in 1..=10 {
        retry_after = check(&mut client, n, start).await.or(retry_after);
    }

    let wait = retry_after.unwrap_or(1);
    println!("\nWaiting the {wait} s the server asked for, then calling again:");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    check(&mut client, 11, start).await;

    let _ = stop.send(());
    server.await??;
    Ok(())
}
