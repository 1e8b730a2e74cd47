//! The worker loop: receive tasks, run them concurrently, acknowledge only after success.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::pipeline::{self, Output};
use crate::retry;
use crate::settings::{ScanSettings, Settings};
use crate::sqs::{self, ControlQueue};
use crate::task::{self, Task};
use crate::telemetry;

/// SQS returns at most 10 messages per ReceiveMessage call.
const MAX_RECEIVE: usize = 10;

/// State the HTTP endpoints report.
#[derive(Default)]
pub struct Health {
    /// Set after the first successful receive; cleared when draining starts.
    pub ready: AtomicBool,
}

struct Shared {
    control: ControlQueue,
    output: Output,
    scan: ScanSettings,
    visibility: Duration,
    /// Fires when the drain timeout has passed: running tasks stop and are handed back.
    hard_stop: CancellationToken,
}

/// Runs until `shutdown` fires, then drains: in-flight tasks get `worker.drain_timeout_seconds`
/// to finish, the rest are handed back (visibility 0). Returns once every task has ended.
pub async fn run(
    settings: &Settings,
    control: ControlQueue,
    output: Output,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        control,
        output,
        scan: settings.scan.clone(),
        visibility: Duration::from_secs(settings.control.visibility_timeout_seconds.into()),
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

    loop {
        // A free slot first: a worker never receives more tasks than it can run, so no task
        // waits on this worker while another could have taken it.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let mut permits = vec![first];
        while permits.len() < MAX_RECEIVE {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // The long poll is not raced against shutdown: abandoning it could drop messages SQS
        // already handed us, leaving them invisible for a whole visibility timeout.
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
                for message in messages {
                    let permit = permits
                        .pop()
                        .expect("received at most one message per permit");
                    if shutdown.is_cancelled() {
                        hand_back(&shared.control, &message).await;
                    } else {
                        tracker.spawn(run_task(shared.clone(), message, permit));
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

    health.ready.store(false, Ordering::Relaxed);
    tracker.close();
    info!(
        tasks = tracker.len(),
        drain_seconds = drain.as_secs(),
        "shutting down: draining tasks"
    );
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        shared.hard_stop.cancel();
        tracker.wait().await;
    }
    info!("all tasks ended");
}

/// Makes a message visible again at once, for another worker.
async fn hand_back(control: &ControlQueue, message: &Message) {
    let (id, receipt) = (
        message.message_id().unwrap_or_default(),
        message.receipt_handle().unwrap_or_default(),
    );
    release(control, id, receipt, Duration::ZERO).await;
}

enum Outcome {
    Done(Result<u64, pipeline::SegmentError>),
    Stopped,
}

async fn run_task(shared: Arc<Shared>, message: Message, _permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let id = message.message_id().unwrap_or_default().to_owned();
    let receipt = message.receipt_handle().unwrap_or_default().to_owned();
    let receive_count = sqs::receive_count(&message);
    telemetry::task_received(&id, receive_count);

    let task = match task::parse(message.body().unwrap_or_default(), &shared.scan) {
        Ok(task) => task,
        Err(rejection) => {
            telemetry::task_rejected(&id, receive_count, &rejection);
            // Not deleted: released after a short, growing delay so the queue's redrive policy
            // moves it to the dead-letter queue after maxReceiveCount receives.
            release(
                &shared.control,
                &id,
                &receipt,
                retry::release_delay(receive_count),
            )
            .await;
            return;
        }
    };

    telemetry::task_started(&id, &task);
    let outcome = with_heartbeat(&shared, &id, &receipt, &task).await;
    match outcome {
        Outcome::Done(Ok(rows)) => match shared.control.delete(&receipt).await {
            Ok(()) => telemetry::task_completed(&id, &task, rows, started.elapsed()),
            // The rows are out; the task will be redelivered and repeated (at-least-once).
            Err(e) => telemetry::ack_failed(&id, "delete", &e),
        },
        Outcome::Done(Err(e)) => {
            let delay = retry::release_delay(receive_count);
            telemetry::task_failed(&id, &task, &e, delay);
            release(&shared.control, &id, &receipt, delay).await;
        }
        Outcome::Stopped => {
            telemetry::task_handed_back(&id, &task);
            release(&shared.control, &id, &receipt, Duration::ZERO).await;
        }
    }
    telemetry::task_ended();
}

/// Runs the segment while extending the task's visibility every third of the timeout, so it
/// is never handed to a second worker while this one is still on it.
async fn with_heartbeat(shared: &Shared, id: &str, receipt: &str, task: &Task) -> Outcome {
    let work = pipeline::run_segment(&shared.output, task);
    tokio::pin!(work);
    let period = shared.visibility / 3;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            result = &mut work => return Outcome::Done(result),
            () = shared.hard_stop.cancelled() => return Outcome::Stopped,
            _ = beat.tick() => {
                let r = shared.control.set_visibility(receipt, shared.visibility).await;
                telemetry::heartbeat(r.as_ref().map(|_| ()).map_err(|e| e as &dyn std::error::Error), id);
            }
        }
    }
}

async fn release(control: &ControlQueue, id: &str, receipt: &str, delay: Duration) {
    if let Err(e) = control.set_visibility(receipt, delay).await {
        telemetry::ack_failed(id, "release", &e);
    }
}
