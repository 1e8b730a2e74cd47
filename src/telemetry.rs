//! Logs and metrics. Every observable outcome has one emitter here that writes its log line
//! and updates its metrics, so call sites stay one line and metric names live in one place.
//! Low-level: emitters take plain values and label enums, never the domain's types, so any
//! room (the AWS clients included) may emit.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// What the emitters need to know of a task, as plain values: telemetry sits below the domain
/// and knows nothing of its types (`crate::task::Task::fields` makes one).
#[derive(Debug, Clone, Copy)]
pub struct TaskFields<'a> {
    pub table: &'a str,
    pub segment: i32,
    pub total_segments: i32,
    pub chunk: u32,
    /// Empty when the task names no job.
    pub job_id: &'a str,
}

/// The log line's format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A service the direct client signs for: the `service` label of
/// `scanfleet_clock_corrections_total`, and the SigV4 signing name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sqs,
    Dynamodb,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Sqs, Service::Dynamodb];

    pub fn label(self) -> &'static str {
        match self {
            Service::Sqs => "sqs",
            Service::Dynamodb => "dynamodb",
        }
    }
}

/// The `outcome` label of `scanfleet_rows_oversize_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Sent to `output.oversize_queue_url` instead.
    Diverted,
    /// Failed its task (no oversize queue is set).
    Failed,
}

impl Oversize {
    pub const ALL: [Oversize; 2] = [Oversize::Diverted, Oversize::Failed];

    pub fn label(self) -> &'static str {
        match self {
            Oversize::Diverted => "diverted",
            Oversize::Failed => "failed",
        }
    }
}

/// Metric names: part of the public contract (dashboards and alerts use them).
pub mod names {
    pub const TASKS_RECEIVED: &str = "scanfleet_tasks_received_total";
    pub const TASKS_COMPLETED: &str = "scanfleet_tasks_completed_total";
    pub const TASKS_FAILED: &str = "scanfleet_tasks_failed_total";
    pub const TASKS_REJECTED: &str = "scanfleet_tasks_rejected_total";
    pub const TASKS_HANDED_BACK: &str = "scanfleet_tasks_handed_back_total";
    pub const TASKS_DEAD_LETTERED: &str = "scanfleet_tasks_dead_lettered_total";
    pub const CONTROL_QUEUE_MESSAGES: &str = "scanfleet_control_queue_messages";
    pub const TASKS_IN_FLIGHT: &str = "scanfleet_tasks_in_flight";
    pub const TASK_DURATION: &str = "scanfleet_task_duration_seconds";
    pub const ROWS_SCANNED: &str = "scanfleet_rows_scanned_total";
    pub const ROWS_PUBLISHED: &str = "scanfleet_rows_published_total";
    pub const MESSAGES_PUBLISHED: &str = "scanfleet_messages_published_total";
    pub const SCAN_PAGES: &str = "scanfleet_scan_pages_total";
    pub const PUBLISH_RETRIES: &str = "scanfleet_publish_retries_total";
    pub const SCAN_RETRIES: &str = "scanfleet_scan_retries_total";
    pub const CLOCK_CORRECTIONS: &str = "scanfleet_clock_corrections_total";
    pub const RECEIVE_ERRORS: &str = "scanfleet_receive_errors_total";
    pub const HEARTBEATS: &str = "scanfleet_heartbeats_total";
    pub const HEARTBEAT_ERRORS: &str = "scanfleet_heartbeat_errors_total";
    pub const ACK_ERRORS: &str = "scanfleet_ack_errors_total";
    pub const CHECKPOINTS: &str = "scanfleet_checkpoints_total";
    pub const ROWS_OVERSIZE: &str = "scanfleet_rows_oversize_total";
    pub const READ_CAPACITY: &str = "scanfleet_read_capacity_units_total";
    pub const LEDGER_ERRORS: &str = "scanfleet_ledger_errors_total";
    pub const DUPLICATE_CHUNKS: &str = "scanfleet_duplicate_chunks_total";
}

