//! What the emulators cannot do: throttle, fail some entries of a batch. Scripted with
//! aws-smithy-mocks against the real SDK clients (no hand-written fake of SQS or DynamoDB).
//!
//! Batches go through `Publisher::Sdk` here, which the mocks can script; the resend and
//! classification loop (`sqs::send_batch`) is the same for the direct client, whose own
//! request and answer handling is unit-tested in `sqs::direct` and runs against both
//! emulators in every emulator test (it is the default).

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
use aws_sdk_sqs::types::Message;
use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::retry::RetryConfig;
use scanfleet::aws::dynamodb::scan::Scanner;
use scanfleet::aws::sqs::{self, ControlQueue, OutMessage, Publisher, SendError};
use scanfleet::pipeline::{self, Clients, End, Output};
use scanfleet::settings::Settings;
use scanfleet::task::Task;
use scanfleet::worker::Worker;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

fn entries(n: usize) -> Vec<OutMessage> {
    (0..n)
        .map(|i| OutMessage {
            body: format!("row {i}"),
            ..OutMessage::default()
        })
        .collect()
}

fn ok_entry(id: &str) -> SendMessageBatchResultEntry {
    SendMessageBatchResultEntry::builder()
        .id(id)
        .message_id(format!("m-{id}"))
        .md5_of_message_body("-")
        .build()
        .unwrap()
}

fn failed_entry(id: &str, sender_fault: bool, code: &str) -> BatchResultErrorEntry {
    BatchResultErrorEntry::builder()
        .id(id)
        .sender_fault(sender_fault)
        .code(code)
        .message("scripted failure")
        .build()
        .unwrap()
}

/// Accepts every entry of the request it answers.
fn accept_all(
    req: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput,
) -> SendMessageBatchOutput {
    let ok: Vec<_> = req.entries().iter().map(|e| ok_entry(e.id())).collect();
    SendMessageBatchOutput::builder()
        .set_successful(Some(ok))
        .set_failed(Some(vec![]))
        .build()
        .unwrap()
}

/// SDK retries off, so the paths under test are scanfleet's own.
fn no_sdk_retries(c: aws_sdk_sqs::config::Builder) -> aws_sdk_sqs::config::Builder {
    c.retry_config(RetryConfig::disabled())
}

#[tokio::test]
async fn a_partially_failed_batch_resends_only_the_failed_entries() {
    let first = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(|r| r.entries().len() == 10)
        .then_output(|| {
            let ok = (0..8).map(|i| ok_entry(&i.to_string())).collect();
            let failed = vec![
                failed_entry("8", false, "InternalError"),
                failed_entry("9", false, "InternalError"),
            ];
            SendMessageBatchOutput::builder()
                .set_successful(Some(ok))
                .set_failed(Some(failed))
                .build()
                .unwrap()
        });
    let resend = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(|r| {
            let bodies: Vec<&str> = r.entries().iter().map(|e| e.message_body()).collect();
            bodies == ["row 8", "row 9"]
        })
        .then_compute_output(accept_all);
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::Sequential,
        [&first, &resend],
        no_sdk_retries
    );
    sqs::send_batch(&Publisher::Sdk(client), "q", entries(10))
        .await
        .expect("all entries accepted in the end");
    assert_eq!(first.num_calls(), 1);
    assert_eq!(resend.num_calls(), 1);
}

/// An answer that does not name every entry (here `{"Successful":[]}`, then one that leaves
/// out two of ten) must not count the rows left out as accepted: the batch is sent again
/// until SQS accounts for every entry.
#[tokio::test]
async fn an_answer_that_leaves_entries_out_is_retried_until_every_entry_is_accepted() {
    let empty = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        SendMessageBatchOutput::builder()
            .set_successful(Some(vec![]))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let partial = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        let ok = (0..8).map(|i| ok_entry(&i.to_string())).collect();
        SendMessageBatchOutput::builder()
            .set_successful(Some(ok))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let duplicate = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        let ok = (0..9)
            .chain([0])
            .map(|i| ok_entry(&i.to_string()))
            .collect();
        SendMessageBatchOutput::builder()
            .set_successful(Some(ok))
            .set_failed(Some(vec![]))
            .build()
            .unwrap()
    });
    let accept = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(|r| r.entries().len() == 10)
        .then_compute_output(accept_all);
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::Sequential,
        [&empty, &partial, &duplicate, &accept],
        no_sdk_retries
    );
    sqs::send_batch(&Publisher::Sdk(client), "q", entries(10))
        .await
        .expect("accepted once SQS accounts for every entry");
    assert_eq!(
        [
            empty.num_calls(),
            partial.num_calls(),
            duplicate.num_calls()
        ],
        [1, 1, 1]
    );
    assert_eq!(
        accept.num_calls(),
        1,
        "the batch was taken as accepted early"
    );
}

