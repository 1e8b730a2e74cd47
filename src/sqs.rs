//! Thin adapter over the SQS calls scanfleet makes; the worker loop is written against it.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, SendMessageBatchRequestEntry};

use crate::retry::{self, Class};
use crate::telemetry;

/// Why a batch of messages could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SendMessageBatch failed: {0}")]
    Call(Box<SdkError<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError>>),
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

impl From<SdkError<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError>>
    for SendError
{
    fn from(
        e: SdkError<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError>,
    ) -> Self {
        SendError::Call(Box::new(e))
    }
}

/// Sends one batch (≤ 10 entries), retrying failed entries and transient errors with backoff.
/// Returns when every entry was accepted; an entry SQS blames on the sender (`SenderFault`,
/// e.g. a message too large for the queue) fails at once, since resending cannot help.
pub async fn send_batch(
    client: &Client,
    queue_url: &str,
    mut entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<(), SendError> {
    let mut backoff = retry::task_backoff();
    loop {
        let sent = client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries.clone()))
            .send()
            .await;
        let (failed_count, code, message) = match sent {
            Ok(out) => {
                let failed = out.failed();
                if failed.is_empty() {
                    return Ok(());
                }
                if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                    return Err(SendError::Refused {
                        id: f.id().to_owned(),
                        code: f.code().to_owned(),
                        message: f.message().unwrap_or_default().to_owned(),
                    });
                }
                let first = &failed[0];
                let (code, message) = (
                    first.code().to_owned(),
                    first.message().unwrap_or_default().to_owned(),
                );
                let retry_ids: Vec<&str> = failed.iter().map(|f| f.id()).collect();
                entries.retain(|e| retry_ids.contains(&e.id()));
                (entries.len(), code, message)
            }
            Err(e) if retry::classify(&e) == Class::Transient => (
                entries.len(),
                "transient".to_owned(),
                crate::error_chain(&e),
            ),
            Err(e) => return Err(e.into()),
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

    /// Puts a task on the control queue (a continuation).
    pub async fn send(&self, task: &crate::task::TaskMessage) -> Result<(), SendMessageError> {
        let body = serde_json::to_string(task).expect("task messages always serialize");
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

/// Sends task bodies to the control queue, 10 per `SendMessageBatch`, several batches at once.
pub async fn send_tasks(
    client: &Client,
    queue_url: &str,
    bodies: &[String],
) -> Result<(), SendError> {
    use futures::{StreamExt, TryStreamExt};
    /// Batches in flight; enough to enqueue a million segments in reasonable time.
    const CONCURRENT_BATCHES: usize = 16;
    futures::stream::iter(bodies.chunks(crate::batch::MAX_BATCH_ENTRIES))
        .map(|chunk| {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            send_batch(client, queue_url, entries)
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
