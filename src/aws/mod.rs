//! The AWS side, below the domain: the SDK configuration and timeouts every call shares, the
//! HTTP connectors ([`transport`]), the one place that decides what is retryable ([`retry`]),
//! error answers read whatever their shape ([`error_answer`]),
//! scanfleet's own signed JSON client ([`direct`]) that the hot calls use, and the two services'
//! adapters ([`sqs`]: the control queue and the publisher; [`dynamodb`]: the scan). Nothing here
//! knows tasks, jobs or the ledger.

pub mod direct;
pub mod dynamodb;
pub mod error_answer;
pub mod retry;
pub mod sqs;
pub mod transport;

pub use transport::{ATTEMPT_TIMEOUT, CONNECT_TIMEOUT, timeouts};

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