/// Buckets of [`names::TASK_DURATION`] in seconds, up to 12 hours: a chunk may run for
/// `worker.checkpoint_seconds` (at most 6 hours) and then finish its page, and SQS holds a
/// received message for at most 12 hours, so no chunk falls beyond the last finite bucket.
const TASK_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0,
    43200.0,
];

/// Which job-ledger write failed: the `op` label of `scanfleet_ledger_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOp {
    /// Marking a segment running as its task starts (or reading its record first).
    Start,
    /// A running chunk's sign of life and progress.
    Heartbeat,
    /// Counting a finished chunk: a failure fails the chunk.
    Chunk,
    /// Recording a failed attempt.
    Failure,
    /// Recording a rejected task that names a job and segment.
    Rejection,
    /// The job's running totals (a hint `--wait` follows).
    JobTotals,
}

impl LedgerOp {
    pub const ALL: [LedgerOp; 6] = [
        LedgerOp::Start,
        LedgerOp::Heartbeat,
        LedgerOp::Chunk,
        LedgerOp::Failure,
        LedgerOp::Rejection,
        LedgerOp::JobTotals,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LedgerOp::Start => "start",
            LedgerOp::Heartbeat => "heartbeat",
            LedgerOp::Chunk => "chunk",
            LedgerOp::Failure => "failure",
            LedgerOp::Rejection => "rejection",
            LedgerOp::JobTotals => "job_totals",
        }
    }
}

/// What could not be done to a task message: the `action` label of
/// `scanfleet_ack_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAction {
    Delete,
    Release,
    /// Sending a task again as a new message (a hand-back on its last receive).
    Resend,
}

impl AckAction {
    pub const ALL: [AckAction; 3] = [AckAction::Delete, AckAction::Release, AckAction::Resend];

    pub fn label(self) -> &'static str {
        match self {
            AckAction::Delete => "delete",
            AckAction::Release => "release",
            AckAction::Resend => "resend",
        }
    }
}

/// Installs the Prometheus recorder and describes every metric. `tables`: those the worker may
/// scan, whose per-table task counters start at zero; `reasons`: every rejection reason label,
/// whose rejection and dead-letter counters start at zero.
pub fn install_metrics<'a>(
    tables: impl IntoIterator<Item = &'a str>,
    reasons: &[&'static str],
) -> PrometheusHandle {
    let handle = builder()
        .install_recorder()
        .expect("the metrics recorder is installed once, at start-up");
    describe_and_zero(tables, reasons);
    handle
}

/// The exporter with scanfleet's histogram buckets.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::TASK_DURATION.into()),
            TASK_DURATION_BUCKETS,
        )
        .expect("bucket list is not empty")
}

