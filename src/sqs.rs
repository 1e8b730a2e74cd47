//! Thin adapter over the SQS calls scanfleet makes; the worker loop is written against it.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use crate::retry::{self, CallError, Class};
use crate::telemetry;

pub mod direct;

/// A message attribute (`String` or `Number`), as SQS carries it next to the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub data_type: &'static str,
    pub value: String,
}

/// One message of a `SendMessageBatch`, in scanfleet's terms. Either client turns it into its
/// request; neither needs a copy of it to do so, so failed entries can be resent as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutMessage {
    pub body: String,
    /// Attributes every row of a task carries (table, segment, job): built once per task and
    /// shared by its rows.
    pub shared_attributes: Option<Arc<[Attribute]>>,
    /// The row's `row_id` attribute.
    pub row_id: Option<String>,
    /// FIFO queues: the message group (the row's partition key).
    pub group_id: Option<String>,
    /// FIFO queues: the deduplication id (the `row_id` within its job, see
    /// [`crate::pipeline::fifo_dedup_id`]).
    pub dedup_id: Option<String>,
}

/// Name of the per-row attribute carrying the row's stable id.
pub const ROW_ID_ATTRIBUTE: &str = "row_id";

impl OutMessage {
    /// The message's attributes: the task's shared ones, then `row_id`.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        let shared = self.shared_attributes.iter().flat_map(|a| a.iter());
        shared
            .map(|a| (a.name.as_str(), a.data_type, a.value.as_str()))
            .chain(
                self.row_id
                    .as_deref()
                    .map(|id| (ROW_ID_ATTRIBUTE, "String", id)),
            )
    }

    /// The deduplication id, on FIFO queues (those with a group id).
    pub fn deduplication_id(&self) -> Option<&str> {
        self.group_id.as_ref().and(self.dedup_id.as_deref())
    }

    fn to_sdk_entry(&self, id: usize) -> SendMessageBatchRequestEntry {
        let attributes = self
            .attributes()
            .map(|(name, data_type, value)| {
                let value = MessageAttributeValue::builder()
                    .data_type(data_type)
                    .string_value(value)
                    .build()
                    .expect("data type is set");
                (name.to_owned(), value)
            })
            .collect::<std::collections::HashMap<_, _>>();
        SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(&self.body)
            .set_message_attributes((!attributes.is_empty()).then_some(attributes))
            .set_message_group_id(self.group_id.clone())
            .set_message_deduplication_id(self.deduplication_id().map(str::to_owned))
            .build()
            .expect("id and body are set")
    }
}

/// What sends a worker's row batches: the direct client (the default, see [`direct`]) or the
/// AWS SDK (`output.client = "sdk"`; also what tests script faults through).
#[derive(Clone, Debug)]
pub enum Publisher {
    Direct(Arc<direct::DirectSqs>),
    Sdk(Client),
}

/// An entry SQS did not accept. `index` is its position in the batch that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    pub index: usize,
    pub sender_fault: bool,
    pub code: String,
    pub message: String,
}

impl Publisher {
    /// One `SendMessageBatch` attempt. Entry ids are the entries' positions in `entries`.
    async fn send_once(
        &self,
        queue_url: &str,
        entries: &[OutMessage],
    ) -> Result<Vec<EntryFailure>, CallError> {
        match self {
            Publisher::Direct(direct) => direct.send_batch(queue_url, entries).await,
            Publisher::Sdk(client) => {
                let sent = client
                    .send_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(
                        entries
                            .iter()
                            .enumerate()
                            .map(|(i, m)| m.to_sdk_entry(i))
                            .collect(),
                    ))
                    .send()
                    .await;
                match sent {
                    Ok(out) => account_for(
                        entries.len(),
                        out.successful().iter().map(|s| s.id()),
                        out.failed().iter().map(|f| {
                            let message = f.message().unwrap_or_default();
                            (f.id(), f.sender_fault(), f.code(), message)
                        }),
                    ),
                    Err(e) => Err(CallError {
                        class: retry::classify(&e),
                        message: crate::error_chain(&e),
                    }),
                }
            }
        }
    }
}

