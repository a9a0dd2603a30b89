#![cfg(feature = "tonic")]
//! The layer in front of a real tonic server (`tonic-health`'s Health service on
//! a loopback port), called by a real tonic client: exact outcomes of
//! `.on_refusal(GrpcStatus)` over the wire.
//!
//! The limits are slow (`per_hour(60)`, one call a minute) so that real time
//! cannot refill a bucket while a test runs: after a burst of 3, every call is
//! refused until a minute has passed, and the `retry-after` each refusal carries
//! is exactly `60` (the wait is 60 s minus the few milliseconds since the first
//! call, rounded up to whole seconds).

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use hyper::Request;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower_freqlimit::FreqLimitParams;
use tower_freqlimit::backends::memory::InMemoryBackend;
use tower_freqlimit::grpc::GrpcStatus;
use tower_freqlimit::layer::{ExtractKey, FreqLimitLayer, Policy};

/// One call a minute, three at once: nothing refills during a test.
const SLOW: FreqLimitParams = FreqLimitParams::per_hour(60).with_burst(3);

/// Far more than any call takes, far less than [`SLOW`]'s one minute.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A layer keyed by a closure over the server's requests, refusing as gRPC statuses.
type GrpcLayer<K, F> = FreqLimitLayer<InMemoryBackend<K>, Policy<F>, GrpcStatus>;