#[tokio::test]
async fn a_throttled_batch_is_retried_with_backoff() {
    let rule = mock!(aws_sdk_sqs::Client::send_message_batch)
        .sequence()
        .http_status(503, None)
        .times(2)
        .http_status(
            400,
            Some(r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}"#.into()),
        )
        .build();
    let accept = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::Sequential,
        [&rule, &accept],
        no_sdk_retries
    );
    sqs::send_batch(&Publisher::Sdk(client), "q", entries(3))
        .await
        .expect("accepted after retries");
    assert_eq!(rule.num_calls(), 3);
    assert_eq!(accept.num_calls(), 1);
}

#[tokio::test]
async fn an_entry_sqs_blames_on_the_sender_fails_at_once() {
    let rule = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        SendMessageBatchOutput::builder()
            .set_successful(Some(vec![ok_entry("0")]))
            .set_failed(Some(vec![failed_entry(
                "1",
                true,
                "InvalidMessageContents",
            )]))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule], no_sdk_retries);
    let err = sqs::send_batch(&Publisher::Sdk(client), "q", entries(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SendError::Refused { ref code, .. } if code == "InvalidMessageContents"),
        "{err}"
    );
    assert_eq!(rule.num_calls(), 1, "a sender fault must not be retried");
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let rule = mock!(aws_sdk_sqs::Client::send_message_batch).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"no such queue"}"#,
            ),
        )
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule], no_sdk_retries);
    let err = sqs::send_batch(&Publisher::Sdk(client), "q", entries(2))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Call(_)), "{err}");
    assert_eq!(rule.num_calls(), 1);
}

fn row(n: u32) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".to_owned(), AttributeValue::S(format!("k{n}"))),
        ("n".to_owned(), AttributeValue::N(n.to_string())),
    ])
}

fn task() -> Task {
    Task {
        segment: 0,
        total_segments: 1,
        page_size: Some(2),
        table: "items".into(),
        job_id: None,
        exclusive_start_key: None,
        chunk: 0,
        run_id: None,
        origin_message_id: None,
        options: Default::default(),
        read_units_per_second: None,
    }
}

fn output(
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    checkpoint_rows: u64,
) -> Output {
    let rows = checkpoint_rows.to_string();
    let vars = [
        ("SCANFLEET__CONTROL__QUEUE_URL", "control"),
        ("SCANFLEET__OUTPUT__QUEUE_URL", "out"),
        ("SCANFLEET__OUTPUT__FORMAT", "plain"),
        ("SCANFLEET__OUTPUT__MAX_BATCH_BYTES", "262144"),
        ("SCANFLEET__OUTPUT__MAX_IN_FLIGHT_BATCHES", "4"),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "items"),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", rows.as_str()),
        ("SCANFLEET__WORKER__CHECKPOINT_SECONDS", "3600"),
    ];
    let settings = Settings::load_from(None, vars.map(|(k, v)| (k.to_owned(), v.to_owned())))
        .expect("valid settings");
    let clients = Clients {
        scanner: Scanner::Sdk(dynamodb.clone()),
        dynamodb,
        publisher: Publisher::Sdk(sqs.clone()),
        sqs,
    };
    Output::new(&settings, clients, 262_144)
}

/// DynamoDB's answer to a throttled request.
const THROTTLED: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"throttled"}"#;

/// A DynamoDB client whose SDK retries (standard mode, 3 attempts) wait `backoff` each.
fn dynamodb_retrying(rules: &[&Rule], backoff: Duration) -> aws_sdk_dynamodb::Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |c| c
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(backoff)
                .with_max_backoff(backoff.max(Duration::from_secs(20)))
        ))
}

