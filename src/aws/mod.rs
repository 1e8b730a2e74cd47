//! The AWS side, below the domain: the SDK configuration and timeouts every call shares, the
//! HTTP connectors ([`transport`]), and scanfleet's own signed JSON client ([`direct`]) that the
//! hot calls use. Nothing here knows tasks, rows or the ledger.

pub mod direct;
pub mod error_answer;
pub mod transport;

/// How long a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long one attempt of an AWS call may take. It must outlive a 20 s long poll; beyond
/// that a hung connection is a failure the caller retries, not a reason to wait forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Loads the AWS configuration the standard way: credential chain, region, and
/// `AWS_ENDPOINT_URL` for a local endpoint. Nothing is hard-coded. Calls go through connectors
/// of their own (see [`transport`]).
pub async fn config() -> aws_config::SdkConfig {
    config_on(&transport::Transport::new()).await
}

/// [`config`] with its calls on `transport`, whose connector the caller also uses for
/// direct calls.
pub async fn config_on(transport: &transport::Transport) -> aws_config::SdkConfig {
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
