//! The worker: receive tasks, run them concurrently, acknowledge only after success.
//!
//! `mod.rs` holds the receive loop and what every task shares; [`task`] runs one task from
//! its message to its acknowledgement; [`heartbeat`] keeps a running task visible and its
//! progress in the ledger; [`dedup`] is the pure rule that tells a task's copies from its
//! reruns. Nothing here parses messages or talks to AWS directly: `crate::task` and
//! `crate::aws::sqs`/`crate::ledger` do.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::BoxError;
use crate::aws::dynamodb::scan::{DirectScan, Scanner};
use crate::aws::retry;
use crate::aws::sqs::{self, ControlQueue, Publisher, direct::DirectSqs};
use crate::http::Health;
use crate::ledger::Ledger;
use crate::pipeline::{Clients, Output};
use crate::settings::{ClientKind, ScanSettings, Settings};
use crate::telemetry::{self, AckAction};

mod heartbeat;
mod shutdown;
mod task;

pub mod dedup;
pub use shutdown::Shutdown;

use task::{hand_back, run_task};

/// SQS returns at most 10 messages per ReceiveMessage call.
const MAX_RECEIVE: usize = 10;

/// Assumed when the output queue's `MaximumMessageSize` cannot be read: SQS's default.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;

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
    shutdown: Shutdown,
}

impl Shared {
    /// Whether a task on its `receive_count`-th receive goes to the dead-letter queue if it is
    /// released now (SQS moves it when the count would exceed `maxReceiveCount`).
    fn last_receive(&self, receive_count: u32) -> bool {
        self.max_receive_count
            .is_some_and(|max| receive_count >= max)
    }
}

/// A worker process's task loop and everything its tasks share.
pub struct Worker {
    control: ControlQueue,
    output: Output,
    ledger: Option<Ledger>,
    scan: ScanSettings,
    visibility: Duration,
    wait: Duration,
    drain: Duration,
    concurrency: usize,
}

impl Worker {
    /// The worker the settings describe: its AWS clients (the SDK's and, per `scan.client` and
    /// `output.client`, the direct ones, all on one connection pool), the output side, the
    /// control queue and the ledger.
    pub async fn from_settings(settings: &Settings) -> Result<Self, BoxError> {
        // The SDK's service calls and the direct clients share the transport's connector: one
        // pool, one proxy decision.
        let transport = crate::aws::transport::Transport::new();
        let aws = crate::aws::config_on(&transport).await;
        let sqs_client = aws_sdk_sqs::Client::new(&aws);
        let max_message_bytes = match sqs::max_message_size(&sqs_client, &settings.output.queue_url)
            .await
        {
            Some(n) => n,
            None => {
                warn!(
                    "could not read the output queue's MaximumMessageSize; assuming SQS's default of {DEFAULT_MAX_MESSAGE_BYTES} bytes"
                );
                DEFAULT_MAX_MESSAGE_BYTES
            }
        };
        settings.output.check_message_bytes(max_message_bytes)?;
        let publisher = match settings.output.client {
            ClientKind::Direct => Publisher::Direct(Arc::new(
                DirectSqs::new(&aws, transport.calls())
                    .await
                    .map_err(|e| format!("output.client = \"direct\": {e}"))?,
            )),
            ClientKind::Sdk => Publisher::Sdk(sqs_client.clone()),
        };
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let scanner = match settings.scan.client {
            ClientKind::Direct => Scanner::Direct(Arc::new(
                DirectScan::new(&aws, transport.calls())
                    .await
                    .map_err(|e| format!("scan.client = \"direct\": {e}"))?,
            )),
            ClientKind::Sdk => Scanner::Sdk(dynamodb.clone()),
        };
        let clients = Clients {
            dynamodb: dynamodb.clone(),
            scanner,
            sqs: sqs_client.clone(),
            publisher,
        };
        let output = Output::new(settings, clients, max_message_bytes);
        let control = ControlQueue::new(sqs_client, settings.control.queue_url.clone());
        let ledger = settings.ledger.table().map(|t| Ledger::new(dynamodb, t));
        Ok(Self::new(settings, control, output, ledger))
    }

    /// A worker on clients the caller made (the tests' mocked ones).
    pub fn new(
        settings: &Settings,
        control: ControlQueue,
        output: Output,
        ledger: Option<Ledger>,
    ) -> Self {
        Self {
            control,
            output,
            ledger,
            scan: settings.scan.clone(),
            visibility: Duration::from_secs(settings.control.visibility_timeout_seconds.into()),
            wait: Duration::from_secs(settings.control.wait_time_seconds.into()),
            drain: Duration::from_secs(settings.worker.drain_timeout_seconds.into()),
            concurrency: settings.worker.concurrency as usize,
        }
    }

