//! One chunk of a segment, end to end: a scanner reads pages while a publisher sends the
//! previous ones.
//!
//! The two halves are joined by a small bounded channel, so scanning runs ahead of publishing
//! by at most [`PAGES_AHEAD`] pages (back-pressure, not buffering): memory is bounded by the page
//! size and the number of batches in flight, never by the size of the segment.
//!
//! A run ends at a *checkpoint* (a page boundary after `worker.checkpoint_rows` rows or
//! `worker.checkpoint_seconds`, or when asked to stop) once every row so far was accepted by
//! SQS, and reports the key the rest of the segment starts from. The worker turns that into a
//! continuation task, so a crash repeats at most one chunk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::SdkError;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::pack::{PackLimits, Packer, RowTooLarge};
use crate::aws::dynamodb::key_schema::{KeySchemaError, KeySchemas, TableKey};
use crate::aws::dynamodb::scan::{Page, ScanError, ScanRequest, Scanner};
use crate::aws::sqs::{self, Attribute, OutMessage, Publisher, SendError};
use crate::batch::{Batcher, TooLarge};
use crate::budget::{self, ReadBudget};
pub use crate::codec::Item;
use crate::codec::OutputFormat;
use crate::codec::{self, Row, RowWriter, fifo_dedup_id, fifo_group_id, is_fifo, row_hash, row_id};
use crate::settings::Settings;
use crate::task::Task;
use crate::telemetry;

pub mod pack;

/// Pages the scanner may read ahead of the publisher (see the reservation in `scan`).
const PAGES_AHEAD: usize = 1;

type HttpResponse = aws_smithy_runtime_api::http::Response;

/// When a chunk ends.
#[derive(Debug, Clone, Copy)]
pub struct Checkpointing {
    pub rows: u64,
    pub every: Duration,
}

/// Everything a segment run needs; shared by all tasks of a worker.
pub struct Output {
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Reads the pages (`scan.client`); `dynamodb` makes every other call.
    pub scanner: Scanner,
    pub sqs: aws_sdk_sqs::Client,
    /// Sends the row batches (`output.client`); `sqs` makes every other call.
    pub publisher: Publisher,
    /// Shared rather than owned: every batch in flight holds it.
    pub queue_url: Arc<str>,
    pub format: OutputFormat,
    pub max_batch_bytes: usize,
    /// Largest message the output queue accepts (its `MaximumMessageSize`).
    pub max_message_bytes: usize,
    /// Where rows too large for the output queue go, if anywhere.
    pub oversize_queue_url: Option<String>,
    /// Packed output (`output.rows_per_message` > 1); `None`: one message per row.
    pub packing: Option<Packing>,
    /// `output.max_in_flight_batches` permits, shared by every task of the worker.
    pub in_flight: Arc<Semaphore>,
    pub checkpointing: Checkpointing,
    pub key_schemas: KeySchemas,
    /// `scan.read_units_per_second`: one bucket for every task of the worker.
    pub read_budget: Option<Arc<ReadBudget>>,
}

/// Packed output's settings (see [`pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    /// `output.rows_per_message`, at least 2.
    pub rows_per_message: usize,
    /// `output.max_message_bytes`.
    pub max_message_bytes: usize,
}

/// The AWS clients of a worker's output side: the SDK's, and the two that make the hot calls.
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub scanner: Scanner,
    pub sqs: aws_sdk_sqs::Client,
    pub publisher: Publisher,
}

