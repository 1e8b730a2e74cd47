//! `SendMessageBatch` spoken directly: SQS's JSON protocol through the process's HTTP connector,
//! signed with `aws-sigv4`, using the SDK's own credential chain and endpoint rules.
//!
//! Why not the SDK here: the worker makes one `SendMessageBatch` per 10 rows, and the SDK's
//! generic orchestrator (interceptors, layered config, endpoint rules evaluated per call, an
//! owned copy of every entry, typed response parsing) cost more CPU than the rest of the worker
//! together (see docs/BENCHMARKS.md). This client does only what that one call needs: serialize
//! the entries straight from [`OutMessage`]s, sign, send, and read the `Successful` and `Failed`
//! ids. Every other
//! call stays on the SDK, and `output.client = "sdk"` puts this one back on it too.

use std::io::Write as _;

use aws_smithy_runtime_api::client::http::SharedHttpConnector;

use super::{EntryFailure, OutMessage, account_for};
use crate::aws::direct::{JsonClient, SetupError};
use crate::aws::retry::{CallError, Class};
use crate::json;

const TARGET: &str = "AmazonSQS.SendMessageBatch";

/// A `SendMessageBatch` client for one SQS endpoint.
#[derive(Debug)]
pub struct DirectSqs {
    client: JsonClient,
}

impl DirectSqs {
    /// Builds the client from the same configuration the SDK clients use: region, credentials
    /// chain, `AWS_ENDPOINT_URL(_SQS)`, FIPS and dual-stack settings.
    pub async fn new(
        sdk: &aws_types::SdkConfig,
        http: SharedHttpConnector,
    ) -> Result<Self, SetupError> {
        let client = crate::aws::direct::json_client_for!(
            aws_sdk_sqs,
            "SQS",
            crate::telemetry::Service::Sqs,
            sdk,
            http
        )?;
        Ok(Self { client })
    }

    /// One `SendMessageBatch` attempt; entry ids are positions in `entries`.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        entries: &[OutMessage],
    ) -> Result<Vec<EntryFailure>, CallError> {
        let answer = self
            .client
            .call(TARGET, request_body(queue_url, entries))
            .await?;
        parse_answer(&answer, entries.len())
    }
}

