//! The job ledger: one DynamoDB table recording each job and the progress of its segments.
//!
//! Layout: partition key `job_id` (S), sort key `item` (S). The job's record is item `job`;
//! segment N is item `segment#NNNNNNN`. Segment records are written only by workers, with
//! conditional writes that make every write idempotent:
//!
//! - a chunk is counted only if the record expects exactly that chunk next (`chunks = :c`),
//!   so a redelivered or duplicated task cannot count its rows twice, and a finished segment
//!   (whose `chunks` is past every chunk that ran) cannot be moved backwards;
//! - the chunk is recorded *before* its continuation task is sent, so the ledger can never
//!   fall behind the queue. When the condition fails, the record says what happened instead
//!   (see [`Recorded`]), and the worker continues from the ledger's position, not its own;
//! - the record keeps the task instance that counted the last chunk (`counted_by`) and the run
//!   it belongs to (`run_id`), so a task can tell, before it scans, whether its chunk is already
//!   counted, and by itself (delivered again: go on from the ledger), by another copy (a
//!   continuation sent twice: stop) or by an earlier run (the job sent again: start over); see
//!   [`crate::worker::dedup`].
//!
//! The pure parts (the status summary, which segments to reconcile) are functions of the
//! records, tested without AWS.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnConsumedCapacity, ScalarAttributeType, TableStatus,
};
use serde::Serialize;

use crate::item::{self, Item};
use crate::task::Task;

const PK: &str = "job_id";
const SK: &str = "item";
const JOB_ITEM: &str = "job";

pub use crate::BoxError;

/// A segment's state in the ledger.
pub mod status {
    pub const RUNNING: &str = "running";
    pub const DONE: &str = "done";
    /// Its task failed on its last allowed receive and is (being) dead-lettered.
    pub const FAILED: &str = "failed";
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn segment_item(segment: u32) -> String {
    format!("segment#{segment:07}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// What a job's record holds.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    pub table: String,
    pub segments_total: u32,
    pub created_at: u64,
    /// The task of segment 0 as JSON: reconcile builds any segment's task from it.
    pub task_template: String,
    pub read_units_per_second: Option<f64>,
}

/// A job's running totals, kept on its record by the workers beside each segment's counts
/// (see [`Ledger::add_chunk_to_job`]): a hint that `enqueue --wait` follows with one GetItem a
/// second. They can fall short (a worker dying between its two writes) or run ahead (a rerun
/// of a segment adds to them again), so the figures a job ends with are always read from its
/// segment records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobTotals {
    pub chunks: u64,
    pub segments_done: u64,
    pub segments_failed: u64,
    pub rows_published: u64,
    pub rows_scanned: u64,
    /// Provisional: what chunks under way have done so far, by their heartbeats.
    pub rows_scanned_in_chunks: u64,
    pub rows_published_in_chunks: u64,
}

/// What a segment's record holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SegmentRecord {
    pub segment: u32,
    pub status: String,
    /// Chunks recorded; also the number of the next chunk expected.
    pub chunks: u32,
    pub rows_scanned: u64,
    pub rows_published: u64,
    pub read_units: f64,
    pub duration_ms: u64,
    pub worker: String,
    pub last_error: Option<String>,
    pub failures: u64,
    /// Last sign of life: start, heartbeat or recorded chunk (Unix seconds).
    pub heartbeat_at: u64,
    /// When its last chunk was counted (Unix seconds); only a done segment has it.
    #[serde(skip)]
    pub finished_at: Option<u64>,
    /// Where the next chunk starts (DynamoDB JSON), when the segment is not done.
    #[serde(skip)]
    pub resume_key: Option<String>,
    /// The instance (see [`crate::worker::dedup`]) of the task that counted the last chunk.
    #[serde(skip)]
    pub counted_by: Option<String>,
    /// The run of the job this record counts (absent in records written before run ids).
    #[serde(skip)]
    pub run_id: Option<String>,
    /// Provisional: rows the chunk under way has read and published so far, as its worker's
    /// last heartbeat reported them (0 once the chunk is counted, or ended uncounted).
    pub chunk_rows_scanned: u64,
    pub chunk_rows_published: u64,
}

impl SegmentRecord {
    /// `resume_key` as a key item.
    pub fn resume_item(&self) -> Result<Option<Item>, BoxError> {
        match &self.resume_key {
            Some(text) => Ok(Some(item::key_from_json(&serde_json::from_str(text)?)?)),
            None => Ok(None),
        }
    }

    fn from_item(item: &Item) -> Option<Self> {
        let segment = get_s(item, SK)?.strip_prefix("segment#")?.parse().ok()?;
        Some(Self {
            segment,
            status: get_s(item, "status").unwrap_or_else(|| status::RUNNING.into()),
            chunks: get_n(item, "chunks").unwrap_or(0),
            rows_scanned: get_n(item, "rows_scanned").unwrap_or(0),
            rows_published: get_n(item, "rows_published").unwrap_or(0),
            read_units: get_n(item, "read_units").unwrap_or(0.0),
            duration_ms: get_n(item, "duration_ms").unwrap_or(0),
            worker: get_s(item, "worker").unwrap_or_default(),
            last_error: get_s(item, "last_error"),
            failures: get_n(item, "failures").unwrap_or(0),
            heartbeat_at: get_n(item, "heartbeat_at").unwrap_or(0),
            finished_at: get_n(item, "finished_at"),
            resume_key: get_s(item, "resume_key"),
            counted_by: get_s(item, "counted_by"),
            run_id: get_s(item, "run_id"),
            chunk_rows_scanned: get_n(item, "chunk_rows_scanned").unwrap_or(0),
            chunk_rows_published: get_n(item, "chunk_rows_published").unwrap_or(0),
        })
    }
}

/// The outcome of recording a chunk.
// Refused carries the whole record; it is rare and lives for one decision, so boxing it
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Counted now.
    Counted,
    /// Not counted: the record did not expect this chunk of this run (a redelivered or
    /// duplicated task, another run, a ledger behind). The record as it is now; what to do
    /// follows from it by [`crate::worker::dedup::decide`].
    Refused(SegmentRecord),
}

