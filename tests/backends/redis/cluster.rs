//! The Redis backend on a three-node Redis Cluster started by the test on
//! loopback ports (`redis-server --cluster-enabled yes`, `redis-cli --cluster
//! create`): keys spread over the nodes and every limit holds, a slot
//! migrated under the backend's feet (`ASK`, then `MOVED`) keeps its debts, and
//! compound limits need a prefix with a hash tag (then work, on one node).

use std::time::Duration;

use tower_freqlimit::backends::FreqLimitBackend;
use tower_freqlimit::backends::compound::{CompoundBackend, Part};
use tower_freqlimit::backends::redis::RedisBackend;
use tower_freqlimit::clock::Timestamp;
use tower_freqlimit::{BackendErrorKind, CompoundLimit, FreqLimitError, FreqLimitParams, Reserve};

use crate::support::redis_server::{RedisCluster, RedisServer};

/// Two per hour, both at once: nothing refills while the test runs.
const TWICE: FreqLimitParams = FreqLimitParams::per_hour(2).with_burst(2);

async fn cluster_backend(cluster: &RedisCluster, prefix: &str) -> RedisBackend<String> {
    RedisBackend::<String>::builder()
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
        .without_negative_cache()
        .connect_cluster(cluster.urls())
        .await
        .expect("connect to the test cluster")
}

async fn try_once(b: &RedisBackend<String>, key: Option<&str>) -> Result<(), FreqLimitError> {
    b.reserve(key, Timestamp::now(), &TWICE, Reserve::new().no_wait())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_the_nodes_and_every_limit_holds() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let b = cluster_backend(&cluster, "spread").await;
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    for round in 0..2 {
        for key in &keys {
            try_once(&b, Some(key))
                .await
                .unwrap_or_else(|e| panic!("round {round}, {key}: {e}"));
        }
        try_once(&b, None).await.unwrap();
    }
    for key in &keys {
        assert!(
            matches!(
                try_once(&b, Some(key)).await,
                Err(FreqLimitError::Rejected(_))
            ),
            "{key} passed a third time"
        );
    }
    assert!(matches!(
        try_once(&b, None).await,
        Err(FreqLimitError::Rejected(_))
    ));
    // Every node holds some of the keys; together exactly all of them.
    let sizes: Vec<i64> = cluster.nodes.iter().map(|n| n.int(&["DBSIZE"])).collect();
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<i64>(), 301, "{sizes:?}");
    assert_eq!(b.stats().failures, 0);

    b.clear().await.unwrap();
    let sizes: Vec<i64> = cluster.nodes.iter().map(|n| n.int(&["DBSIZE"])).collect();
    assert_eq!(sizes, [0, 0, 0]);
    try_once(&b, Some("user:1")).await.unwrap();
}

/// The node holding the keys of `slot`, and its id.
fn owner(cluster: &RedisCluster, slot: i64) -> (&RedisServer, String) {
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.int(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) > 0)
        .expect("some node holds the key");
    (node, node.cmd(&["CLUSTER", "MYID"]))
}

/// Asserts that key `k`, which took both its slots, is still refused, and
/// that the backend followed a `redirection` (`ASK` or `MOVED`) to learn it.
async fn assert_debt_kept_through(b: &RedisBackend<String>, redirection: &str) {
    let retries = b.stats().retries;
    assert!(
        matches!(
            try_once(b, Some("k")).await,
            Err(FreqLimitError::Rejected(_))
        ),
        "the debt was lost or the {redirection} not followed"
    );
    assert!(b.stats().retries > retries, "no {redirection} was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_slot_keeps_its_debts_through_ask_and_moved() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let b = cluster_backend(&cluster, "moving").await;
    try_once(&b, Some("k")).await.unwrap();
    try_once(&b, Some("k")).await.unwrap();
    let name = String::from_utf8(b.redis_key(Some("k"))).unwrap();
    let any = &cluster.nodes[0];
    let slot = any.int(&["CLUSTER", "KEYSLOT", &name]);
    let (source, source_id) = owner(&cluster, slot);
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.port != source.port)
        .unwrap();
    let target_id = target.cmd(&["CLUSTER", "MYID"]);
    let slot_s = slot.to_string();

    // Migrate the slot, moving the key: the source now answers ASK for it.
    assert_eq!(
        target.cmd(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &source_id]),
        "+OK"
    );
    assert_eq!(
        source.cmd(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &target_id]),
        "+OK"
    );
    let port = target.port.to_string();
    assert_eq!(
        source.cmd(&[
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "KEYS",
            &name
        ]),
        "+OK"
    );
    assert_debt_kept_through(&b, "ASK").await;

    // Finish the migration: the source now answers MOVED.
    for node in &cluster.nodes {
        assert_eq!(
            node.cmd(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &target_id]),
            "+OK"
        );
    }
    assert_debt_kept_through(&b, "MOVED").await;
    assert_eq!(target.int(&["EXISTS", &name]), 1);
    assert_eq!(source.int(&["CLUSTER", "COUNTKEYSINSLOT", &slot_s]), 0);
    assert_eq!(b.stats().failures, 0);
}

