//! A Scan answer's item JSON straight to a message body ([`RowWriter::seed`]): strings are
//! copied as they stand, numbers with DynamoDB's digits, and only the key attributes become
//! `AttributeValue`s.

use std::borrow::Cow;
use std::fmt;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::json;

use super::body::{Row, RowWriter, exact_number};
use super::{Item, OutputFormat};

impl<'a> RowWriter<'a> {
    /// A row from the DynamoDB JSON of one item (`{"PK":{"S":"a"},…}`); the tests' way in
    /// to [`Self::seed`], which the Scan answer reader uses inside its own parse.
    #[cfg(test)]
    pub fn from_json(&mut self, raw: &str) -> Result<Row, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let row = serde::de::DeserializeSeed::deserialize(self.seed(), &mut de)?;
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
pub struct RowSeed<'w, 'a>(pub(super) &'w mut RowWriter<'a>);

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