/// What one chunk did, as the worker reports it.
#[derive(Debug, Clone)]
pub struct ChunkReport<'a> {
    pub rows_scanned: u64,
    pub rows_published: u64,
    pub read_units: f64,
    pub duration: Duration,
    /// Where the segment goes on; `None`: this was its last chunk.
    pub next: Option<&'a Item>,
    /// The instance of the task that ran the chunk (see [`crate::worker::dedup`]).
    pub instance: &'a str,
    /// Its run, if it has one.
    pub run: Option<&'a str>,
}

#[derive(Clone)]
pub struct Ledger {
    pub client: Client,
    pub table: String,
    /// Read capacity the reads of `job` and `job_totals` consumed, in thousandths of a unit
    /// (as DynamoDB reports it): what following a job costs.
    read_milli_units: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn is_conditional_failure<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// The outcome of a write whose failed condition means "already recorded, nothing to do":
/// that failure is success, any other error is returned.
fn unless_condition_failed<T, E>(
    r: Result<T, aws_sdk_dynamodb::error::SdkError<E, aws_smithy_runtime_api::http::Response>>,
) -> Result<(), BoxError>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_conditional_failure(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Ledger {
    /// An UpdateItem on the record of `task`'s segment in `job`.
    fn segment_update(
        &self,
        job: &str,
        segment: u32,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(job))
            .key(SK, s(segment_item(segment)))
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            read_milli_units: Default::default(),
        }
    }

    /// Read capacity units consumed so far by this handle's job reads (`job`, `job_totals`).
    pub fn read_units(&self) -> f64 {
        self.read_milli_units
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0
    }

