//! The HTTP connectors of a process's AWS calls: the SDK's own hyper and rustls connector (the
//! system's root certificates), plus what the SDK's default leaves out, the proxy settings
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or their lower-case forms), which
//! the AWS CLI and boto3 honour and their users expect.
//!
//! Like the SDK's default client, one connector is built per distinct set of connector
//! timeouts and then reused: the service calls share one (and its connection pool), the
//! instance-metadata credential client gets its own with its 1 s timeouts. The direct clients
//! take the service calls' connector, so they share its pool and its proxy decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpConnectorSettings, SharedHttpClient, SharedHttpConnector, http_client_fn,
};

type Timeouts = (Option<Duration>, Option<Duration>);

/// The connectors of one process (cloning shares them).
#[derive(Clone, Default)]
pub struct Transport {
    connectors: Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connector for `settings`, built on first use.
    pub fn connector(&self, settings: &HttpConnectorSettings) -> SharedHttpConnector {
        use aws_smithy_http_client::{Connector, proxy::ProxyConfig, tls};
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().expect("not poisoned");
        connectors
            .entry(key)
            .or_insert_with(|| {
                SharedHttpConnector::new(
                    Connector::builder()
                        .connector_settings(settings.clone())
                        .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
                        .proxy_config(ProxyConfig::from_env())
                        .tls_provider(tls::Provider::Rustls(
                            tls::rustls_provider::CryptoMode::AwsLc,
                        ))
                        .build(),
                )
            })
            .clone()
    }

    /// The connector of the service calls ([`crate::aws::config_on`]'s timeouts), which the
    /// direct clients use too.
    pub fn calls(&self) -> SharedHttpConnector {
        self.connector(&call_settings())
    }

    /// This transport as the SDK's HTTP client: the SDK asks for a connector per call attempt,
    /// with that call's timeouts.
    pub fn http_client(&self) -> SharedHttpClient {
        let transport = self.clone();
        http_client_fn(move |settings, _components| transport.connector(settings))
    }

    /// How many connectors have been built (the tests' view of the cache).
    #[cfg(test)]
    fn connectors(&self) -> usize {
        self.connectors.lock().expect("not poisoned").len()
    }
}

/// The connector settings the SDK derives from [`crate::aws::timeouts`] for a service call.
fn call_settings() -> HttpConnectorSettings {
    let timeouts = timeouts();
    let mut settings = HttpConnectorSettings::builder();
    if let Some(t) = timeouts.connect_timeout() {
        settings = settings.connect_timeout(t);
    }
    if let Some(t) = timeouts.read_timeout() {
        settings = settings.read_timeout(t);
    }
    settings.build()
}

/// How long a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long one attempt of an AWS call may take. It must outlive a 20 s long poll; beyond
/// that a hung connection is a failure the caller retries, not a reason to wait forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The timeouts of every AWS call.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[tokio::test]
    async fn service_calls_and_direct_clients_share_one_connector() {
        let transport = Transport::new();
        let direct = transport.calls();
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "secret", None, None, "t"))
            // Nothing listens on port 1: the call fails, after asking for its connector.
            .endpoint_url("http://127.0.0.1:1")
            .timeout_config(timeouts())
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .http_client(transport.http_client())
            .build();
        let sqs = aws_sdk_sqs::Client::from_conf(config);
        sqs.list_queues().send().await.expect_err("nothing listens");
        assert_eq!(
            transport.connectors(),
            1,
            "the call built a connector of its own"
        );
        drop(direct);

        // Other timeouts (the instance-metadata client's) get a connector of their own.
        let imds = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(1))
            .build();
        transport.connector(&imds);
        assert_eq!(transport.connectors(), 2);
    }
}
