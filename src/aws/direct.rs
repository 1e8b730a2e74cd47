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
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::http::{HttpConnector, SharedHttpConnector};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::http::Request as HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::endpoint::Endpoint;
use aws_types::service_config::ServiceConfigKey;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::retry::{CallError, Class, class_of};

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
    /// The service's SigV4 signing name (`sqs`, `dynamodb`).
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

/// The environment variables the SDK's credentials chain reads static credentials from.
pub const CREDENTIAL_VARIABLES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// What makes `value` unusable as an AWS credential, if anything, without quoting it (it may
/// be a secret). Access keys, secrets and session tokens are printable ASCII without spaces
/// (letters, digits, base64): anything else is a mistake (a mounted secret's trailing newline)
/// that would fail every request, as a header that cannot be sent or a signature that never
/// matches.
pub fn credential_flaw(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("nothing (it is empty)".into());
    }
    let (i, c) = value.char_indices().find(|(_, c)| !c.is_ascii_graphic())?;
    let what = match c {
        '\n' | '\r' => "a line break",
        ' ' => "a space",
        '\t' => "a tab",
        c if c.is_control() => "a control character",
        _ => "a non-ASCII character",
    };
    let at = if i + c.len_utf8() == value.len() {
        "at the end".to_owned()
    } else if i == 0 {
        "at the start".to_owned()
    } else {
        format!("at byte {i}")
    };
    Some(format!("{what} {at}"))
}

