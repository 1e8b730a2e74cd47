//! Segment-task messages: the control queue's wire format and its validation.
//!
//! Pure logic, no I/O. The wire format is the original Lambda's payload
//! (`{"current_segment": 10, "total_segments": 300, "limit_of_rows": 3000}`) plus optional
//! fields; anything else in a message is an error, so a typo never silently changes a scan.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::expression::{RawScanOptions, ScanOptions};

/// DynamoDB's limit on `TotalSegments`.
pub const MAX_TOTAL_SEGMENTS: u32 = 1_000_000;
/// A job id travels as an SQS message attribute; keep it short and printable.
pub const MAX_JOB_ID_LEN: usize = 128;
/// Task bodies are tiny; anything this large is not a task (and would be costly to parse).
pub const MAX_TASK_BYTES: usize = 64 * 1024;
/// The highest `chunk` a task may carry. A segment is continued at most this many times (at the
/// default 10,000 rows a chunk, ten trillion rows), and `chunk + 1` can never wrap.
pub const MAX_CHUNK: u32 = 1_000_000_000;
/// A run id or an origin message id: short and printable, like a job id.
pub const MAX_ID_LEN: usize = 128;

/// The task as it travels on the control queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMessage {
    pub current_segment: i64,
    pub total_segments: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_of_rows: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Where the scan resumes: DynamoDB attribute-value JSON of a `LastEvaluatedKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_start_key: Option<serde_json::Value>,
    /// How many times this segment was continued (0 for the first task of a segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<i64>,
    /// Which run of the job this task belongs to: `enqueue` stamps a fresh one on every task
    /// of a run, continuations carry it on. A task of chunk 0 without one is a run of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The message id of the task this message stands in for, when scanfleet sent it again
    /// (handed back on its last receive, redriven from the dead-letter queue): it keeps that
    /// task's claim on the chunk it counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_message_id: Option<String>,
    /// Scan `FilterExpression`: rows it rejects are read (and paid for) but not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_expression: Option<String>,
    /// Scan `ProjectionExpression`: the attributes sent (the primary key always is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_expression: Option<String>,
    /// `#placeholder` → attribute name, for both expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression_attribute_names: Option<BTreeMap<String, String>>,
    /// `:placeholder` → DynamoDB attribute-value JSON, for the filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression_attribute_values: Option<serde_json::Value>,
    /// Strongly consistent reads (twice the read capacity of the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_read: Option<bool>,
    /// The *job's* read budget in read capacity units per second (0 or absent: unlimited);
    /// each task paces itself to this divided by `total_segments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_units_per_second: Option<f64>,
}

/// A validated task, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub segment: i32,
    pub total_segments: i32,
    /// `Limit` of each Scan request: a page size, not a cap on the rows of the segment.
    pub page_size: Option<i32>,
    pub table: String,
    pub job_id: Option<String>,
    pub exclusive_start_key: Option<HashMap<String, AttributeValue>>,
    pub chunk: u32,
    /// The run this task belongs to (see [`TaskMessage::run_id`]).
    pub run_id: Option<String>,
    /// See [`TaskMessage::origin_message_id`].
    pub origin_message_id: Option<String>,
    /// Filter, projection and read consistency of the scan.
    pub options: ScanOptions,
    /// The job's read budget (units per second), if it has one.
    pub read_units_per_second: Option<f64>,
}

/// Why a task was rejected. The label is the `reason` of `scanfleet_tasks_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not JSON, not an object, wrong types, unknown fields, missing fields, too large.
    Malformed,
    /// Well-formed, but a value is outside what is allowed.
    OutOfRange,
    /// Names a table that `scan.allowed_tables` does not allow.
    TableNotAllowed,
    /// `exclusive_start_key` is not a valid DynamoDB key.
    BadStartKey,
    /// A filter or projection expression, or their placeholders, are invalid.
    BadExpression,
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::Malformed,
        RejectReason::OutOfRange,
        RejectReason::TableNotAllowed,
        RejectReason::BadStartKey,
        RejectReason::BadExpression,
    ];

    /// Every reason's label, for the counters that start at zero.
    pub fn labels() -> [&'static str; 5] {
        Self::ALL.map(Self::label)
    }

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::TableNotAllowed => "table_not_allowed",
            RejectReason::BadStartKey => "bad_start_key",
            RejectReason::BadExpression => "bad_expression",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
    /// The job and segment the message names, when both are valid though the task is not (a
    /// table not allowed, a bad expression…): the job ledger can then say why that segment
    /// never ran, and `enqueue --wait` need not wait for it forever.
    pub job_segment: Option<(String, u32)>,
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        job_segment: None,
    }
}