/// Describes every metric and zero-initialises the counters, on the current recorder.
fn describe_and_zero<'a>(tables: impl IntoIterator<Item = &'a str>, reasons: &[&'static str]) {
    use names::*;
    describe_counter!(
        TASKS_RECEIVED,
        "Task messages received from the control queue."
    );
    describe_counter!(
        TASKS_COMPLETED,
        "Tasks whose whole segment was published and that were deleted."
    );
    describe_counter!(
        TASKS_FAILED,
        "Tasks that failed and were released for a later retry."
    );
    describe_counter!(
        TASKS_REJECTED,
        "Invalid task messages, by reason; left for the dead-letter queue."
    );
    describe_counter!(
        TASKS_HANDED_BACK,
        "Tasks handed back unfinished at shutdown."
    );
    describe_counter!(
        TASKS_DEAD_LETTERED,
        "Tasks released on their last allowed receive, so the control queue moves them to its dead-letter queue; by rejection reason, or `failed`."
    );
    describe_gauge!(
        CONTROL_QUEUE_MESSAGES,
        "Task messages on the control queue, visible plus in flight (SQS's approximate counts, read once a minute)."
    );
    describe_gauge!(TASKS_IN_FLIGHT, "Tasks this worker is running now.");
    describe_histogram!(
        TASK_DURATION,
        Unit::Seconds,
        "Time from receiving a task to its deletion."
    );
    describe_counter!(ROWS_SCANNED, "Rows read from DynamoDB.");
    describe_counter!(ROWS_PUBLISHED, "Rows accepted by the output queue.");
    describe_counter!(
        MESSAGES_PUBLISHED,
        "Messages accepted by the output queue (one per row, or packed rows)."
    );
    describe_counter!(SCAN_PAGES, "DynamoDB Scan pages read.");
    describe_counter!(
        PUBLISH_RETRIES,
        "SendMessageBatch retries (failed entries or transient errors)."
    );
    describe_counter!(
        SCAN_RETRIES,
        "Scan retries of the direct client (throttling or transient errors); the SDK client retries inside the SDK, uncounted."
    );
    describe_counter!(
        CLOCK_CORRECTIONS,
        "Signing-clock corrections of the direct clients, by service: the service refused a request's time and its clock was minutes off the local one."
    );
    describe_counter!(
        RECEIVE_ERRORS,
        "Failed ReceiveMessage calls on the control queue."
    );
    describe_counter!(HEARTBEATS, "Visibility extensions of running tasks.");
    describe_counter!(
        HEARTBEAT_ERRORS,
        "Failed visibility extensions of running tasks."
    );
    describe_counter!(
        ACK_ERRORS,
        "Failed deletes, releases and resends of task messages, by action (`delete`, `release`, `resend`)."
    );
    describe_counter!(
        CHECKPOINTS,
        "Chunks ended by a checkpoint (continuation task sent, task deleted), by table; with the completed tasks, every chunk that ended well."
    );
    describe_counter!(
        ROWS_OVERSIZE,
        "Rows too large for the output queue, by whether they were diverted."
    );
    describe_gauge!(
        READ_CAPACITY,
        "Read capacity units consumed by scans (only ever grows; a gauge because units are fractional)."
    );
    describe_counter!(
        LEDGER_ERRORS,
        "Failed writes to the job ledger, by operation (a failed chunk record fails the chunk)."
    );
    describe_counter!(
        DUPLICATE_CHUNKS,
        "Chunks the ledger had already counted (redelivered or duplicated tasks)."
    );
    // Zero-initialise every counter, so each series exists from start-up: a dashboard panel or
    // an alert on a counter that has not happened yet would otherwise see no data at all
    // (tests/emulator.rs checks this against deploy/metrics-used.txt).
    for name in [
        TASKS_RECEIVED,
        TASKS_HANDED_BACK,
        ROWS_SCANNED,
        ROWS_PUBLISHED,
        MESSAGES_PUBLISHED,
        SCAN_PAGES,
        PUBLISH_RETRIES,
        SCAN_RETRIES,
        RECEIVE_ERRORS,
        HEARTBEATS,
        HEARTBEAT_ERRORS,
        DUPLICATE_CHUNKS,
    ] {
        counter!(name).increment(0);
    }
    for table in tables {
        counter!(TASKS_COMPLETED, "table" => table.to_owned()).increment(0);
        counter!(TASKS_FAILED, "table" => table.to_owned()).increment(0);
        counter!(CHECKPOINTS, "table" => table.to_owned()).increment(0);
    }
    for &reason in reasons {
        counter!(TASKS_REJECTED, "reason" => reason).increment(0);
        counter!(TASKS_DEAD_LETTERED, "reason" => reason).increment(0);
    }
    counter!(TASKS_DEAD_LETTERED, "reason" => DEAD_AFTER_FAILING).increment(0);
    for op in LedgerOp::ALL {
        counter!(LEDGER_ERRORS, "op" => op.label()).increment(0);
    }
    for action in AckAction::ALL {
        counter!(ACK_ERRORS, "action" => action.label()).increment(0);
    }
    for outcome in Oversize::ALL {
        counter!(ROWS_OVERSIZE, "outcome" => outcome.label()).increment(0);
    }
    for service in Service::ALL {
        counter!(CLOCK_CORRECTIONS, "service" => service.label()).increment(0);
    }
    gauge!(TASKS_IN_FLIGHT).set(0.0);
    gauge!(READ_CAPACITY).set(0.0);
}

