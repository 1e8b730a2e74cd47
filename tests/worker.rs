//! The worker loop against scripted SQS and DynamoDB answers (aws-smithy-mocks): what the
//! emulators cannot be made to do on cue — a heartbeat that hangs, an answer holding more
//! messages than asked for, a queue polled without a wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::{AttributeValue, KeySchemaElement, KeyType, TableDescription};
use aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput;
use aws_sdk_sqs::operation::delete_message::DeleteMessageOutput;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{Message, SendMessageBatchResultEntry};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::retry::RetryConfig;
use scanfleet::pipeline::{Checkpointing, KeySchemas, Output};
use scanfleet::scan::Scanner;
use scanfleet::settings::{OutputFormat, Settings};
use scanfleet::sqs::{ControlQueue, Publisher};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const MINUTE: Duration = Duration::from_secs(60);

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("SCANFLEET__CONTROL__QUEUE_URL", "control"),
        ("SCANFLEET__OUTPUT__QUEUE_URL", "out"),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "t"),
    ];
    vars.extend_from_slice(extra);
    Settings::load_from(
        None,
        vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("valid settings")
}

fn output(dynamodb: aws_sdk_dynamodb::Client, sqs: aws_sdk_sqs::Client) -> Output {
    Output {
        scanner: Scanner::Sdk(dynamodb.clone()),
        dynamodb,
        publisher: Publisher::Sdk(sqs.clone()),
        sqs,
        queue_url: "out".into(),
        format: OutputFormat::Plain,
        max_batch_bytes: 262_144,
        max_message_bytes: 262_144,
        oversize_queue_url: None,
        in_flight: Arc::new(Semaphore::new(4)),
        checkpointing: Checkpointing {
            rows: 1000,
            every: Duration::from_secs(3600),
        },
        key_schemas: KeySchemas::default(),
        read_budget: None,
    }
}

fn message(id: &str, body: &str) -> Message {
    Message::builder()
        .message_id(id)
        .receipt_handle(format!("receipt-{id}"))
        .body(body)
        .attributes(
            aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            "1",
        )
        .build()
}

fn received(messages: Vec<Message>) -> ReceiveMessageOutput {
    ReceiveMessageOutput::builder()
        .set_messages(Some(messages))
        .build()
}

fn no_sdk_retries(c: aws_sdk_sqs::config::Builder) -> aws_sdk_sqs::config::Builder {
    c.retry_config(RetryConfig::disabled())
}

fn attributes_rule() -> Rule {
    mock!(aws_sdk_sqs::Client::get_queue_attributes)
        .then_output(|| GetQueueAttributesOutput::builder().build())
}

fn describe_rule() -> Rule {
    mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
        let key = KeySchemaElement::builder()
            .attribute_name("PK")
            .key_type(KeyType::Hash)
            .build()
            .unwrap();
        DescribeTableOutput::builder()
            .table(TableDescription::builder().key_schema(key).build())
            .build()
    })
}

fn page(rows: std::ops::Range<u32>, next: Option<u32>) -> ScanOutput {
    let row = |n: u32| HashMap::from([("PK".to_owned(), AttributeValue::S(format!("k{n}")))]);
    ScanOutput::builder()
        .set_items(Some(rows.map(row).collect()))
        .set_last_evaluated_key(next.map(row))
        .build()
}

/// Waits (blocking this thread, as a mock's answer must) until `done` holds, at most `limit`.
fn block_until(done: impl Fn() -> bool, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// Runs the worker until `shutdown` fires (the scripted answers fire it), at most `limit`.
async fn run_worker(
    settings: &Settings,
    sqs: aws_sdk_sqs::Client,
    out: Output,
    stop: CancellationToken,
    limit: Duration,
) {
    let control = ControlQueue {
        client: sqs,
        url: "control".into(),
    };
    let run = scanfleet::worker::run(settings, control, out, None, Arc::default(), stop);
    tokio::time::timeout(limit, run)
        .await
        .expect("the worker stops when told to");
}

/// The HTTP client under the mocks, holding back the first `ChangeMessageVisibility` (a
/// heartbeat) until the task was deleted, or 20 s: a heartbeat that hangs, without blocking a
/// thread (the mocks answer under a lock every call of their client shares).
#[derive(Debug, Clone)]
struct HoldFirstHeartbeat {
    inner: SharedHttpClient,
    /// Heartbeats begun.
    beats: Arc<AtomicUsize>,
    deleted: Arc<tokio::sync::Notify>,
    /// Whether the held heartbeat ran out its 20 s: then the task waited for it (a heartbeat
    /// that holds nothing up is stopped with its task, or answers once the task was deleted).
    timed_out: Arc<AtomicBool>,
}

impl HttpClient for HoldFirstHeartbeat {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(HoldingConnector {
            inner: self.inner.http_connector(settings, components),
            hold: self.clone(),
        })
    }
}

#[derive(Debug)]
struct HoldingConnector {
    inner: SharedHttpConnector,
    hold: HoldFirstHeartbeat,
}

impl HttpConnector for HoldingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let heartbeat = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".ChangeMessageVisibility"));
        if !heartbeat || self.hold.beats.fetch_add(1, Ordering::SeqCst) > 0 {
            return self.inner.call(request);
        }
        let (inner, hold) = (self.inner.clone(), self.hold.clone());
        HttpConnectorFuture::new(async move {
            let deleted =
                tokio::time::timeout(Duration::from_secs(20), hold.deleted.notified()).await;
            hold.timed_out.store(deleted.is_err(), Ordering::SeqCst);
            inner.call(request).await
        })
    }
}