impl Output {
    /// The output side as the settings describe it, on `clients`. `max_message_bytes`: the
    /// output queue's `MaximumMessageSize`, read at start-up.
    pub fn new(settings: &Settings, clients: Clients, max_message_bytes: usize) -> Self {
        let out = &settings.output;
        let Clients {
            dynamodb,
            scanner,
            sqs,
            publisher,
        } = clients;
        Self {
            dynamodb,
            scanner,
            sqs,
            publisher,
            queue_url: out.queue_url.as_str().into(),
            format: out.format,
            max_batch_bytes: out.max_batch_bytes as usize,
            max_message_bytes,
            oversize_queue_url: (!out.oversize_queue_url.is_empty())
                .then(|| out.oversize_queue_url.clone()),
            packing: out.packed().then_some(Packing {
                rows_per_message: out.rows_per_message as usize,
                max_message_bytes: out.max_message_bytes as usize,
            }),
            in_flight: Arc::new(Semaphore::new(out.max_in_flight_batches as usize)),
            checkpointing: Checkpointing {
                rows: settings.worker.checkpoint_rows,
                every: Duration::from_secs(settings.worker.checkpoint_seconds),
            },
            key_schemas: KeySchemas::default(),
            read_budget: (settings.scan.read_units_per_second > 0.0)
                .then(|| Arc::new(ReadBudget::new(settings.scan.read_units_per_second))),
        }
    }
}

/// How a run ended; every row it read before that point was accepted by SQS.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The segment is done.
    Finished,
    /// The segment goes on from this key (a page's `LastEvaluatedKey`).
    Checkpoint(Item),
    /// Asked to stop before any row was read: nothing to record, hand the task back.
    NothingDone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Rows of the pages this run took (sent, or diverted as oversize).
    pub rows: u64,
    pub end: End,
    /// Rows DynamoDB read for those pages (`ScannedCount`: before the filter).
    pub scanned: u64,
    /// Rows accepted by the output queue.
    pub published: u64,
    /// Read capacity those pages consumed.
    pub read_units: f64,
}

/// Why a segment could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    KeySchema(#[from] KeySchemaError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The scan request DynamoDB would refuse, judged before it is sent.
    #[error("invalid scan: {0}")]
    Expression(String),
    #[error("row {key} is {size} bytes as a message, more than {limit}")]
    Oversize {
        key: String,
        size: usize,
        limit: MessageLimit,
    },
    #[error("row cannot be sent: {0}")]
    TooLarge(#[from] TooLarge),
    #[error("publishing rows failed: {0}")]
    Publish(#[from] SendError),
    #[error("sending an oversize row to output.oversize_queue_url failed: {0}")]
    OversizeQueue(
        #[from] SdkError<aws_sdk_sqs::operation::send_message::SendMessageError, HttpResponse>,
    ),
}

/// The size a row's message must fit: the output queue's `MaximumMessageSize` or, when that is
/// larger, `output.max_batch_bytes` (a batch holds at least one message), or with packed output
/// `output.max_message_bytes` when that is the smallest. Displayed as the end of a sentence
/// naming the limit that applies and what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimit {
    /// The output queue's `MaximumMessageSize`.
    pub queue: usize,
    /// `output.max_batch_bytes`.
    pub batch: usize,
    /// `output.max_message_bytes`, with packed output.
    pub packed: Option<usize>,
}

impl MessageLimit {
    /// The number of bytes a message may have.
    pub fn bytes(self) -> usize {
        self.queue
            .min(self.batch)
            .min(self.packed.unwrap_or(usize::MAX))
    }

    /// `output.max_message_bytes`, when it is the limit that applies.
    fn packed_limit(self) -> Option<usize> {
        self.packed.filter(|&p| p < self.queue.min(self.batch))
    }

    /// Why a message of `size` bytes is too large, for the oversize record.
    pub fn reason(self, size: usize) -> String {
        if let Some(packed) = self.packed_limit() {
            format!(
                "message of {size} bytes exceeds output.max_message_bytes ({packed} bytes, packed output; the output queue accepts {})",
                self.queue
            )
        } else if self.batch < self.queue {
            format!(
                "message of {size} bytes exceeds output.max_batch_bytes ({} bytes; the output queue accepts {})",
                self.batch, self.queue
            )
        } else {
            format!(
                "message of {size} bytes exceeds the output queue's limit of {} bytes",
                self.queue
            )
        }
    }
}

