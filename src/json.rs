//! JSON text written by hand, where serde_json's per-byte work showed in the worker's profile.

/// Appends `s` as a JSON string literal, escaped exactly as serde_json escapes it.
///
/// Row bodies are JSON, so they hold no control characters but many quotes, and packed bodies
/// (`output.rows_per_message` > 1) a newline between rows: the runs between `"`, `\` and `\n`
/// are found with SIMD (`memchr3`) and copied whole, where serde_json inspects every byte. A
/// string with any other control character (rare: only task-supplied text could carry one) goes
/// to serde_json.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // A fold rather than `any`: without the early exit the compiler vectorizes the scan.
    if bytes
        .iter()
        .fold(false, |found, &b| found | ((b < 0x20) & (b != b'\n')))
    {
        serde_json::to_writer(out, s).expect("a str always serializes");
        return;
    }
    out.push(b'"');
    let mut rest = bytes;
    while let Some(i) = memchr::memchr3(b'"', b'\\', b'\n', rest) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(match rest[i] {
            b'\n' => b'n',
            other => other,
        });
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// JSON text made fit for an SQS message, which may hold only `#x9 | #xA | #xD | #x20–#xD7FF
/// | #xE000–#xFFFD | #x10000–#x10FFFF`. JSON text escapes every other character outside that
/// set already (control characters; surrogates cannot occur in a `str`) but U+FFFE and U+FFFF,
/// which DynamoDB stores: each is written as the escape `\uFFFE` / `\uFFFF`. Outside strings
/// JSON text is ASCII, so each one is inside a string, where the escape denotes the same
/// character: a consumer parsing the message reads the same value. Text without them (nearly
/// all) is returned as it is after one SIMD search for their first byte.
pub fn sqs_safe(text: String) -> String {
    let bytes = text.as_bytes();
    // UTF-8: U+FFFE is EF BF BE, U+FFFF is EF BF BF; EF only ever starts a character.
    let at = |i: usize| match bytes.get(i + 1..i + 3) {
        Some([0xBF, 0xBE]) => Some((i, b"\\uFFFE")),
        Some([0xBF, 0xBF]) => Some((i, b"\\uFFFF")),
        _ => None,
    };
    let mut found = memchr::memchr_iter(0xEF, bytes).filter_map(at).peekable();
    if found.peek().is_none() {
        return text;
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut copied = 0;
    for (i, escape) in found {
        out.extend_from_slice(&bytes[copied..i]);
        out.extend_from_slice(escape);
        copied = i + 3;
    }
    out.extend_from_slice(&bytes[copied..]);
    String::from_utf8(out).expect("replacing whole characters by ASCII keeps UTF-8")
}

/// Whether `text` holds only characters SQS accepts in a message.
#[cfg(test)]
pub fn sqs_accepts(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

/// A value as JSON text fit for an SQS message body (see [`sqs_safe`]): task messages
/// (continuations, `enqueue`, `reconcile`) and oversize records.
pub fn to_sqs_text<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(value).map(sqs_safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noncharacters_are_escaped_and_the_value_is_unchanged() {
        for s in [
            "\u{FFFF}",
            "\u{FFFE}",
            "a\u{FFFF}b\u{FFFE}c\u{FFFF}\u{FFFF}",
            "near misses \u{FFFD} \u{FFEF} \u{EFBF} \u{F8FF} \u{2028} 😀 \u{10FFFF}",
            "\u{FFFF}\"quoted\\\u{FFFE}",
        ] {
            let value = serde_json::json!({ s: [s, {"S": s}] });
            let text = to_sqs_text(&value).unwrap();
            assert!(sqs_accepts(&text), "{text:?}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value, "{text}");
            // Already safe text is left as it is.
            assert_eq!(sqs_safe(text.clone()), text);
        }
        assert_eq!(
            to_sqs_text("x\u{FFFF}y\u{FFFE}").unwrap(),
            r#""x\uFFFFy\uFFFE""#
        );
        let plain = serde_json::to_string("\u{FFFD}é ✓").unwrap();
        assert_eq!(sqs_safe(plain.clone()), plain);
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            r#"{"PK":"a\"b","n":1}"#,
            "back\\slash at the end\\",
            "\"",
            "tab\tnew\nline\u{1}\u{1f}",
            "{\"a\":1}\n{\"b\":\"x\\\\ny\"}\n\n",
            "\n",
            "unicode é ✓ \u{7f} \u{2028}",
        ] {
            let mut out = Vec::new();
            write_string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    proptest::proptest! {
        /// Whatever the text (quotes, backslashes, newlines, other control characters,
        /// non-ASCII), the fast path writes exactly what serde_json writes.
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in "(\\PC|[\"\\\\\n\t\u{1}])*") {
            let mut out = Vec::new();
            write_string(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }
}
