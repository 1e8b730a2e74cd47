//! Fixtures for the demo, the integration tests and the benchmark: demo-shaped tables,
//! queues with a dead-letter queue, worker processes, and draining the output queue.
//!
//! Everything here talks to whatever `AWS_ENDPOINT_URL` points at (the local emulators in
//! practice); it is not used by the worker itself.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use futures::StreamExt;

pub use crate::BoxError;

mod proxy;
pub use proxy::{Proxy, SqsCounts};

/// AWS clients for the configured endpoint.
pub struct Aws {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Aws {
    pub async fn from_env() -> Self {
        let cfg = crate::aws::config().await;
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&cfg),
            sqs: aws_sdk_sqs::Client::new(&cfg),
        }
    }
}

/// A unique, valid resource name (`prefix-<8 hex>`).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Creates a table keyed like the original design's data: `PK` (S, hash) and `SK` (S, range).
pub async fn create_table(aws: &Aws, name: &str) -> Result<(), BoxError> {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
    };
    aws.dynamodb
        .create_table()
        .table_name(name)
        .attribute_definitions(attr("PK")?)
        .attribute_definitions(attr("SK")?)
        .key_schema(key("PK", KeyType::Hash)?)
        .key_schema(key("SK", KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    Ok(())
}

/// One demo row: `PK` uuid, `SK` `PREFIX-<n>`, `name`, `description` (padded to about
/// `row_bytes`), `createdAt`.
pub fn demo_row(n: u64, row_bytes: usize) -> HashMap<String, AttributeValue> {
    let s = |v: String| AttributeValue::S(v);
    let description = format!("Demo row {n}: ");
    let pad = row_bytes.saturating_sub(description.len() + 120);
    HashMap::from([
        ("PK".to_owned(), s(uuid::Uuid::new_v4().to_string())),
        ("SK".to_owned(), s(format!("PREFIX-{n}"))),
        ("name".to_owned(), s(format!("item {n}"))),
        ("description".to_owned(), s(description + &"x".repeat(pad))),
        (
            "createdAt".to_owned(),
            s(format!("2026-01-01T00:00:{:02}Z", n % 60)),
        ),
    ])
}

/// Writes `rows` demo rows (BatchWriteItem, 25 a call, several calls at once, unprocessed
/// items resent) and returns the set of `(PK, SK)` keys written.
pub async fn seed(
    aws: &Aws,
    table: &str,
    rows: u64,
    row_bytes: usize,
) -> Result<Vec<(String, String)>, BoxError> {
    let items: Vec<_> = (0..rows).map(|n| demo_row(n, row_bytes)).collect();
    let keys = items
        .iter()
        .map(row_key)
        .collect::<Option<Vec<_>>>()
        .expect("demo rows have keys");
    let calls = items.chunks(25).map(|chunk| {
        let requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .expect("item set");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        write_all(aws, table, requests)
    });
    let results: Vec<Result<(), BoxError>> = futures::stream::iter(calls)
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(keys)
}

async fn write_all(
    aws: &Aws,
    table: &str,
    mut requests: Vec<WriteRequest>,
) -> Result<(), BoxError> {
    for _ in 0..20 {
        let out = aws
            .dynamodb
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await?;
        match out.unprocessed_items.and_then(|mut m| m.remove(table)) {
            Some(rest) if !rest.is_empty() => requests = rest,
            _ => return Ok(()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("BatchWriteItem kept leaving items unprocessed".into())
}

/// `(PK, SK)` of a demo item.
pub fn row_key(item: &HashMap<String, AttributeValue>) -> Option<(String, String)> {
    let pk = item.get("PK")?.as_s().ok()?.clone();
    let sk = item.get("SK")?.as_s().ok()?.clone();
    Some((pk, sk))
}

/// A control queue with its dead-letter queue, and an output queue.
#[derive(Debug, Clone)]
pub struct Queues {
    pub control: String,
    pub dlq: String,
    pub output: String,
}

/// Creates the three queues; the control queue redrives to the DLQ after `max_receive_count`.
pub async fn create_queues(
    aws: &Aws,
    prefix: &str,
    max_receive_count: u32,
) -> Result<Queues, BoxError> {
    let dlq = create_queue(aws, &format!("{prefix}-dlq"), HashMap::new()).await?;
    let dlq_arn = crate::aws::sqs::queue_attribute(&aws.sqs, &dlq, QueueAttributeName::QueueArn)
        .await?
        .ok_or("DLQ has no QueueArn")?;
    let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()});
    let control = create_queue(
        aws,
        &format!("{prefix}-control"),
        HashMap::from([(QueueAttributeName::RedrivePolicy, redrive.to_string())]),
    )
    .await?;
    let output = create_queue(aws, &format!("{prefix}-output"), HashMap::new()).await?;
    Ok(Queues {
        control,
        dlq,
        output,
    })
}

pub async fn create_queue(
    aws: &Aws,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<String, BoxError> {
    let out = aws
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await?;
    Ok(out.queue_url.ok_or("CreateQueue returned no URL")?)
}

/// A received output message.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub body: String,
    pub attributes: HashMap<String, String>,
}

impl Received {
    /// The row bodies the message carries: its body's lines when it is packed (it has a `rows`
    /// attribute, see README *Packed output*), else its body.
    pub fn rows(&self) -> Vec<&str> {
        if self.attributes.contains_key("rows") {
            self.body.split('\n').collect()
        } else {
            vec![self.body.as_str()]
        }
    }
}

/// Receives and deletes up to 10 messages with a short long poll; empty when none arrived.
pub async fn receive_some(
    aws: &Aws,
    url: &str,
    wait_seconds: i32,
) -> Result<Vec<Received>, BoxError> {
    let out = aws
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_seconds)
        .message_attribute_names("All")
        .send()
        .await?;
    let messages = out.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    aws.sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await?;
    Ok(messages
        .into_iter()
        .map(|m| Received {
            message_id: m.message_id.unwrap_or_default(),
            attributes: m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.string_value?)))
                .collect(),
            body: m.body.unwrap_or_default(),
        })
        .collect())
}

