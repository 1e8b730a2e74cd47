//! scanfleet: DynamoDB parallel scans as a horizontally scaled, observable SQS job.
//!
//! Pure logic (task validation, item encoding, batch packing, retry classification) lives in
//! modules of its own; `sqs`, `pipeline` and `worker` own the I/O.

pub mod batch;
pub mod budget;
pub mod devkit;
pub mod direct;
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
pub mod worker;

use aws_smithy_runtime_api::client::http::{
    HttpConnectorSettings, SharedHttpConnector, http_client_fn,
};

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

/// The HTTP connector of a process's AWS calls: the SDK's own hyper and rustls connector
/// (the system's root certificates), plus what the SDK's default leaves out: the proxy
/// settings `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lower-case
/// forms), which the AWS CLI and boto3 honour and users of them expect. A worker builds one and
/// hands it to its SDK clients and its direct clients alike, so every call shares one
/// connection pool and one proxy decision.
pub fn http_connector() -> SharedHttpConnector {
    use aws_smithy_http_client::{Connector, proxy::ProxyConfig, tls};
    let settings = HttpConnectorSettings::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build();
    let connector = Connector::builder()
        .connector_settings(settings)
        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
        .proxy_config(ProxyConfig::from_env())
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build();
    SharedHttpConnector::new(connector)
}

/// Loads the AWS configuration the standard way: credential chain, region, and
/// `AWS_ENDPOINT_URL` for a local endpoint. Nothing is hard-coded. Calls go through a
/// connector of their own (see [`http_connector`]).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config_on(http_connector()).await
}

/// [`aws_config`] with its calls on `http`, a connector the caller also uses for direct calls.
pub async fn aws_config_on(http: SharedHttpConnector) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    // Stalled-stream protection watches request bodies as they are written; ours are at most
    // 1 MiB and already in memory, so the attempt timeout covers a stall, and the watcher cost
    // about 3% of the worker's CPU (one poll per body chunk of every SendMessageBatch).
    // Downloads (1 MB scan pages) keep it.
    let stalled = aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
        .upload_enabled(false)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .stalled_stream_protection(stalled)
        // The SDK asks for a connector per call attempt, with that call's timeout settings;
        // the one connector already has the connect timeout, the only one set here (the attempt
        // timeout is the SDK's own), and is returned every time so its pool is reused.
        .http_client(http_client_fn(move |_settings, _components| http.clone()))
        .load()
        .await
}