fn describe_rule() -> aws_smithy_mocks::Rule {
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
    ScanOutput::builder()
        .set_items(Some(rows.map(row).collect()))
        .set_last_evaluated_key(
            next.map(|n| HashMap::from([("PK".to_owned(), AttributeValue::S(format!("k{n}")))])),
        )
        .build()
}

#[tokio::test]
async fn a_throttled_scan_page_is_retried_and_the_segment_completes() {
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..2, Some(1)))
        .http_status(400, Some(THROTTLED.into()))
        .output(|| page(2..3, None))
        .build();
    // The SDK's own retry (standard mode) absorbs the throttled page.
    let dynamodb = dynamodb_retrying(&[&describe, &scan], Duration::from_millis(1));
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1000);
    let outcome = pipeline::run_segment(&out, &task(), &CancellationToken::new())
        .await
        .expect("segment completes");
    assert_eq!(outcome.rows, 3);
    assert_eq!(outcome.end, End::Finished);
    assert_eq!(scan.num_calls(), 3, "two pages and one throttled attempt");
    assert!(send.num_calls() >= 1);
}

#[tokio::test]
async fn a_checkpoint_ends_the_chunk_at_a_page_boundary_with_its_key() {
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..2, Some(1)))
        .output(|| page(2..4, Some(3)))
        .output(|| page(4..6, None))
        .build();
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    // A checkpoint is due after 3 rows: the chunk ends after the second page (4 rows).
    let out = output(dynamodb, sqs_client, 3);
    let outcome = pipeline::run_segment(&out, &task(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.rows, 4);
    assert_eq!(
        outcome.end,
        End::Checkpoint(HashMap::from([(
            "PK".to_owned(),
            AttributeValue::S("k3".into())
        )]))
    );
}

#[tokio::test]
async fn a_failing_batch_fails_the_segment() {
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| page(0..2, None));
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_output(|| {
        SendMessageBatchOutput::builder()
            .set_successful(Some(vec![ok_entry("1")]))
            .set_failed(Some(vec![failed_entry("0", true, "InvalidParameterValue")]))
            .build()
            .unwrap()
    });
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1000);
    let err = pipeline::run_segment(&out, &task(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("InvalidParameterValue"), "{err}");
}

/// A stopping worker must not poll again: every message it received and handed back would use
/// up one of that task's receives (`maxReceiveCount`), and CI once saw a continuation task
/// dead-lettered that way. The loop chooses between "shut down" and "a slot is free" with
/// both ready here; an unbiased choice polls half the time, so 32 runs catch it all but
/// certainly (2^-32).
#[tokio::test]
async fn a_worker_told_to_stop_does_not_poll_the_control_queue_again() {
    let attributes = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(|| {
        aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput::builder().build()
    });
    let receive = mock!(aws_sdk_sqs::Client::receive_message).then_output(|| {
        aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput::builder().build()
    });
    let sqs_client = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&attributes, &receive],
        no_sdk_retries
    );
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe_rule()]);
    let vars = [
        ("SCANFLEET__CONTROL__QUEUE_URL", "control"),
        ("SCANFLEET__OUTPUT__QUEUE_URL", "out"),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "t"),
    ];
    let settings = scanfleet::settings::Settings::load_from(
        None,
        vars.map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("valid settings");
    for _ in 0..32 {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let control = sqs::ControlQueue::new(sqs_client.clone(), "control");
        let out = output(dynamodb.clone(), sqs_client.clone(), 1000);
        let run = Worker::new(&settings, control, out, None).run(Arc::default(), shutdown.into());
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("a stopped worker returns at once");
    }
    assert_eq!(receive.num_calls(), 0, "a stopping worker polled");
}

