//! Integration tests: real `scanfleet worker` processes against a running AWS emulator.
//!
//! `make test` starts ministack and then moto and runs these against each, with
//! `AWS_ENDPOINT_URL` pointing at it and `SCANFLEET_TEST_EMULATOR` naming it. Without an
//! endpoint these tests fail: they never pass by skipping.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use scanfleet::devkit::{self, Aws, Queues, Received, WorkerProcess};

const BINARY: &str = env!("CARGO_BIN_EXE_scanfleet");

struct Fixture {
    aws: Aws,
    table: String,
    queues: Queues,
    keys: Vec<(String, String)>,
    logs: PathBuf,
}

/// Row counts: moto's SQS slows down as a queue grows, so it gets hundreds, ministack more.
fn scaled(ministack: u64, moto: u64) -> u64 {
    match std::env::var("SCANFLEET_TEST_EMULATOR").as_deref() {
        Ok("moto") => moto,
        _ => ministack,
    }
}

impl Fixture {
    async fn new(rows: u64, max_receive_count: u32) -> Self {
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "AWS_ENDPOINT_URL is not set: the integration tests need a running emulator; run `make test`"
        );
        let aws = Aws::from_env().await;
        let table = devkit::unique_name("it");
        devkit::create_table(&aws, &table)
            .await
            .expect("create table");
        let queues = devkit::create_queues(&aws, &table, max_receive_count)
            .await
            .expect("create queues");
        let keys = devkit::seed(&aws, &table, rows, 200)
            .await
            .expect("seed table");
        let logs = std::env::temp_dir().join("scanfleet-it").join(&table);
        std::fs::create_dir_all(&logs).unwrap();
        Fixture {
            aws,
            table,
            queues,
            keys,
            logs,
        }
    }

    fn worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut env: Vec<(&str, String)> =
            vec![("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "1".into())];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        WorkerProcess::start(
            Path::new(BINARY),
            &self.queues,
            &self.table,
            &env,
            &self.logs,
        )
        .expect("start worker")
    }

    async fn send_task(&self, body: &str) {
        self.aws
            .sqs
            .send_message()
            .queue_url(&self.queues.control)
            .message_body(body)
            .send()
            .await
            .expect("send task");
    }

    /// Drains the output until `expected` distinct messages arrived and 2 s passed quietly.
    async fn drain_output(&self, expected: usize) -> Vec<Received> {
        devkit::drain_until(
            &self.aws,
            &self.queues.output,
            Duration::from_secs(240),
            Duration::from_secs(2),
            |got| got.len() >= expected,
        )
        .await
        .expect("drain output")
    }

    async fn depth(&self, url: &str) -> u64 {
        devkit::queue_depth(&self.aws, url)
            .await
            .expect("queue depth")
    }

    async fn cleanup(self) {
        devkit::cleanup(&self.aws, &self.table, &self.queues).await;
    }

    fn expected_keys(&self) -> HashSet<(String, String)> {
        self.keys.iter().cloned().collect()
    }
}

