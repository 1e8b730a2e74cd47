//! One `Scan` page of a segment, through either client (`scan.client`), as [`Row`]s.
//!
//! The direct client (see [`crate::aws::direct`] for why) writes the request itself and turns the
//! answer's items into rows straight from their JSON text ([`RowWriter::seed`]): the SDK's
//! typed answer, a map of `AttributeValue`s per row, was the largest single cost of the worker
//! once `SendMessageBatch` left the SDK. Pagination, the start key and the page's accounting
//! are the same for both clients, and live in the pipeline.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::scan::{ScanError as SdkScanError, ScanOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use aws_smithy_runtime_api::client::http::SharedHttpConnector;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use crate::aws::direct::{JsonClient, SetupError};
use crate::aws::retry::{self, CallError, Class};
use crate::codec::{self, DynamoItem, Item, Row, RowWriter};
use crate::telemetry;

const TARGET: &str = "DynamoDB_20120810.Scan";

/// What reads the pages.
#[derive(Clone)]
pub enum Scanner {
    /// scanfleet's own `Scan` client.
    Direct(Arc<DirectScan>),
    /// The AWS SDK.
    Sdk(aws_sdk_dynamodb::Client),
}

/// The parameters of every `Scan` request of a segment; only the start key changes from page
/// to page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScanRequest<'a> {
    pub table_name: &'a str,
    pub segment: i32,
    pub total_segments: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_expression: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression_attribute_names: Option<HashMap<String, String>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "dynamo_json"
    )]
    pub expression_attribute_values: Option<&'a HashMap<String, AttributeValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent_read: Option<bool>,
}

fn dynamo_json<S: serde::Serializer>(
    values: &Option<&HashMap<String, AttributeValue>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match values {
        Some(values) => DynamoItem(values).serialize(s),
        None => s.serialize_none(),
    }
}

/// One page: its rows and where the next one starts (`None`: the segment ends here).
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<Item>,
    /// Rows DynamoDB read for the page (`ScannedCount`: before the filter).
    pub scanned: u64,
    /// Read capacity the page consumed.
    pub units: f64,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Boxed: the SDK's error is ten times the size of the others, and every page's result
    /// would carry that size.
    #[error("scanning table failed: {0}")]
    Sdk(Box<SdkError<SdkScanError, aws_smithy_runtime_api::http::Response>>),
    #[error("scanning table failed: {0}")]
    Call(#[from] CallError),
    /// An SDK item that cannot be written as a message body.
    #[error("row could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// A direct Scan answer that cannot be read as one (see `read_answer`).
    #[error("scan answer could not be read: {0}")]
    Answer(serde_json::Error),
    /// An SDK answer's `LastEvaluatedKey` that is not a table key (an attribute type the SDK
    /// does not know, more than two attributes…): resuming from it is impossible, and writing
    /// it into a continuation task panicked.
    #[error("scan answer's LastEvaluatedKey cannot be resumed from: {0}")]
    NextKey(String),
}

impl From<SdkError<SdkScanError, aws_smithy_runtime_api::http::Response>> for ScanError {
    fn from(e: SdkError<SdkScanError, aws_smithy_runtime_api::http::Response>) -> Self {
        ScanError::Sdk(Box::new(e))
    }
}

impl Scanner {
    /// Reads the page that starts after `start` (the segment's start when `None`).
    pub async fn page(
        &self,
        request: &ScanRequest<'_>,
        start: Option<&Item>,
        rows: &mut RowWriter<'_>,
    ) -> Result<Page, ScanError> {
        match self {
            Scanner::Direct(direct) => direct.page(request, start, rows).await,
            Scanner::Sdk(client) => {
                let output = client
                    .scan()
                    .table_name(request.table_name)
                    .segment(request.segment)
                    .total_segments(request.total_segments)
                    .set_limit(request.limit)
                    .set_exclusive_start_key(start.cloned())
                    .set_filter_expression(request.filter_expression.map(str::to_owned))
                    .set_projection_expression(request.projection_expression.clone())
                    .set_expression_attribute_names(request.expression_attribute_names.clone())
                    .set_expression_attribute_values(request.expression_attribute_values.cloned())
                    .set_consistent_read(request.consistent_read)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await?;
                sdk_page(output, rows)
            }
        }
    }
}

