//! An error answer read: its error code, its class (the one place in `crate::aws::retry` decides
//! what is retryable), and what it says about the local clock.

use std::time::{Duration, SystemTime};

use crate::aws::retry::{CallError, class_of};

/// An error answer: its error code, and the error classified by status and code.
pub struct Fault {
    pub code: Option<String>,
    pub error: CallError,
}

/// An error answer (any status but 200), classified by its status and error code (read by
/// [`crate::aws::error_answer`], whatever the body's shape).
pub fn fault(status: u16, body: &[u8]) -> Fault {
    let answer = crate::aws::error_answer::read(body);
    let code = answer.code.as_deref();
    Fault {
        error: CallError {
            class: class_of(Some(status), code),
            message: format!(
                "{} (HTTP {status}): {}",
                code.unwrap_or("unknown error"),
                answer.message
            ),
        },
        code: answer.code,
    }
}

/// Error codes an answer may give when the request's signing time is too far from the server's
/// clock (the AWS SDK's own list, `aws-runtime`'s `service_clock_skew`).
const CLOCK_SKEW_CODES: &[&str] = &[
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestTimeTooSkewed",
    "AccessDeniedException",
];
/// How far the server's clock must be from the signing time to count as skew (the SDK's
/// threshold; AWS refuses signatures more than 5 minutes off).
const SKEW_THRESHOLD: Duration = Duration::from_secs(4 * 60);

/// The clock correction to sign with from now on, in milliseconds to add to the local clock,
/// when an error answer shows that the signing time was off: its code is a signature-time
/// error and its `Date` header is more than [`SKEW_THRESHOLD`] from `signed_at`. The correction
/// is the server's time minus the local clock's at `answered_at`; `None` when the answer says
/// nothing about the clock.
pub(super) fn clock_correction(
    code: Option<&str>,
    date: Option<&str>,
    signed_at: SystemTime,
    answered_at: SystemTime,
) -> Option<i64> {
    use aws_smithy_types::DateTime;
    use aws_smithy_types::date_time::Format;
    code.filter(|c| CLOCK_SKEW_CODES.contains(c))?;
    let server = SystemTime::try_from(DateTime::from_str(date?, Format::HttpDate).ok()?).ok()?;
    // Saturating: the `Date` is the server's word, and must not wrap into another sign.
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let off = |a: SystemTime, b: SystemTime| match a.duration_since(b) {
        Ok(d) => millis(d),
        Err(e) => -millis(e.duration()),
    };
    (off(server, signed_at).unsigned_abs() > SKEW_THRESHOLD.as_secs() * 1000)
        .then(|| off(server, answered_at))
}