/// Starts logging to stderr (stdout stays free for command output such as a job id).
/// `level`: a `tracing` EnvFilter directive (`log.level`, checked when the settings load).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .expect("log.level is checked when the settings load");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn task_labels(task: TaskFields) -> [(&'static str, String); 1] {
    [("table", task.table.to_owned())]
}

pub fn task_received(message_id: &str, receive_count: u32) {
    counter!(names::TASKS_RECEIVED).increment(1);
    tracing::debug!(message_id, receive_count, "task received");
}

/// `reason`: the rejection's label; `detail`: what was wrong.
pub fn task_rejected(message_id: &str, receive_count: u32, reason: &'static str, detail: &str) {
    counter!(names::TASKS_REJECTED, "reason" => reason).increment(1);
    warn!(
        message_id,
        receive_count,
        reason,
        detail,
        "invalid task rejected; left on the queue for its dead-letter queue"
    );
}

pub fn task_started(message_id: &str, task: TaskFields) {
    gauge!(names::TASKS_IN_FLIGHT).increment(1.0);
    info!(
        message_id,
        table = task.table,
        segment = task.segment,
        total_segments = task.total_segments,
        job_id = task.job_id,
        "task started"
    );
}

/// Pairs with [`task_started`], whatever the outcome.
pub fn task_ended() {
    gauge!(names::TASKS_IN_FLIGHT).decrement(1.0);
}

pub fn task_completed(message_id: &str, task: TaskFields, rows: u64, elapsed: Duration) {
    counter!(names::TASKS_COMPLETED, &task_labels(task)).increment(1);
    histogram!(names::TASK_DURATION).record(elapsed.as_secs_f64());
    info!(
        message_id,
        table = task.table,
        segment = task.segment,
        rows,
        seconds = elapsed.as_secs_f64(),
        "task completed"
    );
}

pub fn task_failed(
    message_id: &str,
    task: TaskFields,
    err: &dyn std::error::Error,
    retry_in: Duration,
) {
    counter!(names::TASKS_FAILED, &task_labels(task)).increment(1);
    error!(
        message_id,
        table = task.table,
        segment = task.segment,
        error = %crate::error_chain(err),
        retry_in_seconds = retry_in.as_secs(),
        "task failed; released for a retry"
    );
}

pub fn task_handed_back(message_id: &str, task: TaskFields) {
    counter!(names::TASKS_HANDED_BACK).increment(1);
    warn!(
        message_id,
        table = task.table,
        segment = task.segment,
        "shutdown: task handed back unfinished"
    );
}

/// `scanned`: the rows DynamoDB read (`ScannedCount`, before any filter), as the ledger counts.
pub fn page_scanned(scanned: u64, capacity_units: f64) {
    counter!(names::SCAN_PAGES).increment(1);
    gauge!(names::READ_CAPACITY).increment(capacity_units);
    counter!(names::ROWS_SCANNED).increment(scanned);
}

/// A batch accepted by the output queue: its rows, in its messages.
pub fn rows_published(rows: usize, messages: usize) {
    counter!(names::ROWS_PUBLISHED).increment(rows as u64);
    counter!(names::MESSAGES_PUBLISHED).increment(messages as u64);
}

pub fn publish_retry(failed_entries: usize, reason: &str) {
    counter!(names::PUBLISH_RETRIES).increment(1);
    warn!(failed_entries, reason, "retrying SendMessageBatch");
}

pub fn scan_retry(reason: &str) {
    counter!(names::SCAN_RETRIES).increment(1);
    warn!(reason, "retrying Scan");
}

/// A direct client found the local clock `offset_ms` behind the service's (ahead if negative)
/// and signs with the service's time from now on.
pub fn clock_corrected(service: Service, offset_ms: i64) {
    let service = service.label();
    counter!(names::CLOCK_CORRECTIONS, "service" => service).increment(1);
    warn!(
        service,
        local_clock_behind_seconds = offset_ms as f64 / 1000.0,
        "the service refused a request's time: the local clock is off; signing with the service's time"
    );
}

