//! The worker: receive tasks, run them concurrently, acknowledge only after success.
//!
//! `mod.rs` holds the receive loop and what every task shares; [`task`] runs one task from
//! its message to its acknowledgement; [`heartbeat`] keeps a running task visible and its
//! progress in the ledger; [`dedup`] is the pure rule that tells a task's copies from its
//! reruns. Nothing here parses messages or talks to AWS directly: `crate::task` and
//! `crate::aws::sqs`/`crate::ledger` do.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::BoxError;
use crate::aws::retry;
use crate::aws::sqs::{self, ControlQueue};
use crate::http::Health;
use crate::ledger::Ledger;
use crate::pipeline::Output;
use crate::settings::{ScanSettings, Settings};
use crate::telemetry::{self, AckAction};

mod heartbeat;
mod task;

pub mod dedup;
pub use task::after_refused_count;

use task::{hand_back, run_task};

/// SQS returns at most 10 messages per ReceiveMessage call.
const MAX_RECEIVE: usize = 10;

struct Shared {
    control: ControlQueue,
    output: Output,
    /// The job ledger, if configured; only tasks with a job id are recorded.
    ledger: Option<Ledger>,
    /// Names this process in the ledger (`host-pid`).
    worker_id: String,
    /// The control queue's `maxReceiveCount`: a task failing on that receive is dead-lettered.
    max_receive_count: Option<u32>,
    scan: ScanSettings,
    visibility: Duration,
    /// Fires on SIGTERM: running tasks checkpoint at their next page boundary.
    drain: CancellationToken,
    /// Fires when the drain timeout has passed: tasks still running stop where they are and
    /// are handed back whole.
    hard_stop: CancellationToken,
}

impl Shared {
    /// Whether a task on its `receive_count`-th receive goes to the dead-letter queue if it is
    /// released now (SQS moves it when the count would exceed `maxReceiveCount`).
    fn last_receive(&self, receive_count: u32) -> bool {
        self.max_receive_count
            .is_some_and(|max| receive_count >= max)
    }
}

