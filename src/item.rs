//! DynamoDB items to message bodies, and DynamoDB JSON keys to `AttributeValue`s.
//!
//! Pure logic, no I/O. A row becomes a message body in one of two ways: from the SDK's
//! `AttributeValue`s through `Serialize` wrappers ([`RowWriter::from_item`]), or straight from
//! the DynamoDB JSON of a Scan answer ([`RowWriter::seed`]), which copies the JSON text of
//! strings as it stands instead of unescaping and escaping it again. Neither builds an
//! intermediate `serde_json::Value`, and numbers are written with exactly the digits DynamoDB
//! returned (a 38-digit number never passes through `f64`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::json;

pub type Item = HashMap<String, AttributeValue>;

/// The body format of the output messages (`output.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The item as ordinary JSON (`{"PK":"a","n":12}`).
    Plain,
    /// DynamoDB attribute-value JSON (`{"PK":{"S":"a"},"n":{"N":"12"}}`).
    Dynamodb,
}

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
    format: OutputFormat,
    key_names: &'a [String],
    /// Each body's buffer is sized from the previous row's, with room for a slightly longer
    /// one; following the last row rather than the largest keeps one huge row from inflating
    /// every buffer after it. A buffer that starts right is written once, where one that starts
    /// small is reallocated and copied at every doubling (four times for a 1 KB row).
    capacity: usize,
}

impl<'a> RowWriter<'a> {
    pub fn new(format: OutputFormat, key_names: &'a [String]) -> Self {
        Self {
            format,
            key_names,
            capacity: 256,
        }
    }

    fn sized(&mut self, body: &[u8]) {
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

    /// A row from the DynamoDB JSON of one item (`{"PK":{"S":"a"},…}`); the tests' way in
    /// to [`Self::seed`], which the Scan answer reader uses inside its own parse.
    #[cfg(test)]
    pub fn from_json(&mut self, raw: &str) -> Result<Row, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let row = self.seed().deserialize(&mut de)?;
        de.end()?;
        Ok(row)
    }

    /// Reads one item from a deserializer, as a Scan answer carries it, into a row: the body is
    /// written while the item is read, and only the key attributes become `AttributeValue`s.
    pub fn seed(&mut self) -> RowSeed<'_, 'a> {
        RowSeed(self)
    }
}

/// See [`RowWriter::seed`].
pub struct RowSeed<'w, 'a>(&'w mut RowWriter<'a>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = Row;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        let writer = self.0;
        let mut body = Vec::with_capacity(writer.capacity);
        let key = ItemSeed {
            out: &mut body,
            format: writer.format,
            key_names: writer.key_names,
        }
        .deserialize(d)?;
        writer.sized(&body);
        // Only slices of the input's strings (UTF-8, as the parser checked) and ASCII were
        // written, so this does not fail; checking costs a fraction of what reading the item
        // did, and an error names the row rather than a panic ending the worker.
        let body = String::from_utf8(body).map_err(de::Error::custom)?;
        // The answer's strings are copied as they stand, U+FFFE and U+FFFF included.
        Ok(Row {
            body: json::sqs_safe(body),
            key,
        })
    }
}

/// An attribute or type name, borrowed from the JSON text unless it holds escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a DynamoDB-JSON item (`{"name": {"S": "a"}, …}`), writes it to `out` in `format`, and
/// returns its attributes named in `key_names`.
struct ItemSeed<'o, 'k> {
    out: &'o mut Vec<u8>,
    format: OutputFormat,
    key_names: &'k [String],
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = Item;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_, '_> {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut key = Item::new();
        self.out.push(b'{');
        let mut first = true;
        while let Some(Name(name)) = map.next_key::<Name>()? {
            if !first {
                self.out.push(b',');
            }
            first = false;
            json::write_string(self.out, &name);
            self.out.push(b':');
            let capture = self.key_names.iter().any(|k| *k == name);
            let value = map.next_value_seed(ValueSeed {
                out: self.out,
                format: self.format,
                capture,
            })?;
            // One of the item's one or two key attributes: also kept as an `AttributeValue`.
            if let Some(value) = value {
                key.insert(name.into_owned(), value);
            }
        }
        self.out.push(b'}');
        Ok(key)
    }
}

