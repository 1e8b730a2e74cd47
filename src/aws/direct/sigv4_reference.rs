//! The direct client's requests, exactly as it sends them, signed again by `aws-sigv4`'s
//! general signer (`aws_sigv4::http_request::sign`, the one the SDK uses): the `Authorization`
//! header must be the same, byte for byte.
//!
//! Unlike `the_direct_signer_agrees_with_aws_sigv4` (which compares the two signing functions
//! on the headers the client chooses to sign), the reference here is given the finished request
//! (its method, its URI and every header on it, `user-agent` included, minus those signing
//! adds), so a header sent but left out of the signed set, or one signed but not sent, also
//! shows.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;

use super::tests::sdk_config;
use super::*;

/// The headers signing adds (the rest are the request's own).
const ADDED_BY_SIGNING: [&str; 3] = ["authorization", "x-amz-date", "x-amz-security-token"];

/// `request` signed by `aws-sigv4` from what it carries: every header but those signing adds.
fn reference_signature(
    request: &http::Request<SdkBody>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    let identity = Identity::from(credentials.clone());
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter(|(name, _)| !ADDED_BY_SIGNING.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    assert!(
        headers.iter().any(|(n, _)| *n == "user-agent"),
        "the request as sent carries a user-agent: {headers:?}"
    );
    let uri = request.uri().to_string();
    let body = request.body().bytes().expect("an in-memory body");
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let (headers, query) = instructions.into_parts();
    assert!(query.is_empty());
    headers
        .into_iter()
        .map(|h| (h.name().to_owned(), h.value().to_owned()))
        .collect()
}

fn header(request: &http::Request<SdkBody>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[test]
fn the_requests_as_sent_are_signed_as_aws_sigv4_signs_them() {
    let with_token = Credentials::new(
        "ASIAEXAMPLEKEYID0001",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH+token/with=padding==".into()),
        None,
        "test",
    );
    let without_token = Credentials::new("AKIDEXAMPLE", "s3cr/t+KEY", None, None, "test");
    // 2026-11-30T10:45:00Z, the last second of that day, and the next day.
    let times = [1_796_035_500u64, 1_796_083_199, 1_796_083_200];
    let endpoints = [
        // (service, endpoint URL, X-Amz-Target, whether the fast path signs it)
        (
            Service::Sqs,
            "https://sqs.eu-west-1.amazonaws.com",
            "AmazonSQS.SendMessageBatch",
            true,
        ),
        (
            Service::Dynamodb,
            "https://dynamodb.eu-west-1.amazonaws.com",
            "DynamoDB_20120810.Scan",
            true,
        ),
        (
            Service::Sqs,
            "http://127.0.0.1:4566",
            "AmazonSQS.SendMessageBatch",
            true,
        ),
        (
            Service::Dynamodb,
            "https://gateway.example:8443/aws/ddb-eu_1.v2~x",
            "DynamoDB_20120810.Scan",
            true,
        ),
        // Paths with characters that need encoding (`%`, `+`, `:`, `@`, `=`, a `'`, an encoded
        // space and an encoded non-ASCII character) or normalizing (`.` segments): the general
        // signer's encoding, asserted below to be the one taken.
        (
            Service::Dynamodb,
            "https://gateway.example/aws/ddb%20eu/caf%C3%A9/a+b:c@d=e'f",
            "DynamoDB_20120810.Scan",
            false,
        ),
        (
            Service::Sqs,
            "https://gateway.example/a/./b/../sqs",
            "AmazonSQS.SendMessageBatch",
            false,
        ),
    ];
    for (service, url, target, fast) in endpoints {
        for credentials in [&with_token, &without_token] {
            // One client per credentials: its signing key is cached per day and secret.
            let sdk = sdk_config(|b| b, credentials.clone());
            let endpoint = Endpoint::builder().url(url).build();
            let client = JsonClient::new(
                &sdk,
                crate::aws::transport::Transport::new().calls(),
                service,
                "eu-west-1".into(),
                Ok(endpoint),
            )
            .unwrap();
            assert_eq!(client.canonical_path.is_some(), fast, "{url}");
            for secs in times {
                let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                // A body with characters JSON escapes and non-ASCII text in it.
                let body = format!(
                    r#"{{"TableName":"t","ExclusiveStartKey":{{"PK":{{"S":"a\"b\\ü {secs}"}}}}}}"#
                );
                let request = client
                    .signed_request(target, body.into_bytes(), credentials, time)
                    .unwrap();
                let reference =
                    reference_signature(&request, credentials, "eu-west-1", service.label(), time);
                let expected = |name: &str| {
                    reference
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                let context = format!(
                    "{} {url} at {secs}, token: {}",
                    service.label(),
                    credentials.session_token().is_some()
                );
                assert_eq!(
                    header(&request, "authorization"),
                    expected("authorization"),
                    "{context}"
                );
                assert_eq!(
                    header(&request, "x-amz-date"),
                    expected("x-amz-date"),
                    "{context}"
                );
                assert_eq!(
                    header(&request, "x-amz-security-token"),
                    expected("x-amz-security-token"),
                    "{context}"
                );
                assert!(expected("authorization").is_some(), "{context}");
            }
        }
    }
}

/// The reference itself, pinned: AWS's published SigV4 example for a POST (the
/// `get-vanilla`-style suite's credentials and time), so a reference that drifted would show.
#[test]
fn the_reference_signs_a_known_request_as_aws_documents() {
    // From the AWS SigV4 test suite (`post-header-key-sort`): POST / with host and x-amz-date
    // and a `my-header1: value1` header, 20150830T123600Z, us-east-1, service "service".
    let credentials = Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "test",
    );
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    let request = http::Request::post("https://example.amazonaws.com/")
        .header("host", "example.amazonaws.com")
        .header("my-header1", "value1")
        .header("user-agent", "not signed")
        .body(SdkBody::empty())
        .unwrap();
    let signed = reference_signature(&request, &credentials, "us-east-1", "service", time);
    let authorization = &signed.iter().find(|(n, _)| n == "authorization").unwrap().1;
    assert_eq!(
        authorization,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
    );
}
