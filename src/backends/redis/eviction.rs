//! The server's eviction policy, checked when the backend connects.
//!
//! A key's value is its debt: a server that evicts keys under memory pressure
//! forgets debts, and the keys it drops are admitted again at once (measured:
//! with `allkeys-lru` and a full `maxmemory`, 46–50 of 50 throttled keys lost
//! their debt and let 230–250 calls through that should have been refused).
//! Every key the backend writes has a TTL, so the `volatile-*` policies evict
//! them as readily as the `allkeys-*` ones: only `noeviction`, or no
//! `maxmemory` at all, keeps every debt (a full server then refuses writes,
//! which the backend reports as [`Full`](crate::BackendErrorKind::Full)).

use redis::Value;

use super::conn::Conn;
use crate::error::{BackendError, BackendErrorKind};

/// What a server's memory settings mean for the backend's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Eviction {
    /// No `maxmemory`, or `noeviction`: keys are never evicted.
    Never,
    /// Keys can be evicted under this policy.
    Possible { policy: String, maxmemory: u64 },
    /// The server would not say (`CONFIG` denied or renamed, an odd reply).
    Unknown(String),
}

/// Reads the eviction settings of each primary the connection reaches.
pub(super) async fn check(conn: &mut Conn) -> Vec<Eviction> {
    let targets = match conn.scan_targets().await {
        Ok(targets) => targets,
        Err(err) => return vec![Eviction::Unknown(err.to_string())],
    };
    let mut found = Vec::with_capacity(targets.len());
    for node in &targets {
        // One pattern, not two names: `CONFIG GET` takes a single parameter
        // before Redis 7.
        let cmd = redis::cmd("CONFIG").arg("GET").arg("maxmemory*").clone();
        found.push(match conn.on_node(node.as_ref(), &cmd).await {
            Ok(reply) => classify(&reply),
            Err(err) => Eviction::Unknown(err.to_string()),
        });
    }
    found
}

/// The eviction a `CONFIG GET maxmemory*` reply describes (a flat array on
/// RESP2, a map on RESP3).
pub(super) fn classify(reply: &Value) -> Eviction {
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(flat) => flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        other => return Eviction::Unknown(format!("CONFIG GET replied {other:?}")),
    };
    let text = |v: &Value| match v {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    let mut policy = None;
    let mut maxmemory = None;
    for (key, value) in pairs {
        match text(key).as_deref() {
            Some("maxmemory-policy") => policy = text(value),
            Some("maxmemory") => maxmemory = text(value).and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    match (policy, maxmemory) {
        (_, Some(0)) => Eviction::Never,
        (Some(policy), _) if policy == "noeviction" => Eviction::Never,
        (Some(policy), Some(maxmemory)) => Eviction::Possible { policy, maxmemory },
        _ => Eviction::Unknown(format!("no maxmemory settings in {reply:?}")),
    }
}

/// Says what `found` means: a warning for each server that can evict the
/// backend's keys (and, when `refuse`, the error that stops the connection),
/// a debug event for each that would not say.
pub(super) fn judge(found: &[Eviction], refuse: bool) -> Result<(), BackendError> {
    for eviction in found {
        match eviction {
            Eviction::Never => {}
            Eviction::Unknown(why) => tracing::debug!(
                target: "tower_freqlimit::redis",
                why = %why,
                "could not read Redis's eviction policy; keys holding debts may be evicted"
            ),
            Eviction::Possible { policy, maxmemory } => {
                let message = format!(
                    "Redis evicts keys under memory pressure (maxmemory-policy {policy}, \
                     maxmemory {maxmemory} bytes): an evicted key forgets its debt and is \
                     admitted again at once; set maxmemory-policy noeviction (or no maxmemory) \
                     for the rate limiter's server"
                );
                if refuse {
                    return Err(BackendError::new(BackendErrorKind::Other, message));
                }
                tracing::warn!(target: "tower_freqlimit::redis", "{message}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_of_either_protocol_are_read() {
        let resp2 = Value::Array(vec![
            bulk("maxmemory"),
            bulk("1048576"),
            bulk("maxmemory-policy"),
            bulk("allkeys-lru"),
            bulk("maxmemory-samples"),
            bulk("5"),
        ]);
        let possible = Eviction::Possible {
            policy: "allkeys-lru".into(),
            maxmemory: 1_048_576,
        };
        assert_eq!(classify(&resp2), possible);
        let resp3 = Value::Map(vec![
            (bulk("maxmemory-policy"), bulk("volatile-ttl")),
            (bulk("maxmemory"), bulk("5")),
        ]);
        assert!(
            matches!(classify(&resp3), Eviction::Possible { policy, .. } if policy == "volatile-ttl")
        );
        // No limit, or no eviction: never.
        let unlimited = Value::Map(vec![
            (bulk("maxmemory-policy"), bulk("allkeys-lru")),
            (bulk("maxmemory"), bulk("0")),
        ]);
        assert_eq!(classify(&unlimited), Eviction::Never);
        let noeviction = Value::Array(vec![
            bulk("maxmemory"),
            bulk("100"),
            bulk("maxmemory-policy"),
            bulk("noeviction"),
        ]);
        assert_eq!(classify(&noeviction), Eviction::Never);
        // Other string and number types (a proxy's rewriting) read alike.
        let typed = Value::Map(vec![
            (Value::SimpleString("maxmemory".into()), Value::Int(64)),
            (
                Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: "maxmemory-policy".into(),
                },
                Value::SimpleString("allkeys-random".into()),
            ),
        ]);
        assert_eq!(
            classify(&typed),
            Eviction::Possible {
                policy: "allkeys-random".into(),
                maxmemory: 64
            }
        );
        assert!(matches!(classify(&Value::Nil), Eviction::Unknown(_)));
        assert!(matches!(
            classify(&Value::Array(vec![])),
            Eviction::Unknown(_)
        ));
    }

    #[test]
    fn only_a_possible_eviction_refuses() {
        let possible = Eviction::Possible {
            policy: "allkeys-lru".into(),
            maxmemory: 1,
        };
        let err = judge(std::slice::from_ref(&possible), true).unwrap_err();
        assert!(err.to_string().contains("allkeys-lru"), "{err}");
        assert!(judge(&[possible], false).is_ok());
        assert!(judge(&[Eviction::Never, Eviction::Unknown("NOPERM".into())], true).is_ok());
    }
}