/// Checks the credential variables that are set, as `get` reads them (`std::env::var_os`),
/// so that a bad one stops start-up with a line naming it instead of failing every call.
/// Values are not trimmed: a secret is used as given or not at all. An empty variable is what
/// the SDK treats as unset; `AWS_SESSION_TOKEN` is trimmed by the SDK itself, so only what is
/// inside it counts.
pub fn check_credential_variables(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(), String> {
    for name in CREDENTIAL_VARIABLES {
        let Some(raw) = get(name) else { continue };
        let Some(value) = raw.to_str() else {
            return Err(format!(
                "{name} is not valid UTF-8; an AWS credential is printable ASCII without spaces"
            ));
        };
        let value = if name == "AWS_SESSION_TOKEN" {
            value.trim()
        } else {
            value
        };
        if value.is_empty() {
            continue;
        }
        if let Some(flaw) = credential_flaw(value) {
            return Err(format!(
                "{name} holds {flaw}; an AWS credential is printable ASCII without spaces (a secret file's trailing newline?). Fix the value: it is not trimmed"
            ));
        }
    }
    Ok(())
}

/// Which part of `credentials` cannot sign a request, and why.
fn unusable_credentials(credentials: &Credentials) -> Option<String> {
    let token = credentials.session_token().map(str::trim);
    [
        ("access key id", Some(credentials.access_key_id())),
        ("secret access key", Some(credentials.secret_access_key())),
        ("session token", token),
    ]
    .into_iter()
    .find_map(|(part, value)| Some(format!("its {part} holds {}", credential_flaw(value?)?)))
}

/// What the endpoint resolver of a service needs from the shared configuration.
pub struct EndpointInputs {
    pub region: String,
    /// `AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL` or the profile's `endpoint_url`.
    pub configured: Option<String>,
    pub use_fips: Option<bool>,
    pub use_dual_stack: Option<bool>,
}

impl EndpointInputs {
    /// Reads them with the precedence the SDK's service configs apply: the service-specific
    /// setting, then the general one. `service_id` is the SDK's (`SQS`, `DynamoDB`).
    pub fn from_sdk(sdk: &aws_types::SdkConfig, service_id: &str) -> Result<Self, SetupError> {
        let region = sdk.region().ok_or(SetupError::NoRegion)?.to_string();
        let configured = sdk
            .service_config()
            .and_then(|c| {
                c.load_config(
                    ServiceConfigKey::builder()
                        .service_id(service_id)
                        .env("AWS_ENDPOINT_URL")
                        .profile("endpoint_url")
                        .build()
                        .expect("every field is set"),
                )
            })
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        Ok(Self {
            region,
            configured,
            use_fips: sdk.use_fips(),
            use_dual_stack: sdk.use_dual_stack(),
        })
    }
}

impl JsonClient {
    /// A client for `endpoint` (resolved by the caller with its service's SDK resolver), with
    /// the credentials chain of the SDK configuration, sending through `http`.
    pub fn new(
        sdk: &aws_types::SdkConfig,
        http: SharedHttpConnector,
        signing_name: &'static str,
        region: String,
        endpoint: Result<Endpoint, String>,
    ) -> Result<Self, SetupError> {
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
            signing_name,
            credentials,
            cached: Mutex::new(None),
            attempt_timeout: crate::aws::ATTEMPT_TIMEOUT,
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
                    crate::telemetry::clock_corrected(self.signing_name, ms);
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

    /// SigV4 for the one request shape these calls send (`POST`, no query, four headers), with
    /// the signing key kept for the day. `aws-sigv4`'s general signer built the same
    /// canonical request through allocations and formatting that were 9% of the worker's CPU;
    /// here it is written directly, and `aws-sigv4`'s own functions derive the key and
    /// compute the signature. The tests check the result against `aws-sigv4`'s signer.
    fn sign(
        &self,
        path: &str,
        target: &str,
        body: &[u8],
        credentials: &Credentials,
        time: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, CallError> {
        let unsignable = |what: String| CallError {
            class: Class::Permanent,
            message: format!("request could not be signed: {what}"),
        };
        // "2026-11-30T10:45:00Z" → "20261130T104500Z". A time before 1970 or after 9999 (a
        // clock, or a clock correction, gone wrong) has no such form: an error, not a panic.
        let stamp = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .and_then(|secs| {
                aws_smithy_types::DateTime::from_secs(secs)
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .ok()
            })
            .ok_or_else(|| unsignable(format!("the signing time {time:?} has no ISO 8601 form")))?;
        let amz_date: String = stamp.chars().filter(|c| !matches!(c, '-' | ':')).collect();
        let date = &amz_date[..8];
        let token = credentials.session_token();
        let signed_headers = if token.is_some() {
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        } else {
            "content-type;host;x-amz-date;x-amz-target"
        };
        let host = self.host.to_str().expect("built from a str");
        let mut canonical = String::with_capacity(512);
        canonical.push_str("POST\n");
        canonical.push_str(path);
        canonical.push_str("\n\ncontent-type:");
        canonical.push_str(CONTENT_TYPE_JSON);
        canonical.push_str("\nhost:");
        canonical.push_str(host);
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&amz_date);
        if let Some(token) = token {
            canonical.push_str("\nx-amz-security-token:");
            canonical.push_str(token.trim());
        }
        canonical.push_str("\nx-amz-target:");
        canonical.push_str(target);
        canonical.push_str("\n\n");
        canonical.push_str(signed_headers);
        canonical.push('\n');
        canonical.push_str(&hex::encode(Sha256::digest(body)));
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.signing_name);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = {
            let mut keys = self.signing_keys.lock().expect("not poisoned");
            let secret = credentials.secret_access_key();
            let key = match &*keys {
                Some((d, s, key)) if d == date && s == secret => key,
                _ => {
                    let key = aws_sigv4::sign::v4::generate_signing_key(
                        secret,
                        time,
                        &self.region,
                        self.signing_name,
                    );
                    &keys
                        .insert((date.to_owned(), secret.to_owned(), key.as_ref().to_vec()))
                        .2
                }
            };
            aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes())
        };
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id()
        );
        // The credentials were checked when fetched (`unusable_credentials`); the region comes
        // from the configuration, and a line break in it must not panic either.
        let value = |name: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                unsignable(format!(
                    "the {name} header would hold a character a header cannot carry (check AWS_REGION and the credentials)"
                ))
            })
        };
        let mut headers = vec![
            (AUTHORIZATION, value("authorization", &authorization)?),
            (
                HeaderName::from_static("x-amz-date"),
                value("x-amz-date", &amz_date)?,
            ),
        ];
        if let Some(token) = token {
            headers.push((
                HeaderName::from_static("x-amz-security-token"),
                value("x-amz-security-token", token.trim())?,
            ));
        }
        Ok(headers)
    }

    /// The same through `aws-sigv4`'s general signer: for an endpoint with a path that needs
    /// encoding or normalizing, and as the reference the tests compare [`Self::sign`] with.
    fn sign_with_aws_sigv4(
        &self,
        target: &str,
        body: &[u8],
        credentials: &Credentials,
        time: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, CallError> {
        let signing_failed = |e: &dyn std::error::Error| CallError {
            class: Class::Permanent,
            message: format!("request could not be signed: {}", crate::error_chain(e)),
        };
        let identity = Identity::from(credentials.clone());
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.signing_name)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_failed(&e))?
            .into();
        let host = self.host.to_str().expect("built from a str");
        let signable = SignableRequest::new(
            "POST",
            self.endpoint_text.as_str(),
            [
                ("host", host),
                ("content-type", CONTENT_TYPE_JSON),
                ("x-amz-target", target),
            ]
            .into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing_failed(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| signing_failed(&e))?
            .into_parts();
        let (headers, _query) = instructions.into_parts();
        headers
            .into_iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name().as_bytes());
                let value = HeaderValue::from_str(h.value());
                match (name, value) {
                    (Ok(n), Ok(v)) => Ok((n, v)),
                    _ => Err(CallError {
                        class: Class::Permanent,
                        message: format!("the signer produced an invalid header {:?}", h.name()),
                    }),
                }
            })
            .collect()
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