/// Drains `url` until `done(&collected)` holds and then `quiet` passes with nothing new, or
/// until `deadline` passes. Several receivers run at once to keep up with the workers.
///
/// A message SQS delivers twice (same MessageId) is kept once: that is the emulator's
/// at-least-once receive, not a row the workers published twice.
pub async fn drain_until(
    aws: &Aws,
    url: &str,
    deadline: Duration,
    quiet: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Result<Vec<Received>, BoxError> {
    let start = Instant::now();
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut last_new = Instant::now();
    while start.elapsed() < deadline {
        let batches: Vec<Result<Vec<Received>, BoxError>> =
            futures::future::join_all((0..4).map(|_| receive_some(aws, url, 1))).await;
        let mut got = 0;
        for b in batches {
            for m in b? {
                if seen.insert(m.message_id.clone()) {
                    got += 1;
                    all.push(m);
                }
            }
        }
        if got > 0 {
            last_new = Instant::now();
        } else if done(&all) && last_new.elapsed() >= quiet {
            return Ok(all);
        }
    }
    Ok(all)
}

/// Removes a table and queues; errors are ignored (best-effort cleanup).
pub async fn cleanup(aws: &Aws, table: &str, queues: &Queues) {
    let _ = aws.dynamodb.delete_table().table_name(table).send().await;
    delete_queues(aws, queues).await;
}

/// Removes a set of queues; errors are ignored (best-effort cleanup).
pub async fn delete_queues(aws: &Aws, queues: &Queues) {
    for url in [&queues.control, &queues.dlq, &queues.output] {
        let _ = aws.sqs.delete_queue().queue_url(url).send().await;
    }
}

/// A `scanfleet worker` child process, killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub metrics_port: u16,
    pub log: std::path::PathBuf,
}

/// A free loopback port (bound, then released for the worker to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl WorkerProcess {
    /// Starts `binary worker` with the queues and table set through `SCANFLEET__*` variables,
    /// plus `extra` variables; its log (stderr) goes to `log_dir`.
    pub fn start(
        binary: &Path,
        queues: &Queues,
        table: &str,
        extra: &[(&str, String)],
        log_dir: &Path,
    ) -> std::io::Result<Self> {
        let metrics_port = free_port();
        let log = log_dir.join(format!("worker-{metrics_port}.log"));
        let mut cmd = Command::new(binary);
        cmd.arg("worker")
            .env("SCANFLEET__CONTROL__QUEUE_URL", &queues.control)
            .env("SCANFLEET__OUTPUT__QUEUE_URL", &queues.output)
            .env("SCANFLEET__SCAN__DEFAULT_TABLE", table)
            .env(
                "SCANFLEET__METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Ok(Self {
            child: cmd.spawn()?,
            metrics_port,
            log,
        })
    }

    /// The worker's `/metrics` text, or `None` while it does not answer.
    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics")
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
    }

    /// Sum of a metric's samples whose label set contains `labels` (e.g. `reason="malformed"`).
    pub fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        self.metrics().map(|text| metric_sum(&text, name, labels))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of the samples of `name` whose labels contain `labels` (empty: all samples).
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let matches_name = series == name || series.starts_with(&format!("{name}{{"));
            (matches_name && series.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A minimal HTTP/1.0 GET against a loopback port: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
