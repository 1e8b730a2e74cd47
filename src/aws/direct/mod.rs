//! AWS JSON-protocol calls made directly: requests signed with `aws-sigv4`, the SDK's own
//! credential chain and endpoint rules, sent through the HTTP connector the SDK clients use.
//!
//! Why not the SDK for these: the worker's two hot calls are `Scan` (one per page of hundreds of
//! rows) and `SendMessageBatch` (one per 10 rows). For them the SDK's generic machinery
//! (interceptors, layered config, endpoint rules evaluated per call, typed request and response
//! shapes built and copied field by field) cost more CPU than the rest of the worker together
//! (see docs/BENCHMARKS.md). This client only signs and sends a body its caller wrote and hands
//! back the answer; `sqs::direct` and `scan` write and read the two calls' JSON. Every other
//! call stays on the SDK, and `output.client` / `scan.client = "sdk"` put these back on it too.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::http::{HttpConnector, SharedHttpConnector};
use aws_smithy_runtime_api::http::Request as HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::endpoint::Endpoint;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http_body_util::BodyExt;
use tokio::sync::Mutex;

use crate::aws::retry::{CallError, Class, class_of};

use crate::telemetry::Service;

mod credentials;
mod endpoint;
mod fault;
mod sigv4;

use credentials::unusable_credentials;
pub use credentials::{CREDENTIAL_VARIABLES, check_credential_variables, credential_flaw};
pub use endpoint::EndpointInputs;
pub(crate) use endpoint::json_client_for;
use fault::clock_correction;
pub use fault::{Fault, fault};

const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.0";
/// Credentials are renewed this long before they expire, so no request is signed with
/// credentials that lapse in flight.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Signed JSON calls to one service endpoint.
pub struct JsonClient {
    /// The process's connector (`crate::aws::transport::Transport::calls`): its pool, TLS and proxy
    /// settings.
    http: SharedHttpConnector,
    endpoint: http::Uri,
    /// `endpoint` as text, as the signer takes it (formatted once, not per request).
    endpoint_text: String,
    host: HeaderValue,
    region: String,
    /// The service, whose label is its SigV4 signing name (`sqs`, `dynamodb`).
    service: Service,
    signing_name: &'static str,
    /// The endpoint's path when it can be signed as it stands (see [`Self::sign`]); otherwise
    /// requests go through `aws-sigv4`'s general signer.
    canonical_path: Option<String>,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    /// The day's signing key: (date, secret it was derived from, key).
    signing_keys: std::sync::Mutex<Option<(String, String, Vec<u8>)>>,
    attempt_timeout: Duration,
    user_agent: HeaderValue,
    /// Milliseconds added to the local clock when signing: non-zero once an answer showed the
    /// local clock off by minutes (see [`clock_correction`]). The SDK clients correct their
    /// own signing the same way.
    clock_correction_ms: AtomicI64,
}

impl fmt::Debug for JsonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("signing_name", &self.signing_name)
            .finish_non_exhaustive()
    }
}

/// Why a direct client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region is configured (AWS_REGION or the profile's region)")]
    NoRegion,
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("the {0} endpoint cannot be resolved: {1}")]
    Endpoint(&'static str, String),
}

impl JsonClient {
    /// A client for `endpoint` (resolved by the caller with its service's SDK resolver), with
    /// the credentials chain of the SDK configuration, sending through `http`.
    pub fn new(
        sdk: &aws_types::SdkConfig,
        http: SharedHttpConnector,
        service: Service,
        region: String,
        endpoint: Result<Endpoint, String>,
    ) -> Result<Self, SetupError> {
        let signing_name = service.label();
        let unresolvable = |e: String| SetupError::Endpoint(signing_name, e);
        let credentials = sdk
            .credentials_provider()
            .ok_or(SetupError::NoCredentials)?;
        let endpoint: http::Uri = endpoint
            .map_err(unresolvable)?
            .url()
            .parse()
            .map_err(|e: http::uri::InvalidUri| unresolvable(e.to_string()))?;
        let host = endpoint
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| unresolvable(format!("{endpoint} names no host")))?;

        // A path of unreserved characters, without empty or dot segments, is its own canonical
        // form; anything else is left to the general signer's encoding and normalization.
        let path = endpoint.path();
        let plain = endpoint.query().is_none()
            && path.starts_with('/')
            && (path == "/"
                || path[1..].split('/').all(|seg| {
                    !seg.is_empty()
                        && seg != "."
                        && seg != ".."
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                }));
        Ok(Self {
            http,
            canonical_path: plain.then(|| path.to_owned()),
            signing_keys: std::sync::Mutex::new(None),
            endpoint_text: endpoint.to_string(),
            endpoint,
            host,
            region,
            service,
            signing_name,
            credentials,
            cached: Mutex::new(None),
            attempt_timeout: crate::aws::transport::ATTEMPT_TIMEOUT,
            user_agent: HeaderValue::from_static(concat!("scanfleet/", env!("CARGO_PKG_VERSION"))),
            clock_correction_ms: AtomicI64::new(0),
        })
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &http::Uri {
        &self.endpoint
    }

