//! Thin adapter over the SQS calls scanfleet makes: the control queue (receive, visibility,
//! delete, send a body), the row publisher (either client, with the one resend loop), queue
//! attributes. The worker loop is written against it; it knows no task or row type beyond the
//! message it is given.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use crate::aws::retry::{self, CallError, Class};
use crate::telemetry;

pub mod direct;

/// A message attribute (`String` or `Number`), as SQS carries it next to the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub data_type: &'static str,
    pub value: String,
}

/// What SQS counts of one message attribute toward the message's size (and its batch's): the
/// attribute's name, data type and value.
pub fn attribute_size(name: &str, data_type: &str, value_len: usize) -> usize {
    name.len() + data_type.len() + value_len
}

/// The attributes of a packed message (see [`crate::pipeline::pack`]): how many rows its body's
/// lines hold, and their `row_id`s in line order, separated by single spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRows {
    pub count: usize,
    /// `count` as the `rows` attribute's text.
    pub count_text: String,
    pub row_ids: String,
}

/// Names of a packed message's own attributes.
pub const ROWS_ATTRIBUTE: &str = "rows";
pub const ROW_IDS_ATTRIBUTE: &str = "row_ids";

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
    /// A packed message's `rows` and `row_ids` attributes (`output.rows_per_message` > 1).
    pub packed: Option<PackedRows>,
    /// FIFO queues: the message group (the row's partition key).
    pub group_id: Option<String>,
    /// FIFO queues: the deduplication id (the `row_id` within its job, see
    /// [`crate::codec::fifo_dedup_id`]).
    pub dedup_id: Option<String>,
}

/// Name of the per-row attribute carrying the row's stable id.
pub const ROW_ID_ATTRIBUTE: &str = "row_id";

impl OutMessage {
    /// The message's attributes: the task's shared ones, then `row_id`, or a packed message's
    /// `rows` and `row_ids`.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        let shared = self.shared_attributes.iter().flat_map(|a| a.iter());
        let packed = self.packed.iter().flat_map(|p| {
            [
                (ROWS_ATTRIBUTE, "Number", p.count_text.as_str()),
                (ROW_IDS_ATTRIBUTE, "String", p.row_ids.as_str()),
            ]
        });
        shared
            .map(|a| (a.name.as_str(), a.data_type, a.value.as_str()))
            .chain(
                self.row_id
                    .as_deref()
                    .map(|id| (ROW_ID_ATTRIBUTE, "String", id)),
            )
            .chain(packed)
    }

    /// The message's size as SQS counts it: its body and every attribute's name, data type
    /// and value.
    pub fn sqs_size(&self) -> usize {
        self.body.len()
            + self
                .attributes()
                .map(|(name, data_type, value)| attribute_size(name, data_type, value.len()))
                .sum::<usize>()
    }

    /// The rows the message carries: a packed message's count, otherwise one.
    pub fn rows(&self) -> usize {
        self.packed.as_ref().map_or(1, |p| p.count)
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
                        message: crate::aws::error_answer::describe(&e),
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
    client: Client,
    url: String,
}

pub type ReceiveError = SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>;
pub type VisibilityError =
    SdkError<aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityError>;
pub type DeleteError = SdkError<aws_sdk_sqs::operation::delete_message::DeleteMessageError>;
pub type SendMessageError = SdkError<aws_sdk_sqs::operation::send_message::SendMessageError>;

impl ControlQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The control queue's message count, visible plus in flight (SQS's approximate counts).
    pub async fn depth(&self) -> Result<u64, AttributesError> {
        queue_depth(&self.client, &self.url).await
    }

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
            .wait_time_seconds(secs_i32(wait))
            .visibility_timeout(secs_i32(visibility))
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
            .visibility_timeout(secs_i32(timeout))
            .send()
            .await?;
        Ok(())
    }

    /// Puts a message body on the control queue as it is: a continuation (its text made by
    /// `task::body_of`, which checks it) or a task sent again.
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
        max_receive_count_of(&self.redrive_policy().await??)
    }
}

/// Task bodies that could not all be sent: how many were accepted before the failure.
#[derive(Debug, thiserror::Error)]
#[error("{accepted} of {total} tasks were accepted, then: {source}")]
pub struct SendTasksError {
    /// Tasks of the batches that were accepted in full; some of the failed batch's entries
    /// may be on the queue too.
    pub accepted: usize,
    pub total: usize,
    #[source]
    pub source: SendError,
}

/// SQS's range for a redrive policy's `maxReceiveCount`.
const MAX_RECEIVE_COUNTS: std::ops::RangeInclusive<u32> = 1..=1000;

