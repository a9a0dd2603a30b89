//! A primary found through Redis Sentinel, found again after a failover.
//!
//! The connection is a [`ConnectionManager`] on the primary the Sentinels
//! name. A manager reconnects to the address it was built for, which after a
//! failover is a replica (its writes fail with `READONLY`) or a dead server;
//! so when a call finds the connection refused, lost, or read-only, the
//! primary is asked of the Sentinels again and a new manager replaces the old
//! one. One rediscovery runs at a time; calls that failed meanwhile wait for
//! it and use its result.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::SentinelClient;
use redis::{Cmd, RedisError, ServerErrorKind, Value};

use super::circuit::connection_lost;

/// The Sentinels, and the manager on the primary they named last.
pub(super) struct SentinelConn {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: RwLock<ConnectionManager>,
    /// How many times the primary was looked up again.
    generation: AtomicU64,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    /// Asks the Sentinels for the primary and connects to it (lazily: the
    /// first command makes the connection).
    pub(super) async fn new(
        mut sentinels: SentinelClient,
        config: ConnectionManagerConfig,
    ) -> Result<Self, RedisError> {
        let client = sentinels.async_get_client().await?;
        let primary = ConnectionManager::new_lazy_with_config(client, config.clone())?;
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(sentinels),
            primary: RwLock::new(primary),
            generation: AtomicU64::new(0),
            config,
        })
    }

    fn current(&self) -> (u64, ConnectionManager) {
        // Taken before the manager, so a rediscovery that replaced it since
        // is seen as newer than this call's connection.
        let generation = self.generation.load(Ordering::Acquire);
        let primary = self
            .primary
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (generation, primary)
    }

    /// `cmd` on the current primary. When it fails because the primary is
    /// gone or is one no longer, the primary is looked up again before the
    /// error is returned, so the caller's retry (a refused connection, a
    /// `READONLY` write: neither ran) goes to the new one.
    pub(super) async fn query(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let (generation, mut primary) = self.current();
        let result = primary
            .req_packed_command(cmd)
            .await
            .and_then(Value::extract_error);
        if let Err(err) = &result
            && (connection_lost(err) || read_only(err))
        {
            self.rediscover(generation).await;
        }
        result
    }

    /// Looks the primary up again, unless another call did since
    /// `generation`. A failed lookup leaves the old manager: the next call
    /// that fails tries again.
    async fn rediscover(&self, generation: u64) {
        let mut sentinels = self.sentinels.lock().await;
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let found = match sentinels.async_get_client().await {
            Ok(client) => ConnectionManager::new_lazy_with_config(client, self.config.clone()),
            Err(err) => Err(err),
        };
        match found {
            Ok(primary) => {
                *self
                    .primary
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = primary;
                self.generation.fetch_add(1, Ordering::Release);
                tracing::info!(
                    target: "tower_freqlimit::redis",
                    "the Sentinels named the Redis primary again; calls go to it"
                );
            }
            Err(err) => tracing::debug!(
                target: "tower_freqlimit::redis",
                error = %err,
                "the Sentinels did not name a reachable primary"
            ),
        }
    }
}

/// A write refused by a replica: the command did not run.
pub(super) fn read_only(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
    )
}