/// Runs until `shutdown` fires, then drains: each in-flight task finishes the page in hand,
/// checkpoints (continuation + delete) and ends; whatever is still running
/// `worker.drain_timeout_seconds` after the signal is handed back. Returns once every task
/// ended and the long poll in progress (if any) returned.
pub async fn run(
    settings: &Settings,
    control: ControlQueue,
    output: Output,
    ledger: Option<Ledger>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let max_receive_count = control.max_receive_count().await;
    let shared = Arc::new(Shared {
        control,
        output,
        ledger,
        worker_id: worker_id(),
        max_receive_count,
        scan: settings.scan.clone(),
        visibility: Duration::from_secs(settings.control.visibility_timeout_seconds.into()),
        drain: shutdown.clone(),
        hard_stop: CancellationToken::new(),
    });
    if shared.control.has_redrive_policy().await == Some(false) {
        warn!(
            queue_url = %shared.control.url,
            "the control queue has no redrive policy: invalid or failing tasks will be retried forever instead of moving to a dead-letter queue"
        );
    }
    let wait = Duration::from_secs(settings.control.wait_time_seconds.into());
    let drain = Duration::from_secs(settings.worker.drain_timeout_seconds.into());
    let slots = Arc::new(Semaphore::new(settings.worker.concurrency as usize));
    let tracker = TaskTracker::new();
    let mut backoff = retry::receive_backoff();
    let mut empty_backoff = retry::receive_backoff();
    let watcher = tokio::spawn(watch_control_queue(shared.clone(), shutdown.clone()));
    // The drain timeout counts from the signal, not from the end of the long poll that may be
    // in progress: tasks start checkpointing at once, so the poll (at most wait_time_seconds)
    // runs inside the drain rather than before it, and a worker exits within
    // max(wait_time_seconds, drain_timeout_seconds), under Kubernetes' 30 s grace period with
    // the defaults. Not ready from the signal on, too: the poll in progress is no reason to
    // look ready.
    let deadline = tokio::spawn({
        let (shutdown, hard_stop, health) =
            (shutdown.clone(), shared.hard_stop.clone(), health.clone());
        async move {
            shutdown.cancelled().await;
            health.ready.store(false, Ordering::Relaxed);
            tokio::time::sleep(drain).await;
            hard_stop.cancel();
        }
    });

    loop {
        // A free slot first: a worker never receives more tasks than it can run, so no task
        // waits on this worker while another could have taken it.
        // `biased`: shutdown wins when both are ready. An unbiased select picked a free slot
        // half the time, so a stopping worker went on polling, and each message it received and
        // handed back used up one of the task's receives (maxReceiveCount): a continuation task
        // received that way five times went to the dead-letter queue instead of the next worker.
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
        };
        let mut permits = vec![first];
        while permits.len() < MAX_RECEIVE {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // The long poll is not raced against shutdown: abandoning it could drop messages SQS
        // already handed us, leaving them invisible for a whole visibility timeout. Messages
        // it returns after shutdown are handed straight back.
        match shared
            .control
            .receive(permits.len(), wait, shared.visibility)
            .await
        {
            Ok(messages) => {
                backoff = retry::receive_backoff();
                if !shutdown.is_cancelled() {
                    health.ready.store(true, Ordering::Relaxed);
                }
                if messages.is_empty() {
                    // A long poll waits on SQS's side; a short one (wait_time_seconds = 0)
                    // returns at once, and would spin on an empty queue without a pause.
                    let pause = empty_receive_pause(wait, &mut empty_backoff);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => {}
                    }
                    continue;
                }
                empty_backoff = retry::receive_backoff();
                for message in messages {
                    // Never more tasks than free slots: an answer holding more messages than
                    // asked for (SQS never sends one) has the extra ones handed back.
                    let permit = permits.pop();
                    match permit {
                        Some(permit) if !shutdown.is_cancelled() => {
                            tracker.spawn(run_task(shared.clone(), message, permit));
                        }
                        _ => {
                            let delivery = Delivery {
                                id: message.message_id().unwrap_or_default(),
                                receipt: message.receipt_handle().unwrap_or_default(),
                                receive_count: sqs::receive_count(&message),
                            };
                            hand_back(&shared, &delivery, message.body().unwrap_or_default()).await;
                        }
                    }
                }
            }
            Err(e) => {
                let delay = backoff.next().expect("receive backoff never ends");
                telemetry::receive_failed(&e, delay);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    tracker.close();
    info!(
        tasks = tracker.len(),
        drain_seconds = drain.as_secs(),
        "shutting down: checkpointing in-flight tasks"
    );
    tracker.wait().await;
    deadline.abort();
    // A count read in progress is not worth waiting for.
    watcher.abort();
    info!("all tasks ended");
}

/// How often a worker reads the control queue's message count.
const CONTROL_QUEUE_READ_EVERY: Duration = Duration::from_secs(60);

/// Exports the control queue's message count until shutdown. The worker's own gauges cannot
/// show tasks it never managed to receive (a receive permission missing, say); with this the
/// "no progress while tasks wait" alert can.
async fn watch_control_queue(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(CONTROL_QUEUE_READ_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match sqs::queue_depth(&shared.control.client, &shared.control.url).await {
            Ok(messages) => telemetry::control_queue_messages(messages),
            Err(e) => telemetry::control_queue_unread(&e),
        }
    }
}

/// How long to wait before the next receive after an empty one: nothing after a long poll
/// (it already waited on SQS's side), a growing pause after a short one.
fn empty_receive_pause(wait: Duration, backoff: &mut impl Iterator<Item = Duration>) -> Duration {
    if wait.is_zero() {
        backoff.next().unwrap_or(Duration::from_secs(1))
    } else {
        Duration::ZERO
    }
}

/// `hostname-pid`: which process ran a segment, as the ledger reports it.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// One received task message, as its handling needs it.
#[derive(Clone, Copy)]
struct Delivery<'a> {
    id: &'a str,
    receipt: &'a str,
    receive_count: u32,
}

async fn release(control: &ControlQueue, id: &str, receipt: &str, delay: Duration) {
    if let Err(e) = control.set_visibility(receipt, delay).await {
        telemetry::ack_failed(id, AckAction::Release, &e);
    }
}