impl std::fmt::Display for MessageLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(packed) = self.packed_limit() {
            write!(
                f,
                "output.max_message_bytes allows ({packed}, packed output; the output queue accepts {}); raise it or set output.oversize_queue_url to divert such rows",
                self.queue
            )
        } else if self.batch < self.queue {
            write!(
                f,
                "output.max_batch_bytes allows ({}; the output queue accepts {}); raise it or set output.oversize_queue_url to divert such rows",
                self.batch, self.queue
            )
        } else {
            write!(
                f,
                "the output queue accepts ({}); set output.oversize_queue_url to divert such rows",
                self.queue
            )
        }
    }
}

/// What a chunk has done so far, while it runs (rows read, rows accepted by the output
/// queue): the worker's heartbeat writes it to the ledger as the segment's provisional figures.
#[derive(Debug, Default)]
pub struct Progress {
    pub scanned: AtomicU64,
    pub published: AtomicU64,
}

/// Scans the task's segment from its start key and publishes every row until the segment ends
/// or a checkpoint is due. `stop` asks for a checkpoint at the next page boundary.
pub async fn run_segment(
    out: &Output,
    task: &Task,
    stop: &CancellationToken,
) -> Result<Outcome, SegmentError> {
    run_chunk(out, task, stop, Arc::default()).await
}

/// [`run_segment`], reporting as it goes into `progress`.
pub async fn run_chunk(
    out: &Output,
    task: &Task,
    stop: &CancellationToken,
    progress: Arc<Progress>,
) -> Result<Outcome, SegmentError> {
    let key = out.key_schemas.get(&out.dynamodb, &task.table).await?;
    let key_names = &key.names[..];
    // Judged before any page is read: DynamoDB would refuse every request of the segment.
    let projection = task
        .options
        .scan_projection(key_names)
        .map_err(SegmentError::Expression)?;
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    // The publisher decides how the chunk ends; the scanner only serves it. A page read ahead
    // of a chunk the publisher has already ended (a checkpoint, a stop) is not needed, so
    // when the publisher returns the scanner is dropped where it is, and a read that fails
    // reaches the publisher as a message it acts on only if it asks for that page. Failing
    // the run on it instead would send every row of the finished chunk again.
    let scanner = scan(out, task, key_names, projection, tx);
    let publisher = publish(out, task, &key, rx, stop, &progress);
    tokio::pin!(publisher);
    tokio::select! {
        outcome = &mut publisher => return outcome,
        () = scanner => {}
    }
    publisher.await
}

/// Reads the segment's pages into `tx` until the segment ends, a read fails (the error is the
/// last message) or the publisher stops taking pages.
async fn scan(
    out: &Output,
    task: &Task,
    key_names: &[String],
    projection: crate::expression::ScanProjection,
    tx: mpsc::Sender<Result<Page, ScanError>>,
) {
    let options = &task.options;
    let (projection, names) = projection;
    let request = ScanRequest {
        table_name: &task.table,
        segment: task.segment,
        total_segments: task.total_segments,
        limit: task.page_size,
        filter_expression: options.filter_expression.as_deref(),
        projection_expression: projection,
        expression_attribute_names: names,
        expression_attribute_values: options.expression_attribute_values.as_ref(),
        consistent_read: options.consistent_read.then_some(true),
    };
    let mut rows = RowWriter::new(out.format, key_names);
    let mut start = task.exclusive_start_key.clone();
    // The job's budget, split over its segments (see crate::budget), and the worker's.
    let task_budget = task
        .read_units_per_second
        .map(|r| ReadBudget::new(budget::per_task_rate(r, task.total_segments)));
    let budgets: Vec<&ReadBudget> = task_budget
        .iter()
        .chain(out.read_budget.as_deref())
        .collect();
    loop {
        // Reserve the channel slot *before* reading the next page, so a worker holds at most
        // the page being published plus one read ahead, never a third one waiting to be sent.
        let Ok(slot) = tx.reserve().await else {
            // The publisher stopped (checkpoint or error); the pages it did not take are
            // simply read again by whoever continues the segment.
            break;
        };
        // The publisher may end the chunk while the scanner waits out the budget (a drain, or
        // the chunk's time up): stop then, rather than read (and pay for) a page nobody will
        // take. The hard stop drops this future, sleep and all, which holds nothing.
        let paced = async {
            for b in &budgets {
                b.ready().await;
            }
        };
        tokio::select! {
            () = paced => {}
            () = tx.closed() => break,
        }
        // Abandoned as soon as the publisher ends the chunk: it may be waiting on throttling.
        let read = out.scanner.page(&request, start.as_ref(), &mut rows);
        let page = tokio::select! {
            page = read => page,
            () = tx.closed() => break,
        };
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                slot.send(Err(e));
                break;
            }
        };
        telemetry::page_scanned(page.scanned, page.units);
        for b in &budgets {
            b.charge(page.units);
        }
        let last = page.next.is_none();
        start.clone_from(&page.next);
        slot.send(Ok(page));
        if last {
            break;
        }
    }
}

