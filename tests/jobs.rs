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

/// `scanfleet ARGS` with the fixture's control queue and any `env`.
fn command(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BINARY);
    cmd.args(args)
        .env("SCANFLEET__CONTROL__QUEUE_URL", &f.queues.control);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `scanfleet ARGS` to its end.
fn scanfleet(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(f, args, env).output().expect("run scanfleet")
}

/// Starts `scanfleet enqueue … --wait` with the ledger, its output piped.
fn spawn_wait(f: &Fixture, ledger: &str, args: &[&str]) -> std::process::Child {
    command(f, args, &[("SCANFLEET__LEDGER__TABLE", ledger)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("enqueue --wait")
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
    // Rows read count before the filter (pages read ahead at a checkpoint count again).
    assert!(total(&w, "scanfleet_rows_scanned_total") >= rows as f64);
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
    // With a run id, as `enqueue` writes one: a copy of this body is the same run's task (a
    // hand-written task without one would be a run of its own each time it is sent).
    let task = r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 50, "job_id": "j1", "run_id": "r1"}"#;
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
    // Another job over the same table within SQS's 5-minute window is not a repeat: its rows
    // all arrive (the deduplication id is the row_id within the job's run).
    f.send_task(&task.replace("j1", "j2")).await;
    let second = f.drain(&fifo, rows as usize).await;
    let keys: HashSet<_> = second.iter().map(plain_key).collect();
    assert_eq!(keys, f.expected_keys(), "another job's rows were dropped");
    assert!(second.iter().all(|m| m.attributes["job_id"] == "j2"));
    // Nor is a rerun of j1 (another run id): the deduplication id is the row_id within the run.
    f.send_task(&task.replace("r1", "r2")).await;
    let rerun = f.drain(&fifo, rows as usize).await;
    let keys: HashSet<_> = rerun.iter().map(plain_key).collect();
    assert_eq!(keys, f.expected_keys(), "a rerun's rows were dropped");
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

/// A fresh ledger table for the fixture, created with `scanfleet ledger create`.
fn create_ledger(f: &Fixture) -> String {
    let table = format!("{}-ledger", f.table);
    let env = [("SCANFLEET__LEDGER__TABLE", table.as_str())];
    let out = scanfleet(f, &["ledger", "create"], &env);
    assert!(out.status.success(), "ledger create: {}", stderr(&out));
    assert!(
        stdout(&out).contains("created ledger table"),
        "{}",
        stdout(&out)
    );
    let again = scanfleet(f, &["ledger", "create"], &env);
    assert!(again.status.success() && stdout(&again).contains("already exists"));
    table
}

fn status_json(f: &Fixture, ledger: &str, job: &str) -> serde_json::Value {
    let out = scanfleet(
        f,
        &["status", job, "--json"],
        &[("SCANFLEET__LEDGER__TABLE", ledger)],
    );
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

async fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "enqueue --wait did not end in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drop_table(f: &Fixture, table: &str) {
    let _ = f.aws.dynamodb.delete_table().table_name(table).send().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_counts_equal_the_rows_published_even_after_a_kill() {
    let rows = scaled(2000, 300);
    let f = Fixture::new(rows, 20).await;
    let ledger = create_ledger(&f);
    let chunk = scaled(100, 30).to_string();
    let settings = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__WORKER__CONCURRENCY", "1"),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", chunk.as_str()),
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
    ];
    let mut workers = [f.worker(&settings), f.worker(&settings)];
    // A read budget keeps the job running for several seconds, long enough to kill a worker
    // in the middle of a segment.
    let budget = scaled(10, 4).to_string();
    let mut wait = spawn_wait(
        &f,
        &ledger,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "4",
            "--limit-of-rows",
            "20",
            "--job-id",
            "ledger-kill",
            "--read-units-per-second",
            &budget,
            "--wait",
            "--progress-every",
            "1",
        ],
    );
    wait_for("the first rows", Duration::from_secs(60), || {
        workers[0]
            .metric("scanfleet_rows_published_total", "")
            .is_some_and(|n| n > 0.0)
    })
    .await;
    workers[0].child.kill().expect("kill -9");
    workers[0].child.wait().expect("reap");
    assert!(
        wait.try_wait().unwrap().is_none(),
        "the job ended before the kill: nothing tested"
    );
    workers[0] = f.worker(&settings);

    let status = wait_child(&mut wait, Duration::from_secs(300)).await;
    let mut progress = String::new();
    std::io::Read::read_to_string(wait.stderr.as_mut().unwrap(), &mut progress).unwrap();
    assert!(status.success(), "enqueue --wait failed: {progress}");
    assert!(
        progress.contains("job ledger-kill:") && progress.contains("segments done"),
        "no progress lines: {progress}"
    );
    assert!(
        progress.contains("ledger-kill on table"),
        "no summary: {progress}"
    );

    let s = status_json(&f, &ledger, "ledger-kill");
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["segments_total"], 4);
    assert_eq!(s["segments_done"], 4);
    assert_eq!(
        s["rows_published"], rows,
        "ledger counts differ from the table: {s}"
    );
    assert_eq!(s["rows_scanned"], rows, "{s}");
    assert!(s["read_units_consumed"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["slowest_segments"].as_array().unwrap().len(), 3);
    let received = f.drain_output(rows as usize).await;
    let distinct: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(distinct, f.expected_keys());
    let text = scanfleet(
        &f,
        &["status", "ledger-kill"],
        &[("SCANFLEET__LEDGER__TABLE", &ledger)],
    );
    assert!(stdout(&text).contains("4/4 done"), "{}", stdout(&text));
    drop_table(&f, &ledger).await;
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_ends_failed_when_the_workers_reject_the_jobs_tasks() {
    let f = Fixture::new(10, 2).await;
    let ledger = create_ledger(&f);
    // Workers that may read another table only: every task of the job is rejected, and
    // dead-lettered after 2 receives.
    let worker = f.worker(&[
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__SCAN__DEFAULT_TABLE", "some-other-table"),
    ]);
    let mut wait = spawn_wait(
        &f,
        &ledger,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "2",
            "--job-id",
            "refused",
            "--wait",
        ],
    );
    let status = wait_child(&mut wait, Duration::from_secs(120)).await;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut wait.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "--wait succeeded on a refused job: {err}"
    );
    assert!(err.contains("dead-lettered"), "{err}");
    let s = status_json(&f, &ledger, "refused");
    assert_eq!(s["state"], "failed", "{s}");
    let failed = s["failed_segments"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{s}");
    for segment in failed {
        let error = segment["last_error"].as_str().unwrap();
        assert!(error.contains("table_not_allowed"), "{s}");
    }
    f.wait_for_depth(&f.queues.dlq, 2).await;
    assert_eq!(
        worker.metric(
            "scanfleet_tasks_dead_lettered_total",
            r#"reason="table_not_allowed""#
        ),
        Some(2.0)
    );
    drop_table(&f, &ledger).await;
    f.cleanup().await;
}

