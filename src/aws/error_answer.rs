//! What an AWS error answer's body says, whatever its shape: the JSON services' (`__type`,
//! `message`), the XML one of query-protocol services (`<Code>`, `<Message>`), or neither
//! (a proxy's HTML page, a load balancer's text). moto answers every request it refuses in
//! auth mode (a bad signature, an unknown key, a denied action) in the XML shape, even to the
//! JSON calls of SQS and DynamoDB, which the SDK's parsers then cannot read.
//!
//! An error message built from it is one line: a body's line breaks would otherwise split the
//! log line it ends up in.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Characters of an unreadable body kept in a message.
const BODY_EXCERPT_CHARS: usize = 300;

/// An error answer's code (when it names one) and message.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub code: Option<String>,
    pub message: String,
}

/// Reads an error answer's body (see the module's documentation).
pub fn read(body: &[u8]) -> ErrorAnswer {
    #[derive(serde::Deserialize)]
    struct Json {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(alias = "Message", default)]
        message: Option<String>,
    }
    if let Ok(answer) = serde_json::from_slice::<Json>(body) {
        // `__type` is "namespace#Code", sometimes followed by ":detail".
        let code = answer.kind.as_deref().map(|t| {
            let code = t.rsplit('#').next().unwrap_or(t);
            code.split(':').next().unwrap_or(code).to_owned()
        });
        let message = answer
            .message
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return ErrorAnswer {
            code,
            message: one_line(&message),
        };
    }
    let text = String::from_utf8_lossy(body);
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{tag}>"))? + start;
        Some(one_line(&text[start..end]))
    };
    match element("Code") {
        Some(code) => ErrorAnswer {
            message: element("Message").unwrap_or_default(),
            code: Some(code),
        },
        None => ErrorAnswer {
            code: None,
            message: one_line(&text),
        },
    }
}

/// `text` on one line (each run of whitespace one space), at most [`BODY_EXCERPT_CHARS`]
/// characters (`…` marks a cut).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > BODY_EXCERPT_CHARS {
        out = out.chars().take(BODY_EXCERPT_CHARS).collect();
        out.push('…');
    }
    out
}

/// An SDK error as one line: its own text, and for an answer whose error the SDK could not
/// read (no code), the HTTP status and what the body says, so the code reaches the log.
pub fn describe<E>(err: &SdkError<E, Response>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = crate::error_chain(err);
    let raw = match err {
        SdkError::ServiceError(e) if e.err().code().is_none() => e.raw(),
        SdkError::ResponseError(e) => e.raw(),
        _ => return text,
    };
    let status = raw.status().as_u16();
    let body = raw.body().bytes().unwrap_or_default();
    let answer = read(body);
    match answer.code {
        Some(code) => format!("{text} (HTTP {status}: {code}: {})", answer.message),
        None if answer.message.is_empty() => format!("{text} (HTTP {status})"),
        None => format!("{text} (HTTP {status}: {})", answer.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_answer_gives_its_code_and_message() {
        let body =
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist:detail","Message":"no queue"}"#;
        assert_eq!(
            read(body),
            ErrorAnswer {
                code: Some("QueueDoesNotExist".into()),
                message: "no queue".into()
            }
        );
    }

    /// moto's answer to a request it refuses (captured from moto 5.2.5 in auth mode).
    #[test]
    fn an_xml_answer_gives_its_code_and_message_on_one_line() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized\n to perform: sqs:SendMessageBatch</Message><Type>Sender</Type></Error></Errors></ErrorResponse>";
        assert_eq!(
            read(body),
            ErrorAnswer {
                code: Some("AccessDenied".into()),
                message: "User: arn:aws:sts::123456789012:assumed-role/r/s is not authorized to perform: sqs:SendMessageBatch".into()
            }
        );
    }

    /// The direct clients' classification reads it too: moto's refusal gave "unknown error
    /// (HTTP 403): <?xml …" with the XML's line break splitting the worker's log line.
    #[test]
    fn the_direct_clients_name_the_code_of_an_xml_answer() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>denied</Message></Error></Errors></ErrorResponse>";
        let fault = crate::aws::direct::fault(403, body);
        assert_eq!(fault.code.as_deref(), Some("AccessDenied"));
        assert_eq!(fault.error.message, "AccessDenied (HTTP 403): denied");
        assert_eq!(fault.error.class, crate::aws::retry::Class::Permanent);
        let throttled = b"<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(
            crate::aws::direct::fault(400, throttled).error.class,
            crate::aws::retry::Class::Transient
        );
    }

    #[test]
    fn any_other_body_is_kept_on_one_line_and_bounded() {
        let page = format!(
            "<html>\n<body>\r\n Forbidden\t{}</body></html>",
            "x".repeat(1000)
        );
        let answer = read(page.as_bytes());
        assert_eq!(answer.code, None);
        assert!(
            answer.message.starts_with("<html> <body> Forbidden x"),
            "{}",
            answer.message
        );
        assert!(!answer.message.contains(['\n', '\r', '\t']));
        assert_eq!(answer.message.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(answer.message.ends_with('…'));
        assert_eq!(read(b"").message, "");
    }
}