    fn count_read(&self, consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        let units = consumed.and_then(|c| c.capacity_units).unwrap_or(0.0);
        if units.is_finite() && units > 0.0 {
            self.read_milli_units.fetch_add(
                (units * 1000.0).round() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Creates the ledger table (on-demand billing) and waits until it is active.
    /// Returns false if it already existed.
    pub async fn create_table(&self) -> Result<bool, BoxError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, t| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        let new = match created {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        for _ in 0..120 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await?;
            if out.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
                return Ok(new);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("ledger table {} did not become active in 60 s", self.table).into())
    }

    /// Writes a new job's record; refuses a job id the ledger already holds.
    pub async fn record_job(&self, job: &JobRecord) -> Result<(), BoxError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(&job.job_id))
            .item(SK, s(JOB_ITEM))
            .item("table", s(&job.table))
            .item("segments_total", n(job.segments_total))
            .item("created_at", n(job.created_at))
            .item("task_template", s(&job.task_template))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        if let Some(r) = job.read_units_per_second {
            put = put.item("read_units_per_second", n(r));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_conditional_failure(&e) => Err(format!(
                "job id {} is already in the ledger; choose another --job-id",
                job.job_id
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a segment as running on `worker` (unless it is done). Best effort: the ledger's
    /// counts do not depend on it, only the "in flight" view does.
    pub async fn segment_started(
        &self,
        task: &Task,
        job: &str,
        worker: &str,
        run: Option<&str>,
    ) -> Result<(), BoxError> {
        let mut update = self.running_update(job, task.segment as u32, worker);
        let mut expression = String::from(
            "SET #st = :running, worker = :w, heartbeat_at = :now, chunks = if_not_exists(chunks, :zero)",
        );
        if let Some(run) = run {
            expression.push_str(", run_id = if_not_exists(run_id, :run)");
            update = update.expression_attribute_values(":run", s(run));
        }
        let r = update
            .update_expression(expression)
            .condition_expression("attribute_not_exists(#st) OR #st <> :done")
            .expression_attribute_values(":done", s(status::DONE))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// An update of a segment's record that marks it running on `worker` now (`#st`,
    /// `:running`, `:w`, `:now` are set for the expression).
    fn running_update(
        &self,
        job: &str,
        segment: u32,
        worker: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.segment_update(job, segment)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":running", s(status::RUNNING))
            .expression_attribute_values(":w", s(worker))
            .expression_attribute_values(":now", n(now_secs()))
    }

    /// Starts a segment's record over for a new run of its job (see [`crate::worker::dedup`]): the
    /// counts of the run it held are replaced, and the record expects `task`'s chunk next.
    /// Conditional on the record still holding another run, so two copies of the new run's
    /// task reset it once.
    pub async fn segment_new_run(
        &self,
        task: &Task,
        job: &str,
        worker: &str,
        run: Option<&str>,
    ) -> Result<(), BoxError> {
        let mut update = self
            .running_update(job, task.segment as u32, worker)
            .expression_attribute_values(":chunk", n(task.chunk))
            .expression_attribute_values(":zero", n(0));
        let set = "SET #st = :running, worker = :w, heartbeat_at = :now, chunks = :chunk, \
                   rows_scanned = :zero, rows_published = :zero, read_units = :zero, \
                   duration_ms = :zero, failures = :zero";
        let remove = "REMOVE counted_by, resume_key, last_error, finished_at";
        update = match run {
            Some(run) => update
                .update_expression(format!("{set}, run_id = :run {remove}"))
                .condition_expression("attribute_not_exists(run_id) OR run_id <> :run")
                .expression_attribute_values(":run", s(run)),
            None => update
                .update_expression(format!("{set} {remove}, run_id"))
                .condition_expression("attribute_exists(run_id)"),
        };
        unless_condition_failed(update.send().await)
    }

    /// A sign of life while a chunk runs (with each visibility extension).
    /// A sign of life while a chunk runs, with what the chunk has done so far (`scanned`,
    /// `published`: the segment's provisional figures). `false`: the record is not this
    /// worker's running segment (nothing written).
    pub async fn heartbeat(
        &self,
        task: &Task,
        job: &str,
        worker: &str,
        (scanned, published): (u64, u64),
    ) -> Result<bool, BoxError> {
        let r = self
            .running_update(job, task.segment as u32, worker)
            .update_expression(
                "SET heartbeat_at = :now, chunk_rows_scanned = :scanned, chunk_rows_published = :published",
            )
            .condition_expression("#st = :running AND worker = :w")
            .expression_attribute_values(":scanned", n(scanned))
            .expression_attribute_values(":published", n(published))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a running chunk's progress since its last report to the job's provisional totals
    /// (negative: withdraws it, once the chunk was counted or ended uncounted).
    pub async fn add_progress_to_job(
        &self,
        job: &str,
        (scanned, published): (i64, i64),
    ) -> Result<(), BoxError> {
        let r = self
            .job_update(job)
            .update_expression(
                "ADD rows_scanned_in_chunks :scanned, rows_published_in_chunks :published",
            )
            .expression_attribute_values(":scanned", n(scanned))
            .expression_attribute_values(":published", n(published))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// A chunk that ended without being counted (failed, handed back, a copy): its segment's
    /// provisional figures are cleared (if the record is still this worker's).
    pub async fn clear_progress(
        &self,
        task: &Task,
        job: &str,
        worker: &str,
    ) -> Result<(), BoxError> {
        let r = self
            .segment_update(job, task.segment as u32)
            .update_expression("SET chunk_rows_scanned = :zero, chunk_rows_published = :zero")
            .condition_expression("worker = :w")
            .expression_attribute_values(":w", s(worker))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// Counts a finished chunk exactly once (see the module documentation).
    pub async fn record_chunk(
        &self,
        task: &Task,
        job: &str,
        worker: &str,
        report: &ChunkReport<'_>,
    ) -> Result<Recorded, BoxError> {
        let done = report.next.is_none();
        let mut set = vec![
            "chunks = :next",
            "#st = :status",
            "worker = :w",
            "heartbeat_at = :now",
            "counted_by = :by",
            // Counted now: no longer provisional.
            "chunk_rows_scanned = :zero",
            "chunk_rows_published = :zero",
        ];
        let next_chunk = task
            .chunk
            .checked_add(1)
            .ok_or("chunk number at the end of its range")?;
        let mut update = self
            .segment_update(job, task.segment as u32)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":chunk", n(task.chunk))
            .expression_attribute_values(":next", n(next_chunk))
            .expression_attribute_values(
                ":status",
                s(if done { status::DONE } else { status::RUNNING }),
            )
            .expression_attribute_values(":w", s(worker))
            .expression_attribute_values(":now", n(now_secs()))
            .expression_attribute_values(":by", s(report.instance))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":scanned", n(report.rows_scanned))
            .expression_attribute_values(":published", n(report.rows_published))
            .expression_attribute_values(":units", n(report.read_units))
            .expression_attribute_values(":ms", n(report.duration.as_millis()));
        // Counted only if the record expects this chunk of this run next.
        update = match report.run {
            Some(run) => {
                set.push("run_id = :run");
                update
                    .condition_expression(
                        "attribute_not_exists(chunks) OR (chunks = :chunk AND run_id = :run)",
                    )
                    .expression_attribute_values(":run", s(run))
            }
            None => update.condition_expression(
                "attribute_not_exists(chunks) OR (chunks = :chunk AND attribute_not_exists(run_id))",
            ),
        };
        let remove = match report.next {
            Some(key) => {
                set.push("resume_key = :key");
                update = update
                    .expression_attribute_values(":key", s(item::key_to_json(key).to_string()));
                ""
            }
            None => {
                set.push("finished_at = :now");
                " REMOVE resume_key"
            }
        };
        let expression = format!(
            "SET {} ADD rows_scanned :scanned, rows_published :published, read_units :units, duration_ms :ms{remove}",
            set.join(", ")
        );
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(Recorded::Counted),
            Err(e) if is_conditional_failure(&e) => {
                let record = self
                    .segment(job, task.segment as u32)
                    .await?
                    .ok_or("the ledger refused a chunk of a segment it does not hold")?;
                Ok(Recorded::Refused(record))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A failed attempt at `segment` (the task's, or one a rejected message named); `dead`:
    /// the queue moves the task to its dead-letter queue, so the segment is failed for good.
    pub async fn segment_failed(
        &self,
        segment: u32,
        job: &str,
        worker: &str,
        error: &str,
        dead: bool,
    ) -> Result<(), BoxError> {
        let error: String = error.chars().take(1000).collect();
        let r = self.segment_update(job, segment)
            .update_expression(
                "SET last_error = :e, worker = :w, heartbeat_at = :now, #st = :status, chunks = if_not_exists(chunks, :zero) ADD failures :one",
            )
            .condition_expression("attribute_not_exists(#st) OR #st <> :done")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":e", s(error))
            .expression_attribute_values(":w", s(worker))
            .expression_attribute_values(":now", n(now_secs()))
            .expression_attribute_values(
                ":status",
                s(if dead { status::FAILED } else { status::RUNNING }),
            )
            .expression_attribute_values(":done", s(status::DONE))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// Adds a counted chunk to the job's running totals (see [`JobTotals`]), after it was
    /// counted in its segment's record. Not atomic with that write: a worker that dies between
    /// the two leaves the totals short, which is why they are only a hint `--wait` follows
    /// cheaply, never the figures it reports. A job without a job record (tasks sent by hand)
    /// has no totals.
    ///
    /// `reported`: the provisional progress this chunk's heartbeats added to the totals, taken
    /// back in the same write.
    pub async fn add_chunk_to_job(
        &self,
        job: &str,
        report: &ChunkReport<'_>,
        (reported_scanned, reported_published): (u64, u64),
    ) -> Result<(), BoxError> {
        let done = u64::from(report.next.is_none());
        let r = self
            .job_update(job)
            .update_expression(
                "ADD chunks :one, segments_done :done, rows_published :published, rows_scanned :scanned, \
                 rows_scanned_in_chunks :unscanned, rows_published_in_chunks :unpublished",
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":done", n(done))
            .expression_attribute_values(":published", n(report.rows_published))
            .expression_attribute_values(":scanned", n(report.rows_scanned))
            .expression_attribute_values(":unscanned", n(-(reported_scanned as i128)))
            .expression_attribute_values(":unpublished", n(-(reported_published as i128)))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// Adds a dead-lettered segment to the job's running totals.
    pub async fn add_failure_to_job(&self, job: &str) -> Result<(), BoxError> {
        let r = self
            .job_update(job)
            .update_expression("ADD segments_failed :one")
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// An UpdateItem on the job's record, if it has one.
    fn job_update(
        &self,
        job: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(job))
            .key(SK, s(JOB_ITEM))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
    }

    /// The job's running totals: one strongly consistent GetItem of its record (one read unit
    /// or less, however many segments the job has). `None`: no such job.
    pub async fn job_totals(&self, job: &str) -> Result<Option<JobTotals>, BoxError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(job))
            .key(SK, s(JOB_ITEM))
            .consistent_read(true)
            .projection_expression(
                "chunks, segments_done, segments_failed, rows_published, rows_scanned, \
                 rows_scanned_in_chunks, rows_published_in_chunks",
            )
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await?;
        self.count_read(out.consumed_capacity());
        Ok(out.item.map(|item| JobTotals {
            chunks: get_n(&item, "chunks").unwrap_or(0),
            segments_done: get_n(&item, "segments_done").unwrap_or(0),
            segments_failed: get_n(&item, "segments_failed").unwrap_or(0),
            rows_published: get_n(&item, "rows_published").unwrap_or(0),
            rows_scanned: get_n(&item, "rows_scanned").unwrap_or(0),
            // A sum of deltas: never shown below zero.
            rows_scanned_in_chunks: get_n::<i64>(&item, "rows_scanned_in_chunks")
                .map_or(0, |v| v.max(0) as u64),
            rows_published_in_chunks: get_n::<i64>(&item, "rows_published_in_chunks")
                .map_or(0, |v| v.max(0) as u64),
        }))
    }

    pub async fn segment(
        &self,
        job: &str,
        segment: u32,
    ) -> Result<Option<SegmentRecord>, BoxError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(job))
            .key(SK, s(segment_item(segment)))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item.as_ref().and_then(SegmentRecord::from_item))
    }

    /// The job's record and every segment record (strongly consistent).
    pub async fn job(&self, job: &str) -> Result<(JobRecord, Vec<SegmentRecord>), BoxError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :job")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":job", s(job))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .into_paginator()
            .send();
        let mut record = None;
        let mut segments = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page?;
            self.count_read(page.consumed_capacity());
            for item in page.items() {
                take_item(job, item, &mut record, &mut segments);
            }
        }
        let record =
            record.ok_or_else(|| format!("job {job} is not in ledger table {}", self.table))?;
        Ok((record, segments))
    }
}

/// Files one item of a job's `Query`: its record, or one of its segments'.
fn take_item(
    job: &str,
    item: &Item,
    record: &mut Option<JobRecord>,
    segments: &mut Vec<SegmentRecord>,
) {
    if get_s(item, SK).as_deref() == Some(JOB_ITEM) {
        *record = Some(JobRecord {
            job_id: job.to_owned(),
            table: get_s(item, "table").unwrap_or_default(),
            segments_total: get_n(item, "segments_total").unwrap_or(0),
            created_at: get_n(item, "created_at").unwrap_or(0),
            task_template: get_s(item, "task_template").unwrap_or_default(),
            read_units_per_second: get_n(item, "read_units_per_second"),
        });
    } else if let Some(seg) = SegmentRecord::from_item(item) {
        segments.push(seg);
    }
}

/// A job's figures at one moment: what `status` prints and `--wait` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub job_id: String,
    pub table: String,
    /// `running`, `done` or `failed` (some segment was dead-lettered and is not done).
    pub state: String,
    pub segments_total: u32,
    pub segments_done: u32,
    pub segments_running: u32,
    pub segments_failed: u32,
    /// Segments no worker has reported on yet.
    pub segments_pending: u32,
    pub chunks: u64,
    /// Counted: rows of the chunks the ledger counted (exact).
    pub rows_scanned: u64,
    pub rows_published: u64,
    /// Provisional: what the chunks under way have done so far, by their workers' last
    /// progress writes (every few seconds); counted when each chunk ends.
    pub rows_scanned_in_chunks: u64,
    pub rows_published_in_chunks: u64,
    pub read_units_consumed: f64,
    pub elapsed_seconds: u64,
    pub rows_per_second: f64,
    /// Seconds left, by [`eta_seconds`]; `None`: unknown.
    pub eta_seconds: Option<u64>,
    pub slowest_segments: Vec<SegmentBrief>,
    pub largest_segments: Vec<SegmentBrief>,
    pub failed_segments: Vec<SegmentBrief>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentBrief {
    pub segment: u32,
    pub status: String,
    pub duration_seconds: f64,
    pub rows_scanned: u64,
    pub rows_published: u64,
    pub chunks: u32,
    pub worker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<&SegmentRecord> for SegmentBrief {
    fn from(r: &SegmentRecord) -> Self {
        Self {
            segment: r.segment,
            status: r.status.clone(),
            duration_seconds: r.duration_ms as f64 / 1000.0,
            rows_scanned: r.rows_scanned,
            rows_published: r.rows_published,
            chunks: r.chunks,
            worker: r.worker.clone(),
            last_error: r.last_error.clone(),
        }
    }
}

/// How many segments the skew report lists.
const SKEW_TOP: usize = 3;

/// The time left for a job of `total` segments: the segments not done, each taking as long as
/// the finished ones took on average (their `duration_ms`, the time they spent in chunks),
/// shared among the segments in flight now. Segments run side by side, one per task slot, so
/// the work left is divided by how many run at once, not done one after another. A running
/// segment counts as not yet begun (the ledger keeps no start time), so while every segment
/// left is in flight the estimate is at most one average segment too long. `None` (unknown)
/// before any segment has finished or while none is running.
pub fn eta_seconds(total: u32, segments: &[SegmentRecord]) -> Option<u64> {
    let (mut done, mut done_ms, mut running) = (0u32, 0u64, 0u32);
    for s in segments {
        match s.status.as_str() {
            status::DONE => {
                done += 1;
                done_ms = done_ms.saturating_add(s.duration_ms);
            }
            status::RUNNING => running += 1,
            _ => {}
        }
    }
    if done == 0 || running == 0 || done >= total {
        return None;
    }
    let mean_seconds = done_ms as f64 / 1000.0 / f64::from(done);
    let eta = f64::from(total - done) * mean_seconds / f64::from(running);
    // A float cast to u64 saturates; a huge or NaN estimate is no estimate.
    (eta.is_finite() && eta < u64::MAX as f64).then(|| eta.round() as u64)
}

/// A figure added up over the running segments.
fn running_sum(segments: &[SegmentRecord], figure: fn(&SegmentRecord) -> u64) -> u64 {
    segments
        .iter()
        .filter(|s| s.status == status::RUNNING)
        .map(figure)
        .fold(0, u64::saturating_add)
}

pub fn summarize(job: &JobRecord, segments: &[SegmentRecord], now: u64) -> Summary {
    let count = |st: &str| segments.iter().filter(|s| s.status == st).count() as u32;
    let (done, running, failed) = (
        count(status::DONE),
        count(status::RUNNING),
        count(status::FAILED),
    );
    let rows_published: u64 = segments.iter().map(|s| s.rows_published).sum();
    let state = if done >= job.segments_total {
        "done"
    } else if failed > 0 {
        "failed"
    } else {
        "running"
    };
    // A done job's clock stopped when its last segment finished (the ledger keeps no start
    // time, so the interval begins at the job's creation); any other job's runs on.
    let end = match state {
        "done" => segments
            .iter()
            .filter(|s| s.status == status::DONE)
            .map(|s| s.finished_at.unwrap_or(s.heartbeat_at))
            .max()
            .unwrap_or(now),
        _ => now,
    };
    let elapsed = end.saturating_sub(job.created_at);
    let eta = if state == "running" {
        eta_seconds(job.segments_total, segments)
    } else {
        None
    };
    let top = |key: fn(&SegmentRecord) -> u64| {
        let mut v: Vec<&SegmentRecord> = segments.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(key(s)));
        v.into_iter()
            .take(SKEW_TOP)
            .map(SegmentBrief::from)
            .collect()
    };
    Summary {
        job_id: job.job_id.clone(),
        table: job.table.clone(),
        state: state.into(),
        segments_total: job.segments_total,
        segments_done: done,
        segments_running: running,
        segments_failed: failed,
        segments_pending: job.segments_total.saturating_sub(segments.len() as u32),
        chunks: segments.iter().map(|s| u64::from(s.chunks)).sum(),
        rows_scanned: segments.iter().map(|s| s.rows_scanned).sum(),
        rows_published,
        rows_scanned_in_chunks: running_sum(segments, |s| s.chunk_rows_scanned),
        rows_published_in_chunks: running_sum(segments, |s| s.chunk_rows_published),
        // A fold from +0.0: an empty f64 sum is -0.0, which would print as "-0.0".
        read_units_consumed: segments.iter().fold(0.0, |a, s| a + s.read_units),
        elapsed_seconds: elapsed,
        rows_per_second: if elapsed > 0 {
            rows_published as f64 / elapsed as f64
        } else {
            0.0
        },
        eta_seconds: eta,
        slowest_segments: top(|s| s.duration_ms),
        largest_segments: top(|s| s.rows_scanned),
        failed_segments: segments
            .iter()
            .filter(|s| s.status == status::FAILED)
            .map(SegmentBrief::from)
            .collect(),
    }
}

impl Summary {
    /// These figures brought up to date with the job's running totals (a hint, see
    /// [`JobTotals`]), `since` after they were read in full: what `--wait` shows between its
    /// full reads. Segments in flight and failed stay as last read.
    pub fn with_totals(&self, totals: &JobTotals, since: Duration) -> Summary {
        let mut s = self.clone();
        let clamp = |v: u64| {
            u32::try_from(v)
                .unwrap_or(u32::MAX)
                .min(self.segments_total)
        };
        s.segments_done = clamp(totals.segments_done).max(self.segments_done);
        s.rows_published = totals.rows_published.max(self.rows_published);
        s.rows_scanned = totals.rows_scanned.max(self.rows_scanned);
        s.chunks = totals.chunks.max(self.chunks);
        s.rows_scanned_in_chunks = totals.rows_scanned_in_chunks;
        s.rows_published_in_chunks = totals.rows_published_in_chunks;
        s.elapsed_seconds = self.elapsed_seconds.saturating_add(since.as_secs());
        if s.elapsed_seconds > 0 {
            s.rows_per_second = s.rows_published as f64 / s.elapsed_seconds as f64;
        }
        s
    }

    /// The human-readable report of `status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "job {} on table {}: {}",
            self.job_id, self.table, self.state
        ));
        line(format!(
            "segments   {}/{} done, {} running, {} failed, {} not started",
            self.segments_done,
            self.segments_total,
            self.segments_running,
            self.segments_failed,
            self.segments_pending
        ));
        line(format!(
            "rows       {} published, {} scanned, in {} chunks (counted)",
            self.rows_published, self.rows_scanned, self.chunks
        ));
        if (self.rows_published_in_chunks, self.rows_scanned_in_chunks) != (0, 0) {
            line(format!(
                "           + {} published, {} scanned in chunks under way (provisional)",
                self.rows_published_in_chunks, self.rows_scanned_in_chunks
            ));
        }
        line(format!("read units {:.1}", self.read_units_consumed));
        let eta = self
            .eta_seconds
            .map(|s| format!(", about {s} s to go"))
            .unwrap_or_default();
        line(format!(
            "elapsed    {} s, {:.0} rows/s{eta}",
            self.elapsed_seconds, self.rows_per_second
        ));
        let brief = |b: &SegmentBrief| {
            format!(
                "  segment {:>7}  {:>8.1} s  {:>10} rows scanned  {:>4} chunks  {}  {}",
                b.segment, b.duration_seconds, b.rows_scanned, b.chunks, b.status, b.worker
            )
        };
        if !self.slowest_segments.is_empty() {
            line("slowest segments:".into());
            self.slowest_segments.iter().for_each(|b| line(brief(b)));
            line("largest segments:".into());
            self.largest_segments.iter().for_each(|b| line(brief(b)));
        }
        if !self.failed_segments.is_empty() {
            line("failed segments (dead-lettered):".into());
            for b in &self.failed_segments {
                line(brief(b));
                line(format!(
                    "    last error: {}",
                    b.last_error.as_deref().unwrap_or("?")
                ));
            }
        }
        out
    }
}

