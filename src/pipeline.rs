//! One segment, end to end: a scanner reads pages while a publisher sends the previous ones.
//!
//! The two halves are joined by a small bounded channel, so scanning runs ahead of publishing
//! by at most [`PAGES_AHEAD`] pages (back-pressure, not buffering): memory is bounded by the page
//! size and the number of batches in flight, never by the size of the segment.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::scan::ScanError;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::batch::{Batcher, TooLarge};
use crate::item::{self, Item};
use crate::settings::OutputFormat;
use crate::sqs::{self, SendError};
use crate::task::Task;
use crate::telemetry;

/// Pages the scanner may read ahead of the publisher.
const PAGES_AHEAD: usize = 2;

/// Everything a segment run needs; shared by all tasks of a worker.
pub struct Output {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub format: OutputFormat,
    pub max_batch_bytes: usize,
    /// `output.max_in_flight_batches` permits, shared by every task of the worker.
    pub in_flight: Arc<Semaphore>,
}

/// Why a segment could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("scanning table failed: {0}")]
    Scan(#[from] SdkError<ScanError, aws_smithy_runtime_api::http::Response>),
    #[error("row could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("row cannot be sent: {0}")]
    TooLarge(#[from] TooLarge),
    #[error("publishing rows failed: {0}")]
    Publish(#[from] SendError),
}

/// Scans the task's segment and publishes every row; returns the number of rows published.
/// Returns only after every row was accepted by SQS (or with the first error).
pub async fn run_segment(out: &Output, task: &Task) -> Result<u64, SegmentError> {
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    // try_join: the first error drops the other half, which stops it (a closed channel ends
    // the scanner; dropping the JoinSet aborts batches still in flight).
    let ((), rows) = tokio::try_join!(scan(out, task, tx), publish(out, task, rx))?;
    Ok(rows)
}

async fn scan(out: &Output, task: &Task, tx: mpsc::Sender<Vec<Item>>) -> Result<(), SegmentError> {
    let mut pages = out
        .dynamodb
        .scan()
        .table_name(&task.table)
        .segment(task.segment)
        .total_segments(task.total_segments)
        .set_limit(task.page_size)
        .set_exclusive_start_key(task.exclusive_start_key.clone())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let items = page?.items.unwrap_or_default();
        telemetry::page_scanned(items.len());
        if tx.send(items).await.is_err() {
            // The publisher is gone: it failed, and its error is the one that matters.
            break;
        }
    }
    Ok(())
}

/// Attributes every row of the task carries, built once per task.
struct RowAttributes {
    map: HashMap<String, MessageAttributeValue>,
    /// Their size as SQS counts it toward message and batch limits (name + type + value).
    size: usize,
}

impl RowAttributes {
    fn for_task(task: &Task) -> Self {
        let mut map = HashMap::new();
        let mut size = 0;
        let mut add = |name: &str, data_type: &str, value: String| {
            size += name.len() + data_type.len() + value.len();
            let attr = MessageAttributeValue::builder()
                .data_type(data_type)
                .string_value(value)
                .build()
                .expect("data type is set");
            map.insert(name.to_owned(), attr);
        };
        add("table", "String", task.table.clone());
        add("segment", "Number", task.segment.to_string());
        if let Some(job) = &task.job_id {
            add("job_id", "String", job.clone());
        }
        Self { map, size }
    }
}

async fn publish(
    out: &Output,
    task: &Task,
    mut rx: mpsc::Receiver<Vec<Item>>,
) -> Result<u64, SegmentError> {
    let attrs = RowAttributes::for_task(task);
    let mut batcher = Batcher::new(out.max_batch_bytes);
    let mut in_flight = JoinSet::new();
    let mut rows = 0u64;
    while let Some(page) = rx.recv().await {
        for row in &page {
            let body = item::encode(row, out.format)?;
            let size = body.len() + attrs.size;
            let entry = SendMessageBatchRequestEntry::builder()
                .id("") // numbered when the batch is closed
                .message_body(body)
                .set_message_attributes(Some(attrs.map.clone()))
                .build()
                .expect("id and body are set");
            if let Some(batch) = batcher.push(entry, size)? {
                rows += spawn_send(out, &mut in_flight, batch).await?;
            }
        }
    }
    if let Some(batch) = batcher.take() {
        rows += spawn_send(out, &mut in_flight, batch).await?;
    }
    while let Some(done) = in_flight.join_next().await {
        done.expect("batch sends do not panic")?;
    }
    Ok(rows)
}

/// Starts sending one batch once an in-flight permit is free; returns its row count.
/// Surfaces the error of any batch that already finished, so a failure stops the task early.
async fn spawn_send(
    out: &Output,
    in_flight: &mut JoinSet<Result<(), SendError>>,
    mut batch: Vec<SendMessageBatchRequestEntry>,
) -> Result<u64, SegmentError> {
    while let Some(done) = in_flight.try_join_next() {
        done.expect("batch sends do not panic")?;
    }
    let permit = out
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    for (i, entry) in batch.iter_mut().enumerate() {
        entry.id = i.to_string();
    }
    let rows = batch.len() as u64;
    let (client, url) = (out.sqs.clone(), out.queue_url.clone());
    in_flight.spawn(async move {
        let result = sqs::send_batch(&client, &url, batch).await;
        drop(permit);
        if result.is_ok() {
            telemetry::rows_published(rows as usize);
        }
        result
    });
    Ok(rows)
}
