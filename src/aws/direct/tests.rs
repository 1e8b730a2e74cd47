//! The direct client against `aws-sigv4`'s signer, the SDK's endpoint rules and scripted answers.

use super::*;
use http::header::HeaderName;

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
    service: Service,
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
    let client = client_for(
        Service::Sqs,
        "https://sqs.eu-west-1.amazonaws.com",
        &credentials,
    )
    .unwrap();
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
            Service::Sqs,
            "https://sqs.eu-west-1.amazonaws.com",
            "AmazonSQS.SendMessageBatch",
        ),
        (
            Service::Dynamodb,
            "http://127.0.0.1:4566",
            "DynamoDB_20120810.Scan",
        ),
        (
            Service::Dynamodb,
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
                assert_eq!(direct, reference, "{service:?} {url} {secs}");
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
            JsonClient::new(&sdk, http, Service::Sqs, "eu-west-1".into(), Ok(endpoint)).unwrap();
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
        Service::Dynamodb,
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
    let client = client_for(Service::Dynamodb, "http://127.0.0.1:4566", &credentials).unwrap();
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
    let client =
        JsonClient::new(&sdk, http, Service::Sqs, "eu-west-1".into(), Ok(endpoint)).unwrap();
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
        let client = client_for(Service::Sqs, url, &credentials);
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
    let client =
        JsonClient::new(&sdk, http, Service::Sqs, "eu-west-1".into(), Ok(endpoint)).unwrap();

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
    let throttled = br#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#;
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