#[tokio::test]
async fn an_enqueue_that_fails_midway_names_the_job_its_sent_tasks_run_under() {
    use scanfleet::cli::enqueue::{self, Job};
    // 25 segments, 3 batches: SQS refuses every entry of the second (segments 10-19), after
    // the first was accepted.
    let refused = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(|r| {
            r.entries()[0]
                .message_body()
                .contains(r#""current_segment":10,"#)
        })
        .then_compute_output(|r| {
            let failed = r
                .entries()
                .iter()
                .map(|e| failed_entry(e.id(), true, "InvalidParameterValue"))
                .collect();
            SendMessageBatchOutput::builder()
                .set_successful(Some(vec![]))
                .set_failed(Some(failed))
                .build()
                .unwrap()
        });
    let accepted = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&refused, &accepted],
        no_sdk_retries
    );
    let job = Job {
        table: "items".into(),
        segments: 25,
        limit_of_rows: None,
        job_id: "nightly-7".into(),
        run_id: "r7".into(),
        options: Default::default(),
        read_units_per_second: None,
    };
    let bodies = enqueue::task_bodies(&job).unwrap();
    let err = enqueue::enqueue(&client, "q", &job.job_id, &bodies)
        .await
        .unwrap_err();
    let text = scanfleet::error_chain(&err);
    assert!(text.starts_with("job nightly-7: "), "{text}");
    assert!(text.contains("scanfleet reconcile nightly-7"), "{text}");
    // The batches already under way finish (10 + 5 tasks): the count is exact for whole
    // batches.
    assert!(text.contains("15 of 25 tasks were accepted"), "{text}");
    assert!(text.contains("InvalidParameterValue"), "{text}");
    assert_eq!(refused.num_calls(), 1, "the refused batch was resent");
    assert_eq!(accepted.num_calls(), 2);
}

#[tokio::test]
async fn the_redrive_loop_ends_when_other_jobs_tasks_come_back_into_view() {
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
    use aws_sdk_sqs::types::{Message, QueueAttributeName};
    use scanfleet::cli::reconcile::{self, RedriveStop};
    fn message(id: &str, job: &str, segment: u32) -> Message {
        Message::builder()
            .message_id(id)
            .receipt_handle(format!("r-{id}"))
            .body(format!(
                r#"{{"current_segment":{segment},"total_segments":4,"job_id":"{job}"}}"#
            ))
            .build()
    }
    let answer = |m: Vec<Message>| {
        ReceiveMessageOutput::builder()
            .set_messages(Some(m))
            .build()
    };
    let count = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(|| {
        GetQueueAttributesOutput::builder()
            .attributes(QueueAttributeName::ApproximateNumberOfMessages, "3")
            .build()
    });
    // The DLQ holds this job's task and two of another job's. Once their 60 s of hiding end
    // (the receives go on that long with tens of thousands of them), SQS hands the other
    // job's tasks out again, and would do so for ever.
    let receive = mock!(aws_sdk_sqs::Client::receive_message)
        .sequence()
        .output(move || answer(vec![message("a", "mine", 2), message("b", "other", 0)]))
        .output(move || answer(vec![message("c", "other", 1)]))
        .output(move || answer(vec![message("b", "other", 0), message("c", "other", 1)]))
        .times(100)
        .build();
    let empty = mock!(aws_sdk_sqs::Client::receive_message).then_output(move || answer(vec![]));
    let send = mock!(aws_sdk_sqs::Client::send_message)
        .then_output(|| aws_sdk_sqs::operation::send_message::SendMessageOutput::builder().build());
    let delete = mock!(aws_sdk_sqs::Client::delete_message).then_output(|| {
        aws_sdk_sqs::operation::delete_message::DeleteMessageOutput::builder().build()
    });
    let release = mock!(aws_sdk_sqs::Client::change_message_visibility).then_output(|| {
        aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput::builder()
            .build()
    });
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&count, &receive, &empty, &send, &delete, &release],
        no_sdk_retries
    );
    let r = reconcile::redrive(&client, "dlq", "control", "mine")
        .await
        .expect("redrive");
    assert_eq!(
        receive.num_calls(),
        3,
        "the loop went on receiving tasks it had already looked at"
    );
    assert_eq!(r.segments, vec![2]);
    assert_eq!(r.others_left, 2);
    assert_eq!(r.stop, RedriveStop::CameRound);
    assert_eq!((send.num_calls(), delete.num_calls()), (1, 1));
    assert_eq!(release.num_calls(), 2, "the other job's tasks stay hidden");
}

/// A page that consumed `units` read capacity units.
fn paid_page(rows: std::ops::Range<u32>, next: Option<u32>, units: f64) -> ScanOutput {
    let mut page = page(rows, next);
    page.consumed_capacity = Some(
        aws_sdk_dynamodb::types::ConsumedCapacity::builder()
            .capacity_units(units)
            .build(),
    );
    page
}

