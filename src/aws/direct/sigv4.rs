//! SigV4 for the direct client's requests: a fast path written for the one request shape these
//! calls send, and `aws-sigv4`'s general signer for every other endpoint and as the reference
//! the tests compare the fast path with.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::aws::retry::{CallError, Class};

use super::*;

impl JsonClient {
    /// SigV4 for the one request shape these calls send (`POST`, no query, four headers), with
    /// the signing key kept for the day. `aws-sigv4`'s general signer built the same
    /// canonical request through allocations and formatting that were 9% of the worker's CPU;
    /// here it is written directly, and `aws-sigv4`'s own functions derive the key and
    /// compute the signature. The tests check the result against `aws-sigv4`'s signer.
    pub(super) fn sign(
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
    pub(super) fn sign_with_aws_sigv4(
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
}