/// The `maxReceiveCount` of a `RedrivePolicy` (a number or a numeric string), if it is one SQS
/// allows; anything else is unknown rather than wrapped (4294967297 read `as u32` was 1, and
/// every first failure would have counted as the last).
fn max_receive_count_of(policy: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let n = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    MAX_RECEIVE_COUNTS.contains(&n).then_some(n)
}

/// SQS's range for a queue's `MaximumMessageSize` (1 KiB to 1 MiB).
const MESSAGE_SIZES: std::ops::RangeInclusive<usize> = 1024..=1_048_576;

/// A queue's `MaximumMessageSize` attribute, if it is one SQS allows: a 0 would have sent
/// every row to the oversize path.
fn max_message_size_of(attribute: &str) -> Option<usize> {
    attribute.parse().ok().filter(|n| MESSAGE_SIZES.contains(n))
}

/// A duration as the whole seconds an SQS parameter takes (`i32`), saturating rather than
/// wrapping.
fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Sends task bodies (JSON text) to the control queue, 10 per `SendMessageBatch`, several
/// batches at once; each is made fit for SQS first ([`crate::json::sqs_safe`]: `enqueue`'s
/// expressions and `reconcile`'s start keys may hold U+FFFE or U+FFFF). After a batch fails no
/// new batch is started, and those already under way are let finish, so the error's
/// `accepted` is exact for whole batches.
pub async fn send_tasks(
    client: &Client,
    queue_url: &str,
    bodies: &[String],
) -> Result<(), SendTasksError> {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    /// Batches in flight; enough to enqueue a million segments in reasonable time.
    const CONCURRENT_BATCHES: usize = 16;
    let publisher = &Publisher::Sdk(client.clone());
    let mut batches = bodies.chunks(crate::batch::MAX_BATCH_ENTRIES);
    let mut in_flight = FuturesUnordered::new();
    let mut accepted = 0;
    let mut failure = None;
    loop {
        while failure.is_none() && in_flight.len() < CONCURRENT_BATCHES {
            let Some(chunk) = batches.next() else { break };
            let entries = chunk
                .iter()
                .map(|body| OutMessage {
                    body: crate::json::sqs_safe(body.clone()),
                    ..OutMessage::default()
                })
                .collect();
            in_flight.push(async move {
                send_batch(publisher, queue_url, entries)
                    .await
                    .map(|()| chunk.len())
            });
        }
        match in_flight.next().await {
            None => break,
            Some(Ok(n)) => accepted += n,
            Some(Err(e)) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(source) => Err(SendTasksError {
            accepted,
            total: bodies.len(),
            source,
        }),
    }
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
    .ok()?
    .as_deref()
    .and_then(max_message_size_of)
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
    count_sum(
        client,
        url,
        &[
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
        ],
    )
    .await
}

/// Visible, in-flight and delayed messages (SQS's approximate counts): whether any task may
/// still wait in the queue or be held by a worker. `reconcile` reads it before it trusts the
/// ledger's "never started".
pub async fn unfinished_messages(client: &Client, url: &str) -> Result<u64, AttributesError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    count_sum(
        client,
        url,
        &[
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
            A::ApproximateNumberOfMessagesDelayed,
        ],
    )
    .await
}

/// The sum of some of a queue's count attributes (a count it does not return is 0).
async fn count_sum(
    client: &Client,
    url: &str,
    names: &[aws_sdk_sqs::types::QueueAttributeName],
) -> Result<u64, AttributesError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await?;
    let attrs = out.attributes.unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|k| attrs.get(k).and_then(|v| v.parse::<u64>().ok()))
        .fold(0, u64::saturating_add))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_attributes_outside_sqs_ranges_are_unknown_not_wrapped() {
        let policy =
            |count: &str| format!(r#"{{"deadLetterTargetArn":"arn","maxReceiveCount":{count}}}"#);
        assert_eq!(max_receive_count_of(&policy("5")), Some(5));
        assert_eq!(max_receive_count_of(&policy(r#""7""#)), Some(7));
        for bad in ["4294967297", "0", "1001", "-1", "2.5", r#""x""#, "null"] {
            assert_eq!(max_receive_count_of(&policy(bad)), None, "{bad}");
        }
        assert_eq!(max_receive_count_of("not json"), None);
        assert_eq!(max_receive_count_of("[]"), None);
        assert_eq!(max_message_size_of("262144"), Some(262_144));
        assert_eq!(max_message_size_of("1048576"), Some(1_048_576));
        for bad in ["0", "1023", "1048577", "99999999999999999999", "-1", ""] {
            assert_eq!(max_message_size_of(bad), None, "{bad}");
        }
        assert_eq!(secs_i32(Duration::from_secs(20)), 20);
        assert_eq!(secs_i32(Duration::MAX), i32::MAX);
    }
}
