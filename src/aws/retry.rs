//! The one place that decides which AWS errors are worth retrying, and how long to wait.

use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;

/// Error codes AWS uses for throttling across DynamoDB and SQS.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ThrottledException",
    // SQS on a queue encrypted with KMS, when KMS throttles it.
    "KmsThrottled",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Throttling, 5xx, timeouts and connection failures: worth another attempt.
    Transient,
    /// Validation errors, missing resources, access denied: retrying cannot help.
    Permanent,
}

/// Classifies an SDK error. The SDK has already retried transient errors a few times by the
/// time one reaches us; this decides whether *our* longer-horizon retry is worth it.
pub fn classify<E, R>(err: &SdkError<E, R>) -> Class
where
    E: ProvideErrorMetadata,
    R: HttpStatus,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => class_of(None, None),
        SdkError::ResponseError(e) => class_of(Some(e.raw().status()), None),
        SdkError::ServiceError(e) => class_of(Some(e.raw().status()), e.err().code()),
        // Construction failures are our own bugs; retrying repeats them.
        _ => Class::Permanent,
    }
}

/// The rule itself, for any AWS call: no response at all (timeout, connection failure),
/// throttling, 5xx and 429 are transient; any other answer is permanent.
pub fn class_of(status: Option<u16>, code: Option<&str>) -> Class {
    match status {
        None => Class::Transient,
        Some(_) if code.is_some_and(is_throttling_code) => Class::Transient,
        Some(status) => status_class(status),
    }
}

fn status_class(status: u16) -> Class {
    if status >= 500 || status == 429 {
        Class::Transient
    } else {
        Class::Permanent
    }
}

/// One AWS call that failed as a whole, already classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub class: Class,
    pub message: String,
}

pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// What a raw response must tell the classifier.
pub trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Backoff for retrying work inside a task (failed batch entries, throttled calls):
/// exponential from 50 ms, capped at 5 s, with jitter, 10 attempts.
pub fn task_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(10)
        .with_jitter()
        .build()
}

/// Runs `attempt` until it succeeds or fails permanently, waiting out [`task_backoff`] after
/// each transient failure (`on_retry` sees it first). The last error is returned when the
/// backoff gives up. `state` is lent to each attempt in turn.
pub async fn transient<S, T>(
    state: &mut S,
    attempt: impl for<'s> Fn(&'s mut S) -> BoxFuture<'s, Result<T, CallError>>,
    on_retry: impl Fn(&CallError),
) -> Result<T, CallError> {
    let mut backoff = task_backoff();
    loop {
        let e = match attempt(state).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match backoff.next() {
            Some(delay) if e.class == Class::Transient => {
                on_retry(&e);
                tokio::time::sleep(delay).await;
            }
            _ => return Err(e),
        }
    }
}

/// Backoff for a failing ReceiveMessage loop: from 200 ms, capped at 10 s, never giving up
/// (a worker must outlive an outage), with jitter so a fleet does not retry in lockstep.
pub fn receive_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times()
        .with_jitter()
        .build()
}

/// Retries of a ledger read while `enqueue --wait` follows a job: from 0.5 s doubling to 10 s,
/// 8 retries (about a minute of failures) before it gives up.
pub fn ledger_read_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(8)
        .with_jitter()
}

/// Visibility delay before a failed or rejected task is received again, growing with its
/// receive count (1 s, 2 s, 4 s … capped at 15 min) so a bad task is not hammered, and a
/// queue without a redrive policy does not spin on it.
pub fn release_delay(receive_count: u32) -> Duration {
    let exp = receive_count.saturating_sub(1).min(10);
    Duration::from_secs((1u64 << exp).min(900))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_transient() {
        for c in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "KmsThrottled",
        ] {
            assert!(is_throttling_code(c));
        }
        assert!(!is_throttling_code("ResourceNotFoundException"));
        assert!(!is_throttling_code("ValidationException"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(500), Class::Transient);
        assert_eq!(status_class(503), Class::Transient);
        assert_eq!(status_class(429), Class::Transient);
        assert_eq!(status_class(400), Class::Permanent);
        assert_eq!(status_class(404), Class::Permanent);
        assert_eq!(class_of(None, None), Class::Transient);
        assert_eq!(
            class_of(Some(400), Some("RequestThrottled")),
            Class::Transient
        );
        assert_eq!(
            class_of(Some(400), Some("InvalidParameterValue")),
            Class::Permanent
        );
    }

    fn failure(class: Class, n: u32) -> CallError {
        CallError {
            class,
            message: format!("failure {n}"),
        }
    }

    /// An attempt that fails with `class` until call number `succeed_at` (never if 0).
    fn attempt(
        class: Class,
        succeed_at: u32,
    ) -> impl for<'s> Fn(&'s mut u32) -> BoxFuture<'s, Result<u32, CallError>> {
        move |calls| {
            Box::pin(async move {
                *calls += 1;
                if *calls == succeed_at {
                    Ok(*calls)
                } else {
                    Err(failure(class, *calls))
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let retries = std::cell::Cell::new(0);
        let on_retry = |_: &CallError| retries.set(retries.get() + 1);
        let got = transient(&mut 0, attempt(Class::Transient, 3), on_retry).await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(retries.get(), 2);

        let got = transient(&mut 0, attempt(Class::Permanent, 3), on_retry).await;
        assert_eq!(got.unwrap_err().message, "failure 1");
        assert_eq!(retries.get(), 2, "a permanent failure is not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_that_lasts_ends_with_the_last_error() {
        let got = transient(&mut 0, attempt(Class::Transient, 0), |_| {}).await;
        // The first attempt and the backoff's 10 retries.
        assert_eq!(got.unwrap_err().message, "failure 11");
    }

    #[test]
    fn release_delay_grows_and_is_capped() {
        let d: Vec<u64> = [0, 1, 2, 3, 4, 11, 1000]
            .iter()
            .map(|&n| release_delay(n).as_secs())
            .collect();
        assert_eq!(d, vec![1, 1, 2, 4, 8, 900, 900]);
    }

    #[test]
    fn receive_backoff_never_gives_up_and_is_capped() {
        let delays: Vec<Duration> = receive_backoff().take(50).collect();
        assert_eq!(delays.len(), 50);
        // Jitter adds up to one more delay on top of the 10 s cap.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(20)),
            "{delays:?}"
        );
    }
}
