//! Key JSON ↔ `AttributeValue` (the wire format's `exclusive_start_key`, the ledger's keys),
//! and DynamoDB's rules for numbers.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Item;
use super::body::DynamoItem;

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
