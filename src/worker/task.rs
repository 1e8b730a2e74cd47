//! One task, from its message to its acknowledgement: parse, ask the ledger, run the chunk,
//! count it, then checkpoint (continuation, then delete), complete, fail, or hand back. What
//! is decided from the ledger is [`super::dedup`]'s; the loop that feeds tasks is in `mod.rs`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::Message;
use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;

use super::dedup::{self, Decision};
use super::heartbeat::{ChunkProgress, Heartbeat};
use super::{BoxError, Delivery, Shared, release};
use crate::aws::retry;
use crate::aws::sqs;
use crate::ledger::{ChunkReport, Ledger, Recorded};
use crate::pipeline::{self, End};
use crate::task::{self, Task};
use crate::telemetry::{self, AckAction, LedgerOp};

/// Makes a task available again at once, for another worker, at shutdown. Released on its last
/// allowed receive, the task would go to the dead-letter queue at its next receive though nothing
/// failed (workers stopping, as KEDA scales in, is no fault of the task's), so then it is sent
/// again as a new message, with a fresh receive count, and this one deleted. The new message
/// names this one as its origin (see [`task::stamp_identity`]), so it keeps this task's claim on
/// a chunk it counted.
pub(super) async fn hand_back(shared: &Shared, delivery: &Delivery<'_>, body: &str) {
    let Delivery {
        id,
        receipt,
        receive_count,
    } = *delivery;
    if shared.last_receive(receive_count) {
        match shared
            .control
            .send_body(&task::stamp_identity(body, id))
            .await
        {
            Ok(()) => {
                telemetry::task_sent_again(id, receive_count);
                if let Err(e) = shared.control.delete(receipt).await {
                    // The old copy goes to the dead-letter queue at its next receive, while
                    // the new one does the work.
                    telemetry::ack_failed(id, AckAction::Delete, &e);
                }
                return;
            }
            Err(e) => telemetry::ack_failed(id, AckAction::Resend, &e),
        }
    }
    release(&shared.control, id, receipt, Duration::ZERO).await;
}

/// Runs one received task to its end. A panic anywhere in it (none is known: this is the last
/// line of defence) is caught here and treated as a failure of the task, so the slot, the
/// in-flight gauge and the message are never lost with it.
pub(super) async fn run_task(shared: Arc<Shared>, message: Message, _permit: OwnedSemaphorePermit) {
    let id = message.message_id().unwrap_or_default();
    let receipt = message.receipt_handle().unwrap_or_default();
    let body = message.body().unwrap_or_default();
    let delivery = Delivery {
        id,
        receipt,
        receive_count: sqs::receive_count(&message),
    };
    telemetry::task_received(id, delivery.receive_count);
    if let Err(error) = catch_panic(handle_task(&shared, &delivery, body)).await {
        match task::parse(body, &shared.scan) {
            Ok(task) => fail(&shared, &delivery, &task, &error).await,
            Err(_) => {
                telemetry::task_panicked_unparsed(id, &error);
                let delay = retry::release_delay(delivery.receive_count);
                release(&shared.control, id, receipt, delay).await;
            }
        }
    }
}

/// A task's future panicked; the text of the panic.
#[derive(Debug, thiserror::Error)]
#[error("the task panicked: {0}")]
struct TaskPanicked(String);

/// Runs `work`, turning a panic in it into an error. `AssertUnwindSafe`: after a panic nothing
/// of the task's state is used again; what it shared (the clients, the ledger) holds no state a
/// half-done call could break.
async fn catch_panic<T>(work: impl std::future::Future<Output = T>) -> Result<T, TaskPanicked> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            TaskPanicked(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into()),
            )
        })
}

/// Counts the task in flight from its start to its end, however it ends (a panic included).
struct InFlight;

impl InFlight {
    fn start(id: &str, task: &Task) -> Self {
        telemetry::task_started(id, task.fields());
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        telemetry::task_ended();
    }
}

