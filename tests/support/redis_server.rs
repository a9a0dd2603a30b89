//! Real `redis-server` processes for the tests: each on a free loopback port
//! (never 6379), in a temporary directory, without persistence, killed on drop
//! (also when the test panics).
//!
//! Without `redis-server` on the `PATH` the tests that need it are skipped with a
//! message, unless `FREQLIMIT_REQUIRE_REDIS=1` (set by `.ci/run` in CI), which
//! makes a missing server a failure.
//!
//! The only waits here are bounded polls of a real process (PING until it
//! answers, CLUSTER INFO until the cluster is ok): a server runs on real time,
//! which `tokio::time::pause()` cannot reach, and no test asserts on how long
//! they take.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Whether `redis-server` can be run; panics if it cannot and CI requires it.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let required = std::env::var("FREQLIMIT_REQUIRE_REDIS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "redis-server is not installed but FREQLIMIT_REQUIRE_REDIS=1: install it (apt-get install redis-server)"
        );
        eprintln!(
            "SKIPPED: redis-server is not installed (set FREQLIMIT_REQUIRE_REDIS=1 to fail instead)"
        );
    }
    found
}

/// A loopback port that is free now, with `port + 10000` free too when `bus`
/// (a cluster node's bus port).
fn free_port(bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        if port == 6379 || (bus && port > 55_535) {
            continue;
        }
        if bus && TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        return port;
    }
}

static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// One `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    /// Arguments after the usual ones (`--replicaof ...`).
    extra: Vec<String>,
    /// A Sentinel monitoring the primary on this port as `mymaster`.
    sentinel_of: Option<u16>,
}

impl RedisServer {
    /// A standalone server, or `None` (after a message) when `redis-server` is
    /// missing and not required.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::spawn(false, &[], None))
    }

    /// A standalone server started with `extra` arguments too.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::spawn(false, extra, None))
    }

    /// A Sentinel monitoring the primary at `primary_port` as `mymaster`
    /// (quorum 1, down after 1 s).
    pub fn start_sentinel(primary_port: u16) -> Self {
        Self::spawn(false, &[], Some(primary_port))
    }

    /// A server started as a cluster node (not yet part of a cluster).
    fn start_cluster_node() -> Self {
        Self::spawn(true, &[], None)
    }

    fn spawn(cluster: bool, extra: &[&str], sentinel_of: Option<u16>) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(cluster);
            let n = SERVERS.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "tower-freqlimit-redis-{}-{port}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("create the server's directory");
            let mut server = Self {
                child: None,
                port,
                dir,
                cluster,
                extra: extra.iter().map(|a| (*a).to_owned()).collect(),
                sentinel_of,
            };
            match server.launch() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn launch(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if let Some(primary) = self.sentinel_of {
            // A Sentinel rewrites its configuration file: one of its own.
            let conf = self.dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor mymaster 127.0.0.1 {primary} 1\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 3000\n"
                ),
            )
            .map_err(|e| format!("write sentinel.conf: {e}"))?;
            cmd.arg(&conf).arg("--sentinel");
        }
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        cmd.args(&self.extra);
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited at once ({status}): {}",
                    self.log()
                ));
            }
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!("redis-server did not answer PING: {}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (the data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.launch().expect("restart redis-server on its port");
    }

    /// Sends one command over a fresh connection (RESP), returning the first line
    /// of the reply (`+OK`, `:3`, `$5`, `-ERR ...`) or, for a bulk string, its
    /// content.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$') {
            let Ok(len) = len.parse::<usize>() else {
                return Ok(line); // $-1: nil
            };
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(line)
    }

    /// [`command`](Self::command), panicking on an I/O error.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.command(args)
            .unwrap_or_else(|e| panic!("{args:?} on port {}: {e}", self.port))
    }

    /// An integer reply (`:N`).
    pub fn int(&self, args: &[&str]) -> i64 {
        let reply = self.cmd(args);
        reply
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{args:?}: expected an integer, got {reply:?}"))
    }

    /// `INFO commandstats`: how many times `EVALSHA` and `EVAL` ran.
    pub fn script_calls(&self) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]);
        ["cmdstat_evalsha:calls=", "cmdstat_eval:calls="]
            .iter()
            .filter_map(|tag| {
                let rest = &info[info.find(tag)? + tag.len()..];
                rest.split(',').next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three primaries on loopback ports, made with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three nodes in one cluster with every slot covered, or `None` when
    /// `redis-server` is missing and not required.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = cluster.nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ready {
                return Some(cluster);
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