/// A job at the smallest budget: its first page (1 unit) goes at once, the second waits
/// 1,000 s for the budget.
fn slow_budget_task() -> Task {
    Task {
        read_units_per_second: Some(scanfleet::budget::MIN_READ_UNITS_PER_SECOND),
        ..task()
    }
}

fn paid_scan_rule() -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| paid_page(0..2, Some(1), 1.0))
        .output(|| paid_page(2..4, None, 1.0))
        .build()
}

fn first_page_key() -> End {
    End::Checkpoint(HashMap::from([(
        "PK".to_owned(),
        AttributeValue::S("k1".into()),
    )]))
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_its_budget_checkpoints_at_once_on_drain() {
    let (describe, scan) = (describe_rule(), paid_scan_rule());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1000);
    let stop = CancellationToken::new();
    let drain_at = Duration::from_secs(5);
    let drain = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(drain_at).await;
            stop.cancel();
        }
    };
    let start = tokio::time::Instant::now();
    let task = slow_budget_task();
    let (outcome, ()) = tokio::join!(pipeline::run_segment(&out, &task, &stop), drain);
    let outcome = outcome.expect("the chunk checkpoints");
    // Paused time: the run ends when the drain comes, not when the budget would allow a page.
    assert_eq!(start.elapsed(), drain_at);
    assert_eq!(outcome.end, first_page_key());
    assert_eq!((outcome.rows, outcome.published), (2, 2));
    assert_eq!(
        scan.num_calls(),
        1,
        "the page the budget held back was read"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_for_its_budget_checkpoints_when_its_time_is_up() {
    let (describe, scan) = (describe_rule(), paid_scan_rule());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let mut out = output(dynamodb, sqs_client, 1000);
    out.checkpointing.every = Duration::from_secs(30);
    let start = tokio::time::Instant::now();
    let outcome = pipeline::run_segment(&out, &slow_budget_task(), &CancellationToken::new())
        .await
        .expect("the chunk checkpoints");
    // worker.checkpoint_seconds holds while the budget holds the next page back (it waited
    // the 1,000 s for that page before).
    assert_eq!(start.elapsed(), out.checkpointing.every);
    assert_eq!(outcome.end, first_page_key());
    assert_eq!(scan.num_calls(), 1);
}

/// The hard stop drops the task's future (`worker::with_heartbeat`): dropped while it waits
/// for the budget, it leaves nothing behind (every batch permit is back).
#[tokio::test(start_paused = true)]
async fn a_task_dropped_while_waiting_for_its_budget_leaves_nothing_behind() {
    let (describe, scan) = (describe_rule(), paid_scan_rule());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1000);
    let permits = out.in_flight.available_permits();
    let (task, stop) = (slow_budget_task(), CancellationToken::new());
    let run = pipeline::run_segment(&out, &task, &stop);
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect_err("still waiting for the budget");
    assert_eq!(scan.num_calls(), 1);
    assert_eq!(out.in_flight.available_permits(), permits);
}

/// A `DescribeTable` answer without a key schema: every row would get the same `row_id`, so
/// the segment is refused, naming the table, before any page is read.
#[tokio::test]
async fn an_empty_key_schema_is_refused_before_scanning() {
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
        DescribeTableOutput::builder()
            .table(TableDescription::builder().build())
            .build()
    });
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| page(0..2, None));
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1000);
    for _ in 0..2 {
        let err = pipeline::run_segment(&out, &task(), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"table "items""#) && err.contains("empty key schema"),
            "{err}"
        );
    }
    assert_eq!(describe.num_calls(), 2, "a refused schema is not cached");
    assert_eq!((scan.num_calls(), send.num_calls()), (0, 0));
}

/// The SDK reads an attribute type it does not know as `AttributeValue::Unknown`. In a
/// LastEvaluatedKey that became the chunk's checkpoint, and writing it into the continuation
/// task or the ledger (`codec::key_to_json`) panicked the worker: the page fails instead.
#[tokio::test]
async fn a_next_key_of_an_unknown_attribute_type_fails_the_page() {
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(200).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                r#"{"Items":[{"PK":{"S":"k0"}}],"Count":1,"ScannedCount":1,"LastEvaluatedKey":{"PK":{"Z":"k0"}}}"#,
            ),
        )
    });
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send]);
    let out = output(dynamodb, sqs_client, 1);
    let result = pipeline::run_segment(&out, &task(), &CancellationToken::new()).await;
    let err = result.expect_err("no checkpoint at a key that cannot be written");
    assert!(err.to_string().contains("LastEvaluatedKey"), "{err}");
}