/// Attributes every row of the task carries, built once per task.
struct RowAttributes {
    shared: Arc<[Attribute]>,
    /// Their size as SQS counts it toward message and batch limits (name + type + value),
    /// including the per-row `row_id`.
    size: usize,
    /// The size of the shared ones alone (a packed message has no `row_id`).
    shared_size: usize,
}

impl RowAttributes {
    fn for_task(task: &Task) -> Self {
        let mut shared = vec![
            Attribute {
                name: "table".into(),
                data_type: "String",
                value: task.table.clone(),
            },
            Attribute {
                name: "segment".into(),
                data_type: "Number",
                value: task.segment.to_string(),
            },
        ];
        if let Some(job) = &task.job_id {
            shared.push(Attribute {
                name: "job_id".into(),
                data_type: "String",
                value: job.clone(),
            });
        }
        let row_id = sqs::attribute_size(sqs::ROW_ID_ATTRIBUTE, "String", codec::ROW_ID_LEN);
        let shared_size = shared
            .iter()
            .map(|a| sqs::attribute_size(&a.name, a.data_type, a.value.len()))
            .sum::<usize>();
        Self {
            shared: shared.into(),
            size: shared_size + row_id,
            shared_size,
        }
    }
}

/// The scope of a task's FIFO deduplication ids (see [`fifo_dedup_id`]): its job and its run
/// (`run_id`, which the worker sets on every task it runs), so neither another job nor a rerun
/// of the same job within SQS's 5 minutes has its rows dropped, while a crash repeat inside one
/// run (same job, same run, same `row_id`) is.
fn dedup_scope(task: &Task) -> String {
    match (task.job_id.as_deref(), task.run_id.as_deref()) {
        (None, None) => String::new(),
        (job, run) => format!("{}\n{}", job.unwrap_or_default(), run.unwrap_or_default()),
    }
}