/// Reads one attribute value (`{"S": "a"}`) and writes it in `format`: `"a"` (plain) or
/// `{"S":"a"}` (dynamodb, compact whatever the spacing read). Strings and binaries (base64
/// text either way) are copied as the JSON text they are. With `capture`, a scalar (S, N or
/// B: the types a key attribute can have) is also returned as an `AttributeValue`.
struct ValueSeed<'o> {
    out: &'o mut Vec<u8>,
    format: OutputFormat,
    capture: bool,
}

/// The JSON text of a string, checked to be one.
fn string_text<'de, E: de::Error>(raw: &'de RawValue, ty: &str) -> Result<&'de str, E> {
    let text = raw.get();
    if text.starts_with('"') {
        Ok(text)
    } else {
        Err(E::custom(format!("{ty} takes a string, got {text}")))
    }
}

/// A DynamoDB number (`"-12.50"`), checked to be a JSON number: its digits for the plain
/// format, the string as read for dynamodb.
fn number_text<E: de::Error>(raw: &RawValue, format: OutputFormat) -> Result<&str, E> {
    let text = string_text(raw, "N")?;
    let digits = &text[1..text.len() - 1];
    match exact_number(digits) {
        Some(_) if format == OutputFormat::Plain => Ok(digits),
        Some(_) => Ok(text),
        None => Err(E::custom(format!(
            "DynamoDB number {text} is not a valid JSON number"
        ))),
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Option<AttributeValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Option<AttributeValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB attribute value like {\"S\":\"a\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (out, format) = (self.out, self.format);
        let mut captured = None;
        let Some(Name(ty)) = map.next_key::<Name>()? else {
            return Err(de::Error::custom("an attribute value without a type"));
        };
        let typed = format == OutputFormat::Dynamodb;
        if typed {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(ty.as_bytes());
            out.extend_from_slice(b"\":");
        }
        match &*ty {
            "S" | "B" => {
                let raw: &RawValue = map.next_value()?;
                let text = string_text(raw, &ty)?;
                out.extend_from_slice(text.as_bytes());
                if self.capture {
                    let unescaped: String =
                        serde_json::from_str(text).map_err(de::Error::custom)?;
                    captured = Some(if &*ty == "S" {
                        AttributeValue::S(unescaped)
                    } else {
                        let bytes = B64.decode(&unescaped).map_err(|_| {
                            de::Error::custom(format!("B value {text} is not base64"))
                        })?;
                        AttributeValue::B(Blob::new(bytes))
                    });
                }
            }
            "N" => {
                let raw: &RawValue = map.next_value()?;
                let text = number_text(raw, format)?;
                out.extend_from_slice(text.as_bytes());
                if self.capture {
                    let digits = text.trim_matches('"');
                    captured = Some(AttributeValue::N(digits.to_owned()));
                }
            }
            "BOOL" => {
                let v: bool = map.next_value()?;
                out.extend_from_slice(if v { b"true" } else { b"false" });
            }
            "NULL" => {
                let v: bool = map.next_value()?;
                out.extend_from_slice(match (typed, v) {
                    (false, _) => b"null",
                    (true, true) => b"true",
                    (true, false) => b"false",
                });
            }
            "SS" | "BS" | "NS" => map.next_value_seed(ListSeed {
                out,
                format,
                element: ListOf::Scalar(if &*ty == "NS" { "N" } else { "S" }),
            })?,
            "L" => map.next_value_seed(ListSeed {
                out,
                format,
                element: ListOf::Values,
            })?,
            "M" => {
                map.next_value_seed(ItemSeed {
                    out,
                    format,
                    key_names: &[],
                })?;
            }
            other => {
                return Err(de::Error::custom(format!(
                    "unsupported DynamoDB attribute type {other:?}"
                )));
            }
        }
        if typed {
            out.push(b'}');
        }
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "an attribute value has one type, this one more than {ty:?}"
            )));
        }
        Ok(captured)
    }
}