/// A page read ahead of a chunk the publisher has already ended is not needed: its failure
/// (here a throttled read the SDK has given up on) must not fail the run, or every row of
/// the chunk, already accepted by SQS, is sent again. The read of the second page starts
/// while the first page's rows are still waiting for an in-flight permit (held by the test
/// until the read has failed), so the chunk is decided after the failure is known.
#[tokio::test]
async fn a_failed_read_ahead_does_not_throw_away_a_published_chunk() {
    let describe = describe_rule();
    let read_ahead_failed = Arc::new(tokio::sync::Notify::new());
    let signal = read_ahead_failed.clone();
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..12, Some(11)))
        .http_response(move || {
            signal.notify_one();
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(THROTTLED),
            )
        })
        .build();
    let dynamodb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&describe, &scan],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send], no_sdk_retries);
    // A checkpoint is due after the first page (12 rows: a full batch of 10 is sent while
    // the page is being published, and needs the one permit).
    let mut out = output(dynamodb, sqs_client, 12);
    out.in_flight = Arc::new(Semaphore::new(1));
    let permit = out.in_flight.clone().acquire_owned().await.unwrap();
    let mut task = task();
    task.page_size = Some(12);
    let release = async {
        read_ahead_failed.notified().await;
        drop(permit);
    };
    let stop = CancellationToken::new();
    let (outcome, ()) = tokio::join!(pipeline::run_segment(&out, &task, &stop), release);
    let outcome = outcome.expect("the chunk ends as a checkpoint, not as a failure");
    assert_eq!(scan.num_calls(), 2, "the second page was read ahead");
    assert_eq!(outcome.published, 12);
    assert_eq!(
        outcome.end,
        End::Checkpoint(HashMap::from([(
            "PK".to_owned(),
            AttributeValue::S("k11".into())
        )]))
    );
    let sent: usize = send.num_calls();
    assert_eq!(sent, 2, "12 rows in two batches, none repeated");
}

/// A stop (SIGTERM) checkpoints at the last page published and does not wait for the page
/// being read ahead: here that read is throttled and the SDK is waiting an hour (of paused
/// time) before trying again. The stop comes once the first attempt was answered; a run that
/// waited for the read would make the two further attempts scripted below.
#[tokio::test(start_paused = true)]
async fn a_stop_does_not_wait_for_the_page_read_ahead() {
    let describe = describe_rule();
    let throttled = Arc::new(tokio::sync::Notify::new());
    let signal = throttled.clone();
    let throttle = THROTTLED;
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..2, Some(1)))
        .http_response(move || {
            signal.notify_one();
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(throttle),
            )
        })
        .http_status(400, Some(throttle.into()))
        .output(|| page(2..4, None))
        .build();
    let dynamodb = dynamodb_retrying(&[&describe, &scan], Duration::from_secs(3600));
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send], no_sdk_retries);
    let out = output(dynamodb, sqs_client, 1000);
    let stop = CancellationToken::new();
    let stop_when_throttled = async {
        throttled.notified().await;
        stop.cancel();
    };
    let task = task();
    let (outcome, ()) = tokio::join!(
        pipeline::run_segment(&out, &task, &stop),
        stop_when_throttled
    );
    let outcome = outcome.expect("a stop ends the chunk at a checkpoint");
    assert_eq!(outcome.published, 2);
    assert_eq!(
        outcome.end,
        End::Checkpoint(HashMap::from([(
            "PK".to_owned(),
            AttributeValue::S("k1".into())
        )]))
    );
    assert_eq!(scan.num_calls(), 2, "the stop waited for the read ahead");
}

