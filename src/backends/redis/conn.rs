//! One connection (a standalone server or a cluster) and the script call with
//! its retry rules.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use crate::error::{BackendError, BackendErrorKind};

use super::script::{CORRUPT, Script};
use super::sentinel::{SentinelConn, read_only};

/// Where commands go. All are multiplexed (concurrent calls are pipelined on
/// one connection per server), cheap to clone, and reconnect by themselves.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The primary the Sentinels name, named again after a failover.
    Sentinel(Arc<SentinelConn>),
}

/// One argument of a script call: a number, or `''` for "none".
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg {
    Num(u64),
    None,
}

/// How many times a call is sent at most (the retries that are safe, below).
const MAX_ATTEMPTS: u32 = 8;

impl Conn {
    async fn query(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        let value = match self {
            Self::Single(conn) => conn.req_packed_command(cmd).await?,
            Self::Cluster(conn) => conn.req_packed_command(cmd).await?,
            Self::Sentinel(conn) => return conn.query(cmd).await,
        };
        value.extract_error()
    }

    /// `ASKING` then the command, on the node a slot is being migrated to.
    async fn asking(&mut self, node: &str, cmd: &Cmd) -> Result<Value, RedisError> {
        let Self::Cluster(conn) = self else {
            return Err(RedisError::from((
                ErrorKind::Client,
                "ASK redirection without a cluster connection",
            )));
        };
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "bad ASK redirection")))?;
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").add_command(cmd.clone());
        let mut values = conn
            .route_pipeline(pipe, 0, 2, SingleNodeRoutingInfo::ByAddress { host, port })
            .await?;
        values
            .pop()
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "empty ASK reply")))?
            .extract_error()
    }

    /// Runs `script` on `keys` with `args`: `EVALSHA`, falling back to `EVAL`
    /// when the server's script cache was flushed (`NOSCRIPT`).
    ///
    /// Retried, because the command was certainly **not** executed: `NOSCRIPT`;
    /// `MOVED`/`ASK` (followed); `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
    /// `LOADING` (after a short pause); a refused connection (nothing was
    /// sent) or a `READONLY` refusal (a replica; after a failover), once. Anything else, in particular a connection lost after
    /// sending (which `redis` reports as it reports a write to a dead socket),
    /// is returned as it is: the reservation may have been made, and sending it
    /// again could reserve twice. The caller bounds the whole call with its
    /// timeout.
    pub(super) async fn eval(
        &mut self,
        script: &Script,
        keys: &[&[u8]],
        args: &[Arg],
        retries: &mut u32,
    ) -> Result<Value, RedisError> {
        let mut use_eval = false;
        let mut pause = Duration::from_millis(2);
        let mut attempt = 0;
        let mut refused = false;
        loop {
            attempt += 1;
            let cmd = command(script, use_eval, keys, args);
            let err = match self.query(&cmd).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            match err.kind() {
                ErrorKind::Server(ServerErrorKind::NoScript) if !use_eval => {
                    // EVAL also puts the script back in the cache.
                    use_eval = true;
                }
                ErrorKind::Server(ServerErrorKind::Ask) => {
                    let Some((node, _slot)) = err.redirect_node() else {
                        return Err(err);
                    };
                    let node = node.to_owned();
                    *retries += 1;
                    // EVAL: the target node may not have the script cached.
                    return self.asking(&node, &command(script, true, keys, args)).await;
                }
                ErrorKind::Server(
                    ServerErrorKind::Moved
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading,
                ) => {
                    // The cluster connection refreshes its slot map on MOVED.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                // Sent again once, at once: the connection manager started a
                // fresh connection when this one was refused. A second refusal
                // is an outage, for the circuit to answer (see `circuit`), not
                // a blip to wait through.
                _ if err.is_connection_refusal() && !refused => refused = true,
                // A write refused by a replica did not run either: sent again
                // once, to the primary the Sentinels name now (on a plain
                // connection, to the same server, which refuses it again).
                _ if read_only(&err) && !refused => refused = true,
                _ => return Err(err),
            }
            *retries += 1;
        }
    }

    /// Runs `cmd` on one node: the server, or the primary at `node`.
    pub(super) async fn on_node(
        &mut self,
        node: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> Result<Value, RedisError> {
        match (self, node) {
            (Self::Cluster(conn), Some((host, port))) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                conn.route_command(cmd.clone(), route)
                    .await?
                    .extract_error()
            }
            (conn, _) => conn.query(cmd).await,
        }
    }

    /// The primaries to scan: one `None` for a standalone server.
    pub(super) async fn scan_targets(&mut self) -> Result<Vec<Option<(String, u16)>>, RedisError> {
        match self {
            Self::Single(_) | Self::Sentinel(_) => Ok(vec![None]),
            Self::Cluster(conn) => Ok(cluster_primaries(conn)
                .await?
                .into_iter()
                .map(Some)
                .collect()),
        }
    }

    /// Runs a plain command (routed by its key on a cluster).
    pub(super) async fn run(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        self.query(cmd).await
    }
}

/// The primaries of a cluster, from `CLUSTER SLOTS`.
async fn cluster_primaries(conn: &mut ClusterConnection) -> Result<Vec<(String, u16)>, RedisError> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?
        .extract_error()?;
    let mut primaries: Vec<(String, u16)> = Vec::new();
    let bad = || RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    for range in ranges {
        let Value::Array(range) = range else {
            return Err(bad());
        };
        let Some(Value::Array(primary)) = range.get(2) else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
            Some(Value::SimpleString(host)) => host.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        let port = u16::try_from(*port).map_err(|_| bad())?;
        if !primaries.iter().any(|(h, p)| *h == host && *p == port) {
            primaries.push((host, port));
        }
    }
    Ok(primaries)
}

/// `EVALSHA sha n keys... args...`, or `EVAL source n keys... args...`.
fn command(script: &Script, eval: bool, keys: &[&[u8]], args: &[Arg]) -> Cmd {
    let mut cmd = if eval {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script.source);
        cmd
    } else {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.sha.as_str());
        cmd
    };
    cmd.arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    for arg in args {
        match arg {
            Arg::Num(n) => cmd.arg(*n),
            Arg::None => cmd.arg(""),
        };
    }
    cmd
}

/// What kind of backend failure a client error is.
pub(super) fn classify(err: RedisError) -> BackendError {
    let kind = if err.is_timeout() {
        BackendErrorKind::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() {
        BackendErrorKind::Unavailable
    } else if err.code() == Some("ERR") && err.detail().is_some_and(|d| d.starts_with(CORRUPT)) {
        BackendErrorKind::Corrupt
    } else if let Some(code) = err.code() {
        // An error reply from the server.
        match code {
            "OOM" => BackendErrorKind::Full,
            "READONLY" | "MASTERDOWN" | "CLUSTERDOWN" | "LOADING" | "TRYAGAIN" | "MOVED"
            | "ASK" | "BUSY" => BackendErrorKind::Unavailable,
            // A script error, WRONGTYPE, a key holding something else: the
            // server answered, but not what the backend expects.
            _ => BackendErrorKind::Protocol,
        }
    } else {
        match err.kind() {
            ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Unavailable,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => BackendErrorKind::Protocol,
            _ => BackendErrorKind::Other,
        }
    };
    BackendError::new(kind, err)
}