/// Script calls the nodes ran, all together.
fn script_calls(cluster: &RedisCluster) -> u64 {
    cluster.nodes.iter().map(RedisServer::script_calls).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compound_needs_a_prefix_with_a_hash_tag_on_a_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let untagged = cluster_backend(&cluster, "untagged").await;
    // Refused when the compound is built, saying what to set.
    let err = CompoundLimit::try_new(untagged.clone()).unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Other);
    let message = err.to_string();
    assert!(
        message.contains("`untagged` has no hash tag") && message.contains(".prefix(\"{myapp}"),
        "{message}"
    );
    // Asked directly, with keys in different slots: refused, nothing sent.
    let (a, b) = ("a".to_owned(), "b".to_owned());
    let names = [untagged.redis_key(Some("a")), untagged.redis_key(Some("b"))];
    let slot = |name: &[u8]| {
        cluster.nodes[0].int(&["CLUSTER", "KEYSLOT", std::str::from_utf8(name).unwrap()])
    };
    assert_ne!(slot(&names[0]), slot(&names[1]));
    let calls = script_calls(&cluster);
    let parts = [Part::new(Some(&a), &TWICE), Part::new(Some(&b), &TWICE)];
    match untagged
        .reserve_compound(&parts, Timestamp::now(), Reserve::new())
        .await
    {
        Err(FreqLimitError::Backend(e)) => {
            assert_eq!(e.kind(), BackendErrorKind::Other);
            assert!(e.to_string().contains("different slots"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(script_calls(&cluster), calls);
    assert_eq!(untagged.stats().script_calls, 0);
    assert_eq!(untagged.stats().failures, 0);
    // Single limits on it are fine, spread over the nodes as before.
    try_once(&untagged, Some("a")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compound_decides_on_a_cluster_with_a_hash_tag_in_the_prefix() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let tagged = cluster_backend(&cluster, "{bot}:limits").await;
    let limits = CompoundLimit::new(tagged.clone())
        .limit("per-chat", TWICE)
        .limit("global", FreqLimitParams::per_hour(3).with_burst(3));
    let (a, b) = ("a".to_owned(), "b".to_owned());
    limits.try_acquire(&[Some(&a), None]).await.unwrap();
    limits.try_acquire(&[Some(&a), None]).await.unwrap();
    match limits.try_acquire(&[Some(&a), None]).await {
        Err(FreqLimitError::Rejected(r)) => assert_eq!(r.limit(), 0),
        other => panic!("{other:?}"),
    }
    limits.try_acquire(&[Some(&b), None]).await.unwrap();
    match limits.try_acquire(&[Some(&b), None]).await {
        Err(FreqLimitError::Rejected(r)) => assert_eq!(r.limit(), 1),
        other => panic!("{other:?}"),
    }
    // b took one slot of its two: the refusal took nothing.
    let status = limits.status(&[Some(&b), None]).await.unwrap();
    assert_eq!(status.parts()[0].remaining(), 1);
    // Every key on one node, in one slot.
    let sizes: Vec<i64> = cluster.nodes.iter().map(|n| n.int(&["DBSIZE"])).collect();
    assert_eq!(sizes.iter().sum::<i64>(), 3, "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&n| n > 0).count(), 1, "{sizes:?}");
    assert_eq!(tagged.stats().failures, 0);
}