async fn handle_task(shared: &Arc<Shared>, delivery: &Delivery<'_>, body: &str) {
    let started = Instant::now();
    let Delivery { id, receipt, .. } = *delivery;
    let mut task = match task::parse(body, &shared.scan) {
        Ok(task) => task,
        Err(rejection) => return reject(shared, delivery, &rejection).await,
    };
    // From here on the task names its run explicitly (a first chunk sent without one is a run
    // of its own): the ledger, its continuations and its output's deduplication ids use it.
    task.run_id = task.run(id);
    let _in_flight = InFlight::start(id, &task);
    // The heartbeat runs beside the task from here until it is settled: while the chunk runs,
    // and while it is recorded and its continuation sent.
    let progress = ChunkProgress::new();
    let _heartbeat = Heartbeat::start(shared, receipt, id, &task, &progress);
    let claim = dedup::Claim {
        chunk: task.chunk,
        run: task.run_id.as_deref(),
        instance: task.instance(id),
    };
    let ledger = shared.ledger.as_ref().zip(task.job_id.as_deref());
    if let Some((ledger, job)) = ledger {
        if start_from_ledger(shared, ledger, job, delivery, &task, claim, started).await {
            return;
        }
        if let Err(e) = ledger
            .segment_started(&task, job, &shared.worker_id, claim.run)
            .await
        {
            telemetry::ledger_error(LedgerOp::Start, job, task.segment as u32, e.as_ref());
        }
    }
    let result = match run_chunk(shared, &task, &progress.progress).await {
        None => None,
        Some(Ok(outcome)) if outcome.end != End::NothingDone => Some(match ledger {
            Some((ledger, job)) => {
                let chunk = Chunk {
                    task: &task,
                    claim,
                    started,
                    progress: &progress,
                };
                record_chunk(shared, ledger, job, chunk, outcome).await
            }
            None => Ok(Settle::Own(outcome)),
        }),
        Some(result) => Some(result.map(Settle::Own)),
    };
    if let Some((ledger, job)) = ledger {
        // Uncounted (failed, handed back, a copy): its progress leaves the job's totals.
        progress
            .withdraw(ledger, &task, job, &shared.worker_id)
            .await;
    }
    match result {
        None => {
            telemetry::task_handed_back(id, task.fields());
            hand_back(shared, delivery, body).await;
        }
        Some(Ok(Settle::Delete)) => {
            // The ledger is past this chunk: another copy of the task goes on.
            if let Err(e) = shared.control.delete(receipt).await {
                telemetry::ack_failed(id, AckAction::Delete, &e);
            }
        }
        Some(Ok(Settle::Own(outcome))) => match outcome.end {
            End::Finished => match shared.control.delete(receipt).await {
                Ok(()) => {
                    telemetry::task_completed(id, task.fields(), outcome.rows, started.elapsed())
                }
                // The rows are out; the task will be redelivered and its chunk repeated.
                Err(e) => telemetry::ack_failed(id, AckAction::Delete, &e),
            },
            End::Checkpoint(next) => {
                checkpoint(shared, delivery, &task, next, outcome.rows, started).await
            }
            End::NothingDone => {
                telemetry::task_handed_back(id, task.fields());
                hand_back(shared, delivery, body).await;
            }
        },
        Some(Err(e)) => fail(shared, delivery, &task, e.as_ref()).await,
    }
}

/// An invalid task: counted, recorded in the ledger when it names a job and segment, and
/// released (not deleted) after a short, growing delay, so the queue's redrive policy moves it
/// to the dead-letter queue after maxReceiveCount receives.
async fn reject(shared: &Shared, delivery: &Delivery<'_>, rejection: &task::Rejection) {
    let Delivery {
        id,
        receipt,
        receive_count,
    } = *delivery;
    telemetry::task_rejected(
        id,
        receive_count,
        rejection.reason.label(),
        &rejection.detail,
    );
    let dead = shared.last_receive(receive_count);
    if dead {
        telemetry::task_dead_lettered(id, Some(rejection.reason.label()));
    }
    if let Some((job, segment)) = &rejection.job_segment {
        let error = format!(
            "rejected ({}): {}",
            rejection.reason.label(),
            rejection.detail
        );
        record_failure(shared, LedgerOp::Rejection, job, *segment, &error, dead).await;
    }
    let delay = retry::release_delay(receive_count);
    release(&shared.control, id, receipt, delay).await;
}

/// A chunk that ran, as its count needs it.
struct Chunk<'a> {
    task: &'a Task,
    claim: dedup::Claim<'a>,
    started: Instant,
    progress: &'a ChunkProgress,
}

/// How a chunk that ran is settled.
enum Settle {
    /// With this run's own outcome: delete when finished, or send its continuation.
    Own(pipeline::Outcome),
    /// Only delete the task: the ledger says another copy goes on (or the segment is done).
    Delete,
}