/// The `reason` of a task dead-lettered after failing, beside the rejection reasons.
const DEAD_AFTER_FAILING: &str = "failed";

/// A task released on its last allowed receive: SQS moves it to the dead-letter queue.
/// `rejection`: the label of why it was rejected; `None`: it failed (its failure was logged
/// already).
pub fn task_dead_lettered(message_id: &str, rejection: Option<&'static str>) {
    let reason = rejection.unwrap_or(DEAD_AFTER_FAILING);
    counter!(names::TASKS_DEAD_LETTERED, "reason" => reason).increment(1);
    error!(
        message_id,
        reason,
        "task released on its last allowed receive: the queue moves it to its dead-letter queue"
    );
}

pub fn control_queue_messages(messages: u64) {
    gauge!(names::CONTROL_QUEUE_MESSAGES).set(messages as f64);
}

pub fn control_queue_unread(err: &dyn std::error::Error) {
    warn!(error = %crate::error_chain(err), "reading the control queue's message counts failed");
}

pub fn receive_failed(err: &dyn std::error::Error, retry_in: Duration) {
    counter!(names::RECEIVE_ERRORS).increment(1);
    warn!(
        error = %crate::error_chain(err),
        retry_in_ms = retry_in.as_millis() as u64,
        "receiving tasks failed; backing off"
    );
}

pub fn heartbeat(ok: Result<(), &dyn std::error::Error>, message_id: &str) {
    match ok {
        Ok(()) => counter!(names::HEARTBEATS).increment(1),
        Err(e) => {
            counter!(names::HEARTBEAT_ERRORS).increment(1);
            warn!(message_id, error = %crate::error_chain(e), "extending task visibility failed");
        }
    }
}

pub fn ack_failed(message_id: &str, action: AckAction, err: &dyn std::error::Error) {
    let action = action.label();
    counter!(names::ACK_ERRORS, "action" => action).increment(1);
    error!(message_id, action, error = %crate::error_chain(err), "task message could not be updated");
}

pub fn task_checkpointed(message_id: &str, task: TaskFields, rows: u64, elapsed: Duration) {
    counter!(names::CHECKPOINTS, &task_labels(task)).increment(1);
    histogram!(names::TASK_DURATION).record(elapsed.as_secs_f64());
    info!(
        message_id,
        table = task.table,
        segment = task.segment,
        chunk = task.chunk,
        rows,
        seconds = elapsed.as_secs_f64(),
        "chunk checkpointed; continuation task sent"
    );
}

pub fn ledger_error(op: LedgerOp, job: &str, segment: u32, err: &dyn std::error::Error) {
    let op = op.label();
    counter!(names::LEDGER_ERRORS, "op" => op).increment(1);
    warn!(op, job, segment, error = %crate::error_chain(err), "job ledger write failed");
}

pub fn task_sent_again(message_id: &str, receive_count: u32) {
    info!(
        message_id,
        receive_count,
        "handed back as a new message: on its last allowed receive, a release would have dead-lettered it"
    );
}

/// A task of another run of its job than the one its segment's ledger record counts: the
/// segment starts over for the new run (the job was sent again).
pub fn new_run(message_id: &str, task: TaskFields, ledger_run: Option<&str>, run: Option<&str>) {
    info!(
        message_id,
        job_id = task.job_id,
        segment = task.segment,
        chunk = task.chunk,
        ledger_run = ledger_run.unwrap_or("(none)"),
        run = run.unwrap_or("(none)"),
        "a new run of the job: its segment starts over in the ledger"
    );
}

/// A task whose future panicked and whose body does not parse as a task (which cannot happen:
/// the panic came after parsing); it is released like a failure.
pub fn task_panicked_unparsed(message_id: &str, err: &dyn std::error::Error) {
    error!(message_id, error = %err, "task failed");
}