/// A segment `reconcile` puts back on the control queue: where it resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub segment: u32,
    pub chunk: u32,
    /// DynamoDB JSON of the start key; `None` from the segment's beginning.
    pub start_key: Option<String>,
    /// The run the segment's record counts, which the resumed task goes on (`None`: the
    /// template's).
    pub run_id: Option<String>,
}

/// Why `reconcile` leaves a segment alone.
#[derive(Debug, Clone, PartialEq)]
pub enum LeftAlone {
    /// Done: nothing to do.
    Done,
    /// Running, with a sign of life `seconds_ago` seconds ago (less than `--stale-seconds`).
    Running { seconds_ago: u64 },
    /// No worker ever reported on it, the job is younger than `--stale-seconds`, and the
    /// control queue was not confirmed empty: its first task may still be waiting there.
    NotStarted,
    /// Its task was just moved back from the dead-letter queue.
    Redriven,
    /// Continued [`crate::task::MAX_CHUNK`] times: a task resuming it would be rejected. The
    /// job must run again with a larger `worker.checkpoint_rows`.
    AtChunkLimit,
}

/// What `reconcile` does with each segment of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcilePlan {
    /// The segments to put back on the control queue, in segment order.
    pub resumes: Vec<Resume>,
    /// Every other segment, in segment order, with why it is left alone.
    pub left_alone: Vec<(u32, LeftAlone)>,
}

