//! The worker's way down, as one value passed in and awaited (as mini-redis passes its
//! shutdown): the signal starts the drain, the drain deadline ends it. Knows nothing of tasks.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::http::Health;

/// Two moments of a worker's shutdown.
///
/// - **drain** fires on SIGTERM/SIGINT (or when the owner calls [`Shutdown::begin`]): the receive
///   loop stops, `/readyz` turns 503, and running tasks checkpoint at their next page boundary.
/// - **hard stop** fires `worker.drain_timeout_seconds` after the drain began: tasks still
///   running stop where they are and are handed back whole.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    hard_stop: CancellationToken,
}

impl From<CancellationToken> for Shutdown {
    /// A shutdown whose drain is `drain` (the tests cancel it from a scripted answer).
    fn from(drain: CancellationToken) -> Self {
        Self {
            drain,
            hard_stop: CancellationToken::new(),
        }
    }
}

impl Shutdown {
    /// Begins the drain on the first SIGTERM or SIGINT.
    pub fn on_signals(&self) {
        let drain = self.drain.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!(signal = which, "shutdown requested");
            drain.cancel();
        });
    }

    pub fn begin(&self) {
        self.drain.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when the drain has begun.
    pub async fn draining(&self) {
        self.drain.cancelled().await;
    }

    /// The drain as a token, for what stops at a page boundary (the pipeline).
    pub fn drain_token(&self) -> &CancellationToken {
        &self.drain
    }

    /// Resolves when the hard stop has fired.
    pub async fn hard_stopped(&self) {
        self.hard_stop.cancelled().await;
    }

    /// Counts the drain timeout from the signal, not from the end of the long poll that may be
    /// in progress: tasks start checkpointing at once, so the poll (at most
    /// `wait_time_seconds`) runs inside the drain rather than before it, and a worker exits
    /// within max(wait_time_seconds, drain_timeout_seconds), under Kubernetes' 30 s grace
    /// period with the defaults. Not ready from the signal on, too: the poll in progress is no
    /// reason to look ready. Abort the handle once every task has ended.
    pub fn spawn_deadline(
        &self,
        drain: Duration,
        health: Arc<Health>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            this.draining().await;
            health.set_ready(false);
            tokio::time::sleep(drain).await;
            this.hard_stop.cancel();
        })
    }
}