/// A `SendMessageBatch` answer checked against the batch it answers: every entry sent must be
/// named exactly once, in `Successful` or in `Failed`. An answer that leaves an entry out
/// (`{}`, `{"Successful":[]}`), names an id scanfleet did not send, or names one twice says
/// nothing reliable about the rows; reading it as "accepted" would lose them. It is a
/// transient error, so the whole batch is sent again (a possible duplicate, which
/// at-least-once delivery allows, never a loss). Returns the failed entries.
fn account_for<'a>(
    sent: usize,
    successful: impl IntoIterator<Item = &'a str>,
    failed: impl IntoIterator<Item = (&'a str, bool, &'a str, &'a str)>,
) -> Result<Vec<EntryFailure>, CallError> {
    let incomplete = |what: String| CallError {
        class: Class::Transient,
        message: format!("SendMessageBatch answer does not account for the batch sent: {what}"),
    };
    let mut named = vec![false; sent];
    let mut name = |id: &str| match id.parse::<usize>() {
        Ok(index) if index < sent && !named[index] => {
            named[index] = true;
            Ok(index)
        }
        Ok(index) if index < sent => Err(incomplete(format!("entry id {id:?} named twice"))),
        _ => Err(incomplete(format!(
            "entry id {id:?} was not sent ({sent} entries)"
        ))),
    };
    for id in successful {
        name(id)?;
    }
    let mut failures = Vec::new();
    for (id, sender_fault, code, message) in failed {
        failures.push(EntryFailure {
            index: name(id)?,
            sender_fault,
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }
    let missing = named.iter().filter(|&&n| !n).count();
    if missing > 0 {
        return Err(incomplete(format!(
            "{missing} of {sent} entries neither successful nor failed"
        )));
    }
    Ok(failures)
}

/// Why a batch of messages could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SendMessageBatch failed: {0}")]
    Call(CallError),
    #[error("SQS refused entry {id} ({code}): {message}")]
    Refused {
        id: String,
        code: String,
        message: String,
    },
    #[error("{count} entries still failing after retries; last error {code}: {message}")]
    Exhausted {
        count: usize,
        code: String,
        message: String,
    },
}

/// Sends one batch (≤ 10 entries), retrying failed entries and transient errors with backoff.
/// Returns when every entry was accepted; an entry SQS blames on the sender (`SenderFault`,
/// e.g. a message too large for the queue) fails at once, since resending cannot help.
pub async fn send_batch(
    publisher: &Publisher,
    queue_url: &str,
    mut entries: Vec<OutMessage>,
) -> Result<(), SendError> {
    let mut backoff = retry::task_backoff();
    loop {
        let (failed_count, code, message) = match publisher.send_once(queue_url, &entries).await {
            Ok(failed) if failed.is_empty() => return Ok(()),
            Ok(failed) => {
                if let Some(f) = failed.iter().find(|f| f.sender_fault) {
                    return Err(SendError::Refused {
                        id: f.index.to_string(),
                        code: f.code.clone(),
                        message: f.message.clone(),
                    });
                }
                let (code, message) = (failed[0].code.clone(), failed[0].message.clone());
                let mut index = 0;
                entries.retain(|_| {
                    index += 1;
                    failed.iter().any(|f| f.index == index - 1)
                });
                (entries.len(), code, message)
            }
            Err(e) if e.class == Class::Transient => {
                (entries.len(), "transient".to_owned(), e.message)
            }
            Err(e) => return Err(SendError::Call(e)),
        };
        match backoff.next() {
            Some(delay) => {
                telemetry::publish_retry(failed_count, &code);
                tokio::time::sleep(delay).await;
            }
            None => {
                return Err(SendError::Exhausted {
                    count: failed_count,
                    code,
                    message,
                });
            }
        }
    }
}

/// The control queue: receive, extend, delete and release task messages.
#[derive(Clone)]
pub struct ControlQueue {
    pub client: Client,
    pub url: String,
}

pub type ReceiveError = SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>;
pub type VisibilityError =
    SdkError<aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError>;
pub type DeleteError = SdkError<aws_sdk_sqs::operation::delete_message::DeleteMessageError>;
pub type SendMessageError = SdkError<aws_sdk_sqs::operation::send_message::SendMessageError>;

impl ControlQueue {
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, ReceiveError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Sets the message's visibility timeout to `timeout` from now: extends a running task
    /// (heartbeat) or, with a short timeout, releases it for another receive.
    pub async fn set_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), VisibilityError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs() as i32)
            .send()
            .await?;
        Ok(())
    }

    /// Puts a task on the control queue (a continuation), as JSON text SQS accepts (its start
    /// key may hold U+FFFE or U+FFFF, see [`crate::json::sqs_safe`]).
    pub async fn send(&self, task: &crate::task::TaskMessage) -> Result<(), SendMessageError> {
        self.send_body(crate::json::to_sqs_text(task).expect("task messages always serialize"))
            .await
    }

    /// Puts a message body on the control queue as it is (a task sent again).
    pub async fn send_body(&self, body: impl Into<String>) -> Result<(), SendMessageError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await?;
        Ok(())
    }

    pub async fn delete(&self, receipt: &str) -> Result<(), DeleteError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await?;
        Ok(())
    }

    /// Whether the queue has a redrive policy (a dead-letter queue). `None` if unknown.
    pub async fn has_redrive_policy(&self) -> Option<bool> {
        self.redrive_policy().await.map(|p| p.is_some())
    }

    /// The queue's `RedrivePolicy` attribute: `Some(None)` without one, `None` if unreadable.
    async fn redrive_policy(&self) -> Option<Option<String>> {
        queue_attribute(
            &self.client,
            &self.url,
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
        )
        .await
        .ok()
    }
}