fn sdk_page(output: ScanOutput, rows: &mut RowWriter<'_>) -> Result<Page, ScanError> {
    let units = crate::budget::page_units(output.consumed_capacity.and_then(|c| c.capacity_units));
    Ok(Page {
        rows: output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| rows.from_item(item))
            .collect::<Result<_, _>>()?,
        next: sdk_next_key(output.last_evaluated_key)?,
        scanned: u64::try_from(output.scanned_count).unwrap_or(0),
        units,
    })
}

/// The SDK answer's `LastEvaluatedKey`, held to the rules a task's `exclusive_start_key` and
/// the direct client's answer are held to ([`codec::key_from_json`]): the key goes into the
/// continuation task and the ledger as JSON, which must be possible and must read back.
fn sdk_next_key(key: Option<Item>) -> Result<Option<Item>, ScanError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let json =
        serde_json::to_value(DynamoItem(&key)).map_err(|e| ScanError::NextKey(e.to_string()))?;
    codec::key_from_json(&json)
        .map(Some)
        .map_err(|e| ScanError::NextKey(format!("{json}: {e}")))
}

/// A `Scan` client for one DynamoDB endpoint.
#[derive(Debug)]
pub struct DirectScan {
    client: JsonClient,
}

impl DirectScan {
    /// Builds the client from the same configuration the SDK clients use: region, credentials
    /// chain, `AWS_ENDPOINT_URL(_DYNAMODB)`, FIPS and dual-stack settings. The endpoint is the
    /// regional one (`dynamodb.<region>.amazonaws.com`), not an account-based one.
    pub async fn new(
        sdk: &aws_types::SdkConfig,
        http: SharedHttpConnector,
    ) -> Result<Self, SetupError> {
        let client = crate::aws::direct::json_client_for!(
            aws_sdk_dynamodb,
            "DynamoDB",
            crate::telemetry::Service::Dynamodb,
            sdk,
            http,
            account_id_endpoint_mode("disabled"),
        )?;
        Ok(Self { client })
    }

    /// One page, retrying throttling and transient failures with the task backoff (the SDK
    /// client retries those itself).
    async fn page(
        &self,
        request: &ScanRequest<'_>,
        start: Option<&Item>,
        rows: &mut RowWriter<'_>,
    ) -> Result<Page, ScanError> {
        let body = request_body(request, start);
        // A garbled answer (a `Call` error from `read_answer`) is retried like a failed call;
        // an answer that is not a valid page ends the loop with the page's error.
        let page = retry::transient(
            &mut (&self.client, body, rows),
            |(client, body, rows)| {
                Box::pin(async move {
                    let answer = client.call(TARGET, body.clone()).await?;
                    match read_answer(&answer, rows) {
                        Err(ScanError::Call(e)) => Err(e),
                        page => Ok(page),
                    }
                })
            },
            |e| telemetry::scan_retry(&e.message),
        )
        .await;
        page?
    }
}

/// The JSON request for the page after `start`.
fn request_body(request: &ScanRequest<'_>, start: Option<&Item>) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body<'a> {
        #[serde(flatten)]
        request: &'a ScanRequest<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exclusive_start_key: Option<DynamoItem<'a>>,
        return_consumed_capacity: &'static str,
    }
    serde_json::to_vec(&Body {
        request,
        exclusive_start_key: start.map(DynamoItem),
        return_consumed_capacity: "TOTAL",
    })
    .expect("keys and expression values are attribute values, which always serialize")
}

/// A 200 answer, read in one pass: its items become rows as they are read; the rest is
/// accounting. Answer text that is not JSON (cut short, garbled) is transient, read again
/// from the same key; JSON that cannot be a Scan answer (an unknown attribute type, a number
/// that is not one) is not, and fails the task naming what is wrong.
fn read_answer(body: &[u8], rows: &mut RowWriter<'_>) -> Result<Page, ScanError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    AnswerSeed(rows)
        .deserialize(&mut de)
        .and_then(|page| de.end().map(|()| page))
        .map_err(|e| match e.classify() {
            Category::Data => ScanError::Answer(e),
            Category::Io | Category::Syntax | Category::Eof => ScanError::Call(CallError {
                class: Class::Transient,
                message: format!("unreadable Scan answer: {e}"),
            }),
        })
}