/// The JSON request: `{"QueueUrl": …, "Entries": [{"Id": "0", "MessageBody": …}, …]}`,
/// written straight from the messages.
///
/// Written by hand rather than through serde because of the bodies: each is JSON itself, so
/// it is full of quotes to escape, and serde_json's escaping inspects every byte, which made
/// this function 8% of the worker's CPU. [`json::write_string`] copies the runs between quotes
/// whole. The shape is fixed and small; the tests check it against serde_json's reading.
fn request_body(queue_url: &str, entries: &[OutMessage]) -> Vec<u8> {
    // Bodies grow a little when escaped; attributes add a few hundred bytes.
    let estimate: usize = entries.iter().map(|e| e.body.len() * 9 / 8 + 256).sum();
    let mut out = Vec::with_capacity(queue_url.len() + 32 + estimate);
    out.extend_from_slice(b"{\"QueueUrl\":");
    json::write_string(&mut out, queue_url);
    out.extend_from_slice(b",\"Entries\":[");
    for (i, m) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Id\":\"");
        write!(out, "{i}").expect("writing to a Vec cannot fail");
        out.extend_from_slice(b"\",\"MessageBody\":");
        json::write_string(&mut out, &m.body);
        let mut attributes = m.attributes().peekable();
        if attributes.peek().is_some() {
            out.extend_from_slice(b",\"MessageAttributes\":{");
            for (j, (name, data_type, value)) in attributes.enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                json::write_string(&mut out, name);
                out.extend_from_slice(b":{\"DataType\":");
                json::write_string(&mut out, data_type);
                out.extend_from_slice(b",\"StringValue\":");
                json::write_string(&mut out, value);
                out.push(b'}');
            }
            out.push(b'}');
        }
        if let Some(group) = &m.group_id {
            out.extend_from_slice(b",\"MessageGroupId\":");
            json::write_string(&mut out, group);
        }
        if let Some(dedup) = m.deduplication_id() {
            out.extend_from_slice(b",\"MessageDeduplicationId\":");
            json::write_string(&mut out, dedup);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// The failed entries of a `SendMessageBatch` answer, checked against the batch it answers
/// (see [`account_for`]: every entry sent is named once, in `Successful` or `Failed`).
fn parse_answer(body: &[u8], sent: usize) -> Result<Vec<EntryFailure>, CallError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        successful: Vec<Successful>,
        #[serde(default)]
        failed: Vec<Failed>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Successful {
        id: String,
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
    let answer: Answer = serde_json::from_slice(body).map_err(|e| CallError {
        // The messages may or may not have been taken; resending risks a duplicate, which
        // at-least-once delivery allows, and never a loss.
        class: Class::Transient,
        message: format!("unreadable SendMessageBatch answer: {e}"),
    })?;
    account_for(
        sent,
        answer.successful.iter().map(|s| s.id.as_str()),
        answer.failed.iter().map(|f| {
            let message = f.message.as_deref().unwrap_or_default();
            (f.id.as_str(), f.sender_fault, f.code.as_str(), message)
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::direct::tests::endpoints;
    use crate::aws::sqs::Attribute;

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
            dedup_id: group.map(|_| format!("dedup-{row_id}")),
            packed: None,
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

    #[tokio::test]
    async fn the_endpoint_follows_the_sdks_rules() {
        let got = endpoints(|sdk| async move {
            DirectSqs::new(&sdk, crate::aws::transport::Transport::new().calls())
                .await
                .expect("set up")
                .client
        })
        .await;
        assert_eq!(
            got,
            [
                "https://sqs.eu-west-1.amazonaws.com/",
                "https://sqs-fips.eu-west-1.amazonaws.com/",
                "http://127.0.0.1:4566/",
            ]
        );
    }

    #[test]
    fn fifo_entries_carry_group_and_deduplication_id() {
        let body = request_body("u", &[row("b", "id-b", Some("user#1"))]);
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got["Entries"][0]["MessageGroupId"], "user#1");
        assert_eq!(got["Entries"][0]["MessageDeduplicationId"], "dedup-id-b");
    }

    #[test]
    fn failed_entries_are_read_from_a_200_answer() {
        let answer = br#"{"Successful":[{"Id":"0","MessageId":"m","MD5OfMessageBody":"x"}],
            "Failed":[{"Id":"2","SenderFault":false,"Code":"InternalError","Message":"try again"},
                      {"Id":"1","SenderFault":true,"Code":"InvalidParameterValue"}]}"#;
        let failed = parse_answer(answer, 3).unwrap();
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
        let all_ok = br#"{"Successful":[{"Id":"1"},{"Id":"0"},{"Id":"2"}],"Failed":[]}"#;
        assert!(parse_answer(all_ok, 3).unwrap().is_empty());
    }

    /// An answer that does not name every entry sent exactly once says nothing about the
    /// rows left out: reading it as "no failures" would count them as accepted.
    #[test]
    fn an_answer_that_does_not_account_for_every_entry_is_retried_not_believed() {
        let cases: [(&[u8], &str); 7] = [
            (br#"{}"#, "3 of 3 entries"),
            (br#"{"Successful":[]}"#, "3 of 3 entries"),
            (br#"{"Successful":[],"Failed":[]}"#, "3 of 3 entries"),
            (
                br#"{"Successful":[{"Id":"0"},{"Id":"2"}]}"#,
                "1 of 3 entries",
            ),
            (
                br#"{"Successful":[{"Id":"0"},{"Id":"1"},{"Id":"1"},{"Id":"2"}]}"#,
                "\"1\" named twice",
            ),
            (
                br#"{"Successful":[{"Id":"0"},{"Id":"1"}],
                    "Failed":[{"Id":"1","SenderFault":false,"Code":"InternalError"}]}"#,
                "\"1\" named twice",
            ),
            (
                br#"{"Successful":[{"Id":"0"},{"Id":"1"},{"Id":"2"},{"Id":"3"}]}"#,
                "\"3\" was not sent",
            ),
        ];
        for (answer, why) in cases {
            let e = parse_answer(answer, 3).unwrap_err();
            assert_eq!(e.class, Class::Transient, "{}", e.message);
            assert!(e.message.contains(why), "{why}: {}", e.message);
        }
    }

    #[test]
    fn a_failure_for_an_entry_not_sent_is_an_error_not_a_lost_row() {
        let answer = br#"{"Successful":[{"Id":"0"},{"Id":"1"},{"Id":"2"}],
            "Failed":[{"Id":"7","SenderFault":false,"Code":"InternalError"}]}"#;
        let e = parse_answer(answer, 3).unwrap_err();
        assert_eq!(e.class, Class::Transient);
        assert!(e.message.contains("\"7\""), "{}", e.message);
        let e = parse_answer(br#"{"Successful":[{"Id":"x"}]}"#, 1).unwrap_err();
        assert!(e.message.contains("\"x\""), "{}", e.message);
    }
}