pub fn duplicate_chunk(
    message_id: &str,
    task: TaskFields,
    ledger_chunks: u32,
    action: &'static str,
) {
    counter!(names::DUPLICATE_CHUNKS).increment(1);
    info!(
        message_id,
        segment = task.segment,
        chunk = task.chunk,
        ledger_chunks,
        action,
        "chunk already counted in the job ledger"
    );
}

pub fn row_oversize(table: &str, key: &serde_json::Value, size: usize, outcome: Oversize) {
    let outcome = outcome.label();
    counter!(names::ROWS_OVERSIZE, "outcome" => outcome).increment(1);
    warn!(table, key = %key, size, outcome, "row too large for the output queue");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tables;
    impl crate::task::TablePolicy for Tables {
        fn default_table(&self) -> &str {
            "orders"
        }
        fn allows(&self, table: &str) -> bool {
            table == "orders" || table == "users"
        }
    }

    /// What `/metrics` shows after `f` ran on a fresh recorder set up as `install_metrics` sets
    /// up the global one (for tables `orders` and `users`).
    fn rendered(f: impl FnOnce()) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_and_zero(["orders", "users"], &crate::task::RejectReason::labels());
            f();
        });
        handle.render()
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn checkpoints_are_counted_by_table_like_the_task_outcomes() {
        let task = crate::task::parse(
            r#"{"current_segment":0,"total_segments":2,"table":"users"}"#,
            &Tables,
        )
        .unwrap();
        let text =
            rendered(|| task_checkpointed("m-1", task.fields(), 10, Duration::from_secs(60)));
        // Each allowed table's series exists from start-up, as the completed and failed
        // counters' do; the failure-ratio alert divides by their sum per table.
        assert_eq!(
            sample(&text, r#"scanfleet_checkpoints_total{table="orders"}"#),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"scanfleet_checkpoints_total{table="users"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "scanfleet_checkpoints_total"), None, "{text}");
    }

    #[test]
    fn every_metric_the_dashboard_and_alerts_use_exists_from_start_up() {
        let text = rendered(|| {});
        // Only these appear later: the histogram with its first sample, the control queue's
        // gauge with its first read of the queue's counts.
        let later = [names::TASK_DURATION, names::CONTROL_QUEUE_MESSAGES];
        let missing: Vec<&str> = include_str!("../deploy/metrics-used.txt")
            .lines()
            .filter(|name| !later.contains(name))
            .filter(|name| {
                !text.lines().any(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                })
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not exported at start-up: {missing:?}\n{text}"
        );
    }

    #[test]
    fn the_ack_errors_help_names_every_action() {
        let text = rendered(|| {});
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix("# HELP scanfleet_ack_errors_total "))
            .expect("described");
        let actions: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(r#"scanfleet_ack_errors_total{action=""#))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(actions.len(), 3, "{text}");
        for action in actions {
            assert!(help.contains(action), "{action}: {help}");
        }
    }

    #[test]
    fn the_task_duration_buckets_cover_the_longest_chunk() {
        let longest = crate::settings::MAX_CHECKPOINT_SECONDS as f64;
        let top = TASK_DURATION_BUCKETS.last().copied().unwrap();
        assert!(
            top > longest,
            "top bucket {top} s, chunks up to {longest} s"
        );
        let task =
            crate::task::parse(r#"{"current_segment":0,"total_segments":1}"#, &Tables).unwrap();
        // A chunk of the longest checkpoint_seconds that took a minute more for its last page.
        let chunk = Duration::from_secs(crate::settings::MAX_CHECKPOINT_SECONDS + 60);
        let text = rendered(|| task_checkpointed("m-1", task.fields(), 10, chunk));
        let bucket = |le: &str| {
            sample(
                &text,
                &format!(r#"scanfleet_task_duration_seconds_bucket{{le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("14400"), Some(0.0), "{text}");
        assert_eq!(bucket("43200"), Some(1.0), "{text}");
    }
}
