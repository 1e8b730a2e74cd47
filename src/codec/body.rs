//! An item the SDK read, as a message body: `encode`, the `Row` and its writer, and the
//! `Serialize` wrappers that write each format.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as B64;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::json;

use super::{Item, OutputFormat};

/// Serializes one item as a message body in the configured format, fit for SQS
/// ([`json::sqs_safe`]).
///
/// `capacity` is the caller's guess at the body's size: a buffer that starts right is written
/// once, where one that starts small is reallocated and copied at every doubling (four times
/// for a 1 KB row), and this runs once per row.
pub fn encode(
    item: &Item,
    format: OutputFormat,
    capacity: usize,
) -> Result<String, serde_json::Error> {
    let mut body = Vec::with_capacity(capacity);
    match format {
        OutputFormat::Plain => serde_json::to_writer(&mut body, &PlainItem(item))?,
        OutputFormat::Dynamodb => serde_json::to_writer(&mut body, &DynamoItem(item))?,
    }
    // SAFETY: serde_json writes only valid UTF-8 (`serde_json::to_string` relies on the same).
    let body = unsafe { String::from_utf8_unchecked(body) };
    Ok(json::sqs_safe(body))
}

/// A row ready to publish: its message body, and its primary-key attributes (for `row_id`, the
/// FIFO group id, and messages about the row).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub body: String,
    pub key: Item,
}

/// Turns the rows of one task into [`Row`]s: the output format, the table's key attributes, and
/// a running guess at the size of the next body.
pub struct RowWriter<'a> {
    pub(super) format: OutputFormat,
    pub(super) key_names: &'a [String],
    /// Each body's buffer is sized from the previous row's, with room for a slightly longer
    /// one; following the last row rather than the largest keeps one huge row from inflating
    /// every buffer after it. A buffer that starts right is written once, where one that starts
    /// small is reallocated and copied at every doubling (four times for a 1 KB row).
    pub(super) capacity: usize,
}

impl<'a> RowWriter<'a> {
    pub fn new(format: OutputFormat, key_names: &'a [String]) -> Self {
        Self {
            format,
            key_names,
            capacity: 256,
        }
    }

    pub(super) fn sized(&mut self, body: &[u8]) {
        self.capacity = body.len() + body.len() / 8;
    }

    /// A row from an item the SDK read; its key attributes are moved out of it, not copied.
    pub fn from_item(&mut self, mut item: Item) -> Result<Row, serde_json::Error> {
        let body = encode(&item, self.format, self.capacity)?;
        self.sized(body.as_bytes());
        let key = self
            .key_names
            .iter()
            .filter_map(|n| item.remove_entry(n))
            .collect();
        Ok(Row { body, key })
    }
}

struct PlainItem<'a>(&'a Item);
struct Plain<'a>(&'a AttributeValue);
/// An item written as DynamoDB attribute-value JSON.
pub struct DynamoItem<'a>(pub &'a Item);
struct Dynamo<'a>(&'a AttributeValue);
struct Base64<'a>(&'a Blob);

impl Serialize for PlainItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, Plain(v))))
    }
}

impl Serialize for DynamoItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, Dynamo(v))))
    }
}

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64Display::new(self.0.as_ref(), &B64))
    }
}

/// A DynamoDB number as a JSON number with its exact digits.
///
/// DynamoDB returns numbers as decimal strings that are valid JSON numbers (`-12.50`,
/// `1E+125`). The text is embedded as-is after checking it *is* a JSON number, so nothing
/// else can be smuggled into the body through an `N` value.
struct ExactNumber<'a>(&'a str);

impl Serialize for ExactNumber<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0;
        match exact_number(text) {
            Some(raw) => raw.serialize(s),
            None => Err(S::Error::custom(format!(
                "DynamoDB number {text:?} is not a valid JSON number"
            ))),
        }
    }
}

/// `text` as a JSON number, if it is exactly one (no sign but `-`, no spaces, nothing after).
pub(super) fn exact_number(text: &str) -> Option<&RawValue> {
    let starts_like_number = text
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit());
    if !starts_like_number {
        return None;
    }
    serde_json::from_str(text).ok()
}

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AttributeValue::S(v) => s.serialize_str(v),
            AttributeValue::N(v) => ExactNumber(v).serialize(s),
            AttributeValue::Bool(v) => s.serialize_bool(*v),
            AttributeValue::Null(_) => s.serialize_unit(),
            AttributeValue::B(v) => Base64(v).serialize(s),
            AttributeValue::Ss(v) => s.collect_seq(v),
            AttributeValue::Ns(v) => s.collect_seq(v.iter().map(|n| ExactNumber(n))),
            AttributeValue::Bs(v) => s.collect_seq(v.iter().map(Base64)),
            AttributeValue::L(v) => s.collect_seq(v.iter().map(Plain)),
            AttributeValue::M(v) => s.collect_map(v.iter().map(|(k, v)| (k, Plain(v)))),
            other => Err(S::Error::custom(format!(
                "unsupported DynamoDB attribute type {other:?}"
            ))),
        }
    }
}

impl Serialize for Dynamo<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::S(v) => map.serialize_entry("S", v)?,
            AttributeValue::N(v) => map.serialize_entry("N", v)?,
            AttributeValue::Bool(v) => map.serialize_entry("BOOL", v)?,
            AttributeValue::Null(v) => map.serialize_entry("NULL", v)?,
            AttributeValue::B(v) => map.serialize_entry("B", &Base64(v))?,
            AttributeValue::Ss(v) => map.serialize_entry("SS", v)?,
            AttributeValue::Ns(v) => map.serialize_entry("NS", v)?,
            AttributeValue::Bs(v) => map.serialize_entry("BS", &Seq(v, Base64))?,
            AttributeValue::L(v) => map.serialize_entry("L", &Seq(v, Dynamo))?,
            AttributeValue::M(v) => map.serialize_entry("M", &DynamoItem(v))?,
            other => {
                return Err(S::Error::custom(format!(
                    "unsupported DynamoDB attribute type {other:?}"
                )));
            }
        }
        map.end()
    }
}

/// A slice serialized through a wrapper constructor, for use as a map value.
struct Seq<'a, T, W>(&'a [T], fn(&'a T) -> W);

impl<'a, T, W: Serialize> Serialize for Seq<'a, T, W> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&(self.1)(v))?;
        }
        seq.end()
    }
}