    /// One attempt of the call `target` (`X-Amz-Target`, e.g. `DynamoDB_20120810.Scan`) with a
    /// JSON body. A 200 answer's body is returned; any other answer is an error classified by
    /// its status and `__type` code, and so is a call that got no answer.
    pub async fn call(&self, target: &'static str, body: Vec<u8>) -> Result<Bytes, CallError> {
        let credentials = self.credentials().await?;
        let signed_at = self.signing_time();
        let request = self.signed_request(target, body, &credentials, signed_at)?;
        let exchange = async {
            let response = self.http.call(HttpRequest::try_from(request)?).await?;
            let status = response.status().as_u16();
            // Only an error answer's clock is looked at (see `clock_correction`).
            let date = (status != 200)
                .then(|| response.headers().get("date").map(str::to_owned))
                .flatten();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, date, body))
        };
        match tokio::time::timeout(self.attempt_timeout, exchange).await {
            Err(_) => Err(CallError {
                class: class_of(None, None),
                message: format!("no answer within {:?}", self.attempt_timeout),
            }),
            Ok(Err(e)) => Err(CallError {
                class: class_of(None, None),
                message: crate::error_chain(&*e),
            }),
            Ok(Ok((200, _, body))) => Ok(body),
            Ok(Ok((status, date, body))) => {
                let Fault { code, mut error } = fault(status, &body);
                let now = SystemTime::now();
                if let Some(ms) = clock_correction(code.as_deref(), date.as_deref(), signed_at, now)
                {
                    // Refused for the clock alone: the next attempt signs with the server's time.
                    self.clock_correction_ms.store(ms, Ordering::Relaxed);
                    crate::telemetry::clock_corrected(self.service, ms);
                    error.class = Class::Transient;
                    let (by, way) = (
                        (ms.unsigned_abs() + 500) / 1000,
                        if ms > 0 { "behind" } else { "ahead of" },
                    );
                    error.message = format!(
                        "{} (the local clock is {by} s {way} the service's; signing corrected)",
                        error.message
                    );
                }
                Err(error)
            }
        }
    }

    /// The time to sign a request at: the local clock, corrected if the service found it off.
    fn signing_time(&self) -> SystemTime {
        let ms = self.clock_correction_ms.load(Ordering::Relaxed);
        let d = Duration::from_millis(ms.unsigned_abs());
        let now = SystemTime::now();
        // Checked: a correction taken from an answer's `Date` must not panic the addition.
        let corrected = if ms >= 0 {
            now.checked_add(d)
        } else {
            now.checked_sub(d)
        };
        corrected.unwrap_or(now)
    }

    fn signed_request(
        &self,
        target: &'static str,
        body: Vec<u8>,
        credentials: &Credentials,
        time: SystemTime,
    ) -> Result<http::Request<SdkBody>, CallError> {
        let sign = match self.canonical_path.as_deref() {
            Some(path) => self.sign(path, target, &body, credentials, time)?,
            None => self.sign_with_aws_sigv4(target, &body, credentials, time)?,
        };
        let mut request = http::Request::post(self.endpoint.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_JSON)
            .header("x-amz-target", target)
            .header(USER_AGENT, self.user_agent.clone())
            .body(SdkBody::from(body))
            .expect("method, URI and headers are valid");
        let headers = request.headers_mut();
        for (name, value) in sign {
            headers.insert(name, value);
        }
        Ok(request)
    }

    /// The current credentials, fetched from the provider only when missing or about to expire
    /// (the SDK's own identity cache does the same for its clients).
    async fn credentials(&self) -> Result<Credentials, CallError> {
        let mut cached = self.cached.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIALS_REFRESH_MARGIN)
        };
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| CallError {
                // A provider failing (IMDS or STS briefly unreachable) may well succeed later.
                class: Class::Transient,
                message: format!("no AWS credentials: {}", crate::error_chain(&e)),
            })?;
        // Not cached: the provider is asked again on the next call, and may have been fixed.
        if let Some(flaw) = unusable_credentials(&c) {
            return Err(CallError {
                class: Class::Permanent,
                message: format!("the AWS credentials provided cannot sign a request: {flaw}"),
            });
        }
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// The requests as sent, checked against `aws-sigv4`'s general signer.
#[cfg(test)]
mod sigv4_reference;
#[cfg(test)]
pub(crate) mod tests;