/// An error answer: its error code, and the error classified by status and code.
pub struct Fault {
    pub code: Option<String>,
    pub error: CallError,
}

/// An error answer (any status but 200), classified by its status and error code (read by
/// [`crate::aws::error_answer`], whatever the body's shape).
pub fn fault(status: u16, body: &[u8]) -> Fault {
    let answer = crate::aws::error_answer::read(body);
    let code = answer.code.as_deref();
    Fault {
        error: CallError {
            class: class_of(Some(status), code),
            message: format!(
                "{} (HTTP {status}): {}",
                code.unwrap_or("unknown error"),
                answer.message
            ),
        },
        code: answer.code,
    }
}

/// Error codes an answer may give when the request's signing time is too far from the server's
/// clock (the AWS SDK's own list, `aws-runtime`'s `service_clock_skew`).
const CLOCK_SKEW_CODES: &[&str] = &[
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestTimeTooSkewed",
    "AccessDeniedException",
];
/// How far the server's clock must be from the signing time to count as skew (the SDK's
/// threshold; AWS refuses signatures more than 5 minutes off).
const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// The clock correction to sign with from now on, in milliseconds to add to the local clock,
/// when an error answer shows that the signing time was off: its code is a signature-time
/// error and its `Date` header is more than [`SKEW_THRESHOLD`] from `signed_at`. The correction
/// is the server's time minus the local clock's at `answered_at`; `None` when the answer says
/// nothing about the clock.
fn clock_correction(
    code: Option<&str>,
    date: Option<&str>,
    signed_at: SystemTime,
    answered_at: SystemTime,
) -> Option<i64> {
    use aws_smithy_types::DateTime;
    use aws_smithy_types::date_time::Format;
    code.filter(|c| CLOCK_SKEW_CODES.contains(c))?;
    let server = SystemTime::try_from(DateTime::from_str(date?, Format::HttpDate).ok()?).ok()?;
    // Saturating: the `Date` is the server's word, and must not wrap into another sign.
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let off = |a: SystemTime, b: SystemTime| match a.duration_since(b) {
        Ok(d) => millis(d),
        Err(e) => -millis(e.duration()),
    };
    (off(server, signed_at).unsigned_abs() > SKEW_THRESHOLD.as_secs() * 1000)
        .then(|| off(server, answered_at))
}

