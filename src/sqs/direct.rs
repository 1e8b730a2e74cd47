//! `SendMessageBatch` spoken directly: SQS's JSON protocol over a pooled hyper connection,
//! signed with `aws-sigv4`, using the SDK's own credential chain and endpoint rules.
//!
//! Why not the SDK here: the worker makes one `SendMessageBatch` per 10 rows, and the SDK's
//! generic orchestrator (interceptors, layered config, endpoint rules evaluated per call, an
//! owned copy of every entry, typed response parsing) cost more CPU than the rest of the worker
//! together (see docs/BENCHMARKS.md). This client does only what that one call needs: serialize
//! the entries straight from [`OutMessage`]s, sign, send, and read the `Failed` list. Every other
//! call stays on the SDK, and `output.client = "sdk"` puts this one back on it too.

use std::fmt;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sqs::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_types::service_config::ServiceConfigKey;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

use super::{CallError, EntryFailure, OutMessage, entry_failure};
use crate::retry::{Class, class_of};

const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.0";
const TARGET: &str = "AmazonSQS.SendMessageBatch";
const SIGNING_NAME: &str = "sqs";
/// Credentials are renewed this long before they expire, so no request is signed with
/// credentials that lapse in flight.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A `SendMessageBatch` client for one SQS endpoint.
pub struct DirectSqs {
    http: Client<Https, Full<Bytes>>,
    endpoint: http::Uri,
    /// `endpoint` as text, as the signer takes it (formatted once, not per request).
    endpoint_text: String,
    host: HeaderValue,
    region: String,
    credentials: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
    attempt_timeout: Duration,
    user_agent: HeaderValue,
}

impl fmt::Debug for DirectSqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectSqs")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why the direct client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no AWS region is configured (AWS_REGION or the profile's region)")]
    NoRegion,
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("the SQS endpoint cannot be resolved: {0}")]
    Endpoint(String),
    #[error("the system's TLS root certificates cannot be loaded: {0}")]
    Tls(std::io::Error),
}

impl DirectSqs {
    /// Builds the client from the same configuration the SDK clients use: region, credentials
    /// chain, `AWS_ENDPOINT_URL(_SQS)`, FIPS and dual-stack settings.
    pub async fn new(sdk: &aws_types::SdkConfig) -> Result<Self, SetupError> {
        let region = sdk.region().ok_or(SetupError::NoRegion)?.to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or(SetupError::NoCredentials)?;
        // The same precedence the SDK's SQS config applies: the service-specific setting,
        // then the general one.
        let configured = sdk
            .service_config()
            .and_then(|c| {
                c.load_config(
                    ServiceConfigKey::builder()
                        .service_id("SQS")
                        .env("AWS_ENDPOINT_URL")
                        .profile("endpoint_url")
                        .build()
                        .expect("every field is set"),
                )
            })
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        let params = Params::builder()
            .region(region.clone())
            .set_endpoint(configured)
            .set_use_fips(sdk.use_fips())
            .set_use_dual_stack(sdk.use_dual_stack())
            .build()
            .map_err(|e| SetupError::Endpoint(e.to_string()))?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map_err(|e| SetupError::Endpoint(e.to_string()))?;
        let endpoint: http::Uri = endpoint
            .url()
            .parse()
            .map_err(|e: http::uri::InvalidUri| SetupError::Endpoint(e.to_string()))?;
        let host = endpoint
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| SetupError::Endpoint(format!("{endpoint} names no host")))?;

        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(crate::CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(SetupError::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(https),
            endpoint_text: endpoint.to_string(),
            endpoint,
            host,
            region,
            credentials,
            cached: Mutex::new(None),
            attempt_timeout: crate::ATTEMPT_TIMEOUT,
            user_agent: HeaderValue::from_static(concat!("scanfleet/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// One `SendMessageBatch` attempt; entry ids are positions in `entries`.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[OutMessage],
    ) -> Result<Vec<EntryFailure>, CallError> {
        let body = request_body(queue_url, entries);
        let credentials = self.credentials().await?;
        let request = self.signed_request(body, credentials)?;
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
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
            Ok(Ok((status, body))) => parse_response(status, &body, entries.len()),
        }
    }

    fn signed_request(
        &self,
        body: Vec<u8>,
        credentials: Credentials,
    ) -> Result<http::Request<Full<Bytes>>, CallError> {
        let signing_failed = |e: &dyn std::error::Error| CallError {
            class: Class::Permanent,
            message: format!("request could not be signed: {}", crate::error_chain(e)),
        };
        let identity = Identity::from(credentials);
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
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
                ("x-amz-target", TARGET),
            ]
            .into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| signing_failed(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| signing_failed(&e))?
            .into_parts();
        let mut request = http::Request::post(self.endpoint.clone())
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_JSON)
            .header("x-amz-target", TARGET)
            .header(USER_AGENT, self.user_agent.clone())
            .body(Full::new(Bytes::from(body)))
            .expect("method, URI and headers are valid");
        instructions.apply_to_request_http1x(&mut request);
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
        *cached = Some(c.clone());
        Ok(c)
    }
}