/// Decides, for every segment of the job, whether `reconcile` re-enqueues it. A segment is
/// re-enqueued unless it is done, in `skip` (e.g. just redriven from the DLQ), or may still be
/// in flight:
///
/// - running with a sign of life less than `stale` seconds ago;
/// - never reported on by any worker, while its first task may still be queued: the job is
///   younger than `stale` and `queue_empty` is false. `queue_empty` means the control queue
///   was read (twice, apart) with no visible, in-flight or delayed message: then no task of
///   a never-started segment exists anywhere, and it is re-enqueued at once.
pub fn to_reconcile(
    job: &JobRecord,
    segments: &[SegmentRecord],
    now: u64,
    stale: u64,
    queue_empty: bool,
    skip: &HashSet<u32>,
) -> ReconcilePlan {
    let known: BTreeMap<u32, &SegmentRecord> = segments.iter().map(|s| (s.segment, s)).collect();
    let mut plan = ReconcilePlan::default();
    for seg in 0..job.segments_total {
        let record = known.get(&seg);
        let left = match record {
            _ if skip.contains(&seg) => Some(LeftAlone::Redriven),
            None if !queue_empty && now.saturating_sub(job.created_at) < stale => {
                Some(LeftAlone::NotStarted)
            }
            None => None,
            Some(r) if r.status == status::DONE => Some(LeftAlone::Done),
            Some(r) if r.chunks > crate::task::MAX_CHUNK => Some(LeftAlone::AtChunkLimit),
            Some(r)
                if r.status == status::RUNNING && now.saturating_sub(r.heartbeat_at) < stale =>
            {
                Some(LeftAlone::Running {
                    seconds_ago: now.saturating_sub(r.heartbeat_at),
                })
            }
            Some(_) => None,
        };
        match (left, record) {
            (Some(why), _) => plan.left_alone.push((seg, why)),
            (None, Some(r)) => plan.resumes.push(Resume {
                segment: seg,
                chunk: r.chunks,
                start_key: r.resume_key.clone(),
                run_id: r.run_id.clone(),
            }),
            (None, None) => plan.resumes.push(Resume {
                segment: seg,
                chunk: 0,
                start_key: None,
                run_id: None,
            }),
        }
    }
    plan
}