    /// Runs until `shutdown` begins, then drains: each in-flight task finishes the page in
    /// hand, checkpoints (continuation + delete) and ends; whatever is still running
    /// `worker.drain_timeout_seconds` after the signal is handed back. Returns once every task
    /// ended and the long poll in progress (if any) returned.
    pub async fn run(self, health: Arc<Health>, shutdown: Shutdown) {
        let max_receive_count = self.control.max_receive_count().await;
        let shared = Arc::new(Shared {
            control: self.control,
            output: self.output,
            ledger: self.ledger,
            worker_id: worker_id(),
            max_receive_count,
            scan: self.scan,
            visibility: self.visibility,
            shutdown: shutdown.clone(),
        });
        if shared.control.has_redrive_policy().await == Some(false) {
            warn!(
                queue_url = %shared.control.url(),
                "the control queue has no redrive policy: invalid or failing tasks will be retried forever instead of moving to a dead-letter queue"
            );
        }
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let mut backoff = retry::receive_backoff();
        let mut empty_backoff = retry::receive_backoff();
        let watcher = tokio::spawn(watch_control_queue(shared.clone()));
        let deadline = shutdown.spawn_deadline(self.drain, health.clone());
        // `None`: the drain began while waiting for a free slot.
        while let Some(permits) = free_slots(&slots, &shutdown).await {
            // The long poll is not raced against shutdown: abandoning it could drop messages
            // SQS already handed us, leaving them invisible for a whole visibility timeout.
            // Messages it returns after shutdown are handed straight back.
            let received = shared
                .control
                .receive(permits.len(), self.wait, shared.visibility)
                .await;
            let pause = match received {
                Ok(messages) => {
                    backoff = retry::receive_backoff();
                    health.set_ready(!shutdown.is_draining());
                    if messages.is_empty() {
                        // A long poll waits on SQS's side; a short one (wait_time_seconds = 0)
                        // returns at once, and would spin on an empty queue without a pause.
                        empty_receive_pause(self.wait, &mut empty_backoff)
                    } else {
                        empty_backoff = retry::receive_backoff();
                        dispatch(&shared, &tracker, messages, permits).await;
                        Duration::ZERO
                    }
                }
                Err(e) => {
                    let delay = backoff.next().expect("receive backoff never ends");
                    telemetry::receive_failed(&e, delay);
                    delay
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.draining() => {}
                }
            }
        }

        tracker.close();
        info!(
            tasks = tracker.len(),
            drain_seconds = self.drain.as_secs(),
            "shutting down: checkpointing in-flight tasks"
        );
        tracker.wait().await;
        deadline.abort();
        // A count read in progress is not worth waiting for.
        watcher.abort();
        info!("all tasks ended");
    }
}

/// Waits for a free task slot and takes every other free one too (up to one receive's worth):
/// a worker never receives more tasks than it can run, so no task waits on this worker while
/// another could have taken it. `None` once the drain has begun.
async fn free_slots(
    slots: &Arc<Semaphore>,
    shutdown: &Shutdown,
) -> Option<Vec<OwnedSemaphorePermit>> {
    // `biased`: shutdown wins when both are ready. An unbiased select picked a free slot half
    // the time, so a stopping worker went on polling, and each message it received and handed
    // back used up one of the task's receives (maxReceiveCount): a continuation task received
    // that way five times went to the dead-letter queue instead of the next worker.
    let first = tokio::select! {
        biased;
        () = shutdown.draining() => return None,
        permit = slots.clone().acquire_owned() => permit.expect("never closed"),
    };
    let mut permits = vec![first];
    while permits.len() < MAX_RECEIVE {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Starts a task for each received message, each holding one of `permits`. Never more tasks
/// than free slots: an answer holding more messages than asked for (SQS never sends one) has
/// the extra ones handed back, and so has every message received after the drain began.
async fn dispatch(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    messages: Vec<Message>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    for message in messages {
        match permits.pop() {
            Some(permit) if !shared.shutdown.is_draining() => {
                tracker.spawn(run_task(shared.clone(), message, permit));
            }
            _ => {
                let delivery = Delivery {
                    id: message.message_id().unwrap_or_default(),
                    receipt: message.receipt_handle().unwrap_or_default(),
                    receive_count: sqs::receive_count(&message),
                };
                hand_back(shared, &delivery, message.body().unwrap_or_default()).await;
            }
        }
    }
}

/// How often a worker reads the control queue's message count.
const CONTROL_QUEUE_READ_EVERY: Duration = Duration::from_secs(60);

/// Exports the control queue's message count until shutdown. The worker's own gauges cannot
/// show tasks it never managed to receive (a receive permission missing, say); with this the
/// "no progress while tasks wait" alert can.
async fn watch_control_queue(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(CONTROL_QUEUE_READ_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.draining() => return,
            _ = every.tick() => {}
        }
        match shared.control.depth().await {
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