/// The requests as sent, checked against `aws-sigv4`'s general signer.
#[cfg(test)]
#[path = "sigv4_reference.rs"]
mod sigv4_reference;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sdk_config(
        configure: fn(aws_types::sdk_config::Builder) -> aws_types::sdk_config::Builder,
        credentials: Credentials,
    ) -> aws_types::SdkConfig {
        configure(
            aws_types::SdkConfig::builder()
                .region(aws_types::region::Region::new("eu-west-1"))
                .credentials_provider(SharedCredentialsProvider::new(credentials)),
        )
        .build()
    }

    /// A client of `service` in eu-west-1 for the endpoint `url`, signing with `credentials`.
    fn client_for(
        service: &'static str,
        url: &str,
        credentials: &Credentials,
    ) -> Result<JsonClient, SetupError> {
        let sdk = sdk_config(|b| b, credentials.clone());
        let endpoint = Endpoint::builder().url(url.to_owned()).build();
        JsonClient::new(
            &sdk,
            crate::aws::transport::Transport::new().calls(),
            service,
            "eu-west-1".into(),
            Ok(endpoint),
        )
    }

    /// The endpoints a direct client resolves under the SDK's rules: by default, with FIPS,
    /// and with an endpoint URL configured.
    pub(crate) async fn endpoints<F, Fut>(make: F) -> Vec<String>
    where
        F: Fn(aws_types::SdkConfig) -> Fut,
        Fut: std::future::Future<Output = JsonClient>,
    {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        let configs: [fn(aws_types::sdk_config::Builder) -> aws_types::sdk_config::Builder; 3] = [
            |b| b,
            |b| b.use_fips(true),
            |b| b.endpoint_url("http://127.0.0.1:4566"),
        ];
        let mut out = Vec::new();
        for configure in configs {
            let client = make(sdk_config(configure, credentials.clone())).await;
            out.push(client.endpoint().to_string());
        }
        out
    }

    #[tokio::test]
    async fn requests_are_signed_for_the_service_in_the_region_over_target_and_body() {
        let credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "t");
        let client =
            client_for("sqs", "https://sqs.eu-west-1.amazonaws.com", &credentials).unwrap();
        let request = client
            .signed_request(
                "AmazonSQS.SendMessageBatch",
                b"{}".to_vec(),
                &credentials,
                SystemTime::now(),
            )
            .unwrap();
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        let auth = header("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/")
                && auth.contains("/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="),
            "{auth}"
        );
        assert_eq!(header("x-amz-security-token"), "token");
        assert_eq!(header("x-amz-target"), "AmazonSQS.SendMessageBatch");
        assert_eq!(header("content-type"), "application/x-amz-json-1.0");
        assert_eq!(header("host"), "sqs.eu-west-1.amazonaws.com");
    }

    /// The direct signer and `aws-sigv4`'s general one produce the same headers, for both
    /// services, with and without a session token, across days (the cached key must change),
    /// at an endpoint with a port and one with a path.
    #[test]
    fn the_direct_signer_agrees_with_aws_sigv4() {
        let day = 86_400;
        let times = [
            1_764_460_800u64,
            1_764_460_800 + 3_599,
            1_764_460_800 + day + 7,
        ];
        let with_token = Credentials::new(
            "AKIDEXAMPLE",
            "s3cr/t+KEY",
            Some("FwoG+tok/en==".into()),
            None,
            "t",
        );
        let without = Credentials::new("AKID2", "another-secret", None, None, "t");
        for (service, url, target) in [
            (
                "sqs",
                "https://sqs.eu-west-1.amazonaws.com",
                "AmazonSQS.SendMessageBatch",
            ),
            (
                "dynamodb",
                "http://127.0.0.1:4566",
                "DynamoDB_20120810.Scan",
            ),
            (
                "dynamodb",
                "https://proxy.example/aws/ddb",
                "DynamoDB_20120810.Scan",
            ),
        ] {
            let client = client_for(service, url, &without).unwrap();
            let path = client
                .canonical_path
                .clone()
                .expect("a plain path is signed directly");
            for credentials in [&with_token, &without] {
                for secs in times {
                    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                    let body = format!(r#"{{"TableName":"t","n":{secs}}}"#);
                    let sorted = |mut h: Vec<(HeaderName, HeaderValue)>| {
                        h.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                        h
                    };
                    let direct = sorted(
                        client
                            .sign(&path, target, body.as_bytes(), credentials, time)
                            .unwrap(),
                    );
                    let reference = sorted(
                        client
                            .sign_with_aws_sigv4(target, body.as_bytes(), credentials, time)
                            .unwrap(),
                    );
                    assert_eq!(direct, reference, "{service} {url} {secs}");
                }
            }
        }
    }

    #[test]
    fn a_credential_is_printable_ascii_without_spaces() {
        assert_eq!(credential_flaw("AKIDEXAMPLE"), None);
        assert_eq!(credential_flaw("wJalr/K7MDENG+bPxRfiCY=="), None);
        let flaw = |v: &str| credential_flaw(v).unwrap();
        assert_eq!(flaw("secret\n"), "a line break at the end");
        assert_eq!(flaw("secret\r\n"), "a line break at byte 6");
        assert_eq!(flaw(" secret"), "a space at the start");
        assert_eq!(flaw("sec\tret"), "a tab at byte 3");
        assert_eq!(flaw("sec\u{7f}ret"), "a control character at byte 3");
        assert_eq!(flaw("sécret"), "a non-ASCII character at byte 1");
        assert!(flaw("").contains("empty"));
    }

    #[test]
    fn a_bad_credential_variable_is_named_without_its_value() {
        use std::ffi::OsString;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(check_credential_variables(env(&[])), Ok(()));
        assert_eq!(
            check_credential_variables(env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr/t+KEY"),
                // Empty is unset to the SDK, and it trims the session token itself.
                ("SECRET_ACCESS_KEY", ""),
                ("AWS_SESSION_TOKEN", "FwoG+tok/en==\n"),
            ])),
            Ok(())
        );
        let e = check_credential_variables(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2\n"),
        ]))
        .unwrap_err();
        assert!(
            e.starts_with("AWS_SECRET_ACCESS_KEY holds a line break at the end"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the secret is not printed: {e}");
        let e = check_credential_variables(env(&[("AWS_ACCESS_KEY_ID", "AKID ")])).unwrap_err();
        assert!(e.starts_with("AWS_ACCESS_KEY_ID holds a space"), "{e}");
        let e = check_credential_variables(env(&[("AWS_SESSION_TOKEN", "tok\nen")])).unwrap_err();
        assert!(e.starts_with("AWS_SESSION_TOKEN holds a line break"), "{e}");
    }

    /// A provider (not the environment, which start-up checks) hands over a credential with a
    /// line break: the call fails, naming the part, and nothing is sent. The access key id
    /// panicked in the Authorization header; the secret was sent to fail as a bad signature.
    #[tokio::test]
    async fn credentials_that_cannot_sign_fail_the_call_without_sending_it() {
        use aws_smithy_http_client::test_util::StaticReplayClient;
        for (credentials, part) in [
            (
                Credentials::new("AKID\n", "secret", None, None, "t"),
                "access key id",
            ),
            (
                Credentials::new("AKID", "secret\n", None, None, "t"),
                "secret access key",
            ),
            (
                Credentials::new("AKID", "secret", Some("to\nken".into()), None, "t"),
                "session token",
            ),
        ] {
            let replay = StaticReplayClient::new(vec![]);
            let sdk = sdk_config(|b| b, credentials);
            let endpoint = Endpoint::builder()
                .url("https://sqs.eu-west-1.amazonaws.com")
                .build();
            let http = SharedHttpConnector::new(replay.clone());
            let client =
                JsonClient::new(&sdk, http, "sqs", "eu-west-1".into(), Ok(endpoint)).unwrap();
            let e = client
                .call("AmazonSQS.SendMessageBatch", b"{}".to_vec())
                .await
                .unwrap_err();
            assert_eq!(e.class, Class::Permanent, "{}", e.message);
            assert!(
                e.message
                    .contains(&format!("its {part} holds a line break")),
                "{}",
                e.message
            );
            assert_eq!(
                replay.actual_requests().count(),
                0,
                "{part}: a request was sent"
            );
        }
    }

    /// Configuration and clocks outside the credentials cannot panic the signer either.
    #[test]
    fn a_region_or_a_time_that_cannot_be_signed_is_an_error() {
        let credentials = Credentials::new("AKID", "secret", None, None, "t");
        let sdk = sdk_config(|b| b, credentials.clone());
        let endpoint = Endpoint::builder().url("http://127.0.0.1:4566").build();
        let client = JsonClient::new(
            &sdk,
            crate::aws::transport::Transport::new().calls(),
            "dynamodb",
            "eu-west-1\n".into(),
            Ok(endpoint),
        )
        .unwrap();
        let path = client.canonical_path.clone().unwrap();
        let target = "DynamoDB_20120810.Scan";
        let e = client
            .sign(&path, target, b"{}", &credentials, SystemTime::now())
            .unwrap_err();
        assert!(e.message.contains("authorization header"), "{}", e.message);
        let client = client_for("dynamodb", "http://127.0.0.1:4566", &credentials).unwrap();
        // Year 10000 (a server's Date of 31 Dec 9999 as the clock correction, plus a moment).
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        let e = client
            .sign(&path, target, b"{}", &credentials, far)
            .unwrap_err();
        assert!(e.message.contains("signing time"), "{}", e.message);
    }

    /// A clock correction taken from a server's `Date` (at most year 9999, and then some) or
    /// beyond: the call fails without sending, the worker does not panic.
    #[tokio::test]
    async fn a_clock_correction_that_cannot_be_signed_with_fails_the_call() {
        use aws_smithy_http_client::test_util::StaticReplayClient;
        let replay = StaticReplayClient::new(vec![]);
        let sdk = sdk_config(|b| b, Credentials::new("AKID", "secret", None, None, "t"));
        let endpoint = Endpoint::builder()
            .url("https://sqs.eu-west-1.amazonaws.com")
            .build();
        let http = SharedHttpConnector::new(replay.clone());
        let client = JsonClient::new(&sdk, http, "sqs", "eu-west-1".into(), Ok(endpoint)).unwrap();
        client
            .clock_correction_ms
            .store(i64::MAX, Ordering::Relaxed);
        let e = client
            .call("AmazonSQS.SendMessageBatch", b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(e.message.contains("signing time"), "{}", e.message);
        assert_eq!(replay.actual_requests().count(), 0);
    }

    #[test]
    fn an_endpoint_path_that_needs_encoding_goes_to_the_general_signer() {
        let credentials = Credentials::new("AKID", "secret", None, None, "t");
        for url in [
            "https://h.example/a b",
            "https://h.example/a/../b",
            "https://h.example/a?x=1",
            "https://h.example//a",
        ] {
            let client = client_for("sqs", url, &credentials);
            // Some of these are not even URIs; those fail at setup, naming the endpoint.
            if let Ok(client) = client {
                assert_eq!(client.canonical_path, None, "{url}");
            }
        }
    }

    #[test]
    fn without_a_region_setup_fails_naming_it() {
        let sdk = aws_types::SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .build();
        let e = EndpointInputs::from_sdk(&sdk, "SQS").err().unwrap();
        assert!(e.to_string().contains("no AWS region"), "{e}");
    }

    /// `t` as an HTTP `Date` header.
    fn http_date(t: SystemTime) -> String {
        aws_smithy_types::DateTime::from(t)
            .fmt(aws_smithy_types::date_time::Format::HttpDate)
            .unwrap()
    }

    #[test]
    fn only_a_signature_time_error_minutes_off_corrects_the_clock() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (minute, ten) = (Duration::from_secs(60), Duration::from_secs(600));
        let correction = |code: &str, date: Option<String>, signed_at, answered_at| {
            clock_correction(Some(code), date.as_deref(), signed_at, answered_at)
        };
        let refused = "InvalidSignatureException";
        // The service's clock 10 min ahead of ours, or behind; measured at the answer.
        let later = at + Duration::from_secs(1);
        assert_eq!(
            correction(refused, Some(http_date(at + ten)), at, later),
            Some(599_000)
        );
        let skewed = "SignatureDoesNotMatch";
        assert_eq!(
            correction(skewed, Some(http_date(at - ten)), at, at),
            Some(-600_000)
        );
        // Within the threshold, another error, or no readable date: nothing to correct.
        assert_eq!(
            correction(refused, Some(http_date(at + minute)), at, at),
            None
        );
        assert_eq!(
            correction("QueueDoesNotExist", Some(http_date(at + ten)), at, at),
            None
        );
        assert_eq!(correction(refused, None, at, at), None);
        assert_eq!(correction(refused, Some("yesterday".into()), at, at), None);
        // A correction that has become wrong (the local clock was set right since) is undone.
        assert_eq!(
            correction(refused, Some(http_date(at)), at + ten, at),
            Some(0)
        );
    }

    #[tokio::test]
    async fn after_a_clock_refusal_the_next_request_is_signed_at_the_services_time() {
        use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
        // The local clock is an hour behind the service's.
        let service_time = SystemTime::now() + Duration::from_secs(3600);
        let answer = |status: u16, body: &'static str| {
            http::Response::builder()
                .status(status)
                .header("date", http_date(service_time))
                .body(SdkBody::from(body))
                .unwrap()
        };
        let any_request = || {
            http::Request::builder()
                .uri("https://sqs.eu-west-1.amazonaws.com/")
                .body(SdkBody::empty())
                .unwrap()
        };
        let refusal = r#"{"__type":"com.amazon.coral.service#InvalidSignatureException","message":"Signature expired"}"#;
        let replay = StaticReplayClient::new(vec![
            ReplayEvent::new(any_request(), answer(400, refusal)),
            ReplayEvent::new(any_request(), answer(200, "{}")),
        ]);
        let credentials = Credentials::new("AKID", "secret", None, None, "t");
        let sdk = sdk_config(|b| b, credentials);
        let endpoint = Endpoint::builder()
            .url("https://sqs.eu-west-1.amazonaws.com")
            .build();
        let http = SharedHttpConnector::new(replay.clone());
        let client = JsonClient::new(&sdk, http, "sqs", "eu-west-1".into(), Ok(endpoint)).unwrap();

        let target = "AmazonSQS.SendMessageBatch";
        let refused = client.call(target, b"{}".to_vec()).await.unwrap_err();
        assert_eq!(refused.class, Class::Transient, "{}", refused.message);
        assert!(
            refused.message.contains("s behind the service's"),
            "{}",
            refused.message
        );
        client.call(target, b"{}".to_vec()).await.expect("accepted");

        // X-Amz-Date "20261130T104500Z" as a time.
        let signed: Vec<SystemTime> = replay
            .actual_requests()
            .map(|r| {
                let d = r.headers().get("x-amz-date").expect("signed");
                let iso = format!(
                    "{}-{}-{}T{}:{}:{}Z",
                    &d[0..4],
                    &d[4..6],
                    &d[6..8],
                    &d[9..11],
                    &d[11..13],
                    &d[13..15]
                );
                let t = aws_smithy_types::DateTime::from_str(
                    &iso,
                    aws_smithy_types::date_time::Format::DateTime,
                )
                .unwrap();
                SystemTime::try_from(t).unwrap()
            })
            .collect();
        let near = |a: SystemTime, b: SystemTime| {
            a.duration_since(b)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap()
                < Duration::from_secs(60)
        };
        assert_eq!(signed.len(), 2);
        assert!(
            near(signed[0], SystemTime::now()),
            "first at the local clock"
        );
        assert!(
            near(signed[1], service_time),
            "second at the service's clock"
        );
    }

    #[test]
    fn error_answers_are_classified_by_code_and_status() {
        let throttled =
            br#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#;
        let e = fault(400, throttled).error;
        assert_eq!(e.class, Class::Transient);
        assert_eq!(e.message, "RequestThrottled (HTTP 400): Rate exceeded");

        let throttled = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#;
        assert_eq!(fault(400, throttled).error.class, Class::Transient);

        let missing = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","Message":"no queue"}"#;
        let e = fault(400, missing).error;
        assert_eq!(e.class, Class::Permanent);
        assert_eq!(e.message, "QueueDoesNotExist (HTTP 400): no queue");

        let e = fault(503, b"Service Unavailable").error;
        assert_eq!(e.class, Class::Transient);
        assert_eq!(e.message, "unknown error (HTTP 503): Service Unavailable");
    }
}