/// Settles a task the ledger says needs no scan (see [`dedup::decide`]): a copy of a chunk
/// another instance counted is deleted; this very instance, delivered again after it counted its
/// chunk, sends the continuation from the ledger's key (or, the segment being done, is deleted)
/// instead of scanning the chunk again; a task of a new run starts the segment's record over
/// and runs. `true`: settled. A ledger that cannot be read leaves the decision to the chunk's
/// record, as before.
async fn start_from_ledger(
    shared: &Shared,
    ledger: &Ledger,
    job: &str,
    delivery: &Delivery<'_>,
    task: &Task,
    claim: dedup::Claim<'_>,
    started: Instant,
) -> bool {
    let segment = task.segment as u32;
    let record = match ledger.segment(job, segment).await {
        Ok(Some(record)) => record,
        Ok(None) => return false,
        Err(e) => {
            telemetry::ledger_error(LedgerOp::Start, job, segment, e.as_ref());
            return false;
        }
    };
    let decision = match dedup::decide(&record, claim) {
        Ok(decision) => decision,
        Err(e) => {
            telemetry::ledger_error(LedgerOp::Start, job, segment, e.as_ref());
            return false;
        }
    };
    let (id, receipt) = (delivery.id, delivery.receipt);
    match decision {
        Decision::Run => return false,
        Decision::NewRun => {
            telemetry::new_run(id, task.fields(), record.run_id.as_deref(), claim.run);
            if let Err(e) = ledger
                .segment_new_run(task, job, &shared.worker_id, claim.run)
                .await
            {
                telemetry::ledger_error(LedgerOp::Start, job, segment, e.as_ref());
            }
            return false;
        }
        Decision::Resume {
            resume_key: Some(key),
        } => {
            telemetry::duplicate_chunk(
                id,
                task.fields(),
                record.chunks,
                "continued from the ledger",
            );
            checkpoint(shared, delivery, task, key, 0, started).await;
            return true;
        }
        Decision::Drop => telemetry::duplicate_chunk(id, task.fields(), record.chunks, "dropped"),
        Decision::Resume { resume_key: None } => {
            telemetry::duplicate_chunk(id, task.fields(), record.chunks, "segment already done")
        }
    }
    if let Err(e) = shared.control.delete(receipt).await {
        telemetry::ack_failed(id, AckAction::Delete, &e);
    }
    true
}

/// A failed attempt: released with a delay that grows with the receive count, recorded in the
/// ledger (as failed for good on the last allowed receive, when the queue dead-letters it).
async fn fail(
    shared: &Shared,
    delivery: &Delivery<'_>,
    task: &Task,
    err: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let Delivery {
        id,
        receipt,
        receive_count,
    } = *delivery;
    let delay = retry::release_delay(receive_count);
    telemetry::task_failed(id, task.fields(), err, delay);
    let dead = shared.last_receive(receive_count);
    if dead {
        telemetry::task_dead_lettered(id, None);
    }
    if let Some(job) = task.job_id.as_deref() {
        let error = crate::error_chain(err);
        record_failure(
            shared,
            LedgerOp::Failure,
            job,
            task.segment as u32,
            &error,
            dead,
        )
        .await;
    }
    release(&shared.control, id, receipt, delay).await;
}

/// Records a failed attempt at a job's segment in the ledger, if there is one (`op` names the
/// write in `scanfleet_ledger_errors_total`).
async fn record_failure(
    shared: &Shared,
    op: LedgerOp,
    job: &str,
    segment: u32,
    error: &str,
    dead: bool,
) {
    let Some(ledger) = &shared.ledger else {
        return;
    };
    if let Err(e) = ledger
        .segment_failed(segment, job, &shared.worker_id, error, dead)
        .await
    {
        telemetry::ledger_error(op, job, segment, e.as_ref());
    }
    if dead && let Err(e) = ledger.add_failure_to_job(job).await {
        telemetry::ledger_error(LedgerOp::JobTotals, job, segment, e.as_ref());
    }
}

