//! What runs beside a task: the visibility heartbeat, and the chunk's progress written to the
//! ledger every few seconds. Its own tokio task, so a slow or hung call never holds up the
//! chunk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::ledger::Ledger;
use crate::pipeline;
use crate::task::Task;
use crate::telemetry::{self, LedgerOp};

/// How often a running chunk writes its progress to the ledger (its segment's provisional
/// figures and the job's running totals): what `status` and `enqueue --wait` show between
/// chunk counts. One small write each, per task.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A running chunk's progress and what of it the job's running totals were told, shared by the
/// chunk, its heartbeat and the count at its end. The lock keeps a progress write from landing
/// after the chunk was counted (or ended uncounted): once closed, no more are made.
pub(super) struct ChunkProgress {
    pub(super) progress: Arc<pipeline::Progress>,
    reported: tokio::sync::Mutex<Reported>,
}

#[derive(Default)]
struct Reported {
    scanned: u64,
    published: u64,
    closed: bool,
}

impl ChunkProgress {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            progress: Arc::default(),
            reported: Default::default(),
        })
    }

    /// Ends the progress writes (a write in progress finishes first); what the job's totals
    /// were told, to take back.
    pub(super) async fn close(&self) -> (u64, u64) {
        let mut reported = self.reported.lock().await;
        reported.closed = true;
        (reported.scanned, reported.published)
    }

    /// The job's totals no longer hold this chunk's progress (the count took it back).
    pub(super) async fn taken_back(&self) {
        let mut reported = self.reported.lock().await;
        (reported.scanned, reported.published) = (0, 0);
    }

    /// One progress write: the segment's provisional figures, then the job's totals by what
    /// changed since the last one.
    pub(super) async fn write(&self, ledger: &Ledger, task: &Task, job: &str, worker: &str) {
        let mut reported = self.reported.lock().await;
        if reported.closed {
            return;
        }
        let now = (
            self.progress.scanned.load(Ordering::Relaxed),
            self.progress.published.load(Ordering::Relaxed),
        );
        let segment = task.segment as u32;
        match ledger.heartbeat(task, job, worker, now).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                return telemetry::ledger_error(LedgerOp::Heartbeat, job, segment, e.as_ref());
            }
        }
        let delta = (
            now.0 as i64 - reported.scanned as i64,
            now.1 as i64 - reported.published as i64,
        );
        if delta == (0, 0) {
            return;
        }
        match ledger.add_progress_to_job(job, delta).await {
            Ok(()) => (reported.scanned, reported.published) = now,
            Err(e) => telemetry::ledger_error(LedgerOp::JobTotals, job, segment, e.as_ref()),
        }
    }

    /// A chunk that ended uncounted: its progress is taken back from the job's totals and the
    /// segment's provisional figures cleared (best effort: they are only a hint).
    pub(super) async fn withdraw(&self, ledger: &Ledger, task: &Task, job: &str, worker: &str) {
        let (scanned, published) = self.close().await;
        if (scanned, published) == (0, 0) {
            return;
        }
        self.taken_back().await;
        let segment = task.segment as u32;
        if let Err(e) = ledger.clear_progress(task, job, worker).await {
            telemetry::ledger_error(LedgerOp::Heartbeat, job, segment, e.as_ref());
        }
        let back = (-(scanned as i64), -(published as i64));
        if let Err(e) = ledger.add_progress_to_job(job, back).await {
            telemetry::ledger_error(LedgerOp::JobTotals, job, segment, e.as_ref());
        }
    }
}

/// Extends a running task's visibility every third of the timeout, so it is never handed to a
/// second worker while this one is still on it, and writes the chunk's progress to the ledger
/// every [`PROGRESS_EVERY`] (its sign of life there). It runs as a task of its own: a slow or
/// hung `ChangeMessageVisibility` or ledger write never holds up the chunk. Stopped when
/// dropped.
pub(super) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    pub(super) fn start(
        shared: &Arc<Shared>,
        receipt: &str,
        id: &str,
        task: &Task,
        progress: &Arc<ChunkProgress>,
    ) -> Self {
        let visibility = {
            let (shared, receipt, id) = (shared.clone(), receipt.to_owned(), id.to_owned());
            beat_every(shared.visibility / 3, move || {
                let (shared, receipt, id) = (shared.clone(), receipt.clone(), id.clone());
                async move {
                    let r = shared
                        .control
                        .set_visibility(&receipt, shared.visibility)
                        .await;
                    telemetry::heartbeat(
                        r.as_ref()
                            .map(|_| ())
                            .map_err(|e| e as &dyn std::error::Error),
                        &id,
                    );
                }
            })
        };
        let ledger = {
            let (shared, task, progress) = (shared.clone(), task.clone(), progress.clone());
            beat_every(PROGRESS_EVERY, move || {
                let (shared, task, progress) = (shared.clone(), task.clone(), progress.clone());
                async move {
                    if let (Some(ledger), Some(job)) = (&shared.ledger, task.job_id.as_deref()) {
                        progress.write(ledger, &task, job, &shared.worker_id).await;
                    }
                }
            })
        };
        Self(tokio::spawn(async move {
            tokio::join!(visibility, ledger);
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls `beat` every `period`, the first one `period` from now, one at a time (a beat that
/// takes longer delays the next, it never piles them up).
async fn beat_every<F, Fut>(period: Duration, beat: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        beat().await;
    }
}