fn plain_key(m: &Received) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&m.body).unwrap_or_else(|e| panic!("body {:?}: {e}", m.body));
    (
        v["PK"].as_str().expect("PK").to_owned(),
        v["SK"].as_str().expect("SK").to_owned(),
    )
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a child to exit; `None` if it is still running after `timeout`.
async fn wait_exit(w: &mut WorkerProcess, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = w.child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_segment_job_with_two_workers_delivers_exactly_the_tables_keys() {
    let rows = scaled(3000, 300);
    let f = Fixture::new(rows, 3).await;
    let workers = [f.worker(&[]), f.worker(&[])];
    let out = std::process::Command::new(BINARY)
        .args([
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "6",
            "--limit-of-rows",
            "50",
            "--job-id",
            "job-42",
        ])
        .env("SCANFLEET__CONTROL__QUEUE_URL", &f.queues.control)
        .output()
        .expect("run enqueue");
    assert!(
        out.status.success(),
        "enqueue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "job-42");

    let received = f.drain_output(rows as usize).await;
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(
        distinct,
        f.expected_keys(),
        "published keys differ from the table's"
    );
    assert_eq!(
        keys.len(),
        distinct.len(),
        "rows were published more than once"
    );

    // Attributes: table, segment (one per segment 0..6), job_id.
    let mut segments = HashSet::new();
    for m in &received {
        assert_eq!(m.attributes.get("table"), Some(&f.table));
        assert_eq!(
            m.attributes.get("job_id").map(String::as_str),
            Some("job-42")
        );
        segments.insert(
            m.attributes["segment"]
                .parse::<u32>()
                .expect("segment is a number"),
        );
    }
    assert!(segments.iter().all(|s| *s < 6), "{segments:?}");

    // Every task acknowledged, nothing dead-lettered, both workers took part and agree.
    wait_for_depth(&f, &f.queues.control, 0).await;
    assert_eq!(f.depth(&f.queues.dlq).await, 0);
    let completed: f64 = workers
        .iter()
        .map(|w| w.metric("scanfleet_tasks_completed_total", "").unwrap())
        .sum();
    let published: f64 = workers
        .iter()
        .map(|w| w.metric("scanfleet_rows_published_total", "").unwrap())
        .sum();
    assert_eq!(completed, 6.0);
    assert_eq!(published, rows as f64);
    for w in &workers {
        assert_eq!(
            devkit::http_get(w.metrics_port, "/healthz").map(|r| r.0),
            Some(200)
        );
        assert_eq!(
            devkit::http_get(w.metrics_port, "/readyz").map(|r| r.0),
            Some(200)
        );
    }
    f.cleanup().await;
}

async fn wait_for_depth(f: &Fixture, url: &str, depth: u64) {
    let start = Instant::now();
    loop {
        let d = f.depth(url).await;
        if d == depth {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "queue {url} stayed at {d} messages, expected {depth}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_seed_payload_without_table_works_and_numbers_keep_their_digits() {
    let f = Fixture::new(scaled(500, 100), 3).await;
    // A row with numbers that f64 would corrupt.
    let item = HashMap::from([
        ("PK".to_owned(), AttributeValue::S("precise".into())),
        ("SK".to_owned(), AttributeValue::S("PREFIX-precise".into())),
        (
            "big".to_owned(),
            AttributeValue::N("12345678901234567890123456789012345678".into()),
        ),
        (
            "small".to_owned(),
            AttributeValue::N("0.1234567890123456789012345678901234567".into()),
        ),
    ]);
    f.aws
        .dynamodb
        .put_item()
        .table_name(&f.table)
        .set_item(Some(item))
        .send()
        .await
        .expect("put item");
    let mut expected = f.expected_keys();
    expected.insert(("precise".into(), "PREFIX-precise".into()));

    let worker = f.worker(&[]);
    f.send_task(r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 3000}"#)
        .await;
    let received = f.drain_output(expected.len()).await;
    let keys: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(keys, expected);
    let precise = received
        .iter()
        .find(|m| m.body.contains("\"precise\""))
        .expect("the precise row");
    assert!(
        precise
            .body
            .contains(r#""big":12345678901234567890123456789012345678"#),
        "{}",
        precise.body
    );
    assert!(
        precise
            .body
            .contains(r#""small":0.1234567890123456789012345678901234567"#),
        "{}",
        precise.body
    );
    assert!(
        !precise.attributes.contains_key("job_id"),
        "no job id was given"
    );
    assert_eq!(precise.attributes.get("table"), Some(&f.table));
    assert_eq!(
        precise.attributes.get("segment").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        worker.metric("scanfleet_tasks_completed_total", ""),
        Some(1.0)
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_output_format_sends_attribute_value_json() {
    let f = Fixture::new(20, 3).await;
    let _worker = f.worker(&[("SCANFLEET__OUTPUT__FORMAT", "dynamodb")]);
    f.send_task(r#"{"current_segment": 0, "total_segments": 1}"#)
        .await;
    let received = f.drain_output(20).await;
    let keys: HashSet<_> = received
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            (
                v["PK"]["S"].as_str().unwrap().to_owned(),
                v["SK"]["S"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys, f.expected_keys());
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_tasks_end_in_the_dlq_while_valid_ones_complete() {
    let f = Fixture::new(scaled(400, 100), 2).await;
    let invalid = [
        "not json at all",
        "[0, 4]",
        r#"{"current_segment": 4, "total_segments": 4}"#,
        r#"{"current_segment": -1, "total_segments": 4}"#,
        r#"{"current_segment": 0, "total_segments": 0}"#,
        r#"{"current_segment": 0, "total_segments": 1000001}"#,
        r#"{"current_segment": "0", "total_segments": 4}"#,
        r#"{"current_segment": 0, "total_segments": 4, "surprise": true}"#,
        r#"{"current_segment": 0, "total_segments": 4, "table": "not-allowed"}"#,
        r#"{"current_segment": 0, "total_segments": 4, "limit_of_rows": 0}"#,
    ];
    let mut worker = f.worker(&[]);
    for (i, body) in invalid.iter().enumerate() {
        f.send_task(body).await;
        // Valid tasks interleaved with the invalid ones, in the same receive batches.
        if i < 4 {
            f.send_task(&format!(
                r#"{{"current_segment": {i}, "total_segments": 4}}"#
            ))
            .await;
        }
    }
    let received = f.drain_output(f.keys.len()).await;
    let keys: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(
        keys,
        f.expected_keys(),
        "valid tasks did not deliver the table"
    );

    // Every invalid body, and only those, ends in the DLQ.
    let dead = devkit::drain_until(
        &f.aws,
        &f.queues.dlq,
        Duration::from_secs(120),
        Duration::from_secs(1),
        |got| got.len() >= invalid.len(),
    )
    .await
    .expect("drain DLQ");
    let dead_bodies: HashSet<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(dead_bodies, invalid.iter().copied().collect::<HashSet<_>>());

    // Counted by reason, logged with message id and reason, and the worker never died.
    let rejected = worker
        .metric("scanfleet_tasks_rejected_total", "")
        .expect("metrics");
    assert!(rejected >= invalid.len() as f64, "rejected {rejected}");
    for reason in ["malformed", "out_of_range", "table_not_allowed"] {
        let n = worker
            .metric(
                "scanfleet_tasks_rejected_total",
                &format!("reason=\"{reason}\""),
            )
            .unwrap();
        assert!(n > 0.0, "no rejection counted as {reason}");
    }
    assert_eq!(
        worker.metric("scanfleet_tasks_completed_total", ""),
        Some(4.0)
    );
    let log = worker.log_text();
    for m in &dead {
        // SQS keeps a message's id when it redrives it, so each dead task's rejection is in the log.
        let logged = log
            .lines()
            .any(|l| l.contains("invalid task rejected") && l.contains(&m.message_id));
        assert!(
            logged,
            "rejection of {} ({}) not logged",
            m.message_id, m.body
        );
    }
    assert!(
        log.contains(r#"table "not-allowed" is not in scan.allowed_tables"#),
        "{log}"
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited"
    );
    assert_eq!(f.depth(&f.queues.control).await, 0);
    f.cleanup().await;
}

/// A task slow enough to outlive the visibility timeout: one segment read one row per page.
async fn slow_task(f: &Fixture) {
    f.send_task(r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 1}"#)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_longer_than_the_visibility_timeout_is_not_delivered_twice() {
    let rows = scaled(3000, 200);
    let f = Fixture::new(rows, 5).await;
    let vis = [("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5")];
    let workers = [f.worker(&vis), f.worker(&vis)];
    let started = Instant::now();
    slow_task(&f).await;
    let received = f.drain_output(rows as usize).await;
    let took = started.elapsed();
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(distinct, f.expected_keys());
    // The premise: the task really outlived its visibility timeout (else this proves nothing).
    let duration_sum: f64 = workers
        .iter()
        .map(|w| w.metric("scanfleet_task_duration_seconds_sum", "").unwrap())
        .sum();
    assert!(
        duration_sum > 5.0,
        "the task took only {duration_sum:.1} s (drain saw {took:?}); make it slower"
    );
    let received_tasks: f64 = workers
        .iter()
        .map(|w| w.metric("scanfleet_tasks_received_total", "").unwrap())
        .sum();
    let heartbeats: f64 = workers
        .iter()
        .map(|w| w.metric("scanfleet_heartbeats_total", "").unwrap())
        .sum();
    assert_eq!(received_tasks, 1.0, "the task was delivered more than once");
    assert!(heartbeats >= 1.0);
    assert_eq!(keys.len(), distinct.len(), "rows were published twice");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_hands_back_and_loses_nothing() {
    let rows = scaled(3000, 200);
    let f = Fixture::new(rows, 5).await;
    let drain = [("SCANFLEET__WORKER__DRAIN_TIMEOUT_SECONDS", "2")];
    let mut first = f.worker(&drain);
    slow_task(&f).await;

    // Collect output while waiting for the first worker to be mid-segment.
    let mut received = Vec::new();
    let start = Instant::now();
    while first
        .metric("scanfleet_rows_published_total", "")
        .unwrap_or(0.0)
        < 10.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first worker never started publishing"
        );
        received.extend(
            devkit::receive_some(&f.aws, &f.queues.output, 0)
                .await
                .unwrap(),
        );
    }
    first.terminate();
    let status = wait_exit(&mut first, Duration::from_secs(2 + 1 + 10))
        .await
        .expect("the worker did not exit within the drain timeout");
    assert!(status.success(), "exit status {status:?}");
    let log = first.log_text();
    assert!(log.contains("shutdown requested"), "{log}");

    // Whether it finished in time or handed the task back, a second worker completes the job.
    let _second = f.worker(&[]);
    let seen: HashSet<String> = received.iter().map(|m| m.message_id.clone()).collect();
    let rest = devkit::drain_until(
        &f.aws,
        &f.queues.output,
        Duration::from_secs(240),
        Duration::from_secs(2),
        |got| {
            let keys: HashSet<_> = got.iter().chain(received.iter()).map(plain_key).collect();
            keys.len() >= rows as usize
        },
    )
    .await
    .unwrap();
    let keys: HashSet<_> = received
        .iter()
        .chain(rest.iter().filter(|m| !seen.contains(&m.message_id)))
        .map(plain_key)
        .collect();
    assert_eq!(keys, f.expected_keys(), "rows were lost across the SIGTERM");
    wait_for_depth(&f, &f.queues.control, 0).await;
    assert_eq!(f.depth(&f.queues.dlq).await, 0);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_reports_ready_after_the_first_receive() {
    let f = Fixture::new(1, 3).await;
    let w = f.worker(&[]);
    wait_for("readyz 200", Duration::from_secs(30), || {
        devkit::http_get(w.metrics_port, "/readyz").map(|r| r.0) == Some(200)
    })
    .await;
    let text = w.metrics().unwrap();
    for name in [
        "scanfleet_tasks_received_total",
        "scanfleet_tasks_in_flight",
        "scanfleet_rows_published_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    f.cleanup().await;
}