/// Task text reaches SQS without a character it refuses: a continuation whose start key is a
/// row holding U+FFFF and U+FFFE (DynamoDB stores them), and task bodies sent in batches
/// (`enqueue`, `reconcile`). The value stays the same.
#[tokio::test]
async fn task_text_is_sent_without_characters_sqs_refuses() {
    fn accepted(text: &str) -> bool {
        text.chars().all(|c| {
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        })
    }
    let key = "k\u{FFFF}\u{FFFE}\u{2028}😀";
    let send = mock!(aws_sdk_sqs::Client::send_message)
        .match_requests(move |r| {
            let body = r.message_body().unwrap_or_default();
            let task: serde_json::Value = serde_json::from_str(body).unwrap();
            accepted(body) && task["exclusive_start_key"]["PK"]["S"] == key
        })
        .then_output(|| aws_sdk_sqs::operation::send_message::SendMessageOutput::builder().build());
    let batch = mock!(aws_sdk_sqs::Client::send_message_batch)
        .match_requests(|r| r.entries().iter().all(|e| accepted(e.message_body())))
        .then_compute_output(accept_all);
    let client = mock_client!(
        aws_sdk_sqs,
        RuleMode::MatchAny,
        [&send, &batch],
        no_sdk_retries
    );
    let mut continuation = task();
    continuation.job_id = Some("j".into());
    continuation.chunk = 1;
    continuation.exclusive_start_key = Some(HashMap::from([(
        "PK".to_owned(),
        AttributeValue::S(key.into()),
    )]));
    let control = sqs::ControlQueue::new(client.clone(), "control");
    let body = scanfleet::task::body_of(&continuation.to_message()).unwrap();
    control
        .send_body(body)
        .await
        .expect("the continuation is sent as text SQS accepts");
    let body = serde_json::to_string(&continuation.to_message()).unwrap();
    sqs::send_tasks(&client, "control", &[body])
        .await
        .expect("task bodies are sent as text SQS accepts");
    assert_eq!([send.num_calls(), batch.num_calls()], [1, 1]);
}

/// Packed output: a chunk's rows go out in messages of that chunk alone (none holds a row of
/// the next chunk), and the chunk counts as published only once every message holding its
/// rows was accepted: a message SQS fails is sent again, and its rows counted once.
#[tokio::test]
async fn a_packed_chunk_is_acknowledged_only_when_every_message_holding_its_rows_was_accepted() {
    use std::sync::Mutex;
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .sequence()
        .output(|| page(0..2, Some(1)))
        .output(|| page(2..4, Some(3)))
        .output(|| page(4..6, None))
        .build();
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let accepted = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let record = |req: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput,
                  skip: Option<&str>,
                  into: &Mutex<Vec<(String, String, String)>>| {
        for e in req.entries() {
            if Some(e.id()) == skip {
                continue;
            }
            let attrs = e.message_attributes().unwrap();
            let value = |name: &str| attrs[name].string_value().unwrap().to_owned();
            let row = (e.message_body().to_owned(), value("rows"), value("row_ids"));
            into.lock().unwrap().push(row);
        }
    };
    let first = {
        let accepted = accepted.clone();
        mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |req| {
            record(req, Some("0"), &accepted);
            let ok = (1..req.entries().len())
                .map(|i| ok_entry(&i.to_string()))
                .collect();
            SendMessageBatchOutput::builder()
                .set_successful(Some(ok))
                .set_failed(Some(vec![failed_entry("0", false, "InternalError")]))
                .build()
                .unwrap()
        })
    };
    let resend = {
        let accepted = accepted.clone();
        mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |req| {
            record(req, None, &accepted);
            accept_all(req)
        })
    };
    let sqs_client = mock_client!(
        aws_sdk_sqs,
        RuleMode::Sequential,
        [&first, &resend],
        no_sdk_retries
    );
    // A checkpoint is due after 3 rows: the chunk ends after the second page (4 rows), packed
    // 3 to a message.
    let mut out = output(dynamodb, sqs_client, 3);
    out.packing = Some(pipeline::Packing {
        rows_per_message: 3,
        max_message_bytes: 65_536,
    });
    let outcome = pipeline::run_segment(&out, &task(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((outcome.rows, outcome.published), (4, 4));
    assert!(matches!(outcome.end, End::Checkpoint(_)), "{outcome:?}");
    assert_eq!([first.num_calls(), resend.num_calls()], [1, 1]);
    // Lines compared as JSON: the SDK's scan answer keeps no attribute order.
    let mut messages: Vec<(Vec<serde_json::Value>, String, String)> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(body, rows, ids)| {
            let lines = body.split('\n').map(|l| serde_json::from_str(l).unwrap());
            (lines.collect(), rows.clone(), ids.clone())
        })
        .collect();
    messages.sort_by(|a, b| b.1.cmp(&a.1));
    let keys = ["PK".to_owned()];
    let line = |n: u32| serde_json::json!({"PK": format!("k{n}"), "n": n});
    let id = |n: u32| scanfleet::codec::row_id("items", &keys, &row(n));
    assert_eq!(
        messages,
        [
            (
                vec![line(0), line(1), line(2)],
                "3".to_owned(),
                [id(0), id(1), id(2)].join(" "),
            ),
            (vec![line(3)], "1".to_owned(), id(3)),
        ]
    );
}