/// The heartbeat runs beside the chunk: a `ChangeMessageVisibility` that hangs holds up
/// neither the scan nor the publishing nor the task's delete. Here the chunk's second page
/// waits until a heartbeat has begun, and that heartbeat answers only once the task was
/// deleted (or after 20 s): inline in the task, as it was, the chunk could not end meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_hanging_heartbeat_does_not_hold_up_the_task() {
    let stop = CancellationToken::new();
    let hold = HoldFirstHeartbeat {
        inner: aws_smithy_mocks::create_mock_http_client(),
        beats: Arc::default(),
        deleted: Arc::default(),
        timed_out: Arc::default(),
    };
    let task_body = r#"{"current_segment":0,"total_segments":1}"#;
    let receive = mock!(aws_sdk_sqs::Client::receive_message)
        .sequence()
        .output(move || received(vec![message("m1", task_body)]))
        .output(|| received(vec![]))
        .repeatedly()
        .build();
    let visibility = mock!(aws_sdk_sqs::Client::change_message_visibility)
        .then_output(|| ChangeMessageVisibilityOutput::builder().build());
    let delete = mock!(aws_sdk_sqs::Client::delete_message).then_output({
        let (deleted, stop) = (hold.deleted.clone(), stop.clone());
        move || {
            deleted.notify_one();
            stop.cancel();
            DeleteMessageOutput::builder().build()
        }
    });
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(|req| {
        let ok: Vec<_> = req
            .entries()
            .iter()
            .map(|e| {
                SendMessageBatchResultEntry::builder()
                    .id(e.id())
                    .message_id(format!("out-{}", e.id()))
                    .md5_of_message_body("-")
                    .build()
                    .unwrap()
            })
            .collect();
        SendMessageBatchOutput::builder()
            .set_successful(Some(ok))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let sqs = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&attributes_rule(), &receive, &visibility, &delete, &send],
        |c| no_sdk_retries(c).http_client(hold.clone())
    );
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..2, Some(1)))
        .output({
            let beats = hold.beats.clone();
            move || {
                block_until(|| beats.load(Ordering::SeqCst) > 0, Duration::from_secs(20));
                page(2..4, None)
            }
        })
        .build();
    let dynamodb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&describe_rule(), &scan]
    );
    // A heartbeat every 2 s (a third of the visibility timeout); no wait, so the empty receives
    // after the task are the loop's own pauses.
    let settings = settings(&[
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "6"),
        ("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "0"),
    ]);
    run_worker(&settings, sqs.clone(), output(dynamodb, sqs), stop, MINUTE).await;

    assert_eq!(delete.num_calls(), 1, "the task was deleted");
    assert_eq!(send.num_calls(), 1, "its four rows went out in one batch");
    assert!(hold.beats.load(Ordering::SeqCst) > 0, "a heartbeat began");
    assert!(
        !hold.timed_out.load(Ordering::SeqCst),
        "the task had to wait for its hanging heartbeat"
    );
}

/// An answer with more messages than asked for (one slot free here) starts one task and hands
/// the others straight back; it does not bring the worker down.
#[tokio::test]
async fn more_messages_than_slots_are_handed_back() {
    let stop = CancellationToken::new();
    let receive = mock!(aws_sdk_sqs::Client::receive_message)
        .sequence()
        .output(|| {
            received(vec![
                message("m1", "not a task"),
                message("m2", "not a task"),
                message("m3", "not a task"),
            ])
        })
        .output(|| received(vec![]))
        .repeatedly()
        .build();
    let released = Arc::new(AtomicUsize::new(0));
    let visibility = mock!(aws_sdk_sqs::Client::change_message_visibility).then_output({
        let (released, stop) = (released.clone(), stop.clone());
        move || {
            if released.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                stop.cancel();
            }
            ChangeMessageVisibilityOutput::builder().build()
        }
    });
    let sqs = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&attributes_rule(), &receive, &visibility],
        no_sdk_retries
    );
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe_rule()]);
    let settings = settings(&[
        ("SCANFLEET__WORKER__CONCURRENCY", "1"),
        ("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "0"),
    ]);
    run_worker(&settings, sqs.clone(), output(dynamodb, sqs), stop, MINUTE).await;
    assert_eq!(
        released.load(Ordering::SeqCst),
        3,
        "one rejected and released, two handed back"
    );
}

/// `control.wait_time_seconds = 0` asks SQS for short polls, which return at once: on an empty
/// queue the loop pauses between them (growing, as after a failed receive) instead of
/// spinning. The scripted queue stops the worker after 200 receives; in 10 minutes of (paused,
/// so instant) time a pausing worker makes far fewer.
#[tokio::test(start_paused = true)]
async fn short_polls_on_an_empty_queue_back_off() {
    let stop = CancellationToken::new();
    let receive = mock!(aws_sdk_sqs::Client::receive_message).then_output({
        let (stop, calls) = (stop.clone(), Arc::new(AtomicUsize::new(0)));
        move || {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 >= 200 {
                stop.cancel();
            }
            received(vec![])
        }
    });
    let sqs = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&attributes_rule(), &receive],
        no_sdk_retries
    );
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe_rule()]);
    let settings = settings(&[("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "0")]);
    let worker = tokio::spawn({
        let stop = stop.clone();
        let limit = Duration::from_secs(3600);
        async move { run_worker(&settings, sqs.clone(), output(dynamodb, sqs), stop, limit).await }
    });
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(600)) => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    worker.await.unwrap();
    // Pauses from 0.2 s doubling to 10 s: about 60 receives in 600 s.
    assert!(
        receive.num_calls() < 200,
        "{} receives: the worker spun on an empty queue",
        receive.num_calls()
    );
}