/// Counts a finished chunk in the ledger, before its continuation is sent (so the ledger is
/// never behind the queue). When the ledger refuses the count, the record it holds decides,
/// by the same rule as at the task's start ([`dedup::decide`]), so the two moments never
/// disagree.
async fn record_chunk(
    shared: &Shared,
    ledger: &Ledger,
    job: &str,
    chunk: Chunk<'_>,
    mut outcome: pipeline::Outcome,
) -> Result<Settle, BoxError> {
    let Chunk {
        task,
        claim,
        started,
        progress,
    } = chunk;
    // No progress write may land after the count, which clears the provisional figures.
    let reported = progress.close().await;
    let next = match &outcome.end {
        End::Checkpoint(key) => Some(key),
        _ => None,
    };
    let report = ChunkReport {
        rows_scanned: outcome.scanned,
        rows_published: outcome.published,
        read_units: outcome.read_units,
        duration: started.elapsed(),
        next,
        instance: claim.instance,
        run: claim.run,
    };
    let record = match ledger
        .record_chunk(task, job, &shared.worker_id, &report)
        .await
    {
        Ok(Recorded::Counted) => {
            match ledger.add_chunk_to_job(job, &report, reported).await {
                Ok(()) => progress.taken_back().await,
                Err(e) => telemetry::ledger_error(
                    LedgerOp::JobTotals,
                    job,
                    task.segment as u32,
                    e.as_ref(),
                ),
            }
            return Ok(Settle::Own(outcome));
        }
        Ok(Recorded::Refused(record)) => record,
        Err(e) => {
            telemetry::ledger_error(LedgerOp::Chunk, job, task.segment as u32, e.as_ref());
            return Err(e);
        }
    };
    let id = claim.instance;
    Ok(match dedup::decide(&record, claim)? {
        Decision::Run | Decision::NewRun => {
            // The ledger is behind this task (configured mid-job) or another run took the
            // segment over meanwhile: go on uncounted, from this run's own position.
            telemetry::duplicate_chunk(id, task.fields(), record.chunks, "not counted; going on");
            Settle::Own(outcome)
        }
        Decision::Drop => {
            telemetry::duplicate_chunk(
                id,
                task.fields(),
                record.chunks,
                "dropped: counted by a copy",
            );
            Settle::Delete
        }
        Decision::Resume { resume_key } => {
            telemetry::duplicate_chunk(
                id,
                task.fields(),
                record.chunks,
                "continue from the ledger",
            );
            outcome.end = match resume_key {
                Some(key) => End::Checkpoint(key),
                None => End::Finished,
            };
            Settle::Own(outcome)
        }
    })
}

/// Records the position reached: sends the continuation task, *then* deletes this one.
///
/// The order is what makes this lossless: if the worker dies between the two calls, both
/// tasks exist and the chunk is repeated (a duplicate, never a gap). Deleting first would
/// open a window in which a crash loses the rest of the segment.
async fn checkpoint(
    shared: &Shared,
    delivery: &Delivery<'_>,
    task: &Task,
    next: pipeline::Item,
    rows: u64,
    started: Instant,
) {
    let Delivery { id, receipt, .. } = *delivery;
    let sent: Result<(), BoxError> = match task.continuation(next, id) {
        // JSON SQS accepts (its start key may hold U+FFFE or U+FFFF), refused before sending
        // when a worker would reject it as too large.
        Ok(continuation) => match task::body_of(&continuation.to_message()) {
            Ok(body) => shared.control.send_body(body).await.map_err(BoxError::from),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    if let Err(e) = sent {
        // Without the continuation the task must stay: a failure like any other, so the chunk
        // is redone.
        fail(shared, delivery, task, e.as_ref()).await;
        return;
    }
    match shared.control.delete(receipt).await {
        Ok(()) => telemetry::task_checkpointed(id, task.fields(), rows, started.elapsed()),
        Err(e) => telemetry::ack_failed(id, AckAction::Delete, &e),
    }
}

/// Runs the chunk until it ends or the hard stop fires. `None`: stopped hard (drain timeout
/// passed) with nothing recorded.
async fn run_chunk(
    shared: &Shared,
    task: &Task,
    progress: &Arc<pipeline::Progress>,
) -> Option<Result<pipeline::Outcome, BoxError>> {
    tokio::select! {
        // `biased`: a chunk that finished as the hard stop fired is still recorded (its
        // rows were all accepted), rather than handed back to be published again.
        biased;
        result = pipeline::run_chunk(&shared.output, task, shared.shutdown.drain_token(), progress.clone()) => {
            Some(result.map_err(BoxError::from))
        }
        () = shared.shutdown.hard_stopped() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn a_panicking_task_becomes_an_error_and_frees_what_it_held() {
        let held = Arc::new(Semaphore::new(1));
        let permit = held.clone().acquire_owned().await.unwrap();
        let r = catch_panic(async move {
            let _permit = permit;
            let chunk = u32::MAX;
            // What a wrapped counter would have been, with overflow checks on.
            chunk.checked_add(1).expect("chunk + 1 overflowed")
        })
        .await;
        let err = r.unwrap_err();
        assert!(err.to_string().contains("chunk + 1 overflowed"), "{err}");
        assert_eq!(held.available_permits(), 1, "the slot was freed");
        assert_eq!(catch_panic(async { 7 }).await.unwrap(), 7);
        let r = catch_panic(async { panic!("{} rows", 3) }).await;
        assert!(r.unwrap_err().to_string().contains("3 rows"));
    }
}