/// What a list attribute holds.
#[derive(Clone, Copy)]
enum ListOf {
    /// `SS`, `BS` (strings, "S") or `NS` (numbers, "N").
    Scalar(&'static str),
    /// `L`: attribute values.
    Values,
}

/// Reads a list (`SS`, `NS`, `BS`, `L`) and writes it as a JSON array in `format`.
struct ListSeed<'o> {
    out: &'o mut Vec<u8>,
    format: OutputFormat,
    element: ListOf,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, format) = (self.out, self.format);
        out.push(b'[');
        let mut first = true;
        loop {
            if !first {
                // Written before the element is read: a `]` instead ends the list, and the
                // comma is taken back below.
                out.push(b',');
            }
            let more = match self.element {
                ListOf::Values => seq
                    .next_element_seed(ValueSeed {
                        out,
                        format,
                        capture: false,
                    })?
                    .is_some(),
                ListOf::Scalar(ty) => match seq.next_element::<&RawValue>()? {
                    Some(raw) => {
                        let text = if ty == "N" {
                            number_text(raw, format)?
                        } else {
                            string_text(raw, ty)?
                        };
                        out.extend_from_slice(text.as_bytes());
                        true
                    }
                    None => false,
                },
            };
            if !more {
                if !first {
                    out.pop();
                }
                break;
            }
            first = false;
        }
        out.push(b']');
        Ok(())
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
fn exact_number(text: &str) -> Option<&RawValue> {
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

/// Why a DynamoDB-JSON key could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("must be an object of 1 or 2 key attributes, like {{\"PK\":{{\"S\":\"a\"}}}}")]
    Shape,
    #[error(
        "attribute {0:?} must be {{\"S\": string}}, {{\"N\": string}} or {{\"B\": base64 string}}"
    )]
    Value(String),
    #[error("attribute {0:?}: {1}")]
    Invalid(String, String),
}

/// DynamoDB's number limits: at most 38 significant digits, and a non-zero magnitude from
/// 1E-130 up to (not including) 1E+126.
const NUMBER_DIGITS: usize = 38;
const NUMBER_MIN_EXPONENT: i64 = -130;
const NUMBER_MAX_EXPONENT: i64 = 125;