impl ControlQueue {
    /// The `maxReceiveCount` of the queue's redrive policy, if it has one and it can be read.
    pub async fn max_receive_count(&self) -> Option<u32> {
        let policy = self.redrive_policy().await??;
        let v: serde_json::Value = serde_json::from_str(&policy).ok()?;
        match &v["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Sends task bodies (JSON text) to the control queue, 10 per `SendMessageBatch`, several
/// batches at once; each is made fit for SQS first ([`crate::json::sqs_safe`]: `enqueue`'s
/// expressions and `reconcile`'s start keys may hold U+FFFE or U+FFFF).
pub async fn send_tasks(
    client: &Client,
    queue_url: &str,
    bodies: &[String],
) -> Result<(), SendError> {
    use futures::{StreamExt, TryStreamExt};
    /// Batches in flight; enough to enqueue a million segments in reasonable time.
    const CONCURRENT_BATCHES: usize = 16;
    let publisher = Publisher::Sdk(client.clone());
    futures::stream::iter(bodies.chunks(crate::batch::MAX_BATCH_ENTRIES))
        .map(|chunk| {
            let entries = chunk
                .iter()
                .map(|body| OutMessage {
                    body: crate::json::sqs_safe(body.clone()),
                    ..OutMessage::default()
                })
                .collect();
            send_batch(&publisher, queue_url, entries)
        })
        .buffer_unordered(CONCURRENT_BATCHES)
        .try_collect::<()>()
        .await
}

/// How many times SQS has delivered this message (1 on first delivery).
pub fn receive_count(message: &Message) -> u32 {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The queue's `MaximumMessageSize`, or `None` if it cannot be read.
pub async fn max_message_size(client: &Client, url: &str) -> Option<usize> {
    queue_attribute(
        client,
        url,
        aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
    )
    .await
    .ok()??
    .parse()
    .ok()
}

pub type AttributesError =
    SdkError<aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError>;

/// One attribute of a queue; `Ok(None)` if the queue does not have it.
pub async fn queue_attribute(
    client: &Client,
    url: &str,
    name: aws_sdk_sqs::types::QueueAttributeName,
) -> Result<Option<String>, AttributesError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await?;
    Ok(out.attributes.and_then(|mut a| a.remove(&name)))
}

/// Visible plus in-flight messages (SQS's approximate counts): how much of a queue's work is
/// not finished yet.
pub async fn queue_depth(client: &Client, url: &str) -> Result<u64, AttributesError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: A| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible))
}
