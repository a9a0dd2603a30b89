//! The circuit: once a call has found Redis unreachable, the calls that
//! follow fail at once instead of each waiting for a reconnection, and one
//! background task probes the server until it answers.
//!
//! * **Opens** when a call's final error says the connection is gone
//!   (refused, dropped, an I/O error): the server is down or unreachable, and
//!   the next call would only wait for another failed reconnection. A timeout
//!   does not open it: a slow server is not a down one, and its calls may
//!   still be decided.
//! * **While open**, a reservation fails with [`BackendErrorKind::Unavailable`]
//!   before anything is sent (one relaxed load on the request path), and the
//!   failure policy applies as for any backend failure. The error is built
//!   once: answering from the circuit allocates nothing.
//! * **Closes** when the probe's `PING` is answered. The probe goes through the
//!   backend's own connection, so its success also means the connection is
//!   back: the first call after it is decided by Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::conn::Conn;
use super::stats::{Counters, bump};
use crate::error::{BackendError, BackendErrorKind};

/// The circuit's state, shared by a backend's clones.
pub(super) struct Circuit {
    open: AtomicBool,
    probe_every: Duration,
    /// Cloned into every call the open circuit answers.
    down: BackendError,
}

impl Circuit {
    pub(super) fn new(probe_every: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            probe_every,
            down: BackendError::new(
                BackendErrorKind::Unavailable,
                format!(
                    "Redis is unreachable: a call found the connection refused or lost, and \
                     no probe (every {probe_every:?}) has reached the server since"
                ),
            ),
        }
    }

    /// Whether calls should fail without trying Redis.
    #[inline]
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The error of a call the open circuit answers, counted.
    pub(super) fn reject(&self, counters: &Counters) -> BackendError {
        bump(&counters.circuit_rejections, 1);
        self.down.clone()
    }
}

/// Whether `err` says the connection to Redis is gone, not that one command
/// failed: what opens the circuit. `redis` reports every way a connection
/// goes (refused, reset, a broken pipe, an end of stream, a connect timeout)
/// as an I/O error, and nothing else as one.
pub(super) fn connection_lost(err: &redis::RedisError) -> bool {
    err.is_io_error()
}

/// Opens `circuit` (if it was closed) and starts its probe: a task that sends
/// `PING` on `conn` every `probe_every` (each bounded by `timeout`) and closes
/// the circuit when one is answered. It ends then, or when the backend is
/// dropped (`circuit` no longer upgrades). Outside a Tokio runtime nothing
/// probes, and the circuit stays closed: every call then tries Redis itself.
pub(super) fn trip(circuit: &Arc<Circuit>, conn: &Conn, timeout: Duration, counters: &Counters) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if circuit.open.swap(true, Ordering::Relaxed) {
        return;
    }
    bump(&counters.circuit_openings, 1);
    tracing::warn!(
        target: "tower_freqlimit::redis",
        probe_every = ?circuit.probe_every,
        "Redis is unreachable; failing calls at once until a probe reaches it"
    );
    let weak: Weak<Circuit> = Arc::downgrade(circuit);
    let mut conn = conn.clone();
    let every = circuit.probe_every;
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(circuit) = weak.upgrade() else {
                return;
            };
            let ping = tokio::time::timeout(timeout, conn.run(&redis::cmd("PING"))).await;
            if matches!(ping, Ok(Ok(_))) {
                circuit.open.store(false, Ordering::Relaxed);
                tracing::info!(
                    target: "tower_freqlimit::redis",
                    "Redis answers again; calls go to it"
                );
                return;
            }
        }
    });
}