/// Whether `text` is a number DynamoDB accepts as an `N` value (in a key or an expression
/// value), and if not, why. The syntax is DynamoDB's (a decimal, as Java's `BigDecimal`
/// reads it): an optional sign (`+` or `-`), digits with an optional decimal point (at least
/// one digit on either side: `007`, `1.`, `.5`), an optional exponent (`e` or `E`, optional
/// sign, digits) and nothing else, no spaces, `NaN` or `Infinity`. Leading and trailing zeros
/// are not significant; what is left may have at most 38 digits, and a number other than 0
/// must be at least 1E-130 and below 1E+126 in magnitude.
pub fn dynamodb_number(text: &str) -> Result<(), String> {
    let not_a_number = || format!("{text:?} is not a number");
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits_from = |i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_len = digits_from(i);
    let int = &b[i..i + int_len];
    i += int_len;
    let frac: &[u8] = if b.get(i) == Some(&b'.') {
        let len = digits_from(i + 1);
        let frac = &b[i + 1..i + 1 + len];
        i += 1 + len;
        frac
    } else {
        &[]
    };
    if int.is_empty() && frac.is_empty() {
        return Err(not_a_number());
    }
    let mut exponent: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(matches!(b.get(i), Some(b'+' | b'-')));
        let len = digits_from(i);
        // BigDecimal's exponent is an int.
        let magnitude: i64 = text[i..i + len].parse().map_err(|_| not_a_number())?;
        exponent = if negative { -magnitude } else { magnitude };
        if i32::try_from(exponent).is_err() {
            return Err(format!("{text:?}: the exponent is out of range"));
        }
        i += len;
    }
    if i != b.len() {
        return Err(not_a_number());
    }
    // The value is `digits` × 10^`scale`, its significant digits without the zeros around them.
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        return Ok(()); // zero, whatever its exponent
    };
    let last = digits.iter().rposition(|&d| d != b'0').unwrap_or(first);
    let significant = last - first + 1;
    if significant > NUMBER_DIGITS {
        return Err(format!(
            "{text:?} has {significant} significant digits; DynamoDB keeps at most {NUMBER_DIGITS}"
        ));
    }
    let too_long = || format!("{text:?} is too long");
    let trailing = i64::try_from(digits.len() - 1 - last).map_err(|_| too_long())?;
    let frac_len = i64::try_from(frac.len()).map_err(|_| too_long())?;
    // The power of ten of the leading significant digit (1.5E3 → 3).
    let leading = exponent - frac_len + trailing + (significant as i64 - 1);
    if !(NUMBER_MIN_EXPONENT..=NUMBER_MAX_EXPONENT).contains(&leading) {
        return Err(format!(
            "{text:?} is out of DynamoDB's range: a number other than 0 is 1E-130 or more and less than 1E+126 in magnitude"
        ));
    }
    Ok(())
}

/// Reads a key (e.g. a `LastEvaluatedKey`) from DynamoDB attribute-value JSON.
///
/// Key attributes are always scalars (S, N or B), and a table key has one or two of them.
pub fn key_from_json(v: &serde_json::Value) -> Result<Item, KeyError> {
    let obj = v.as_object().ok_or(KeyError::Shape)?;
    if obj.is_empty() || obj.len() > 2 {
        return Err(KeyError::Shape);
    }
    let mut key = HashMap::with_capacity(obj.len());
    for (name, value) in obj {
        let typed = value
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| KeyError::Value(name.clone()))?;
        let (ty, inner) = typed.iter().next().expect("len checked");
        let text = inner
            .as_str()
            .ok_or_else(|| KeyError::Value(name.clone()))?;
        let attr = match ty.as_str() {
            "S" if !text.is_empty() => AttributeValue::S(text.to_owned()),
            "S" => return Err(KeyError::Invalid(name.clone(), "empty string".into())),
            "N" => {
                dynamodb_number(text).map_err(|e| KeyError::Invalid(name.clone(), e))?;
                AttributeValue::N(text.to_owned())
            }
            "B" => match B64.decode(text) {
                Ok(bytes) if !bytes.is_empty() => AttributeValue::B(Blob::new(bytes)),
                _ => {
                    return Err(KeyError::Invalid(
                        name.clone(),
                        "not non-empty base64".into(),
                    ));
                }
            },
            _ => return Err(KeyError::Value(name.clone())),
        };
        key.insert(name.clone(), attr);
    }
    Ok(key)
}

/// Writes a key as DynamoDB attribute-value JSON; the inverse of [`key_from_json`].
pub fn key_to_json(key: &Item) -> serde_json::Value {
    serde_json::to_value(DynamoItem(key)).expect("keys are scalars and always serialize")
}