struct AnswerSeed<'w, 'a>(&'w mut RowWriter<'a>);

impl<'de> DeserializeSeed<'de> for AnswerSeed<'_, '_> {
    type Value = Page;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Page, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnswerSeed<'_, '_> {
    type Value = Page;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Scan answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Page, A::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Capacity {
            #[serde(default)]
            capacity_units: Option<f64>,
        }
        let mut page = Page {
            rows: Vec::new(),
            next: None,
            scanned: 0,
            units: 0.0,
        };
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "Items" => page.rows = map.next_value_seed(RowsSeed(&mut *self.0))?,
                "LastEvaluatedKey" => {
                    let key: serde_json::Value = map.next_value()?;
                    if key.as_object().is_some_and(|k| !k.is_empty()) {
                        page.next = Some(codec::key_from_json(&key).map_err(|e| {
                            de::Error::custom(format!("LastEvaluatedKey {key}: {e}"))
                        })?);
                    }
                }
                "ScannedCount" => page.scanned = map.next_value()?,
                "ConsumedCapacity" => {
                    let capacity: Option<Capacity> = map.next_value()?;
                    page.units = crate::budget::page_units(capacity.and_then(|c| c.capacity_units));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
}

/// The answer's `Items`, each read into a row.
struct RowsSeed<'w, 'a>(&'w mut RowWriter<'a>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = Vec<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Row>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = Vec<Row>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Row>, A::Error> {
        let mut rows = Vec::new();
        while let Some(row) = seq.next_element_seed(self.0.seed())? {
            rows.push(row);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::aws::direct::tests::endpoints;
    use crate::settings::OutputFormat;

    fn request(values: Option<&HashMap<String, AttributeValue>>) -> ScanRequest<'_> {
        ScanRequest {
            table_name: "items",
            segment: 3,
            total_segments: 16,
            limit: Some(500),
            filter_expression: Some("#s = :s"),
            projection_expression: None,
            expression_attribute_names: Some(HashMap::from([("#s".into(), "status".into())])),
            expression_attribute_values: values,
            consistent_read: None,
        }
    }

    #[test]
    fn the_request_carries_the_segment_expressions_and_start_key() {
        let values = HashMap::from([(":s".to_owned(), AttributeValue::S("open".into()))]);
        let start = Item::from([("PK".to_owned(), AttributeValue::S("k-9".into()))]);
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request(Some(&values)), Some(&start))).unwrap();
        assert_eq!(
            body,
            json!({
                "TableName": "items", "Segment": 3, "TotalSegments": 16, "Limit": 500,
                "FilterExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": {"S": "open"}},
                "ExclusiveStartKey": {"PK": {"S": "k-9"}},
                "ReturnConsumedCapacity": "TOTAL",
            })
        );
        let first: serde_json::Value =
            serde_json::from_slice(&request_body(&request(None), None)).unwrap();
        assert!(first.get("ExclusiveStartKey").is_none());
        assert!(first.get("ExpressionAttributeValues").is_none());
    }

