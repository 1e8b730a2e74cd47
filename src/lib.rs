//! scanfleet: DynamoDB parallel scans as a horizontally scaled, observable SQS job.
//!
//! Pure logic (task validation, item encoding, batch packing, retry classification) lives in
//! modules of its own; `sqs`, `pipeline` and `worker` own the I/O.

pub mod batch;
pub mod budget;
pub mod devkit;
pub mod direct;
#[cfg(test)]
mod docs_check;
pub mod enqueue;
pub mod expression;
pub mod http;
pub mod item;
pub mod jobs;
pub mod json;
pub mod ledger;
pub mod pipeline;
pub mod plan;
pub mod retry;
pub mod scan;
pub mod settings;
pub mod sqs;
pub mod task;
pub mod telemetry;
pub mod transport;
pub mod worker;

/// Any error, boxed: what crosses a boundary that has no error type of its own (the ledger,
/// the worker's task handling, the commands in `main`). Declared once.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and its sources on one line, as `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// How long a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long one attempt of an AWS call may take. It must outlive a 20 s long poll; beyond
/// that a hung connection is a failure the caller retries, not a reason to wait forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Loads the AWS configuration the standard way: credential chain, region, and
/// `AWS_ENDPOINT_URL` for a local endpoint. Nothing is hard-coded. Calls go through connectors
/// of their own (see [`transport`]).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config_on(&transport::Transport::new()).await
}

/// [`aws_config`] with its calls on `transport`, whose connector the caller also uses for
/// direct calls.
pub async fn aws_config_on(transport: &transport::Transport) -> aws_config::SdkConfig {
    // Stalled-stream protection watches request bodies as they are written; ours are at most
    // 1 MiB and already in memory, so the attempt timeout covers a stall, and the watcher cost
    // about 3% of the worker's CPU (one poll per body chunk of every SendMessageBatch).
    // Downloads (1 MB scan pages) keep it.
    let stalled = aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
        .upload_enabled(false)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .stalled_stream_protection(stalled)
        .http_client(transport.http_client())
        .load()
        .await
}

/// The timeouts of every AWS call.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}