/// The JSON request: `{"QueueUrl": …, "Entries": [{"Id": "0", "MessageBody": …}, …]}`,
/// written straight from the messages.
///
/// Written by hand rather than through serde because of the bodies: each is JSON itself, so
/// it is full of quotes to escape, and serde_json's escaping inspects every byte, which made
/// this function 8% of the worker's CPU. [`write_json_string`] copies the runs between quotes
/// whole. The shape is fixed and small; the tests check it against serde_json's reading.
fn request_body(queue_url: &str, entries: &[OutMessage]) -> Vec<u8> {
    // Bodies grow a little when escaped; attributes add a few hundred bytes.
    let estimate: usize = entries.iter().map(|e| e.body.len() * 9 / 8 + 256).sum();
    let mut out = Vec::with_capacity(queue_url.len() + 32 + estimate);
    out.extend_from_slice(b"{\"QueueUrl\":");
    write_json_string(&mut out, queue_url);
    out.extend_from_slice(b",\"Entries\":[");
    for (i, m) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Id\":\"");
        write!(out, "{i}").expect("writing to a Vec cannot fail");
        out.extend_from_slice(b"\",\"MessageBody\":");
        write_json_string(&mut out, &m.body);
        let mut attributes = m.attributes().peekable();
        if attributes.peek().is_some() {
            out.extend_from_slice(b",\"MessageAttributes\":{");
            for (j, (name, data_type, value)) in attributes.enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_json_string(&mut out, name);
                out.extend_from_slice(b":{\"DataType\":");
                write_json_string(&mut out, data_type);
                out.extend_from_slice(b",\"StringValue\":");
                write_json_string(&mut out, value);
                out.push(b'}');
            }
            out.push(b'}');
        }
        if let Some(group) = &m.group_id {
            out.extend_from_slice(b",\"MessageGroupId\":");
            write_json_string(&mut out, group);
        }
        if let Some(dedup) = m.deduplication_id() {
            out.extend_from_slice(b",\"MessageDeduplicationId\":");
            write_json_string(&mut out, dedup);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json escapes it.
///
/// Row bodies are serde_json output, so they hold no control characters but many quotes: the
/// runs between `"` and `\` are found with SIMD (`memchr2`) and copied whole. A string with a
/// control character (rare: only task-supplied text could carry one) goes to serde_json.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // A fold rather than `any`: without the early exit the compiler vectorizes the scan.
    if bytes.iter().fold(false, |found, &b| found | (b < 0x20)) {
        serde_json::to_writer(out, s).expect("a str always serializes");
        return;
    }
    out.push(b'"');
    let mut rest = bytes;
    while let Some(i) = memchr::memchr2(b'"', b'\\', rest) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// What a `SendMessageBatch` answer means: the entries that failed (200), or the call's error
/// classified by status and error code.
fn parse_response(status: u16, body: &[u8], sent: usize) -> Result<Vec<EntryFailure>, CallError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        failed: Vec<Failed>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Failed {
        id: String,
        #[serde(default)]
        sender_fault: bool,
        code: String,
        #[serde(default)]
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Fault {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(alias = "Message", default)]
        message: Option<String>,
    }

    if status == 200 {
        let answer: Answer = serde_json::from_slice(body).map_err(|e| CallError {
            // The messages may or may not have been taken; resending risks a duplicate, which
            // at-least-once delivery allows, and never a loss.
            class: Class::Transient,
            message: format!("unreadable SendMessageBatch answer: {e}"),
        })?;
        return answer
            .failed
            .iter()
            .map(|f| {
                let message = f.message.as_deref().unwrap_or_default();
                entry_failure(&f.id, f.sender_fault, &f.code, message, sent)
            })
            .collect();
    }
    let fault: Fault = serde_json::from_slice(body).unwrap_or(Fault {
        kind: None,
        message: None,
    });
    // `__type` is "namespace#Code", sometimes followed by ":detail".
    let code = fault.kind.as_deref().map(|t| {
        let code = t.rsplit('#').next().unwrap_or(t);
        code.split(':').next().unwrap_or(code)
    });
    let message = fault
        .message
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Err(CallError {
        class: class_of(Some(status), code),
        message: format!(
            "{} (HTTP {status}): {message}",
            code.unwrap_or("unknown error")
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sqs::Attribute;

    fn row(body: &str, row_id: &str, group: Option<&str>) -> OutMessage {
        let shared: Arc<[Attribute]> = Arc::from(vec![
            Attribute {
                name: "table".into(),
                data_type: "String",
                value: "t".into(),
            },
            Attribute {
                name: "segment".into(),
                data_type: "Number",
                value: "3".into(),
            },
        ]);
        OutMessage {
            body: body.into(),
            shared_attributes: Some(shared),
            row_id: Some(row_id.into()),
            group_id: group.map(Into::into),
        }
    }

    #[test]
    fn the_request_names_each_entry_by_position_with_its_attributes() {
        let body = request_body(
            "http://q/1/out",
            &[
                row(r#"{"PK":"a"}"#, "id-a", None),
                OutMessage {
                    body: "task".into(),
                    ..OutMessage::default()
                },
            ],
        );
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let want = serde_json::json!({
            "QueueUrl": "http://q/1/out",
            "Entries": [
                {
                    "Id": "0",
                    "MessageBody": "{\"PK\":\"a\"}",
                    "MessageAttributes": {
                        "table": {"DataType": "String", "StringValue": "t"},
                        "segment": {"DataType": "Number", "StringValue": "3"},
                        "row_id": {"DataType": "String", "StringValue": "id-a"},
                    },
                },
                {"Id": "1", "MessageBody": "task"},
            ],
        });
        assert_eq!(got, want);
    }

    async fn endpoint_for(
        configure: fn(aws_types::sdk_config::Builder) -> aws_types::sdk_config::Builder,
    ) -> String {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        let sdk = configure(
            aws_types::SdkConfig::builder()
                .region(aws_types::region::Region::new("eu-west-1"))
                .credentials_provider(SharedCredentialsProvider::new(credentials)),
        )
        .build();
        let client = DirectSqs::new(&sdk).await.expect("set up");
        assert_eq!(client.region, "eu-west-1");
        format!("{} {}", client.endpoint, client.host.to_str().unwrap())
    }

    #[tokio::test]
    async fn the_endpoint_follows_the_sdks_rules() {
        assert_eq!(
            endpoint_for(|b| b).await,
            "https://sqs.eu-west-1.amazonaws.com/ sqs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_for(|b| b.use_fips(true)).await,
            "https://sqs-fips.eu-west-1.amazonaws.com/ sqs-fips.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_for(|b| b.endpoint_url("http://127.0.0.1:4566")).await,
            "http://127.0.0.1:4566/ 127.0.0.1:4566"
        );
    }

    #[tokio::test]
    async fn requests_are_signed_for_sqs_in_the_region_over_target_and_body() {
        let credentials = Credentials::new("AKID", "secret", Some("token".into()), None, "t");
        let sdk = aws_types::SdkConfig::builder()
            .region(aws_types::region::Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
            .build();
        let client = DirectSqs::new(&sdk).await.unwrap();
        let request = client.signed_request(b"{}".to_vec(), credentials).unwrap();
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

    #[tokio::test]
    async fn without_a_region_setup_fails_naming_it() {
        let sdk = aws_types::SdkConfig::builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .build();
        let e = DirectSqs::new(&sdk).await.unwrap_err();
        assert!(e.to_string().contains("no AWS region"), "{e}");
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            r#"{"PK":"a\"b","n":1}"#,
            "back\\slash at the end\\",
            "\"",
            "tab\tnew\nline\u{1}\u{1f}",
            "unicode é ✓ \u{7f} \u{2028}",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn fifo_entries_carry_group_and_row_id_as_deduplication_id() {
        let body = request_body("u", &[row("b", "id-b", Some("user#1"))]);
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got["Entries"][0]["MessageGroupId"], "user#1");
        assert_eq!(got["Entries"][0]["MessageDeduplicationId"], "id-b");
    }

    #[test]
    fn failed_entries_are_read_from_a_200_answer() {
        let answer = br#"{"Successful":[{"Id":"0","MessageId":"m","MD5OfMessageBody":"x"}],
            "Failed":[{"Id":"2","SenderFault":false,"Code":"InternalError","Message":"try again"},
                      {"Id":"1","SenderFault":true,"Code":"InvalidParameterValue"}]}"#;
        let failed = parse_response(200, answer, 3).unwrap();
        assert_eq!(
            failed,
            vec![
                EntryFailure {
                    index: 2,
                    sender_fault: false,
                    code: "InternalError".into(),
                    message: "try again".into(),
                },
                EntryFailure {
                    index: 1,
                    sender_fault: true,
                    code: "InvalidParameterValue".into(),
                    message: String::new(),
                },
            ]
        );
        assert!(
            parse_response(200, br#"{"Successful":[]}"#, 3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_failure_for_an_entry_not_sent_is_an_error_not_a_lost_row() {
        let answer = br#"{"Failed":[{"Id":"7","SenderFault":false,"Code":"InternalError"}]}"#;
        let e = parse_response(200, answer, 3).unwrap_err();
        assert_eq!(e.class, Class::Permanent);
        assert!(e.message.contains("\"7\""), "{}", e.message);
    }

    #[test]
    fn errors_are_classified_by_code_and_status() {
        let throttled =
            br#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#;
        let e = parse_response(400, throttled, 1).unwrap_err();
        assert_eq!(e.class, Class::Transient);
        assert_eq!(e.message, "RequestThrottled (HTTP 400): Rate exceeded");

        let missing = br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","Message":"no queue"}"#;
        let e = parse_response(400, missing, 1).unwrap_err();
        assert_eq!(e.class, Class::Permanent);
        assert_eq!(e.message, "QueueDoesNotExist (HTTP 400): no queue");

        let e = parse_response(503, b"Service Unavailable", 1).unwrap_err();
        assert_eq!(e.class, Class::Transient);
        assert_eq!(e.message, "unknown error (HTTP 503): Service Unavailable");

        let e = parse_response(200, b"<html>", 1).unwrap_err();
        assert_eq!(e.class, Class::Transient);
    }
}