/// `scanfleet reconcile JOB --redrive-from <the fixture's DLQ>`: asserts that it moved tasks
/// back from the DLQ and re-enqueued nothing besides; returns its report.
fn redrive_from_the_dlq(f: &Fixture, job: &str, env: &[(&str, &str)]) -> String {
    let out = scanfleet(f, &["reconcile", job, "--redrive-from", &f.queues.dlq], env);
    assert!(out.status.success(), "reconcile: {}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("moved back from the dead-letter queue"),
        "{report}"
    );
    assert!(
        !report.contains("re-enqueued"),
        "the redriven segment was enqueued twice: {report}"
    );
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn status_wait_and_reconcile_handle_a_dead_lettered_segment() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_sqs::types::QueueAttributeName;
    let rows = scaled(200, 100);
    let f = Fixture::new(rows, 2).await;
    let ledger = create_ledger(&f);
    // One row too large for the output queue, and no oversize queue: its segment fails on
    // every attempt and is dead-lettered after 2 receives.
    let mut big = devkit::demo_row(rows, 4000);
    big.insert("PK".into(), AttributeValue::S("big".into()));
    f.put_item(big).await;
    f.set_queue_attribute(
        &f.queues.output,
        QueueAttributeName::MaximumMessageSize,
        "2048",
    )
    .await;
    let env = [("SCANFLEET__LEDGER__TABLE", ledger.as_str())];
    let mut worker = f.worker(&env);
    let out = scanfleet(
        &f,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "4",
            "--job-id",
            "dead",
            "--wait",
        ],
        &env,
    );
    assert!(!out.status.success(), "--wait succeeded on a failed job");
    assert!(stderr(&out).contains("dead-lettered"), "{}", stderr(&out));
    let s = status_json(&f, &ledger, "dead");
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["segments_done"], 3, "{s}");
    let failed = s["failed_segments"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{s}");
    assert!(
        failed[0]["last_error"].as_str().unwrap().contains("bytes"),
        "{s}"
    );
    let text = scanfleet(&f, &["status", "dead"], &env);
    assert!(stdout(&text).contains("last error:"), "{}", stdout(&text));
    f.wait_for_depth(&f.queues.dlq, 1).await;
    f.wait_for_depth(&f.queues.control, 0).await;

    // Fix the cause (a worker reads the queue's limit at start-up), then reconcile.
    f.set_queue_attribute(
        &f.queues.output,
        QueueAttributeName::MaximumMessageSize,
        "262144",
    )
    .await;
    // SIGTERM, not kill -9: a killed worker's pending long poll could swallow the redriven
    // task for a whole visibility timeout.
    worker.terminate();
    assert!(
        common::wait_exit(&mut worker, Duration::from_secs(60))
            .await
            .is_some()
    );
    worker = f.worker(&env);
    redrive_from_the_dlq(&f, "dead", &env);
    let start = std::time::Instant::now();
    let s = loop {
        let s = status_json(&f, &ledger, "dead");
        if s["state"] != "failed" && s["state"] != "running" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["rows_published"], rows + 1, "{s}");
    assert_eq!(f.depth(&f.queues.dlq).await, 0);
    let again = scanfleet(&f, &["reconcile", "dead"], &env);
    assert!(
        stdout(&again).contains("nothing to reconcile"),
        "{}",
        stdout(&again)
    );
    assert!(worker.metric("scanfleet_tasks_completed_total", "") >= Some(1.0));
    drop_table(&f, &ledger).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_suggests_segments_with_its_reasons() {
    let f = Fixture::new(50, 3).await;
    let out = scanfleet(&f, &["plan", "--table", &f.table, "--workers", "3"], &[]);
    assert!(out.status.success(), "plan: {}", stderr(&out));
    let text = stdout(&out);
    // A small table on 3 workers × 4 slots: one segment per slot.
    assert!(text.contains("one segment per 2 GB"), "{text}");
    assert!(text.ends_with("suggested: --segments 12"), "{text}");
    let out = scanfleet(&f, &["status", "some-job"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ledger.table"), "{}", stderr(&out));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicated_task_is_not_counted_twice_and_does_not_rescan_the_segment() {
    let rows = scaled(300, 150);
    let f = Fixture::new(rows, 3).await;
    let ledger = create_ledger(&f);
    let env = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "40"),
    ];
    // The job's task as enqueue sent it, kept to be delivered again later.
    let task = enqueue_unseen(&f, "dup", &env).await;
    f.send_task(&task.body).await;
    let w = f.worker(&env);
    let first = wait_for_state(&f, &ledger, "dup", "done").await;
    assert_eq!(first["rows_published"], rows, "{first}");
    assert!(first["chunks"].as_u64().unwrap() > 2, "{first}");
    // The segment's first task again, as a duplicate delivery would bring it: the same body,
    // so the same run (a hand-written task without a run id would be a new run, and run).
    f.send_task(&task.body).await;
    wait_for("the duplicate", Duration::from_secs(60), || {
        w.metric("scanfleet_duplicate_chunks_total", "") == Some(1.0)
    })
    .await;
    f.wait_for_depth(&f.queues.control, 0).await;
    // The ledger is past the duplicate's chunk, so it is dropped before it scans anything.
    let published = w.metric("scanfleet_rows_published_total", "").unwrap();
    assert_eq!(
        published, rows as f64,
        "the duplicate scanned again: {published} rows published"
    );
    let after = status_json(&f, &ledger, "dup");
    for k in [
        "state",
        "segments_done",
        "chunks",
        "rows_scanned",
        "rows_published",
        "read_units_consumed",
    ] {
        assert_eq!(after[k], first[k], "{k} changed: {first} → {after}");
    }
    drop_table(&f, &ledger).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_copies_of_a_continuation_do_not_both_run_to_the_end() {
    let rows = scaled(400, 300);
    let chunk = 40;
    let f = Fixture::new(rows, 5).await;
    let ledger = create_ledger(&f);
    let checkpoint_rows = chunk.to_string();
    let env = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        (
            "SCANFLEET__WORKER__CHECKPOINT_ROWS",
            checkpoint_rows.as_str(),
        ),
    ];
    // A worker 100 ms from the emulator, stopped once it has counted a chunk: it checkpoints,
    // leaving the segment's continuation on the control queue, and exits.
    let proxy = f.proxy(Duration::from_millis(100)).await;
    let mut first = f.worker_via(&proxy, &env);
    let args = [
        "enqueue",
        "--table",
        &f.table,
        "--segments",
        "1",
        "--limit-of-rows",
        "20",
        "--job-id",
        "twins",
    ];
    let out = scanfleet(&f, &args, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("a counted chunk", Duration::from_secs(60), || {
        status_json(&f, &ledger, "twins")["chunks"].as_u64() >= Some(1)
    })
    .await;
    first.terminate();
    let status = common::wait_exit(&mut first, Duration::from_secs(30)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The continuation twice, as when its sender dies between sending it and deleting its own
    // task: two messages of one chunk.
    let continuation = devkit::receive_some(&f.aws, &f.queues.control, 5)
        .await
        .unwrap();
    assert_eq!(continuation.len(), 1, "expected the one continuation");
    let body = &continuation[0].body;
    assert!(body.contains("exclusive_start_key"), "{body}");
    f.send_task(body).await;
    f.send_task(body).await;

    // Both copies run at once; the one that counts the chunk second must stop there.
    let second = f.worker(&[
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        (
            "SCANFLEET__WORKER__CHECKPOINT_ROWS",
            checkpoint_rows.as_str(),
        ),
        ("SCANFLEET__WORKER__CONCURRENCY", "2"),
    ]);
    let received = f.drain_output(rows as usize).await;
    let keys: HashSet<(String, String)> = received.iter().map(plain_key).collect();
    assert_eq!(keys, f.expected_keys(), "rows were lost");
    let repeats = received.len() - keys.len();
    assert!(
        repeats <= 2 * chunk,
        "{repeats} rows repeated: both copies went on past their first chunk"
    );
    assert!(second.metric("scanfleet_duplicate_chunks_total", "") >= Some(1.0));
    f.wait_for_depth(&f.queues.control, 0).await;
    let s = status_json(&f, &ledger, "twins");
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["rows_published"], rows, "{s}");
    drop_table(&f, &ledger).await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_resumes_a_lost_segment_from_the_ledgers_position() {
    let rows = scaled(400, 200);
    let f = Fixture::new(rows, 5).await;
    let ledger = create_ledger(&f);
    let env = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "20"),
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
    ];
    let mut w = f.worker(&env);
    let budget = scaled(4, 2).to_string();
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
            "--job-id",
            "lost",
            "--read-units-per-second",
            &budget,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let start = std::time::Instant::now();
    while status_json(&f, &ledger, "lost")["chunks"].as_u64().unwrap() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no chunk recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The worker dies and its task is lost (purged): only the ledger knows where it was.
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    f.aws
        .sqs
        .purge_queue()
        .queue_url(&f.queues.control)
        .send()
        .await
        .expect("PurgeQueue");
    f.wait_for_depth(&f.queues.control, 0).await;
    let before = status_json(&f, &ledger, "lost");
    assert_eq!(before["state"], "running", "{before}");
    let chunks = before["chunks"].as_u64().unwrap();

    let out = scanfleet(&f, &["reconcile", "lost", "--stale-seconds", "0"], &env);
    assert!(out.status.success(), "reconcile: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("segment 0: re-enqueued at chunk {chunks}")
    );
    let _w = f.worker(&env);
    let start = std::time::Instant::now();
    let s = loop {
        let s = status_json(&f, &ledger, "lost");
        if s["state"] == "done" {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "never done: {s}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(s["rows_published"], rows, "{s}");
    let received = f.drain_output(rows as usize).await;
    let distinct: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(distinct, f.expected_keys(), "rows were lost");
    drop_table(&f, &ledger).await;
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_re_enqueues_at_once_a_segment_whose_task_was_lost_before_it_started() {
    let rows = scaled(300, 150);
    let f = Fixture::new(rows, 5).await;
    let ledger = create_ledger(&f);
    let env = [("SCANFLEET__LEDGER__TABLE", ledger.as_str())];
    // No worker yet: the job's three tasks wait on the control queue.
    let out = scanfleet(
        &f,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "3",
            "--job-id",
            "never",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Segment 1's task is lost before any worker took it: all three are taken off the queue
    // and the other two put back.
    let tasks = f.drain(&f.queues.control, 3).await;
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for t in &tasks {
        let task: serde_json::Value = serde_json::from_str(&t.body).unwrap();
        if task["current_segment"] != 1 {
            f.send_task(&t.body).await;
        }
    }
    let w = f.worker(&env);
    wait_for("the two other segments", Duration::from_secs(120), || {
        status_json(&f, &ledger, "never")["segments_done"] == 2
    })
    .await;
    f.wait_for_depth(&f.queues.control, 0).await;
    let before = status_json(&f, &ledger, "never");
    assert_eq!(
        (&before["state"], &before["segments_pending"]),
        (&"running".into(), &1.into()),
        "{before}"
    );

    // The job is seconds old, far below the default --stale-seconds (300); the empty control
    // queue is what says segment 1 has no task anywhere.
    let out = scanfleet(&f, &["reconcile", "never"], &env);
    assert!(out.status.success(), "reconcile: {}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("segment 1: re-enqueued at chunk 0"),
        "{report}"
    );
    assert!(report.contains("segment 0: left alone, done"), "{report}");
    assert!(report.contains("segment 2: left alone, done"), "{report}");
    assert!(!report.contains("nothing"), "{report}");
    wait_for("the job", Duration::from_secs(120), || {
        status_json(&f, &ledger, "never")["state"] == "done"
    })
    .await;
    let s = status_json(&f, &ledger, "never");
    assert_eq!(s["rows_published"], rows, "{s}");
    let received = f.drain_output(rows as usize).await;
    let distinct: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!(distinct, f.expected_keys(), "rows were lost");
    assert_eq!(w.metric("scanfleet_tasks_completed_total", ""), Some(3.0));
    drop_table(&f, &ledger).await;
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_projection_the_key_attributes_push_over_4_kb_is_refused_by_enqueue_and_the_worker() {
    let f = Fixture::new(5, 2).await;
    // Distinct attribute names, 4096 bytes as written (DynamoDB's limit): the key attributes
    // scanfleet appends (PK, SK) make the projection it sends 4130 bytes.
    let mut projection = (0..).map(|i| format!("a{i}")).take(800).collect::<Vec<_>>();
    while projection.join(", ").len() > 4096 {
        projection.pop();
    }
    let mut projection = projection.join(", ");
    projection.push_str(&"z".repeat(4096 - projection.len()));
    assert_eq!(projection.len(), 4096);
    let out = scanfleet(
        &f,
        &[
            "enqueue",
            "--table",
            &f.table,
            "--segments",
            "1",
            "--projection-expression",
            &projection,
        ],
        &[],
    );
    assert!(!out.status.success(), "enqueue accepted it");
    let err = stderr(&out);
    assert!(
        err.contains("projection_expression is 4130 bytes") && err.contains("4096"),
        "{err}"
    );
    assert_eq!(f.depth(&f.queues.control).await, 0, "a task was sent");
    // The same task from another producer fails on the worker with that error, no panic.
    let w = f.worker(&[]);
    f.send_task(
        &serde_json::json!({
            "current_segment": 0,
            "total_segments": 1,
            "projection_expression": projection,
        })
        .to_string(),
    )
    .await;
    wait_for("the failure", Duration::from_secs(60), || {
        w.log_text().contains("projection_expression is 4130 bytes")
    })
    .await;
    assert!(!w.log_text().contains("panicked"), "{}", w.log_text());
    f.wait_for_depth(&f.queues.dlq, 1).await;
    f.cleanup().await;
}

// Runs, copies and resends: which tasks of a job the ledger lets run (see src/dedup.rs).

const LEDGER_TABLE: &str = "SCANFLEET__LEDGER__TABLE";
const CHECKPOINT_ROWS: &str = "SCANFLEET__WORKER__CHECKPOINT_ROWS";

/// A fixture of `rows` rows, its control queue's maxReceiveCount `max_receive_count`, and a
/// ledger table.
async fn with_ledger(rows: u64, max_receive_count: u32) -> (Fixture, String) {
    let f = Fixture::new(rows, max_receive_count).await;
    let ledger = create_ledger(&f);
    (f, ledger)
}

/// Asserts the job left nothing behind (see [`Fixture::finish_clean`]) and removes it all.
async fn finish_job(f: Fixture, ledger: &str) {
    drop_table(&f, ledger).await;
    f.finish_clean().await;
}

/// `scanfleet enqueue --table <the fixture's> --segments N --job-id JOB` plus `extra`; asserts
/// it succeeded.
fn enqueue(f: &Fixture, segments: &str, job: &str, extra: &[&str], env: &[(&str, &str)]) {
    let mut args = vec!["enqueue", "--table", &f.table, "--segments", segments];
    args.extend(["--job-id", job]);
    args.extend_from_slice(extra);
    let out = scanfleet(f, &args, env);
    assert!(out.status.success(), "enqueue {job}: {}", stderr(&out));
}

/// Enqueues `job` as one segment read in pages of 20, no worker running, and takes its task
/// off the control queue: the message as `enqueue` sent it (its body carries the run id).
async fn enqueue_unseen(f: &Fixture, job: &str, env: &[(&str, &str)]) -> devkit::Received {
    enqueue(f, "1", job, &["--limit-of-rows", "20"], env);
    let mut tasks = f.drain(&f.queues.control, 1).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    tasks.remove(0)
}

/// The `run_id` a task body carries.
fn run_of(body: &str) -> String {
    let task: serde_json::Value = serde_json::from_str(body).unwrap();
    task["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {body}"))
        .to_owned()
}

/// The fixture's keys in the order a scan of one segment reads them.
async fn scan_order(f: &Fixture) -> Vec<(String, String)> {
    let mut pages = f
        .aws
        .dynamodb
        .scan()
        .table_name(&f.table)
        .segment(0)
        .total_segments(1)
        .into_paginator()
        .items()
        .send();
    let mut keys = Vec::new();
    while let Some(item) = pages.next().await {
        keys.push(devkit::row_key(&item.expect("Scan")).expect("a demo row"));
    }
    assert_eq!(keys.len(), f.keys.len());
    keys
}

/// Segment 0's record as workers leave it, written by the test (the layout of src/ledger.rs:
/// partition key `job_id`, sort key `item` = `segment#0000000`).
struct SegmentState<'a> {
    job: &'a str,
    status: &'a str,
    /// Chunks counted, the next one expected.
    chunks: u32,
    run: &'a str,
    counted_by: &'a str,
    /// The row the last counted chunk ended on.
    resume_key: Option<&'a (String, String)>,
    rows_published: u64,
}

async fn write_segment(f: &Fixture, ledger: &str, state: &SegmentState<'_>) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let mut put = f
        .aws
        .dynamodb
        .put_item()
        .table_name(ledger)
        .item("job_id", S(state.job.into()))
        .item("item", S("segment#0000000".into()))
        .item("status", S(state.status.into()))
        .item("chunks", N(state.chunks.to_string()))
        .item("run_id", S(state.run.into()))
        .item("counted_by", S(state.counted_by.into()))
        .item("rows_published", N(state.rows_published.to_string()))
        .item("rows_scanned", N(state.rows_published.to_string()))
        .item("worker", S("the test".into()))
        .item("heartbeat_at", N(scanfleet::ledger::now_secs().to_string()));
    if let Some((pk, sk)) = state.resume_key {
        let key = serde_json::json!({"PK": {"S": pk}, "SK": {"S": sk}});
        put = put.item("resume_key", S(key.to_string()));
    }
    put.send().await.expect("PutItem of a segment record");
}

/// Writes the record of `task`'s segment (segment 0 of 1) as a worker leaves it when the
/// task, delivered as `counted_by`, counted chunk 0 up to a third of the segment (`status`:
/// `running`, or `failed` when that was its last receive). Returns the rows after that point.
async fn count_chunk_zero(
    f: &Fixture,
    ledger: &str,
    job: &str,
    task: &devkit::Received,
    counted_by: &str,
    status: &str,
) -> HashSet<(String, String)> {
    let order = scan_order(f).await;
    let at = order.len() / 3;
    let run = run_of(&task.body);
    let state = SegmentState {
        job,
        status,
        chunks: 1,
        run: &run,
        counted_by,
        resume_key: Some(&order[at]),
        rows_published: at as u64 + 1,
    };
    write_segment(f, ledger, &state).await;
    order[at + 1..].iter().cloned().collect()
}

/// Segment `segment`'s record of `job`, as the workers read it.
async fn segment_record(
    f: &Fixture,
    ledger: &str,
    job: &str,
    segment: u32,
) -> scanfleet::ledger::SegmentRecord {
    scanfleet::ledger::Ledger::new(f.aws.dynamodb.clone(), ledger)
        .segment(job, segment)
        .await
        .expect("GetItem of a segment record")
        .unwrap_or_else(|| panic!("no record of {job} segment {segment}"))
}

/// Drains the output until every key of `expected` arrived; asserts nothing else arrived and
/// nothing twice.
async fn assert_published_once(
    f: &Fixture,
    expected: &HashSet<(String, String)>,
) -> Vec<devkit::Received> {
    let received = f.drain_output(expected.len()).await;
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        expected.len(),
        "{} distinct rows published, {} expected",
        distinct.len(),
        expected.len()
    );
    assert_eq!(&distinct, expected, "other rows published than expected");
    assert_eq!(keys.len(), distinct.len(), "rows were sent twice");
    received
}

async fn wait_for_state(f: &Fixture, ledger: &str, job: &str, state: &str) -> serde_json::Value {
    wait_for(
        &format!("job {job} {state}"),
        Duration::from_secs(180),
        || status_json(f, ledger, job)["state"] == state,
    )
    .await;
    status_json(f, ledger, job)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_job_sent_again_runs_again_as_a_new_run() {
    let rows = scaled(600, 200);
    let (f, ledger) = with_ledger(rows, 3).await;
    let env = [(LEDGER_TABLE, ledger.as_str()), (CHECKPOINT_ROWS, "50")];
    let w = f.worker(&env);
    let completed = || w.metric("scanfleet_tasks_completed_total", "");
    enqueue(
        &f,
        "2",
        "nightly",
        &["--limit-of-rows", "20", "--wait"],
        &env,
    );
    let first = status_json(&f, &ledger, "nightly");
    assert_eq!(first["state"], "done", "{first}");
    assert_eq!(first["rows_published"], rows, "{first}");
    assert!(first["chunks"].as_u64() > Some(2), "{first}");
    assert_published_once(&f, &f.expected_keys()).await;

    // The same job's two segment tasks again, as a nightly producer with a fixed job id sends
    // them: hand-written, without a run id. They used to be deleted unscanned ("0 of 2,000 rows
    // published, nothing in the dead-letter queue"), the ledger's records counting their chunks.
    for segment in 0..2 {
        f.send_task(&format!(
            r#"{{"current_segment":{segment},"total_segments":2,"job_id":"nightly"}}"#
        ))
        .await;
    }
    wait_for(
        "the hand-sent tasks to run",
        Duration::from_secs(120),
        || completed() == Some(4.0),
    )
    .await;
    assert_published_once(&f, &f.expected_keys()).await;
    let again = status_json(&f, &ledger, "nightly");
    assert_eq!(again["state"], "done", "{again}");
    assert_eq!(
        again["rows_published"], rows,
        "counts of the new run: {again}"
    );
    assert!(
        w.log_text().contains("a new run of the job"),
        "{}",
        w.log_text()
    );

    // And `enqueue` from a configuration without ledger.table (the workers keep theirs): its
    // tasks carry a new run id.
    enqueue(&f, "2", "nightly", &["--limit-of-rows", "20"], &[]);
    wait_for("the third run", Duration::from_secs(120), || {
        completed() == Some(6.0)
    })
    .await;
    assert_published_once(&f, &f.expected_keys()).await;
    assert_eq!(
        w.metric("scanfleet_rows_published_total", ""),
        Some(3.0 * rows as f64)
    );
    assert_eq!(w.metric("scanfleet_duplicate_chunks_total", ""), Some(0.0));
    let third = status_json(&f, &ledger, "nightly");
    assert_eq!(third["state"], "done", "{third}");
    assert_eq!(third["rows_published"], rows, "{third}");
    finish_job(f, &ledger).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_at_the_edge_of_its_range_never_ends_its_segment_in_silence() {
    let (f, ledger) = with_ledger(scaled(100, 60), 2).await;
    let env = [(LEDGER_TABLE, ledger.as_str()), (CHECKPOINT_ROWS, "10")];
    // A segment continued nearly as often as a task can carry: job `edge`'s task (taken before
    // any worker runs) at chunk 999,999,999, the ledger counting up to there.
    let task = enqueue_unseen(&f, "edge", &env).await;
    let mut edge: serde_json::Value = serde_json::from_str(&task.body).unwrap();
    edge["chunk"] = 999_999_999.into();
    edge["limit_of_rows"] = 10.into();
    let run = run_of(&task.body);
    let state = SegmentState {
        job: "edge",
        status: "running",
        chunks: 999_999_999,
        run: &run,
        counted_by: "the-previous-chunk",
        resume_key: None,
        rows_published: 0,
    };
    write_segment(&f, &ledger, &state).await;
    let w = f.worker(&env);

    // The issue's message: chunk + 1 wrapped to 0 and the task ended as finished after one
    // chunk. Now it is refused as out of range, dead-lettered, and its segment failed.
    let body = r#"{"current_segment":0,"total_segments":1,"job_id":"x","chunk":4294967295,"limit_of_rows":100}"#;
    f.send_task(body).await;
    let dead = f.drain(&f.queues.dlq, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, body);
    let rejected = |reason| {
        let labels = format!(r#"reason="{reason}""#);
        (
            w.metric("scanfleet_tasks_rejected_total", &labels),
            w.metric("scanfleet_tasks_dead_lettered_total", &labels),
        )
    };
    assert_eq!(rejected("out_of_range"), (Some(2.0), Some(1.0)));
    let x = segment_record(&f, &ledger, "x", 0).await;
    assert_eq!(x.status, "failed", "{x:?}");
    let error = x.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("chunk must be 0..=1000000000, got 4294967295"),
        "{x:?}"
    );
    assert_eq!(w.metric("scanfleet_tasks_completed_total", ""), Some(0.0));

    // The edge task: chunks 999,999,999 and 1,000,000,000 run, then the task fails on every
    // receive naming the setting to raise, and is dead-lettered; nothing is reported done.
    f.send_task(&edge.to_string()).await;
    let s = wait_for_state(&f, &ledger, "edge", "failed").await;
    let dead = f.drain(&f.queues.dlq, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let last: serde_json::Value = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(last["chunk"], 1_000_000_000, "{last}");
    assert_eq!(s["segments_done"], 0, "{s}");
    assert_eq!(s["rows_published"], 20, "the two chunks, counted once: {s}");
    let error = s["failed_segments"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("continued 1000000000 times") && error.contains("worker.checkpoint_rows"),
        "{s}"
    );
    let received = f.drain_output(20).await;
    let distinct: HashSet<_> = received.iter().map(plain_key).collect();
    assert_eq!((received.len(), distinct.len()), (20, 20));
    assert_eq!(w.metric("scanfleet_tasks_completed_total", ""), Some(0.0));
    assert_eq!(
        w.metric("scanfleet_tasks_dead_lettered_total", r#"reason="failed""#),
        Some(1.0)
    );
    finish_job(f, &ledger).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_sent_again_in_its_place_goes_on_from_its_counted_chunk_while_a_copy_is_dropped() {
    let rows = scaled(300, 150);
    let (f, ledger) = with_ledger(rows, 3).await;
    let env = [(LEDGER_TABLE, ledger.as_str()), (CHECKPOINT_ROWS, "40")];
    let task = enqueue_unseen(&f, "handback", &env).await;
    // The task counted chunk 0, and its worker stopped on the task's last receive before
    // sending the continuation.
    let after = count_chunk_zero(&f, &ledger, "handback", &task, &task.message_id, "running").await;
    let w = f.worker(&env);
    let duplicates = || w.metric("scanfleet_duplicate_chunks_total", "");

    // Another instance of chunk 0 (the same body under another message id, no origin): a
    // copy, dropped without scanning.
    f.send_task(&task.body).await;
    wait_for("the copy dropped", Duration::from_secs(60), || {
        duplicates() == Some(1.0)
    })
    .await;
    f.wait_for_depth(&f.queues.control, 0).await;
    assert_eq!(w.metric("scanfleet_rows_published_total", ""), Some(0.0));
    let record = segment_record(&f, &ledger, "handback", 0).await;
    assert_eq!(record.chunks, 1, "{record:?}");
    assert_eq!(record.counted_by.as_deref(), Some(task.message_id.as_str()));

    // The task sent again in its place, as the stopping worker sends it: it keeps its claim and
    // goes on from the ledger's key, without scanning chunk 0 again.
    f.send_task(&scanfleet::task::stamp_identity(
        &task.body,
        &task.message_id,
    ))
    .await;
    assert_published_once(&f, &after).await;
    let s = wait_for_state(&f, &ledger, "handback", "done").await;
    assert_eq!(s["rows_published"], rows, "{s}");
    assert_eq!(duplicates(), Some(2.0));
    assert!(
        w.log_text().contains("continued from the ledger"),
        "{}",
        w.log_text()
    );
    finish_job(f, &ledger).await;
}

/// Sends `body` to the control queue (maxReceiveCount 1) and receives it once, as a worker
/// that fails it on its last receive, until the queue moves it to the DLQ; returns its id.
async fn dead_letter(f: &Fixture, body: &str) -> String {
    let id = f.send_task(body).await;
    let receive = |visibility| {
        f.aws
            .sqs
            .receive_message()
            .queue_url(&f.queues.control)
            .wait_time_seconds(1)
            .visibility_timeout(visibility)
            .send()
    };
    let first = receive(0).await.expect("ReceiveMessage");
    let ids: Vec<_> = first.messages().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids, [Some(id.as_str())]);
    let second = receive(30).await.expect("ReceiveMessage");
    assert!(second.messages().is_empty(), "{second:?}");
    f.wait_for_depth(&f.queues.dlq, 1).await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_redriven_from_the_dlq_keeps_its_claim_on_the_chunk_it_counted() {
    let rows = scaled(300, 150);
    let (f, ledger) = with_ledger(rows, 1).await;
    let env = [(LEDGER_TABLE, ledger.as_str()), (CHECKPOINT_ROWS, "40")];
    let task = enqueue_unseen(&f, "redriven", &env).await;
    // The task counted chunk 0 and then failed (its continuation not sent) on its last
    // receive: the queue moved it to the DLQ.
    let id = dead_letter(&f, &task.body).await;
    let after = count_chunk_zero(&f, &ledger, "redriven", &task, &id, "failed").await;
    // What the redrive relies on: the message keeps its id in the DLQ, as in AWS. Both
    // emulators keep it (checked on ministack 1.5.33 and moto 5.2.5).
    let peek = f
        .aws
        .sqs
        .receive_message()
        .queue_url(&f.queues.dlq)
        .wait_time_seconds(1)
        .visibility_timeout(0)
        .send()
        .await
        .expect("ReceiveMessage");
    let ids: Vec<_> = peek.messages().iter().map(|m| m.message_id()).collect();
    assert_eq!(
        ids,
        [Some(id.as_str())],
        "the DLQ gave the message a new id"
    );

    // The documented runbook: one reconcile with --redrive-from, and the segment goes on
    // from the ledger's key.
    let w = f.worker(&env);
    let report = redrive_from_the_dlq(&f, "redriven", &env);
    assert!(
        report.contains("segment 0: task moved back from the dead-letter queue"),
        "{report}"
    );
    assert_published_once(&f, &after).await;
    let s = wait_for_state(&f, &ledger, "redriven", "done").await;
    assert_eq!(s["rows_published"], rows, "{s}");
    assert_eq!(w.metric("scanfleet_duplicate_chunks_total", ""), Some(1.0));
    finish_job(f, &ledger).await;
}

/// A segment shorter than a chunk (or a long chunk) shows its progress before it is counted:
/// the chunk writes what it has done so far every few seconds, marked provisional beside the
/// counted figures, which stay exact. The budget paces the one chunk to about 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn the_progress_of_a_chunk_under_way_shows_before_it_is_counted() {
    let rows = scaled(200, 100);
    let f = Fixture::new(rows, 3).await;
    let ledger = create_ledger(&f);
    let env = [
        ("SCANFLEET__LEDGER__TABLE", ledger.as_str()),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "100000"),
    ];
    let w = f.worker(&env);
    let args = [
        "enqueue",
        "--table",
        &f.table,
        "--segments",
        "1",
        "--limit-of-rows",
        "10",
        "--read-units-per-second",
        "1",
        "--job-id",
        "slow",
    ];
    let out = scanfleet(&f, &args, &env);
    assert!(out.status.success(), "enqueue: {}", stderr(&out));
    wait_for("provisional progress", Duration::from_secs(60), || {
        let s = status_json(&f, &ledger, "slow");
        s["rows_published_in_chunks"].as_u64() > Some(0) && s["rows_published"] == 0
    })
    .await;
    let text = stdout(&scanfleet(&f, &["status", "slow"], &env));
    assert!(text.contains("in chunks under way (provisional)"), "{text}");
    wait_for("the job", Duration::from_secs(120), || {
        w.metric("scanfleet_tasks_completed_total", "") == Some(1.0)
    })
    .await;
    let s = status_json(&f, &ledger, "slow");
    assert_eq!(s["rows_published"], rows, "{s}");
    assert_eq!(
        s["rows_published_in_chunks"], 0,
        "counted, no longer provisional: {s}"
    );
    assert_eq!(f.drain_output(rows as usize).await.len(), rows as usize);
    drop_table(&f, &ledger).await;
    f.finish_clean().await;
}