/// A running health server behind `layer`, and a client connected to it.
struct Harness {
    client: HealthClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Harness {
    async fn start<K, F>(layer: GrpcLayer<K, F>) -> Self
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        F: ExtractKey<Request<Body>, K> + Clone + Send + Sync + 'static,
    {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let incoming = TcpIncoming::bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
        let addr = incoming.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        Self {
            client: HealthClient::new(channel),
            stop: Some(stop),
            server,
        }
    }

    /// A `Check` of the server's overall health, with `x-tenant` metadata if given.
    ///
    /// Fails fast instead of hanging if the layer made the call wait for a slot
    /// (a minute away with [`SLOW`]) where it should have refused it.
    async fn check(&mut self, tenant: Option<&str>) -> Result<HealthCheckResponse, Status> {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        if let Some(tenant) = tenant {
            request
                .metadata_mut()
                .insert("x-tenant", tenant.parse().expect("ASCII metadata"));
        }
        let call = self.client.check(request);
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .expect("the call neither completed nor was refused in time")
            .map(tonic::Response::into_inner)
    }

    /// The calls numbered `calls` as `tenant`: each must be SERVING.
    async fn assert_served(&mut self, tenant: Option<&str>, calls: RangeInclusive<u32>) {
        for n in calls {
            assert_serving(self.check(tenant).await, &call_name(tenant, n));
        }
    }

    /// The calls numbered `calls` as `tenant`: each must be refused (see
    /// [`assert_exhausted`]).
    async fn assert_refused(&mut self, tenant: Option<&str>, calls: RangeInclusive<u32>) {
        for n in calls {
            assert_exhausted(self.check(tenant).await, &call_name(tenant, n));
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server
            .await
            .expect("server task")
            .expect("server exits cleanly");
    }
}

/// A layer of [`SLOW`] limits keyed by `key`, reject-only.
fn reject_only<K, F>(key: F) -> GrpcLayer<K, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: ExtractKey<Request<Body>, K> + Clone + Send + Sync + 'static,
{
    FreqLimitLayer::new(SLOW, InMemoryBackend::new())
        .key(key)
        .max_wait(Duration::ZERO)
        .on_refusal(GrpcStatus)
}

fn call_name(tenant: Option<&str>, n: u32) -> String {
    match tenant {
        Some(tenant) => format!("tenant {tenant}, call {n}"),
        None => format!("call {n}"),
    }
}

fn peer_ip(req: &Request<Body>) -> Option<IpAddr> {
    let info = req.extensions().get::<TcpConnectInfo>()?;
    info.remote_addr().map(|addr| addr.ip())
}

fn tenant(req: &Request<Body>) -> Option<String> {
    let value = req.headers().get("x-tenant")?;
    value.to_str().ok().map(str::to_owned)
}

fn assert_serving(result: Result<HealthCheckResponse, Status>, what: &str) {
    match result {
        Ok(response) => assert_eq!(response.status(), ServingStatus::Serving, "{what}"),
        Err(status) => panic!("{what}: expected SERVING, got {status:?}"),
    }
}

/// Asserts `RESOURCE_EXHAUSTED` with `retry-after: 60`.
fn assert_exhausted(result: Result<HealthCheckResponse, Status>, what: &str) {
    let status = match result {
        Ok(response) => panic!("{what}: expected RESOURCE_EXHAUSTED, got {response:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    let retry_after = status
        .metadata()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no retry-after metadata in {status:?}"));
    assert_eq!(retry_after, "60", "{what}");
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded; retry after 59."),
        "{what}: {:?}",
        status.message()
    );
}

#[tokio::test]
async fn per_peer_limit_refuses_with_resource_exhausted_and_retry_after() {
    let layer = reject_only::<IpAddr, _>(peer_ip);
    let backend = layer.backend().clone();
    let mut harness = Harness::start(layer).await;

    // The key was found (a missing one would be INTERNAL): three calls of burst.
    harness.assert_served(None, 1..=3).await;
    // Then refusals, each the same: a refusal consumes nothing, so the wait
    // does not grow.
    harness.assert_refused(None, 4..=8).await;
    // One bucket: the loopback peer's.
    assert_eq!(backend.len(), 1);

    harness.shutdown().await;
}

/// `ClientIp::peer()` reads the peer from tonic's `TcpConnectInfo` (feature
/// `tonic`): no hand-written reader needed.
#[cfg(feature = "http")]
#[tokio::test]
async fn client_ip_reads_tonics_connect_info() {
    let layer = FreqLimitLayer::new(SLOW, InMemoryBackend::new())
        .key(tower_freqlimit::key::ClientIp::peer())
        .no_wait()
        .on_refusal(GrpcStatus);
    let backend = layer.backend().clone();
    let mut harness = Harness::start(layer).await;

    // A missing peer would be INTERNAL on the first call.
    harness.assert_served(None, 1..=3).await;
    harness.assert_refused(None, 4..=4).await;
    // One bucket: the loopback peer's, keyed by its address.
    assert_eq!(backend.len(), 1);
    assert!(
        backend
            .reserve_now(
                Some(&IpAddr::from(Ipv4Addr::LOCALHOST)),
                tower_freqlimit::clock::Timestamp::now(),
                &SLOW,
                tower_freqlimit::Reserve::new().no_wait(),
            )
            .is_err(),
        "the loopback peer's bucket is the one that was used"
    );
    harness.shutdown().await;
}

#[tokio::test]
async fn tenants_have_buckets_of_their_own() {
    let layer = reject_only::<String, _>(tenant);
    let backend = layer.backend().clone();
    let mut harness = Harness::start(layer).await;

    harness.assert_served(Some("a"), 1..=3).await;
    harness.assert_refused(Some("a"), 4..=4).await;

    // Same peer, another tenant: a full bucket.
    harness.assert_served(Some("b"), 1..=3).await;
    harness.assert_refused(Some("b"), 4..=4).await;
    harness.assert_refused(Some("a"), 5..=5).await;

    // No tenant: the key is missing, refused as INTERNAL (MissingKey::Refuse).
    let status = harness.check(None).await.expect_err("no tenant");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.metadata().get("retry-after").is_none());
    assert_eq!(
        status.message(),
        tower_freqlimit::KeyNotFound::UNSPECIFIED.message()
    );

    assert_eq!(backend.len(), 2);
    harness.shutdown().await;
}

#[tokio::test]
async fn waiting_layer_delays_calls_instead_of_refusing() {
    // Ten per second, no burst, wait as long as it takes: four calls in a row
    // all succeed, the fourth no earlier than 300 ms after the first.
    let layer = FreqLimitLayer::new(FreqLimitParams::per_second(10), InMemoryBackend::new())
        .key(peer_ip)
        .on_refusal(GrpcStatus);
    let mut harness = Harness::start(layer).await;

    let start = Instant::now();
    harness.assert_served(None, 1..=4).await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(299), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");

    harness.shutdown().await;
}