/// The task message that resumes a segment, built from the job's template.
pub fn resume_task(template: &str, resume: &Resume) -> Result<String, BoxError> {
    let mut task: HashMap<String, serde_json::Value> = serde_json::from_str(template)?;
    task.insert("current_segment".into(), resume.segment.into());
    task.remove("chunk");
    task.remove("exclusive_start_key");
    if resume.chunk > 0 {
        task.insert("chunk".into(), resume.chunk.into());
    }
    if let Some(key) = &resume.start_key {
        task.insert("exclusive_start_key".into(), serde_json::from_str(key)?);
    }
    if let Some(run) = &resume.run_id {
        task.insert("run_id".into(), run.clone().into());
    }
    Ok(serde_json::to_string(&task)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(total: u32) -> JobRecord {
        JobRecord {
            job_id: "j".into(),
            table: "items".into(),
            segments_total: total,
            created_at: 1000,
            task_template:
                r#"{"current_segment":0,"total_segments":4,"table":"items","job_id":"j"}"#.into(),
            read_units_per_second: None,
        }
    }

    fn seg(segment: u32, status: &str, rows: u64, ms: u64) -> SegmentRecord {
        SegmentRecord {
            segment,
            status: status.into(),
            chunks: 2,
            rows_scanned: rows,
            rows_published: rows,
            read_units: 1.5,
            duration_ms: ms,
            worker: "w1".into(),
            heartbeat_at: 1000,
            ..SegmentRecord::default()
        }
    }

    #[test]
    fn chunks_under_way_show_as_provisional_beside_the_counted_figures() {
        // Two segments shorter than a chunk, running: nothing counted yet, but their workers
        // report what they did so far; a done segment's leftovers never count.
        let mut a = seg(0, status::RUNNING, 0, 0);
        (a.chunk_rows_scanned, a.chunk_rows_published) = (1200, 1100);
        let mut b = seg(1, status::RUNNING, 0, 0);
        (b.chunk_rows_scanned, b.chunk_rows_published) = (800, 800);
        let mut c = seg(2, status::DONE, 500, 10);
        (c.chunk_rows_scanned, c.chunk_rows_published) = (9, 9);
        let s = summarize(&job(4), &[a, b, c], 1100);
        assert_eq!(s.rows_published, 500, "counted figures stay exact");
        assert_eq!(
            (s.rows_published_in_chunks, s.rows_scanned_in_chunks),
            (1900, 2000)
        );
        let text = s.render();
        assert!(text.contains("500 published"), "{text}");
        assert!(text.contains("(counted)"), "{text}");
        assert!(
            text.contains("+ 1900 published, 2000 scanned in chunks under way (provisional)"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rows_published_in_chunks"], 1900);
    }

    #[test]
    fn the_running_totals_bring_a_summary_up_to_date_without_passing_the_job() {
        let segments = vec![seg(0, status::DONE, 100, 5000)];
        let s = summarize(&job(4), &segments, 1100);
        let totals = JobTotals {
            chunks: 5,
            segments_done: 9,
            segments_failed: 0,
            rows_published: 400,
            rows_scanned: 450,
            rows_scanned_in_chunks: 70,
            rows_published_in_chunks: 60,
        };
        let t = s.with_totals(&totals, Duration::from_secs(100));
        assert_eq!(
            (t.rows_published_in_chunks, t.rows_scanned_in_chunks),
            (60, 70)
        );
        // A rerun can run the totals past the job's segments: never more than the job has.
        assert_eq!(t.segments_done, 4);
        assert_eq!((t.rows_published, t.rows_scanned, t.chunks), (400, 450, 5));
        assert_eq!(t.elapsed_seconds, s.elapsed_seconds + 100);
        assert_eq!(t.rows_per_second, 400.0 / t.elapsed_seconds as f64);
        // Totals left short (a worker died between its writes) never move figures back.
        let short = s.with_totals(&JobTotals::default(), Duration::ZERO);
        assert_eq!((short.segments_done, short.rows_published), (1, 100));
        assert_eq!(short.state, s.state);
    }

    #[test]
    fn the_summary_adds_up_and_names_the_state() {
        let segments = vec![
            seg(0, status::DONE, 100, 5000),
            seg(1, status::DONE, 300, 1000),
            seg(2, status::RUNNING, 50, 9000),
        ];
        let s = summarize(&job(4), &segments, 1100);
        assert_eq!(s.state, "running");
        assert_eq!(
            (s.segments_done, s.segments_running, s.segments_pending),
            (2, 1, 1)
        );
        assert_eq!(s.rows_published, 450);
        assert_eq!(s.read_units_consumed, 4.5);
        assert_eq!(s.elapsed_seconds, 100);
        assert_eq!(s.rows_per_second, 4.5);
        assert_eq!(
            s.eta_seconds,
            Some(6),
            "2 left, 3 s each on average, 1 at a time"
        );
        assert_eq!(s.slowest_segments[0].segment, 2);
        assert_eq!(s.largest_segments[0].segment, 1);
        assert!(s.failed_segments.is_empty());

        let mut failed = seg(3, status::FAILED, 0, 0);
        failed.last_error = Some("row too large".into());
        let mut all = segments.clone();
        all.push(failed);
        let s = summarize(&job(4), &all, 1100);
        assert_eq!(s.state, "failed");
        assert_eq!(
            s.failed_segments[0].last_error.as_deref(),
            Some("row too large")
        );
        assert!(s.render().contains("last error: row too large"));

        let done: Vec<_> = (0..4).map(|i| seg(i, status::DONE, 10, 10)).collect();
        let s = summarize(&job(4), &done, 1100);
        assert_eq!((s.state.as_str(), s.eta_seconds), ("done", None));
        let empty = summarize(&job(4), &[], 1000);
        assert_eq!(empty.segments_pending, 4);
        assert!(empty.read_units_consumed.is_sign_positive());
        let json = serde_json::to_value(&s).unwrap();
        for k in [
            "job_id",
            "state",
            "segments_total",
            "segments_done",
            "rows_published",
            "read_units_consumed",
        ] {
            assert!(json.get(k).is_some(), "{k} missing from {json}");
        }
    }

    #[test]
    fn a_done_job_stops_the_clock_at_its_last_segment_s_finish() {
        // Created at 1000; the last segment finished at 1400; asked at 1500 and a day later.
        let done: Vec<_> = (0..4)
            .map(|i| SegmentRecord {
                finished_at: Some(1100 + 100 * u64::from(i)),
                heartbeat_at: 1100 + 100 * u64::from(i),
                ..seg(i, status::DONE, 1000, 10_000)
            })
            .collect();
        let soon = summarize(&job(4), &done, 1500);
        let later = summarize(&job(4), &done, 1500 + 86_400);
        assert_eq!(soon.state, "done");
        assert_eq!(soon.elapsed_seconds, 400, "creation to the last finish");
        assert_eq!(soon.rows_per_second, 10.0, "4000 rows in 400 s");
        assert_eq!(later, soon, "the figures of a done job do not change");
        let json = serde_json::to_value(&later).unwrap();
        assert_eq!(json["elapsed_seconds"], 400);
        assert_eq!(json["rows_per_second"], 10.0);
        assert!(later.render().contains("elapsed    400 s, 10 rows/s"));
        // A running job's clock runs on.
        let running = summarize(&job(5), &done, 1500);
        assert_eq!(running.elapsed_seconds, 500);
    }

    #[test]
    fn finished_at_is_read_back_from_the_record() {
        let mut item = Item::new();
        item.insert(SK.into(), s(segment_item(3)));
        item.insert("status".into(), s(status::DONE));
        item.insert("finished_at".into(), n(1234));
        let r = SegmentRecord::from_item(&item).unwrap();
        assert_eq!((r.segment, r.finished_at), (3, Some(1234)));
        item.remove("finished_at");
        assert_eq!(SegmentRecord::from_item(&item).unwrap().finished_at, None);
    }

    #[test]
    fn the_eta_counts_the_segments_that_run_at_once() {
        // The README's advice: segments = task slots. 64 segments on 64 slots, each about
        // 10 minutes; the first has just finished, 63 run: about 10 minutes to go, not 63 × 10.
        let ten_minutes = 600_000;
        let mut segments = vec![seg(0, status::DONE, 100, ten_minutes)];
        segments.extend((1..64).map(|i| seg(i, status::RUNNING, 0, 0)));
        let s = summarize(&job(64), &segments, 1000 + 600);
        assert_eq!(s.eta_seconds, Some(600));
        assert!(s.render().contains("about 600 s to go"), "{}", s.render());
        // Twice the segments on the same 64 slots: a second wave of 10 minutes follows.
        let mut twice = vec![seg(0, status::DONE, 100, ten_minutes)];
        twice.extend((1..65).map(|i| seg(i, status::RUNNING, 0, 0)));
        let s = summarize(&job(128), &twice, 1000 + 600);
        assert_eq!(
            s.eta_seconds,
            Some(1191),
            "127 segments × 600 s over 64 slots"
        );
        // Unknown before any segment has finished, while none runs, and once not running.
        let running: Vec<_> = (0..64).map(|i| seg(i, status::RUNNING, 0, 0)).collect();
        assert_eq!(summarize(&job(64), &running, 1600).eta_seconds, None);
        assert_eq!(summarize(&job(64), &segments[..1], 1600).eta_seconds, None);
        let mut failed = segments.clone();
        failed[1].status = status::FAILED.into();
        assert_eq!(summarize(&job(64), &failed, 1600).eta_seconds, None);
        let json = serde_json::to_value(summarize(&job(64), &running, 1600)).unwrap();
        assert!(json["eta_seconds"].is_null());
    }

    #[test]
    fn reconcile_takes_segments_neither_done_nor_in_flight() {
        let mut stale = seg(1, status::RUNNING, 10, 10);
        stale.resume_key = Some(r#"{"PK":{"S":"k"}}"#.into());
        let mut fresh = seg(2, status::RUNNING, 10, 10);
        fresh.heartbeat_at = 1950;
        let mut dead = seg(3, status::FAILED, 10, 10);
        dead.heartbeat_at = 1990;
        let segments = vec![seg(0, status::DONE, 1, 1), stale, fresh, dead];
        let plan = to_reconcile(&job(5), &segments, 2000, 300, false, &HashSet::new());
        let r = &plan.resumes;
        let picked: Vec<u32> = r.iter().map(|r| r.segment).collect();
        // 0 done, 2 alive; 1 stale, 3 dead-lettered, 4 never started long ago.
        assert_eq!(picked, vec![1, 3, 4]);
        assert_eq!(
            plan.left_alone,
            vec![
                (0, LeftAlone::Done),
                (2, LeftAlone::Running { seconds_ago: 50 })
            ]
        );
        assert_eq!(r[0].chunk, 2);
        assert_eq!(
            r[2],
            Resume {
                segment: 4,
                chunk: 0,
                start_key: None,
                run_id: None,
            }
        );
        // A segment continued as often as a task can carry is not re-enqueued: it would be
        // rejected.
        let mut limit = seg(1, status::FAILED, 10, 10);
        limit.chunks = crate::task::MAX_CHUNK + 1;
        let plan = to_reconcile(
            &job(2),
            &[seg(0, status::DONE, 1, 1), limit],
            2000,
            300,
            false,
            &HashSet::new(),
        );
        assert!(plan.resumes.is_empty(), "{plan:?}");
        assert_eq!(plan.left_alone[1], (1, LeftAlone::AtChunkLimit));
        // Not yet stale: a never-started segment of a young job may still be queued.
        let young = JobRecord {
            created_at: 1090,
            ..job(5)
        };
        let plan = to_reconcile(&young, &segments, 1100, 60, false, &HashSet::from([3]));
        let r = &plan.resumes;
        assert_eq!(r.iter().map(|r| r.segment).collect::<Vec<_>>(), vec![1]);
        // Every segment not re-enqueued is named, with why: none is left out in silence.
        assert_eq!(
            plan.left_alone,
            vec![
                (0, LeftAlone::Done),
                (2, LeftAlone::Running { seconds_ago: 0 }),
                (3, LeftAlone::Redriven),
                (4, LeftAlone::NotStarted)
            ]
        );
        // Once the control queue is confirmed empty, a never-started segment has no task
        // anywhere: it is re-enqueued at once, however young the job.
        let confirmed = to_reconcile(&young, &segments, 1100, 60, true, &HashSet::from([3]));
        assert_eq!(
            confirmed
                .resumes
                .iter()
                .map(|r| r.segment)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(
            confirmed.resumes[1],
            Resume {
                segment: 4,
                chunk: 0,
                start_key: None,
                run_id: None,
            }
        );
        // A running segment keeps the --stale-seconds rule even then: a recent sign of life
        // says a worker holds its task.
        assert!(
            confirmed
                .left_alone
                .contains(&(2, LeftAlone::Running { seconds_ago: 0 }))
        );

        let body = resume_task(&job(5).task_template, &r[0]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["current_segment"], 1);
        assert_eq!(v["chunk"], 2);
        assert_eq!(v["exclusive_start_key"]["PK"]["S"], "k");
        assert_eq!(v["job_id"], "j");
        // A segment whose record counts another run than the template's goes on as that run.
        let r = Resume {
            run_id: Some("r2".into()),
            ..r[0].clone()
        };
        let v: serde_json::Value =
            serde_json::from_str(&resume_task(&job(5).task_template, &r).unwrap()).unwrap();
        assert_eq!(v["run_id"], "r2");
    }
}
