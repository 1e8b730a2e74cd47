//! The codec's tests: bodies, seeds and keys against each other.

use super::*;
use crate::json;
use aws_sdk_dynamodb::primitives::Blob;
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
    let raw =
        r#"{"PK":{"S":"caf\u00e9 \/ \"q\""},"n\u0061me":{"S":"a\\b"},"e":{"L":[]},"m":{"M":{}}}"#;
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
    let raw =
        r#"{ "PK" : { "S" : "a b" }, "n": {"NS": [ "1", "2" ]}, "l": {"L": [ {"NULL": true} ]} }"#;
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
