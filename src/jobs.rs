//! The job commands that read the ledger: `status`, `enqueue --wait` and `reconcile`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::ledger::{self, BoxError, Ledger, Summary};
use crate::sqs;

/// How often `--wait` reads the ledger.
const POLL: Duration = Duration::from_secs(1);

/// The job's figures now.
pub async fn status(ledger: &Ledger, job: &str) -> Result<Summary, BoxError> {
    let (record, segments) = ledger.job(job).await?;
    Ok(ledger::summarize(&record, &segments, ledger::now_secs()))
}

/// Follows the job until every segment is done or one was dead-lettered, showing progress on
/// stderr: a live bar on a terminal, otherwise a plain line every `every`.
pub async fn wait(ledger: &Ledger, job: &str, every: Duration) -> Result<Summary, BoxError> {
    let terminal = std::io::stderr().is_terminal();
    let new_bar = |len: u32| {
        let bar = indicatif::ProgressBar::new(u64::from(len));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} segments  {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let mut bar = None;
    let mut last_line: Option<Instant> = None;
    loop {
        let s = status(ledger, job).await?;
        if terminal && bar.is_none() {
            bar = Some(new_bar(s.segments_total));
        }
        let eta = s
            .eta_seconds
            .map(|e| format!(", ETA {e} s"))
            .unwrap_or_default();
        let figures = format!(
            "{} rows published, {:.0} rows/s, {:.1} read units{eta}",
            s.rows_published, s.rows_per_second, s.read_units_consumed
        );
        match &bar {
            Some(bar) => {
                bar.set_length(u64::from(s.segments_total));
                bar.set_position(u64::from(s.segments_done));
                bar.set_message(figures.clone());
            }
            None if last_line.is_none_or(|t| t.elapsed() >= every) || s.state != "running" => {
                eprintln!(
                    "job {}: {}/{} segments done, {} running, {} failed; {figures}",
                    s.job_id,
                    s.segments_done,
                    s.segments_total,
                    s.segments_running,
                    s.segments_failed
                );
                last_line = Some(Instant::now());
            }
            None => {}
        }
        if s.state != "running" {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(s);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `reconcile` did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Segments whose dead-lettered tasks were moved back to the control queue.
    pub redriven: Vec<u32>,
    /// Segments re-enqueued from the ledger's position: `(segment, chunk)`.
    pub reenqueued: Vec<(u32, u32)>,
}

pub struct ReconcileOptions<'a> {
    pub control_url: &'a str,
    pub redrive_from: Option<&'a str>,
    /// Seconds without a sign of life after which a running segment counts as not in flight.
    pub stale_seconds: u64,
    /// Go on even though the control queue is not empty.
    pub force: bool,
}

/// Puts the job's unfinished segments back on the control queue: first its tasks in the DLQ
/// (if asked), then, from the ledger's position, every other segment that is neither done nor
/// in flight.
pub async fn reconcile(
    ledger: &Ledger,
    sqs_client: &aws_sdk_sqs::Client,
    job: &str,
    opts: &ReconcileOptions<'_>,
) -> Result<Reconciled, BoxError> {
    let (record, segments) = ledger.job(job).await?;
    if !opts.force {
        let depth = sqs::queue_depth(sqs_client, opts.control_url).await?;
        if depth > 0 {
            return Err(format!(
                "the control queue holds {depth} tasks (visible or in flight); this job's may be among them and would be run twice. Wait until it is empty, or pass --force"
            )
            .into());
        }
    }
    let mut done = Reconciled::default();
    if let Some(dlq) = opts.redrive_from {
        done.redriven = redrive(sqs_client, dlq, opts.control_url, job).await?;
    }
    let skip: HashSet<u32> = done.redriven.iter().copied().collect();
    let resumes = ledger::to_reconcile(
        &record,
        &segments,
        ledger::now_secs(),
        opts.stale_seconds,
        &skip,
    );
    let mut bodies = Vec::with_capacity(resumes.len());
    for r in &resumes {
        bodies.push(ledger::resume_task(&record.task_template, r)?);
        done.reenqueued.push((r.segment, r.chunk));
    }
    sqs::send_tasks(sqs_client, opts.control_url, &bodies).await?;
    Ok(done)
}

/// Moves the job's tasks from the DLQ back to the control queue (send, then delete: a crash
/// in between leaves a duplicate task, never a lost one). Other jobs' tasks are left in the
/// DLQ, made visible again at the end.
async fn redrive(
    client: &aws_sdk_sqs::Client,
    dlq: &str,
    control: &str,
    job: &str,
) -> Result<Vec<u32>, BoxError> {
    let mut moved = Vec::new();
    let mut others = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let body = m.body().unwrap_or_default();
            let task: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let receipt = m.receipt_handle().unwrap_or_default().to_owned();
            if task["job_id"].as_str() != Some(job) {
                others.push(receipt);
                continue;
            }
            client
                .send_message()
                .queue_url(control)
                .message_body(body)
                .send()
                .await?;
            client
                .delete_message()
                .queue_url(dlq)
                .receipt_handle(&receipt)
                .send()
                .await?;
            if let Some(seg) = task["current_segment"].as_u64() {
                moved.push(seg as u32);
            }
        }
    }
    for receipt in others {
        let _ = client
            .change_message_visibility()
            .queue_url(dlq)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
    }
    moved.sort_unstable();
    moved.dedup();
    Ok(moved)
}