/// A row too large for a batch (`output.max_batch_bytes`, here smaller than the queue's limit)
/// fails its task with an error naming that setting, not the queue's limit.
#[tokio::test]
async fn an_oversize_row_is_reported_against_the_limit_that_applies() {
    let describe = describe_rule();
    let scan = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| {
        let mut big = row(0);
        big.insert("pad".into(), AttributeValue::S("x".repeat(2000)));
        ScanOutput::builder().items(big).build()
    });
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &scan]);
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
    let sqs_client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&send], no_sdk_retries);
    let mut out = output(dynamodb, sqs_client, 1000);
    out.max_batch_bytes = 1024;
    let err = pipeline::run_segment(&out, &task(), &CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "more than output.max_batch_bytes allows (1024; the output queue accepts 262144)"
        ),
        "{err}"
    );
    assert_eq!(send.num_calls(), 0);
}

// The worker loop against scripted answers: what the emulators cannot be made to do on cue — a
// heartbeat that hangs, an answer holding more messages than asked for, a queue polled without
// a wait.

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

fn attributes_rule() -> Rule {
    mock!(aws_sdk_sqs::Client::get_queue_attributes)
        .then_output(|| GetQueueAttributesOutput::builder().build())
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
    let control = ControlQueue::new(sqs, "control");
    let run = Worker::new(settings, control, out, None).run(Arc::default(), stop.into());
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
    let send = mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(accept_all);
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
    run_worker(
        &settings,
        sqs.clone(),
        output(dynamodb, sqs, 1000),
        stop,
        MINUTE,
    )
    .await;

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
    run_worker(
        &settings,
        sqs.clone(),
        output(dynamodb, sqs, 1000),
        stop,
        MINUTE,
    )
    .await;
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
        async move {
            run_worker(
                &settings,
                sqs.clone(),
                output(dynamodb, sqs, 1000),
                stop,
                limit,
            )
            .await
        }
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

/// `enqueue --wait` rides over a failed ledger read: retried with backoff, not an exit. Here
/// the first read of the job is refused (an error the SDK does not retry itself); the second
/// finds the job done.
#[tokio::test(start_paused = true)]
async fn a_failed_ledger_read_while_waiting_is_retried() {
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not yet"}"#.into()),
        )
        .output(move || {
            let job = HashMap::from([
                ("job_id".to_owned(), s("j")),
                ("item".to_owned(), s("job")),
                ("table".to_owned(), s("items")),
                ("segments_total".to_owned(), n(1)),
                ("created_at".to_owned(), n(1000)),
                ("task_template".to_owned(), s("{}")),
            ]);
            let segment = HashMap::from([
                ("job_id".to_owned(), s("j")),
                ("item".to_owned(), s("segment#0000000")),
                ("status".to_owned(), s("done")),
                ("chunks".to_owned(), n(1)),
                ("rows_published".to_owned(), n(7)),
                ("finished_at".to_owned(), n(1010)),
            ]);
            QueryOutput::builder().items(job).items(segment).build()
        })
        .build();
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&query], |c| c
        .retry_config(RetryConfig::disabled()));
    let ledger = scanfleet::ledger::Ledger::new(dynamodb, "ledger");
    let summary = scanfleet::cli::status::wait(&ledger, "j", Duration::from_secs(10))
        .await
        .expect("one failed read does not end --wait");
    assert_eq!(
        (summary.state.as_str(), summary.rows_published),
        ("done", 7)
    );
    assert_eq!(query.num_calls(), 2);
}
