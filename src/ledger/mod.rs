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
//! This file is the store: the records and the conditional writes and reads. The pure parts
//! are functions of the records, tested without AWS: [`summary`] (a job's figures, the ETA)
//! and [`reconcile`] (which segments to put back, and their tasks).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ReturnConsumedCapacity,
    ScalarAttributeType, TableStatus,
};

use crate::codec::{self, Item};
use crate::task::Task;

const PK: &str = "job_id";
pub(super) const SK: &str = "item";
const JOB_ITEM: &str = "job";

pub use crate::BoxError;

/// A segment's state in the ledger.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    /// The ledger `ledger.table` names, or an error naming that setting, which `command` needs.
    pub async fn for_command(
        settings: &crate::settings::Settings,
        command: &str,
    ) -> Result<Self, BoxError> {
        let table = settings.ledger.table().ok_or_else(|| {
            format!(
                "configuration: ledger.table is required for {command} (env SCANFLEET__LEDGER__TABLE)"
            )
        })?;
        let aws = crate::aws::config().await;
        Ok(Self::new(aws_sdk_dynamodb::Client::new(&aws), table))
    }

    /// An UpdateItem on item `item` (`job` or `segment#…`) of `job`.
    fn item_update(&self, job: &str, item: String) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(job))
            .key(SK, s(item))
    }

    /// An UpdateItem on the record of `segment` in `job`.
    fn segment_update(&self, job: &str, segment: u32) -> UpdateItemFluentBuilder {
        self.item_update(job, segment_item(segment))
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
            .expression_attribute_values(":done", s(Status::Done.as_str()))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        unless_condition_failed(r)
    }

    /// An update of a segment's record that marks it running on `worker` now (`#st`,
    /// `:running`, `:w`, `:now` are set for the expression).
    fn running_update(&self, job: &str, segment: u32, worker: &str) -> UpdateItemFluentBuilder {
        self.segment_update(job, segment)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":running", s(Status::Running.as_str()))
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
                s(if done {
                    Status::Done.as_str()
                } else {
                    Status::Running.as_str()
                }),
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
                    .expression_attribute_values(":key", s(codec::key_to_json(key).to_string()));
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
                s(if dead { Status::Failed.as_str() } else { Status::Running.as_str() }),
            )
            .expression_attribute_values(":done", s(Status::Done.as_str()))
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
    fn job_update(&self, job: &str) -> UpdateItemFluentBuilder {
        self.item_update(job, JOB_ITEM.to_owned())
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

mod reconcile;
mod records;
mod summary;

pub use reconcile::{LeftAlone, ReconcilePlan, Resume, resume_task, to_reconcile};
pub use records::{ChunkReport, JobRecord, JobTotals, Recorded, SegmentRecord, Status};
use records::{get_n, get_s, n, s, segment_item};
pub use summary::{SegmentBrief, Summary, eta_seconds, summarize};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_at_is_read_back_from_the_record() {
        let mut item = Item::new();
        item.insert(SK.into(), s(segment_item(3)));
        item.insert("status".into(), s(Status::Done.as_str()));
        item.insert("finished_at".into(), n(1234));
        let r = SegmentRecord::from_item(&item).unwrap();
        assert_eq!((r.segment, r.finished_at), (3, Some(1234)));
        item.remove("finished_at");
        assert_eq!(SegmentRecord::from_item(&item).unwrap().finished_at, None);
    }
}

/// Records the pure parts' tests share.
#[cfg(test)]
mod fixtures {
    use super::*;

    pub(super) fn job(total: u32) -> JobRecord {
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

    pub(super) fn seg(segment: u32, status: Status, rows: u64, ms: u64) -> SegmentRecord {
        SegmentRecord {
            segment,
            status,
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
}