/// A job id goes into every row's `job_id` message attribute, which (unlike a body) cannot
/// escape a character SQS refuses: so besides control characters, U+FFFE and U+FFFF (which
/// SQS refuses and JSON can carry) are refused here.
fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_JOB_ID_LEN
        && id
            .chars()
            .all(|c| !c.is_control() && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Run ids and origin message ids: ASCII letters, digits, `-` and `_` (SQS message ids and
/// the ids `enqueue` makes are of that kind).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a task may touch: the table policy from `scan.*`.
pub trait TablePolicy {
    fn default_table(&self) -> &str;
    fn allows(&self, table: &str) -> bool;
}

impl TablePolicy for crate::settings::ScanSettings {
    fn default_table(&self) -> &str {
        &self.default_table
    }
    fn allows(&self, table: &str) -> bool {
        crate::settings::ScanSettings::allows(self, table)
    }
}

/// Parses and validates one control-queue message body.
pub fn parse(body: &str, policy: &impl TablePolicy) -> Result<Task, Rejection> {
    if body.len() > MAX_TASK_BYTES {
        return Err(reject(
            RejectReason::Malformed,
            format!(
                "task body is {} bytes, more than the {MAX_TASK_BYTES} a task can be",
                body.len()
            ),
        ));
    }
    // serde would also read a struct from a JSON array; a task is an object, nothing else.
    if !body.trim_start().starts_with('{') {
        let start: String = body.chars().take(40).collect();
        return Err(reject(
            RejectReason::Malformed,
            format!("task is not a JSON object (starts with {start:?})"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(body);
    let msg: TaskMessage = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." || path.is_empty() {
            format!("task is not a valid task object: {inner}")
        } else {
            format!("task field `{path}`: {inner}")
        };
        reject(RejectReason::Malformed, detail)
    })?;
    de.end().map_err(|e| {
        reject(
            RejectReason::Malformed,
            format!("task has trailing data after the object: {e}"),
        )
    })?;
    let job_segment = msg.job_id.clone().filter(|id| valid_job_id(id)).zip(
        (msg.total_segments <= i64::from(MAX_TOTAL_SEGMENTS)
            && (0..msg.total_segments).contains(&msg.current_segment))
        .then_some(msg.current_segment as u32),
    );
    validate(msg, policy).map_err(|rejection| Rejection {
        job_segment,
        ..rejection
    })
}

fn validate(msg: TaskMessage, policy: &impl TablePolicy) -> Result<Task, Rejection> {
    let out_of_range = |detail: String| reject(RejectReason::OutOfRange, detail);
    let total = msg.total_segments;
    if !(1..=i64::from(MAX_TOTAL_SEGMENTS)).contains(&total) {
        return Err(out_of_range(format!(
            "total_segments must be 1..={MAX_TOTAL_SEGMENTS}, got {total}"
        )));
    }
    let segment = msg.current_segment;
    if segment < 0 || segment >= total {
        return Err(out_of_range(format!(
            "current_segment must be 0..={} (less than total_segments {total}), got {segment}",
            total - 1
        )));
    }
    let page_size = match msg.limit_of_rows {
        None => None,
        Some(l) if (1..=i64::from(i32::MAX)).contains(&l) => Some(l as i32),
        Some(l) => {
            return Err(out_of_range(format!(
                "limit_of_rows must be 1..={}, got {l}",
                i32::MAX
            )));
        }
    };
    let chunk = match msg.chunk {
        None => 0,
        Some(c) if (0..=i64::from(MAX_CHUNK)).contains(&c) => c as u32,
        Some(c) => {
            return Err(out_of_range(format!(
                "chunk must be 0..={MAX_CHUNK}, got {c}"
            )));
        }
    };
    for (field, id) in [
        ("run_id", &msg.run_id),
        ("origin_message_id", &msg.origin_message_id),
    ] {
        if let Some(id) = id
            && !valid_id(id)
        {
            return Err(out_of_range(format!(
                "{field} must be 1..={MAX_ID_LEN} ASCII letters, digits, '-' or '_', got {id:?}"
            )));
        }
    }
    let table = match msg.table {
        None => policy.default_table().to_owned(),
        Some(t) if policy.allows(&t) => t,
        Some(t) => {
            return Err(reject(
                RejectReason::TableNotAllowed,
                format!("table {t:?} is not in scan.allowed_tables"),
            ));
        }
    };
    if let Some(id) = &msg.job_id
        && !valid_job_id(id)
    {
        return Err(out_of_range(format!(
            "job_id must be 1..={MAX_JOB_ID_LEN} bytes of printable characters (not U+FFFE or U+FFFF, which SQS refuses), got {id:?}"
        )));
    }
    let exclusive_start_key = match msg.exclusive_start_key {
        None => None,
        Some(v) => Some(codec::key_from_json(&v).map_err(|e| {
            reject(
                RejectReason::BadStartKey,
                format!("exclusive_start_key: {e}"),
            )
        })?),
    };
    let read_units_per_second = match msg.read_units_per_second {
        None => None,
        Some(r) => crate::budget::check_rate(r)
            .map_err(|e| out_of_range(format!("read_units_per_second {e}")))?,
    };
    let options = RawScanOptions {
        filter_expression: msg.filter_expression,
        projection_expression: msg.projection_expression,
        expression_attribute_names: msg.expression_attribute_names,
        expression_attribute_values: msg.expression_attribute_values,
        consistent_read: msg.consistent_read,
    }
    .validate()
    .map_err(|e| reject(RejectReason::BadExpression, e))?;
    Ok(Task {
        segment: segment as i32,
        total_segments: total as i32,
        page_size,
        table,
        job_id: msg.job_id,
        exclusive_start_key,
        chunk,
        run_id: msg.run_id,
        origin_message_id: msg.origin_message_id,
        options,
        read_units_per_second,
    })
}

impl Task {
    /// The task as the telemetry emitters take it.
    pub fn fields(&self) -> crate::telemetry::TaskFields<'_> {
        crate::telemetry::TaskFields {
            table: &self.table,
            segment: self.segment,
            total_segments: self.total_segments,
            chunk: self.chunk,
            job_id: self.job_id.as_deref().unwrap_or_default(),
        }
    }

    /// Which task this message is, across the copies scanfleet sends of it: the id of the
    /// message it stands in for, or its own message id.
    pub fn instance<'a>(&'a self, message_id: &'a str) -> &'a str {
        self.origin_message_id.as_deref().unwrap_or(message_id)
    }

    /// The run this task belongs to: its `run_id`, or (for a first chunk sent without one, as a
    /// hand-written producer sends it) a run of its own, named by its instance. `None`: a
    /// continuation written before run ids existed.
    pub fn run(&self, message_id: &str) -> Option<String> {
        self.run_id
            .clone()
            .or_else(|| (self.chunk == 0).then(|| self.instance(message_id).to_owned()))
    }

    /// The task that goes on from `next`: the next chunk of the same run, a new task of its own
    /// (no origin). Refused past [`MAX_CHUNK`].
    pub fn continuation(
        &self,
        next: HashMap<String, AttributeValue>,
        message_id: &str,
    ) -> Result<Task, String> {
        let chunk = self
            .chunk
            .checked_add(1)
            .filter(|c| *c <= MAX_CHUNK)
            .ok_or_else(|| {
                format!(
                    "segment {} has been continued {MAX_CHUNK} times, the most a task can carry (chunk); raise worker.checkpoint_rows",
                    self.segment
                )
            })?;
        Ok(Task {
            exclusive_start_key: Some(next),
            chunk,
            run_id: self.run(message_id),
            origin_message_id: None,
            ..self.clone()
        })
    }

    /// The wire form of this task, e.g. for a continuation (with a new start key and chunk).
    pub fn to_message(&self) -> TaskMessage {
        let raw = self.options.to_raw();
        TaskMessage {
            current_segment: i64::from(self.segment),
            total_segments: i64::from(self.total_segments),
            limit_of_rows: self.page_size.map(i64::from),
            table: Some(self.table.clone()),
            job_id: self.job_id.clone(),
            exclusive_start_key: self.exclusive_start_key.as_ref().map(codec::key_to_json),
            chunk: (self.chunk > 0).then_some(i64::from(self.chunk)),
            run_id: self.run_id.clone(),
            origin_message_id: self.origin_message_id.clone(),
            filter_expression: raw.filter_expression,
            projection_expression: raw.projection_expression,
            expression_attribute_names: raw.expression_attribute_names,
            expression_attribute_values: raw.expression_attribute_values,
            consistent_read: raw.consistent_read,
            read_units_per_second: self.read_units_per_second,
        }
    }
}

impl TaskMessage {
    /// The first task of `segment` of the job whose tasks `self` stands for (enqueue's
    /// template, a task of the job with its settings).
    pub fn for_segment(&self, segment: u32) -> TaskMessage {
        TaskMessage {
            current_segment: segment.into(),
            exclusive_start_key: None,
            chunk: None,
            origin_message_id: None,
            ..self.clone()
        }
    }

    /// The task that resumes `segment` at `chunk` (0: from its start) from `start_key`, in the
    /// run `run_id` names (`None`: the template's run), as `reconcile` sends it.
    pub fn resume(
        &self,
        segment: u32,
        chunk: u32,
        start_key: Option<serde_json::Value>,
        run_id: Option<String>,
    ) -> TaskMessage {
        let mut task = self.for_segment(segment);
        task.chunk = (chunk > 0).then_some(i64::from(chunk));
        task.exclusive_start_key = start_key;
        if run_id.is_some() {
            task.run_id = run_id;
        }
        task
    }
}

/// The body of a task scanfleet sends (a continuation), as text SQS accepts
/// ([`crate::json::to_sqs_text`]), refused when a worker would reject it as too large: the
/// rest of its segment would then be lost to the dead-letter queue.
pub fn body_of(message: &TaskMessage) -> Result<String, String> {
    let body = crate::json::to_sqs_text(message).map_err(|e| format!("task message: {e}"))?;
    if body.len() > MAX_TASK_BYTES {
        return Err(format!(
            "the continuation of segment {} would be {} bytes, more than the {MAX_TASK_BYTES} a task can be (its start key and expressions are too large)",
            message.current_segment,
            body.len()
        ));
    }
    Ok(body)
}

/// The body of `body` (delivered as `message_id`) to send again as a new message that keeps
/// the task's identity: `origin_message_id` names the task it stands in for and, for a first
/// chunk without a `run_id`, `run_id` names the run it started (see [`Task::run`]). A body that
/// is not a JSON object is returned as it is: it is no task, and its redelivery only takes it
/// to the dead-letter queue with its reason.
pub fn stamp_identity(body: &str, message_id: &str) -> String {
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
    else {
        return body.to_owned();
    };
    let origin = match object.get("origin_message_id") {
        Some(serde_json::Value::String(origin)) => origin.clone(),
        _ => message_id.to_owned(),
    };
    let first_chunk = matches!(object.get("chunk"), None | Some(serde_json::Value::Null))
        || object.get("chunk").and_then(|c| c.as_i64()) == Some(0);
    if first_chunk && matches!(object.get("run_id"), None | Some(serde_json::Value::Null)) {
        object.insert("run_id".into(), origin.clone().into());
    }
    object.insert("origin_message_id".into(), origin.into());
    crate::json::to_sqs_text(&object).unwrap_or_else(|_| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Policy;
    impl TablePolicy for Policy {
        fn default_table(&self) -> &str {
            "items"
        }
        fn allows(&self, t: &str) -> bool {
            t == "items" || t == "other"
        }
    }

    fn ok(body: &str) -> Task {
        parse(body, &Policy).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn rejected(body: &str) -> Rejection {
        match parse(body, &Policy) {
            Ok(t) => panic!("accepted {body}: {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_rejection_names_the_job_segment_when_the_message_does_validly() {
        let named = |body: &str| rejected(body).job_segment;
        assert_eq!(
            named(r#"{"current_segment":3,"total_segments":4,"table":"nope","job_id":"j"}"#),
            Some(("j".into(), 3))
        );
        assert_eq!(
            named(
                r#"{"current_segment":0,"total_segments":1,"job_id":"j","filter_expression":"a = :x"}"#
            ),
            Some(("j".into(), 0))
        );
        // No job, a job id that is itself invalid, a segment out of range, or not a task at all.
        assert_eq!(
            named(r#"{"current_segment":0,"total_segments":1,"table":"nope"}"#),
            None
        );
        assert_eq!(
            named(r#"{"current_segment":0,"total_segments":1,"table":"nope","job_id":""}"#),
            None
        );
        assert_eq!(
            named(r#"{"current_segment":4,"total_segments":4,"job_id":"j"}"#),
            None
        );
        assert_eq!(
            named(r#"{"current_segment":0,"total_segments":1,"job_id":"j","x":1}"#),
            None
        );
        assert_eq!(named("[]"), None);
    }

    #[test]
    fn the_original_lambda_payload_works() {
        let t = ok(r#"{"current_segment": 10, "total_segments": 300, "limit_of_rows": 3000}"#);
        assert_eq!(
            t,
            Task {
                segment: 10,
                total_segments: 300,
                page_size: Some(3000),
                table: "items".into(),
                job_id: None,
                exclusive_start_key: None,
                chunk: 0,
                run_id: None,
                origin_message_id: None,
                options: ScanOptions::default(),
                read_units_per_second: None,
            }
        );
    }

    #[test]
    fn optional_fields() {
        let t = ok(
            r#"{"current_segment":0,"total_segments":1,"table":"other","job_id":"j-1",
            "exclusive_start_key":{"PK":{"S":"a"},"SK":{"N":"12"}},"chunk":3}"#,
        );
        assert_eq!(t.table, "other");
        assert_eq!(t.job_id.as_deref(), Some("j-1"));
        assert_eq!(t.page_size, None);
        assert_eq!(t.chunk, 3);
        let key = t.exclusive_start_key.clone().unwrap();
        assert_eq!(key["PK"], AttributeValue::S("a".into()));
        assert_eq!(key["SK"], AttributeValue::N("12".into()));
        // Explicit nulls mean "absent", as a Python producer writing None would expect.
        let t = ok(r#"{"current_segment":0,"total_segments":1,"table":null,"job_id":null}"#);
        assert_eq!(t.table, "items");
    }

    #[test]
    fn round_trips_through_the_wire_form() {
        let t = ok(
            r#"{"current_segment":2,"total_segments":9,"limit_of_rows":5,"table":"other",
            "job_id":"j","exclusive_start_key":{"PK":{"S":"k"}},"chunk":1}"#,
        );
        let body = serde_json::to_string(&t.to_message()).unwrap();
        assert_eq!(ok(&body), t);
    }

    #[test]
    fn scan_options_are_validated_and_carried_into_continuations() {
        let t = ok(
            r##"{"current_segment":0,"total_segments":2,"filter_expression":"begins_with(#sk, :p)",
            "projection_expression":"#sk, createdAt","expression_attribute_names":{"#sk":"SK"},
            "expression_attribute_values":{":p":{"S":"PREFIX-1"}},"consistent_read":true}"##,
        );
        assert!(t.options.consistent_read);
        assert_eq!(
            t.options.filter_expression.as_deref(),
            Some("begins_with(#sk, :p)")
        );
        let continuation = Task {
            chunk: 1,
            exclusive_start_key: Some(HashMap::from([(
                "PK".to_owned(),
                AttributeValue::S("k".into()),
            )])),
            ..t.clone()
        };
        let body = serde_json::to_string(&continuation.to_message()).unwrap();
        assert!(
            body.contains("begins_with") && body.contains("PREFIX-1"),
            "{body}"
        );
        assert_eq!(ok(&body), continuation);
        let e = rejected(
            r#"{"current_segment":0,"total_segments":2,"filter_expression":"a = :missing"}"#,
        );
        assert_eq!(e.reason, RejectReason::BadExpression);
        assert!(e.detail.contains(":missing"), "{e}");
        let e = rejected(r#"{"current_segment":0,"total_segments":2,"consistent_read":"yes"}"#);
        assert_eq!(e.reason, RejectReason::Malformed);
    }

    #[test]
    fn the_read_budget_is_checked_and_carried() {
        let t = ok(r#"{"current_segment":1,"total_segments":4,"read_units_per_second":100}"#);
        assert_eq!(t.read_units_per_second, Some(100.0));
        let body = serde_json::to_string(
            &Task {
                chunk: 2,
                ..t.clone()
            }
            .to_message(),
        )
        .unwrap();
        assert_eq!(ok(&body).read_units_per_second, Some(100.0));
        let t = ok(r#"{"current_segment":1,"total_segments":4,"read_units_per_second":0}"#);
        assert_eq!(t.read_units_per_second, None, "0 means unlimited");
        let t = ok(r#"{"current_segment":1,"total_segments":4,"read_units_per_second":0.001}"#);
        assert_eq!(
            t.read_units_per_second,
            Some(0.001),
            "the documented minimum"
        );
        // 1e-20 panicked the worker on its second page; it is refused as out of range.
        for bad in ["-1", "1e10", "1e-20", "0.0009", "5e-324"] {
            let e = rejected(&format!(
                r#"{{"current_segment":1,"total_segments":4,"read_units_per_second":{bad}}}"#
            ));
            assert_eq!(e.reason, RejectReason::OutOfRange, "{bad}");
            assert!(
                e.detail.contains("read_units_per_second") && e.detail.contains("0.001..="),
                "{e}"
            );
        }
    }

    /// The corpus the emulator test dead-letters (tests/faults.rs), checked here without AWS:
    /// each body is refused for the reason it names.
    #[test]
    fn the_bad_task_corpus_is_refused_for_its_reasons() {
        #[derive(Deserialize)]
        struct Case {
            body: String,
            reason: String,
        }
        let corpus: Vec<Case> =
            serde_json::from_str(include_str!("../tests/data/bad_tasks.json")).unwrap();
        for case in corpus {
            let e = rejected(&case.body);
            assert_eq!(e.reason.label(), case.reason, "{}: {e}", case.body);
        }
    }

    #[test]
    fn every_rule_is_enforced() {
        use RejectReason::*;
        let cases: &[(&str, RejectReason, &str)] = &[
            ("", Malformed, "not a JSON object"),
            ("not json", Malformed, "not a JSON object"),
            ("{not json", Malformed, "key must be a string"),
            (
                r#"{"current_segment":0,"total_segments":2} trailing"#,
                Malformed,
                "trailing",
            ),
            ("[1,2]", Malformed, "task"),
            ("null", Malformed, "task"),
            ("{}", Malformed, "current_segment"),
            (r#"{"current_segment":1}"#, Malformed, "total_segments"),
            (
                r#"{"current_segment":"1","total_segments":2}"#,
                Malformed,
                "current_segment",
            ),
            (
                r#"{"current_segment":1.5,"total_segments":2}"#,
                Malformed,
                "current_segment",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"extra":1}"#,
                Malformed,
                "extra",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"limit_of_rows":"10"}"#,
                Malformed,
                "limit_of_rows",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"table":5}"#,
                Malformed,
                "table",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"job_id":[]}"#,
                Malformed,
                "job_id",
            ),
            (
                r#"{"current_segment":0,"total_segments":99999999999999999999999}"#,
                Malformed,
                "total_segments",
            ),
            (
                r#"{"current_segment":-1,"total_segments":2}"#,
                OutOfRange,
                "current_segment",
            ),
            (
                r#"{"current_segment":2,"total_segments":2}"#,
                OutOfRange,
                "current_segment",
            ),
            (
                r#"{"current_segment":0,"total_segments":0}"#,
                OutOfRange,
                "total_segments",
            ),
            (
                r#"{"current_segment":0,"total_segments":1000001}"#,
                OutOfRange,
                "total_segments",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"limit_of_rows":0}"#,
                OutOfRange,
                "limit_of_rows",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"limit_of_rows":-5}"#,
                OutOfRange,
                "limit_of_rows",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"limit_of_rows":2147483648}"#,
                OutOfRange,
                "limit_of_rows",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"job_id":""}"#,
                OutOfRange,
                "job_id",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"chunk":-1}"#,
                OutOfRange,
                "chunk",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"table":"secrets"}"#,
                TableNotAllowed,
                "secrets",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"exclusive_start_key":"PK"}"#,
                BadStartKey,
                "exclusive_start_key",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"exclusive_start_key":{}}"#,
                BadStartKey,
                "exclusive_start_key",
            ),
            (
                r#"{"current_segment":0,"total_segments":2,"exclusive_start_key":{"PK":{"Q":"x"}}}"#,
                BadStartKey,
                "exclusive_start_key",
            ),
        ];
        for (body, reason, needle) in cases {
            let e = rejected(body);
            assert_eq!(e.reason, *reason, "{body}: {e}");
            assert!(e.detail.contains(needle), "{body}: {e} lacks {needle:?}");
        }
        let huge = format!(
            r#"{{"current_segment":0,"total_segments":2,"job_id":"{}"}}"#,
            "x".repeat(MAX_TASK_BYTES)
        );
        assert_eq!(rejected(&huge).reason, Malformed);
        let long_id = format!(
            r#"{{"current_segment":0,"total_segments":2,"job_id":"{}"}}"#,
            "x".repeat(MAX_JOB_ID_LEN + 1)
        );
        assert_eq!(rejected(&long_id).reason, OutOfRange);
    }

    #[test]
    fn chunks_and_run_ids_are_bounded() {
        let at = |chunk: i64| {
            format!(r#"{{"current_segment":0,"total_segments":1,"job_id":"x","chunk":{chunk}}}"#)
        };
        assert_eq!(ok(&at(i64::from(MAX_CHUNK))).chunk, MAX_CHUNK);
        // The edge of u32, which once wrapped to chunk 0 and ended the segment.
        for bad in [i64::from(MAX_CHUNK) + 1, i64::from(u32::MAX)] {
            let e = rejected(&at(bad));
            assert_eq!(e.reason, RejectReason::OutOfRange);
            assert!(e.detail.contains("chunk must be 0..=1000000000"), "{e}");
        }
        let t = ok(&at(i64::from(MAX_CHUNK) - 1));
        let key = HashMap::from([("PK".to_owned(), AttributeValue::S("k".into()))]);
        assert_eq!(t.continuation(key.clone(), "m").unwrap().chunk, MAX_CHUNK);
        let last = ok(&at(i64::from(MAX_CHUNK)));
        let e = last.continuation(key, "m").unwrap_err();
        assert!(e.contains("raise worker.checkpoint_rows"), "{e}");
        for field in ["run_id", "origin_message_id"] {
            for bad in [
                r#""""#.to_owned(),
                r#""a b""#.to_owned(),
                format!("{:?}", "r".repeat(129)),
            ] {
                let e = rejected(&format!(
                    r#"{{"current_segment":0,"total_segments":1,"{field}":{bad}}}"#
                ));
                assert_eq!(e.reason, RejectReason::OutOfRange, "{field} {bad}");
                assert!(e.detail.contains(field), "{e}");
            }
        }
    }

    #[test]
    fn a_task_knows_its_run_and_instance() {
        let first = ok(r#"{"current_segment":0,"total_segments":2,"job_id":"j"}"#);
        // Hand-written, without a run id: a run of its own, named by its message.
        assert_eq!(first.run("m1").as_deref(), Some("m1"));
        assert_eq!(first.instance("m1"), "m1");
        let key = HashMap::from([("PK".to_owned(), AttributeValue::S("k".into()))]);
        let next = first.continuation(key, "m1").unwrap();
        assert_eq!((next.chunk, next.run_id.as_deref()), (1, Some("m1")));
        assert_eq!(next.origin_message_id, None);
        assert_eq!(next.run("m2").as_deref(), Some("m1"), "carried on");
        // Sent again in its place: the same instance and run under a new message id.
        let again = ok(&stamp_identity(
            r#"{"current_segment":0,"total_segments":2,"job_id":"j"}"#,
            "m1",
        ));
        assert_eq!(again.instance("m9"), "m1");
        assert_eq!(again.run("m9").as_deref(), Some("m1"));
        // A continuation keeps its run; an existing origin is kept through a second resend.
        let body = serde_json::to_string(&next.to_message()).unwrap();
        let twice = stamp_identity(&stamp_identity(&body, "m2"), "m3");
        let twice = ok(&twice);
        assert_eq!(twice.instance("m4"), "m2");
        assert_eq!(twice.run("m4").as_deref(), Some("m1"));
        assert_eq!(stamp_identity("not json", "m1"), "not json");
        // A start key holding U+FFFF stays escaped when the task is sent again.
        let escaped = r#"{"current_segment":0,"total_segments":2,"chunk":1,"run_id":"r","exclusive_start_key":{"PK":{"S":"k\uFFFF"}}}"#;
        let again = stamp_identity(escaped, "m1");
        assert!(crate::json::sqs_accepts(&again), "{again:?}");
        assert_eq!(
            ok(&again).exclusive_start_key,
            ok(escaped).exclusive_start_key
        );
    }

    #[test]
    fn a_continuation_too_large_for_a_task_is_refused_before_sending() {
        let t = ok(r#"{"current_segment":0,"total_segments":1}"#);
        let key = HashMap::from([(
            "PK".to_owned(),
            AttributeValue::S("k".repeat(MAX_TASK_BYTES)),
        )]);
        let next = t.continuation(key, "m").unwrap();
        let e = body_of(&next.to_message()).unwrap_err();
        assert!(e.contains("more than the 65536 a task can be"), "{e}");
    }

    /// A job id is a message attribute of every row, where SQS refuses U+FFFE and U+FFFF and
    /// nothing can escape them; the task's body may carry them as JSON escapes.
    #[test]
    fn a_job_id_holding_a_character_sqs_refuses_is_rejected() {
        for id in [r"a\uFFFF", r"\uFFFE", r"x\uffffy"] {
            let body = format!(r#"{{"current_segment":0,"total_segments":2,"job_id":"{id}"}}"#);
            let e = rejected(&body);
            assert_eq!(e.reason, RejectReason::OutOfRange, "{body}: {e}");
            assert!(e.detail.contains("U+FFFF"), "{e}");
        }
        // Its neighbours are allowed.
        ok(r#"{"current_segment":0,"total_segments":2,"job_id":"a\uFFFD\u2028😀"}"#);
    }

    /// A continuation's start key is the row it stopped at: DynamoDB stores U+FFFE and U+FFFF
    /// in strings, and the task text sent to SQS must carry them as escapes.
    #[test]
    fn a_continuation_with_a_noncharacter_in_its_start_key_is_sent_as_text_sqs_accepts() {
        let mut t = ok(r#"{"current_segment":0,"total_segments":2,"job_id":"j"}"#);
        let key = "k\u{FFFF}\u{FFFE}\u{2028}😀";
        t.exclusive_start_key = Some(HashMap::from([(
            "PK".to_owned(),
            AttributeValue::S(key.into()),
        )]));
        t.chunk = 1;
        let text = crate::json::to_sqs_text(&t.to_message()).unwrap();
        assert!(crate::json::sqs_accepts(&text), "{text:?}");
        assert!(text.contains(r"k\uFFFF\uFFFE"), "{text}");
        let back = ok(&text);
        assert_eq!(back.exclusive_start_key, t.exclusive_start_key);
    }
}