/// Reads any attribute value from DynamoDB attribute-value JSON (`{"S":"a"}`, `{"L":[…]}`, …),
/// e.g. an `expression_attribute_values` entry. The error says what is wrong where.
pub fn value_from_json(v: &serde_json::Value) -> Result<AttributeValue, String> {
    let typed = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("must be an object with exactly one type key, like {\"S\":\"a\"}")?;
    let (ty, inner) = typed.iter().next().expect("len checked");
    let string = |x: &serde_json::Value| {
        x.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{ty} takes a string, got {x}"))
    };
    let number = |x: &serde_json::Value| {
        let text = string(x)?;
        dynamodb_number(&text).map(|()| text)
    };
    let blob = |x: &serde_json::Value| {
        let text = string(x)?;
        B64.decode(&text)
            .map(Blob::new)
            .map_err(|_| format!("{text:?} is not base64"))
    };
    let list = |x: &serde_json::Value| {
        x.as_array()
            .cloned()
            .ok_or_else(|| format!("{ty} takes an array, got {x}"))
    };
    Ok(match ty.as_str() {
        "S" => AttributeValue::S(string(inner)?),
        "N" => AttributeValue::N(number(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "BOOL" => AttributeValue::Bool(
            inner
                .as_bool()
                .ok_or_else(|| format!("BOOL takes true or false, got {inner}"))?,
        ),
        "NULL" if inner == &serde_json::Value::Bool(true) => AttributeValue::Null(true),
        "NULL" => return Err(format!("NULL takes true, got {inner}")),
        "SS" => AttributeValue::Ss(list(inner)?.iter().map(string).collect::<Result<_, _>>()?),
        "NS" => AttributeValue::Ns(list(inner)?.iter().map(number).collect::<Result<_, _>>()?),
        "BS" => AttributeValue::Bs(list(inner)?.iter().map(blob).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            list(inner)?
                .iter()
                .map(value_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(
            inner
                .as_object()
                .ok_or_else(|| format!("M takes an object, got {inner}"))?
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        value_from_json(v).map_err(|e| format!("{k}: {e}"))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("unknown DynamoDB type {other:?}")),
    })
}

/// Writes an item (or a map of values) as DynamoDB attribute-value JSON; the inverse of
/// [`value_from_json`] applied to each entry.
pub fn item_to_json(item: &Item) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(DynamoItem(item))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn every_type() -> Item {
        item(vec![
            ("s", AttributeValue::S("héllo \"q\"\n".into())),
            (
                "n",
                AttributeValue::N("12345678901234567890123456789012345678".into()),
            ),
            (
                "dec",
                AttributeValue::N("-0.000000000000000000000000000000000001".into()),
            ),
            ("exp", AttributeValue::N("1E+125".into())),
            ("t", AttributeValue::Bool(true)),
            ("null", AttributeValue::Null(true)),
            ("b", AttributeValue::B(Blob::new(vec![0u8, 1, 2, 255]))),
            ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into(), "2.50".into()])),
            ("bs", AttributeValue::Bs(vec![Blob::new(b"hi".to_vec())])),
            (
                "l",
                AttributeValue::L(vec![
                    AttributeValue::N("7".into()),
                    AttributeValue::S("x".into()),
                ]),
            ),
            (
                "m",
                AttributeValue::M(item(vec![("inner", AttributeValue::Null(true))])),
            ),
        ])
    }

    #[test]
    fn plain_maps_every_type() {
        let body = encode(&every_type(), OutputFormat::Plain, 0).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let expected = json!({
            "s": "héllo \"q\"\n",
            "t": true,
            "null": null,
            "b": "AAEC/w==",
            "ss": ["a", "b"],
            "bs": ["aGk="],
            "l": [7, "x"],
            "m": {"inner": null}
        });
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&parsed[k], v, "attribute {k}");
        }
        for k in ["n", "dec", "exp"] {
            assert!(parsed[k].is_number(), "{k} is not a JSON number: {body}");
        }
        // Numbers keep exactly the digits DynamoDB returned: check the raw text.
        for digits in [
            r#""n":12345678901234567890123456789012345678"#,
            r#""dec":-0.000000000000000000000000000000000001"#,
            r#""exp":1E+125"#,
            r#""ns":[1,2.50]"#,
        ] {
            assert!(body.contains(digits), "{digits} missing from {body}");
        }
    }

    #[test]
    fn dynamodb_format_is_attribute_value_json() {
        let body = encode(&every_type(), OutputFormat::Dynamodb, 0).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            json!({
                "s": {"S": "héllo \"q\"\n"},
                "n": {"N": "12345678901234567890123456789012345678"},
                "dec": {"N": "-0.000000000000000000000000000000000001"},
                "exp": {"N": "1E+125"},
                "t": {"BOOL": true},
                "null": {"NULL": true},
                "b": {"B": "AAEC/w=="},
                "ss": {"SS": ["a", "b"]},
                "ns": {"NS": ["1", "2.50"]},
                "bs": {"BS": ["aGk="]},
                "l": {"L": [{"N": "7"}, {"S": "x"}]},
                "m": {"M": {"inner": {"NULL": true}}}
            })
        );
    }

    /// The two ways to a row agree: read from a Scan answer's JSON, or from the SDK's items.
    #[test]
    fn rows_from_json_equal_rows_from_items_in_both_formats() {
        let keys = ["n".to_owned(), "s".to_owned()];
        let raw = item_to_json(&every_type()).unwrap().to_string();
        for format in [OutputFormat::Plain, OutputFormat::Dynamodb] {
            let from_json = RowWriter::new(format, &keys).from_json(&raw).unwrap();
            let from_item = RowWriter::new(format, &keys)
                .from_item(every_type())
                .unwrap();
            assert_eq!(from_json.key, from_item.key, "{format:?}");
            assert_eq!(from_json.key.len(), 2);
            let parse = |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap();
            assert_eq!(parse(&from_json.body), parse(&from_item.body), "{format:?}");
        }
        // Exact digits, in lists too, and nothing passes through f64.
        let plain = RowWriter::new(OutputFormat::Plain, &keys)
            .from_json(&raw)
            .unwrap()
            .body;
        for digits in [
            r#""n":12345678901234567890123456789012345678"#,
            r#""exp":1E+125"#,
            r#""ns":[1,2.50]"#,
            r#""l":[7,"x"]"#,
        ] {
            assert!(plain.contains(digits), "{digits} missing from {plain}");
        }
    }

    /// DynamoDB stores U+FFFE and U+FFFF, SQS refuses them: both encoders, in both formats,
    /// write them as JSON escapes (in values, names, lists, maps and the key), and the body
    /// still parses to the item's value. A Scan answer may carry them raw or escaped.
    #[test]
    fn characters_sqs_refuses_are_written_as_escapes_by_both_encoders() {
        let odd = "a\u{FFFF}b\u{FFFE} \u{2028} 😀 \u{FFFD}";
        let odd_item = || {
            item(vec![
                ("PK", AttributeValue::S(odd.into())),
                ("name\u{FFFF}", AttributeValue::S("x".into())),
                ("ss", AttributeValue::Ss(vec![odd.into()])),
                ("l", AttributeValue::L(vec![AttributeValue::S(odd.into())])),
                (
                    "m",
                    AttributeValue::M(item(vec![("\u{FFFE}", AttributeValue::S(odd.into()))])),
                ),
            ])
        };
        let keys = ["PK".to_owned()];
        let raw = item_to_json(&odd_item()).unwrap().to_string();
        let escaped = raw
            .replace('\u{FFFF}', r"\uffff")
            .replace('\u{FFFE}', r"\ufffe");
        for format in [OutputFormat::Plain, OutputFormat::Dynamodb] {
            let expected: serde_json::Value =
                serde_json::from_str(&encode(&odd_item(), format, 0).unwrap()).unwrap();
            let rows = [
                RowWriter::new(format, &keys).from_item(odd_item()).unwrap(),
                RowWriter::new(format, &keys).from_json(&raw).unwrap(),
                RowWriter::new(format, &keys).from_json(&escaped).unwrap(),
            ];
            for row in rows {
                assert!(json::sqs_accepts(&row.body), "{format:?}: {:?}", row.body);
                let parsed: serde_json::Value = serde_json::from_str(&row.body).unwrap();
                assert_eq!(parsed, expected, "{format:?}: {}", row.body);
                assert_eq!(row.key["PK"], AttributeValue::S(odd.into()));
            }
        }
        let plain = encode(&odd_item(), OutputFormat::Plain, 0).unwrap();
        assert!(plain.contains(r#""PK":"a\uFFFFb\uFFFE"#), "{plain}");
    }

    #[test]
    fn strings_keep_their_json_text_and_keys_are_unescaped() {
        let raw = r#"{"PK":{"S":"caf\u00e9 \/ \"q\""},"n\u0061me":{"S":"a\\b"},"e":{"L":[]},"m":{"M":{}}}"#;
        let keys = ["PK".to_owned()];
        let row = RowWriter::new(OutputFormat::Plain, &keys)
            .from_json(raw)
            .unwrap();
        assert_eq!(row.key["PK"], AttributeValue::S("café / \"q\"".into()));
        let body: serde_json::Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(
            body,
            json!({"PK": "café / \"q\"", "name": "a\\b", "e": [], "m": {}})
        );
    }

    #[test]
    fn the_dynamodb_format_is_written_compact_whatever_the_spacing_read() {
        let raw = r#"{ "PK" : { "S" : "a b" }, "n": {"NS": [ "1", "2" ]}, "l": {"L": [ {"NULL": true} ]} }"#;
        let row = RowWriter::new(OutputFormat::Dynamodb, &[])
            .from_json(raw)
            .unwrap();
        assert_eq!(
            row.body,
            r#"{"PK":{"S":"a b"},"n":{"NS":["1","2"]},"l":{"L":[{"NULL":true}]}}"#
        );
    }

    #[test]
    fn a_malformed_item_is_an_error_naming_what_is_wrong() {
        let keys = ["PK".to_owned()];
        for (raw, needle) in [
            (
                r#"{"a":{"X":"1"}}"#,
                "unsupported DynamoDB attribute type \"X\"",
            ),
            (r#"{"a":{"N":"1,\"x\":2"}}"#, "not a valid JSON number"),
            (r#"{"a":{"NS":["1","NaN"]}}"#, "not a valid JSON number"),
            (r#"{"a":{"S":1}}"#, "S takes a string"),
            (r#"{"a":{"S":"x","N":"1"}}"#, "one type"),
            (r#"{"a":{}}"#, "without a type"),
            (r#"{"a":{"S":"x"}} trailing"#, "trailing"),
        ] {
            let e = RowWriter::new(OutputFormat::Plain, &keys)
                .from_json(raw)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{raw}: {e}");
        }
    }

    #[test]
    fn a_number_that_is_not_json_is_an_error_not_an_injection() {
        for bad in ["1,\"x\":2", "NaN", "", "+1", "1e"] {
            let it = item(vec![("n", AttributeValue::N(bad.into()))]);
            assert!(
                encode(&it, OutputFormat::Plain, 0).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn n_values_are_what_dynamodb_accepts() {
        // Accepted by DynamoDB (several checked against it by ScyllaDB's Alternator tests).
        for ok in [
            "0",
            "-0",
            "007",
            "+5",
            "1.",
            ".5",
            "-.5",
            "3",
            "-7.1234",
            "-17e5",
            "-17.4E37",
            "+3",
            "0001.23",
            "1e+5",
            "1E-5",
            "0e1000",
            "0.000",
            "1e125",
            "9.99999999e125",
            "-9.9999999999999999999999999999999999999E+125",
            "1e-130",
            "-1E-130",
            "10e-131",
            "0.1e-129",
            "12345678901234567890123456789012345678",
            "3.1415926535897932384626433832795028841",
            "31415926535897932384626433832795028841e30",
            "1234567890123456789012345678901234567800000",
            "0.00012345678901234567890123456789012345678",
        ] {
            assert_eq!(dynamodb_number(ok), Ok(()), "{ok:?}");
        }
        // Refused by DynamoDB.
        for (bad, why) in [
            ("", "not a number"),
            ("+", "not a number"),
            ("-", "not a number"),
            (".", "not a number"),
            ("e5", "not a number"),
            (".e5", "not a number"),
            ("1e", "not a number"),
            ("1e+", "not a number"),
            ("1.2.3", "not a number"),
            ("++1", "not a number"),
            ("+-1", "not a number"),
            ("1 ", "not a number"),
            (" 1", "not a number"),
            ("1_000", "not a number"),
            ("0x10", "not a number"),
            ("ten", "not a number"),
            ("NaN", "not a number"),
            ("Infinity", "not a number"),
            ("-Infinity", "not a number"),
            ("١", "not a number"),
            ("1e99999999999999999999", "not a number"),
            ("1e3000000000", "exponent"),
            ("0e-3000000000", "exponent"),
            ("1e126", "range"),
            ("11e125", "range"),
            ("-1e126", "range"),
            ("1e-131", "range"),
            ("0.9e-130", "range"),
            ("-0.9e-130", "range"),
            (
                "123456789012345678901234567890123456789",
                "39 significant digits",
            ),
            ("3.14159265358979323846264338327950288419", "39 significant"),
            (
                "314159265358979323846264338327950288419e30",
                "39 significant",
            ),
        ] {
            let e = dynamodb_number(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // One rule for an expression value and a key's N value.
        for ok in ["007", "+5", "1."] {
            assert_eq!(
                value_from_json(&json!({"N": ok})),
                Ok(AttributeValue::N(ok.into()))
            );
            assert!(value_from_json(&json!({"NS": ["1", ok]})).is_ok());
            let key = key_from_json(&json!({"PK": {"N": ok}})).unwrap();
            assert_eq!(key["PK"], AttributeValue::N(ok.into()));
        }
        for bad in ["1e126", "1 ", "NaN"] {
            assert!(value_from_json(&json!({"N": bad})).is_err(), "{bad:?}");
            assert!(
                key_from_json(&json!({"PK": {"N": bad}})).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_round_trip_and_are_validated() {
        let v = json!({"PK": {"S": "a"}, "SK": {"N": "10"}});
        let key = key_from_json(&v).unwrap();
        assert_eq!(key_to_json(&key), v);
        let v = json!({"PK": {"B": "AAE="}});
        assert_eq!(key_to_json(&key_from_json(&v).unwrap()), v);
        for bad in [
            json!("PK"),
            json!({}),
            json!({"a": {"S": "1"}, "b": {"S": "2"}, "c": {"S": "3"}}),
            json!({"PK": "a"}),
            json!({"PK": {"S": 1}}),
            json!({"PK": {"S": ""}}),
            json!({"PK": {"N": "ten"}}),
            json!({"PK": {"B": "***"}}),
            json!({"PK": {"M": {}}}),
            json!({"PK": {"S": "a", "N": "1"}}),
        ] {
            assert!(key_from_json(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn any_value_round_trips_through_dynamodb_json() {
        let v = json!({
            ":s": {"S": "PREFIX-"}, ":n": {"N": "12.50"}, ":b": {"B": "AAE="},
            ":t": {"BOOL": true}, ":z": {"NULL": true}, ":ss": {"SS": ["a"]},
            ":ns": {"NS": ["1", "2"]}, ":l": {"L": [{"N": "1"}, {"S": "x"}]},
            ":m": {"M": {"k": {"S": "v"}}}
        });
        let item: Item = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v).unwrap()))
            .collect();
        assert_eq!(item_to_json(&item).unwrap(), v);
        for (bad, needle) in [
            (json!("a"), "one type key"),
            (json!({"S": 1}), "string"),
            (json!({"N": "ten"}), "not a number"),
            (json!({"X": "1"}), "unknown"),
            (json!({"NULL": false}), "NULL"),
            (json!({"M": {"k": {"N": "x"}}}), "k:"),
            (json!({"S": "a", "N": "1"}), "one type key"),
        ] {
            let e = value_from_json(&bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
