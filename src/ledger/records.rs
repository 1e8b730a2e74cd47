//! The ledger's records as Rust values: a job's record and totals, a segment's record and its
//! [`Status`], what recording a chunk did, and the attribute helpers that read and write them.
//! No I/O: the store (`mod.rs`) makes the calls.

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::time::Duration;

use super::{BoxError, SK};
use crate::codec::{self, Item};

/// Where a segment is, as its record's `status` attribute (and `status --json`) spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started and not yet done (also a record written before `status` existed).
    #[default]
    Running,
    Done,
    /// Its task failed on its last allowed receive and is (being) dead-lettered.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    /// The record's text. Only scanfleet writes it; a value it does not know (none today) reads
    /// as running, so the segment is neither counted done nor re-enqueued while it shows life.
    fn from_text(text: &str) -> Self {
        match text {
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => Status::Running,
        }
    }
}

/// By its text, as a record or `status --json` spells it.
impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn segment_item(segment: u32) -> String {
    format!("segment#{segment:07}")
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

pub(super) fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
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
    pub status: Status,
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
            Some(text) => Ok(Some(codec::key_from_json(&serde_json::from_str(text)?)?)),
            None => Ok(None),
        }
    }

    pub(super) fn from_item(item: &Item) -> Option<Self> {
        let segment = get_s(item, SK)?.strip_prefix("segment#")?.parse().ok()?;
        Some(Self {
            segment,
            status: get_s(item, "status").map_or(Status::Running, |t| Status::from_text(&t)),
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
