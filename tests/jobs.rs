//! Scan jobs people can plan, watch, finish and trust: filters and projections, FIFO output,
//! the read budget and the job ledger, with real `scanfleet` processes against a running
//! emulator (see tests/emulator.rs for how `make test` runs them). Without an endpoint these
//! tests fail: they never pass by skipping.

mod common;

use std::collections::HashSet;
use std::process::Output;
use std::time::Duration;

use common::{BINARY, Fixture, plain_key, scaled, total, wait_for};
use scanfleet::devkit;

/// Runs `scanfleet ARGS` with the fixture's control queue and any `env`.
fn scanfleet(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(BINARY);
    cmd.args(args)
        .env("SCANFLEET__CONTROL__QUEUE_URL", &f.queues.control);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run scanfleet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_and_a_projection_change_what_is_sent() {
    let rows = scaled(600, 300);
    let f = Fixture::new(rows, 3).await;
    // SK is PREFIX-<n>: the replaced design's begins_with filter keeps n = 1, 10-19, 100-199, …
    let expected: HashSet<(String, String)> = f
        .keys
        .iter()
        .filter(|(_, sk)| sk.starts_with("PREFIX-1"))
        .cloned()
        .collect();
    assert!(expected.len() > 10 && expected.len() < rows as usize);
    // Small pages and chunks: most pages match nothing but carry a LastEvaluatedKey, and the
    // segment is continued many times; nothing may get lost on the way.
    let workers = [
        f.worker(&[("SCANFLEET__WORKER__CHECKPOINT_ROWS", "5")]),
        f.worker(&[("SCANFLEET__WORKER__CHECKPOINT_ROWS", "5")]),
    ];
    let out = scanfleet(
        &f,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "3",
            "--limit-of-rows",
            "20",
            "--filter-expression",
            "begins_with(#sk, :prefix)",
            "--projection-expression",
            "#sk, createdAt",
            "--expression-attribute-names",
            r##"{"#sk":"SK"}"##,
            "--expression-attribute-values",
            r#"{":prefix":{"S":"PREFIX-1"}}"#,
            "--consistent-read",
        ],
        &[],
    );
    assert!(out.status.success(), "enqueue: {}", stderr(&out));
    let received = f.drain_output(expected.len()).await;
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(distinct, expected, "the filter was not applied exactly");
    assert_eq!(keys.len(), distinct.len(), "rows were sent twice");
    for m in &received {
        let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        let mut attributes: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        attributes.sort();
        // The projection, plus the partition key scanfleet always adds for row_id.
        assert_eq!(attributes, ["PK", "SK", "createdAt"], "{}", m.body);
        assert_eq!(m.attributes["row_id"].len(), 32);
    }
    f.wait_for_depth(&f.queues.control, 0).await;
    let w = [&workers[0], &workers[1]];
    assert_eq!(total(&w, "scanfleet_tasks_completed_total"), 3.0);
    assert!(
        total(&w, "scanfleet_checkpoints_total") >= 3.0,
        "the filtered segments were never continued"
    );
    assert_eq!(
        total(&w, "scanfleet_rows_published_total"),
        expected.len() as f64
    );
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_filter_is_refused_before_anything_is_sent() {
    let f = Fixture::new(5, 3).await;
    for (args, needle) in [
        (
            vec!["--filter-expression", "begins_with(SK, :p)"],
            ":p, which expression_attribute_values does not define",
        ),
        (
            vec![
                "--projection-expression",
                "SK",
                "--expression-attribute-names",
                r##"{"#unused":"x"}"##,
            ],
            "#unused",
        ),
        (
            vec!["--expression-attribute-values", "[1]"],
            "must be a JSON object",
        ),
    ] {
        let mut all = vec!["enqueue", "--table", &f.table, "--segments", "2"];
        all.extend(args);
        let out = scanfleet(&f, &all, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    assert_eq!(f.depth(&f.queues.control).await, 0, "a task was sent");
    // A task with a bad expression sent by another producer is rejected by the worker.
    let w = f.worker(&[]);
    f.send_task(r#"{"current_segment":0,"total_segments":1,"filter_expression":"a = :nope"}"#)
        .await;
    wait_for("the rejection", Duration::from_secs(60), || {
        w.metric(
            "scanfleet_tasks_rejected_total",
            r#"reason="bad_expression""#,
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_output_deduplicates_a_replayed_chunk() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let rows = scaled(200, 100);
    let f = Fixture::new(rows, 3).await;
    let fifo = devkit::create_queue(
        &f.aws,
        &format!("{}-rows.fifo", f.table),
        std::collections::HashMap::from([(QueueAttributeName::FifoQueue, "true".to_owned())]),
    )
    .await
    .expect("create FIFO queue");
    let w = f.worker(&[("SCANFLEET__OUTPUT__QUEUE_URL", &fifo)]);
    let task = r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 50}"#;
    f.send_task(task).await;
    wait_for("the first run", Duration::from_secs(120), || {
        w.metric("scanfleet_tasks_completed_total", "") == Some(1.0)
    })
    .await;
    // The same chunk again, as after a crash between publishing and deleting the task.
    f.send_task(task).await;
    wait_for("the replay", Duration::from_secs(120), || {
        w.metric("scanfleet_tasks_completed_total", "") == Some(2.0)
    })
    .await;
    assert_eq!(
        w.metric("scanfleet_rows_published_total", ""),
        Some(2.0 * rows as f64),
        "the replay did not publish the rows again"
    );
    let received = f.drain(&fifo, rows as usize).await;
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(distinct, f.expected_keys());
    assert_eq!(
        keys.len(),
        rows as usize,
        "SQS delivered replayed rows twice"
    );
    let _ = f.aws.sqs.delete_queue().queue_url(&fifo).send().await;
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_budget_keeps_the_consumed_capacity_rate_near_r() {
    // Benchmark-style: one segment read in small pages (about 20 units in all on either
    // emulator) under a budget of 4 units/s, so about 5 s; the bound is generous (±20 %).
    let rows = scaled(400, 200);
    let f = Fixture::new(rows, 3).await;
    let w = f.worker(&[("SCANFLEET__WORKER__CHECKPOINT_ROWS", "100000")]);
    let budget = 4.0;
    let out = scanfleet(
        &f,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "1",
            "--limit-of-rows",
            "10",
            "--read-units-per-second",
            "4",
        ],
        &[],
    );
    assert!(out.status.success(), "enqueue: {}", stderr(&out));
    wait_for("the job", Duration::from_secs(120), || {
        w.metric("scanfleet_tasks_completed_total", "") == Some(1.0)
    })
    .await;
    let units = w.metric("scanfleet_read_capacity_units_total", "").unwrap();
    let seconds = w.metric("scanfleet_task_duration_seconds_sum", "").unwrap();
    assert!(
        units >= 10.0,
        "only {units} units consumed: nothing to pace"
    );
    let rate = units / seconds;
    eprintln!("read budget: {units} units in {seconds:.2} s = {rate:.2} units/s (budget {budget})");
    assert!(
        (0.8 * budget..=1.2 * budget).contains(&rate),
        "{units} units in {seconds:.1} s = {rate:.2} units/s, budget {budget}"
    );
    assert_eq!(f.drain_output(rows as usize).await.len(), rows as usize);
    f.finish_clean().await;
}