async fn publish(
    out: &Output,
    task: &Task,
    key: &TableKey,
    mut rx: mpsc::Receiver<Result<Page, ScanError>>,
    stop: &CancellationToken,
    progress: &Arc<Progress>,
) -> Result<Outcome, SegmentError> {
    let key_names = &key.names[..];
    let fifo = is_fifo(&out.queue_url);
    let scope = dedup_scope(task);
    let attrs = RowAttributes::for_task(task);
    let limit = MessageLimit {
        queue: out.max_message_bytes,
        batch: out.max_batch_bytes,
        packed: out.packing.map(|p| p.max_message_bytes),
    };
    // Packed output: rows go into the packer, and the messages it closes into the batcher.
    let mut packer = out.packing.map(|p| {
        let limits = PackLimits {
            rows: p.rows_per_message,
            bytes: limit.bytes(),
        };
        Packer::new(limits, attrs.shared_size)
    });
    let mut batcher = Batcher::new(out.max_batch_bytes);
    let mut in_flight = JoinSet::new();
    let started = Instant::now();
    // The scanner may wait out a read budget far longer than a chunk lasts; the chunk's time
    // is up at this deadline whether or not another page has come.
    let time_up = async {
        match tokio::time::Instant::now().checked_add(out.checkpointing.every) {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(time_up);
    let mut rows = 0u64;
    let mut pages = 0u64;
    let (mut scanned, mut diverted, mut read_units) = (0u64, 0u64, 0f64);
    // Where the segment goes on after the last page published (`None` after the final page).
    let mut resume: Option<Item> = None;
    let end = loop {
        let page = tokio::select! {
            biased;
            // A stop before the first page hands the task back untouched; after a page it
            // checkpoints at that page. After the final page there is nothing to resume, so
            // the run finishes instead.
            () = stop.cancelled(), if pages == 0 || resume.is_some() => {
                break match resume.take() {
                    Some(key) => End::Checkpoint(key),
                    None => End::NothingDone,
                };
            }
            () = &mut time_up, if resume.is_some() => {
                break resume.take().map_or(End::NothingDone, End::Checkpoint);
            }
            page = rx.recv() => page,
        };
        let page = match page {
            Some(page) => page?,
            None => break End::Finished,
        };
        pages += 1;
        rows += page.rows.len() as u64;
        scanned += page.scanned;
        progress.scanned.fetch_add(page.scanned, Ordering::Relaxed);
        read_units += page.units;
        // Rows are consumed as they are batched, so a page's rows are freed while it is
        // published rather than after.
        for Row { body, key: row_key } in page.rows {
            if let Some(packer) = packer.as_mut() {
                // The row_id is written on the stack and copied into the message's row_ids.
                let mut hex_id = [0u8; 2 * 16];
                hex::encode_to_slice(row_hash(&task.table, key_names, &row_key), &mut hex_id)
                    .expect("16 bytes are 32 hex digits");
                let id = std::str::from_utf8(&hex_id).expect("hex digits are ASCII");
                match packer.push(&body, id) {
                    Ok(None) => {}
                    Ok(Some(pack)) => {
                        let size = pack.size;
                        let message = pack.into_message(attrs.shared.clone());
                        if let Some(batch) = batcher.push(message, size)? {
                            spawn_send(out, &mut in_flight, batch, progress).await?;
                        }
                    }
                    Err(RowTooLarge { size }) => {
                        divert_oversize(out, task, key_names, &row_key, size, limit).await?;
                        diverted += 1;
                    }
                }
                continue;
            }
            let size = body.len() + attrs.size;
            if size > limit.bytes() {
                divert_oversize(out, task, key_names, &row_key, size, limit).await?;
                diverted += 1;
                continue;
            }
            let id = row_id(&task.table, key_names, &row_key);
            // SQS drops a FIFO message whose deduplication id (the `row_id` within the job's
            // run) it saw in the last 5 minutes, so a repeated chunk is delivered once (within
            // that window), and another job's or run's rows are not dropped.
            let entry = OutMessage {
                body,
                shared_attributes: Some(attrs.shared.clone()),
                group_id: fifo.then(|| fifo_group_id(row_key.get(&key.partition))),
                dedup_id: fifo.then(|| fifo_dedup_id(&scope, &id)),
                row_id: Some(id),
                packed: None,
            };
            if let Some(batch) = batcher.push(entry, size)? {
                spawn_send(out, &mut in_flight, batch, progress).await?;
            }
        }
        resume = page.next;
        let due = rows >= out.checkpointing.rows
            || started.elapsed() >= out.checkpointing.every
            || stop.is_cancelled();
        if due && let Some(key) = resume.take() {
            break End::Checkpoint(key);
        }
    };
    // Stop the scanner now rather than after the last batch: it may be blocked on a full channel.
    drop(rx);
    // The chunk's last packed message: a message never holds rows of two chunks, so a chunk
    // is acknowledged only once every message holding its rows was accepted.
    if let Some(pack) = packer.as_mut().and_then(Packer::take) {
        let size = pack.size;
        let message = pack.into_message(attrs.shared.clone());
        if let Some(batch) = batcher.push(message, size)? {
            spawn_send(out, &mut in_flight, batch, progress).await?;
        }
    }
    if let Some(batch) = batcher.take() {
        spawn_send(out, &mut in_flight, batch, progress).await?;
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("batch sends do not panic")?;
    }
    Ok(Outcome {
        rows,
        end,
        scanned,
        published: rows - diverted,
        read_units,
    })
}

/// A row too large for the output queue: recorded on the oversize queue if there is one,
/// otherwise the task fails with an error naming the row. Never dropped silently.
async fn divert_oversize(
    out: &Output,
    task: &Task,
    key_names: &[String],
    row_key: &Item,
    size: usize,
    limit: MessageLimit,
) -> Result<(), SegmentError> {
    let key = codec::key_to_json(row_key);
    let Some(url) = &out.oversize_queue_url else {
        telemetry::row_oversize(&task.table, &key, size, telemetry::Oversize::Failed);
        return Err(SegmentError::Oversize {
            key: key.to_string(),
            size,
            limit,
        });
    };
    let record = serde_json::json!({
        "table": task.table,
        "segment": task.segment,
        "job_id": task.job_id,
        "key": key,
        "size": size,
        "reason": limit.reason(size),
    });
    let mut send =
        out.sqs.send_message().queue_url(url).message_body(
            crate::json::to_sqs_text(&record).expect("a JSON value always serializes"),
        );
    if is_fifo(url) {
        send = send
            .message_group_id("oversize")
            .message_deduplication_id(fifo_dedup_id(
                &dedup_scope(task),
                &row_id(&task.table, key_names, row_key),
            ));
    }
    send.send().await?;
    telemetry::row_oversize(&task.table, &key, size, telemetry::Oversize::Diverted);
    Ok(())
}

/// Starts sending one batch once an in-flight permit is free.
/// Surfaces the error of any batch that already finished, so a failure stops the task early.
async fn spawn_send(
    out: &Output,
    in_flight: &mut JoinSet<Result<(), SendError>>,
    batch: Vec<OutMessage>,
    progress: &Arc<Progress>,
) -> Result<(), SegmentError> {
    while let Some(done) = in_flight.try_join_next() {
        done.expect("batch sends do not panic")?;
    }
    let permit = out
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let (publisher, url) = (out.publisher.clone(), out.queue_url.clone());
    let progress = progress.clone();
    in_flight.spawn(async move {
        let (messages, rows) = (batch.len(), batch.iter().map(OutMessage::rows).sum());
        let result = sqs::send_batch(&publisher, &url, batch).await;
        drop(permit);
        if result.is_ok() {
            telemetry::rows_published(rows, messages);
            progress.published.fetch_add(rows as u64, Ordering::Relaxed);
        }
        result
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::collections::HashMap;

    fn row(pk: &str, sk: &str) -> Item {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk.into())),
            ("SK".to_owned(), AttributeValue::S(sk.into())),
            ("other".to_owned(), AttributeValue::N("1".into())),
        ])
    }

    #[test]
    fn the_oversize_reason_names_the_real_limit() {
        let queue = MessageLimit {
            queue: 1024,
            batch: 262_144,
            packed: None,
        };
        assert_eq!(queue.bytes(), 1024);
        assert_eq!(
            queue.reason(2000),
            "message of 2000 bytes exceeds the output queue's limit of 1024 bytes"
        );
        let e = SegmentError::Oversize {
            key: "k".into(),
            size: 2000,
            limit: queue,
        };
        assert!(
            e.to_string().contains(
                "more than the output queue accepts (1024); set output.oversize_queue_url"
            ),
            "{e}"
        );
        let batch = MessageLimit {
            queue: 262_144,
            batch: 4096,
            packed: None,
        };
        assert_eq!(batch.bytes(), 4096);
        let reason = batch.reason(5000);
        assert!(
            reason.contains("output.max_batch_bytes (4096 bytes"),
            "{reason}"
        );
        let e = SegmentError::Oversize {
            key: "k".into(),
            size: 5000,
            limit: batch,
        };
        let e = e.to_string();
        assert!(
            e.contains("more than output.max_batch_bytes allows (4096;"),
            "{e}"
        );
        assert!(!e.contains("output queue accepts (4096)"), "{e}");
        // Packed output: output.max_message_bytes when it is the smallest, otherwise as before.
        let packed = MessageLimit {
            queue: 262_144,
            batch: 262_144,
            packed: Some(65_536),
        };
        assert_eq!(packed.bytes(), 65_536);
        assert!(
            packed
                .reason(70_000)
                .contains("output.max_message_bytes (65536 bytes, packed output"),
            "{}",
            packed.reason(70_000)
        );
        let e = SegmentError::Oversize {
            key: "k".into(),
            size: 70_000,
            limit: packed,
        }
        .to_string();
        assert!(
            e.contains("more than output.max_message_bytes allows (65536, packed output;"),
            "{e}"
        );
        let same = MessageLimit {
            packed: Some(1024),
            ..queue
        };
        assert_eq!(same.reason(2000), queue.reason(2000));
    }

    /// A second job over the same table must not have its rows dropped as duplicates of the
    /// first's; a repeat inside one job must still be.
    #[test]
    fn fifo_deduplication_ids_are_scoped_by_the_job() {
        let keys = ["PK".to_owned(), "SK".to_owned()];
        let a = row_id("t", &keys, &row("a", "1"));
        let b = row_id("t", &keys, &row("a", "2"));
        let nightly = fifo_dedup_id("nightly", &a);
        assert_eq!(nightly, fifo_dedup_id("nightly", &a), "a crash repeat");
        assert_ne!(nightly, fifo_dedup_id("nightly-2", &a), "another job");
        assert_ne!(nightly, fifo_dedup_id("nightly", &b), "another row");
        assert_ne!(nightly, a);
        // Length-prefixed: moving characters between scope and row_id changes the id.
        assert_ne!(fifo_dedup_id("ab", "c"), fifo_dedup_id("a", "bc"));
        // Within SQS's limits whatever the job id holds (1..=128 bytes of printable text).
        for scope in ["x", "job with spaces é 😀", &"j".repeat(128)] {
            let id = fifo_dedup_id(scope, &a);
            assert!(
                (1..=128).contains(&id.len()) && id.bytes().all(|c| c.is_ascii_graphic()),
                "{id}"
            );
        }
        // Tasks without a job id keep the row_id itself.
        assert_eq!(fifo_dedup_id("", &a), a);
        let mut task = Task {
            segment: 0,
            total_segments: 1,
            page_size: None,
            table: "t".into(),
            job_id: Some("nightly".into()),
            exclusive_start_key: None,
            chunk: 0,
            run_id: None,
            origin_message_id: None,
            options: Default::default(),
            read_units_per_second: None,
        };
        assert_eq!(dedup_scope(&task), "nightly\n");
        task.run_id = Some("r2".into());
        assert_eq!(
            dedup_scope(&task),
            "nightly\nr2",
            "a rerun is a scope of its own"
        );
        task.job_id = None;
        assert_eq!(dedup_scope(&task), "\nr2");
        task.run_id = None;
        assert_eq!(dedup_scope(&task), "");
    }
}