    #[test]
    fn an_answer_becomes_rows_a_next_key_and_its_accounting() {
        let keys = ["PK".to_owned()];
        let mut rows = RowWriter::new(OutputFormat::Plain, &keys);
        let answer = br#"{"Count":2,"Items":[{"PK":{"S":"a"},"n":{"N":"1"}},{"PK":{"S":"b"}}],
            "LastEvaluatedKey":{"PK":{"S":"b"}},"ScannedCount":5,
            "ConsumedCapacity":{"TableName":"items","CapacityUnits":2.5}}"#;
        let page = read_answer(answer, &mut rows).unwrap();
        let bodies: Vec<&str> = page.rows.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies, [r#"{"PK":"a","n":1}"#, r#"{"PK":"b"}"#]);
        assert_eq!(page.rows[1].key["PK"], AttributeValue::S("b".into()));
        assert_eq!(page.next.unwrap()["PK"], AttributeValue::S("b".into()));
        assert_eq!((page.scanned, page.units), (5, 2.5));

        let last = read_answer(br#"{"Items":[],"Count":0,"ScannedCount":0}"#, &mut rows).unwrap();
        assert!(last.rows.is_empty() && last.next.is_none());
        let empty_key = read_answer(br#"{"Items":[],"LastEvaluatedKey":{}}"#, &mut rows).unwrap();
        assert!(empty_key.next.is_none());
        // Consumed capacity is bounded as it is read: it feeds the budget, a gauge and the
        // ledger's sums, which a negative or absurd figure would run backwards or to infinity.
        for (units, taken) in [("-5", 0.0), ("1e308", crate::budget::MAX_PAGE_UNITS)] {
            let answer =
                format!(r#"{{"Items":[],"ConsumedCapacity":{{"CapacityUnits":{units}}}}}"#);
            let page = read_answer(answer.as_bytes(), &mut rows).unwrap();
            assert_eq!(page.units, taken, "{units}");
        }
        let sdk = ScanOutput::builder()
            .consumed_capacity(
                aws_sdk_dynamodb::types::ConsumedCapacity::builder()
                    .capacity_units(-1.0)
                    .build(),
            )
            .build();
        assert_eq!(sdk_page(sdk, &mut rows).unwrap().units, 0.0);
    }

    /// A LastEvaluatedKey that is no table key fails the page (an `Unknown` attribute type,
    /// which only the SDK's parser can make, is tested in tests/mocks.rs).
    #[test]
    fn an_sdk_next_key_that_is_no_table_key_fails_the_page() {
        let keys = ["PK".to_owned()];
        let mut rows = RowWriter::new(OutputFormat::Plain, &keys);
        let page_with = |key: Item| {
            ScanOutput::builder()
                .set_last_evaluated_key(Some(key))
                .build()
        };
        let good = HashMap::from([("PK".to_owned(), AttributeValue::S("a".into()))]);
        let page = sdk_page(page_with(good.clone()), &mut rows).unwrap();
        assert_eq!(page.next, Some(good));
        assert!(
            sdk_page(page_with(HashMap::new()), &mut rows)
                .unwrap()
                .next
                .is_none()
        );
        for bad in [
            HashMap::from([("PK".to_owned(), AttributeValue::Bool(true))]),
            HashMap::from([
                ("A".to_owned(), AttributeValue::S("a".into())),
                ("B".to_owned(), AttributeValue::S("b".into())),
                ("C".to_owned(), AttributeValue::S("c".into())),
            ]),
        ] {
            match sdk_page(page_with(bad.clone()), &mut rows) {
                Err(e @ ScanError::NextKey(_)) => {
                    assert!(e.to_string().contains("LastEvaluatedKey"), "{e}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_garbled_answer_is_transient_and_a_bad_row_is_not_a_call_error() {
        let keys = ["PK".to_owned()];
        let mut rows = RowWriter::new(OutputFormat::Plain, &keys);
        for garbled in [&b"<html>"[..], br#"{"Items":[{"PK":{"S":"a"}}"#] {
            match read_answer(garbled, &mut rows) {
                Err(ScanError::Call(e)) => assert_eq!(e.class, Class::Transient),
                other => panic!("{other:?}"),
            }
        }
        match read_answer(br#"{"Items":[{"PK":{"X":"1"}}]}"#, &mut rows) {
            Err(ScanError::Answer(e)) => assert!(e.to_string().contains("\"X\""), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_endpoint_follows_the_sdks_rules() {
        let got = endpoints(|sdk| async move {
            DirectScan::new(&sdk, crate::aws::transport::Transport::new().calls())
                .await
                .expect("set up")
                .client
        })
        .await;
        assert_eq!(
            got,
            [
                "https://dynamodb.eu-west-1.amazonaws.com/",
                "https://dynamodb-fips.eu-west-1.amazonaws.com/",
                "http://127.0.0.1:4566/",
            ]
        );
    }
}
