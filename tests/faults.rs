//! Nothing lost, little repeated: worker processes killed, terminated, cut off from AWS, fed
//! garbage and rows too large to send, against a running emulator (see tests/emulator.rs).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::{Fixture, plain_key, scaled, total, wait_exit, wait_for};
use scanfleet::devkit::{self, Received};

/// Distinct keys and the number of repeats among `received`.
fn tally(received: &[Received]) -> (HashSet<(String, String)>, usize) {
    let keys: HashSet<_> = received.iter().map(plain_key).collect();
    let repeats = received.len() - keys.len();
    (keys, repeats)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_every_two_seconds_loses_nothing() {
    let rows = scaled(20_000, 1_000);
    let chunk_rows = scaled(1_000, 100);
    let f = Fixture::new(rows, 20).await;
    // One task per worker, so a kill interrupts exactly one chunk; a short visibility timeout
    // so a killed worker's task comes back quickly.
    let chunk = chunk_rows.to_string();
    let settings = [
        ("SCANFLEET__WORKER__CONCURRENCY", "1"),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", chunk.as_str()),
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
    ];
    let mut workers: Vec<_> = (0..4).map(|_| f.worker(&settings)).collect();
    for segment in 0..16 {
        f.send_task(&format!(
            r#"{{"current_segment": {segment}, "total_segments": 16, "limit_of_rows": 100, "job_id": "kill"}}"#
        ))
        .await;
    }

    let aws = devkit::Aws::from_env().await;
    let output = f.queues.output.clone();
    let expected = rows as usize;
    let drain = tokio::spawn(async move {
        devkit::drain_until(
            &aws,
            &output,
            Duration::from_secs(600),
            Duration::from_secs(3),
            |got| got.iter().map(plain_key).collect::<HashSet<_>>().len() >= expected,
        )
        .await
        .expect("drain")
    });
    let mut kills = 0usize;
    let mut victim = 0usize;
    while !drain.is_finished() {
        // The harness's own schedule: a kill every two seconds, until the job is done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if drain.is_finished() {
            break;
        }
        victim = (victim + 1 + kills * 7) % workers.len();
        workers[victim].child.kill().expect("kill -9");
        workers[victim].child.wait().expect("reap");
        workers[victim] = f.worker(&settings);
        kills += 1;
    }
    let received = drain.await.unwrap();
    let (keys, repeats) = tally(&received);
    assert_eq!(keys, f.expected_keys(), "rows were lost");
    assert!(
        kills >= 2,
        "only {kills} kills happened; the job ended too soon to test anything"
    );
    assert!(
        repeats as u64 <= kills as u64 * chunk_rows,
        "{repeats} repeated rows after {kills} kills: more than one chunk ({chunk_rows}) per kill"
    );
    // Every row carries the same row_id wherever it was repeated.
    let mut ids: HashMap<(String, String), String> = HashMap::new();
    for m in &received {
        let id = m
            .attributes
            .get("row_id")
            .expect("row_id attribute")
            .clone();
        assert_eq!(ids.entry(plain_key(m)).or_insert_with(|| id.clone()), &id);
    }
    f.wait_for_depth(&f.queues.control, 0).await;
    assert_eq!(f.depth(&f.queues.dlq).await, 0, "tasks were dead-lettered");
    eprintln!("kill test: {rows} rows, {kills} kills, {repeats} repeated rows");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_checkpoints_mid_segment_and_exits_zero_in_time() {
    let rows = 600;
    let page = 2;
    let f = Fixture::new(rows, 5).await;
    // Requests 40 ms away make the segment take ~12 s, so SIGTERM lands mid-segment.
    let proxy = f.proxy(Duration::from_millis(40)).await;
    let mut first = f.worker_via(
        &proxy,
        &[("SCANFLEET__WORKER__DRAIN_TIMEOUT_SECONDS", "10")],
    );
    f.send_task(&format!(
        r#"{{"current_segment": 0, "total_segments": 1, "limit_of_rows": {page}}}"#
    ))
    .await;

    let mut received = Vec::new();
    let start = Instant::now();
    while first
        .metric("scanfleet_rows_published_total", "")
        .unwrap_or(0.0)
        < 20.0
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the worker never started publishing"
        );
        received.extend(
            devkit::receive_some(&f.aws, &f.queues.output, 0)
                .await
                .unwrap(),
        );
    }
    let signalled = Instant::now();
    first.terminate();
    // Drain timeout 10 s plus the 1 s long poll the worker lets finish.
    let status = wait_exit(&mut first, Duration::from_secs(11))
        .await
        .expect("the worker did not exit within the drain timeout");
    assert!(status.success(), "exit status {status:?}");
    let log = first.log_text();
    assert!(
        log.contains("chunk checkpointed"),
        "no checkpoint at shutdown:\n{log}"
    );
    assert!(!log.contains("handed back unfinished"), "{log}");
    eprintln!("SIGTERM to exit: {:?}", signalled.elapsed());

    let _second = f.worker(&[]);
    let rest = f.drain_keys(&received, rows as usize).await;
    received.extend(rest);
    let (keys, repeats) = tally(&received);
    assert_eq!(keys, f.expected_keys(), "rows were lost across the SIGTERM");
    assert!(
        repeats <= page,
        "{repeats} rows repeated; at most the page in hand ({page}) may be"
    );
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_deadline_counts_from_sigterm_and_hands_back_what_cannot_checkpoint() {
    // One page holds the whole segment and goes out one batch at a time, each 500 ms away: about
    // 10 s of publishing, longer than the 5 s drain, so the task must be handed back whole at the
    // deadline. The worker's second slot is in an 8 s long poll when the signal comes, which it
    // lets finish; the deadline runs alongside that poll, not after it.
    // With maxReceiveCount 1, the hand-back comes on the task's last allowed receive: released,
    // it would be dead-lettered at its next receive, so it must go back as a new message.
    let rows = 200;
    let latency = Duration::from_millis(500);
    let (wait, drain) = (8, 5);
    let f = Fixture::new(rows, 1).await;
    let proxy = f.proxy(latency).await;
    let mut first = f.worker_via(
        &proxy,
        &[
            (
                "SCANFLEET__WORKER__DRAIN_TIMEOUT_SECONDS",
                &drain.to_string(),
            ),
            ("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", &wait.to_string()),
            ("SCANFLEET__WORKER__CONCURRENCY", "2"),
            ("SCANFLEET__OUTPUT__MAX_IN_FLIGHT_BATCHES", "1"),
        ],
    );
    let sent = f
        .send_task(&format!(
            r#"{{"current_segment": 0, "total_segments": 1, "limit_of_rows": {rows}}}"#
        ))
        .await;
    wait_for("the worker publishing", Duration::from_secs(60), || {
        first
            .metric("scanfleet_rows_published_total", "")
            .unwrap_or(0.0)
            >= 10.0
    })
    .await;
    let signalled = Instant::now();
    first.terminate();
    // The poll in progress (8 s, plus its 500 ms through the proxy) and the drain (5 s, plus
    // handing the task back) overlap; counted one after the other they would take 13.5 s or more.
    let bound = Duration::from_secs(wait + 2);
    let status = wait_exit(&mut first, bound).await.unwrap_or_else(|| {
        panic!(
            "the worker did not exit within {bound:?} of SIGTERM:\n{}",
            first.log_text()
        )
    });
    eprintln!("SIGTERM to exit: {:?}", signalled.elapsed());
    assert!(status.success(), "exit status {status:?}");
    let log = first.log_text();
    assert!(log.contains("handed back unfinished"), "{log}");
    assert!(log.contains("handed back as a new message"), "{log}");
    // The new message names the one it stands in for, so it keeps that task's claim on a chunk
    // it counted (with a ledger), and the run that task started. Taken off the queue to be
    // read (a receive would use up its one allowed receive) and put back as it is.
    let resent = f.drain(&f.queues.control, 1).await;
    assert_eq!(resent.len(), 1, "{resent:?}");
    let task: serde_json::Value = serde_json::from_str(&resent[0].body).unwrap();
    assert_eq!(task["origin_message_id"], sent.as_str(), "{task}");
    assert_eq!(task["run_id"], sent.as_str(), "{task}");
    f.send_task(&resent[0].body).await;

    // Handed back, the task goes to the next worker at once, and nothing is lost.
    let _second = f.worker(&[]);
    let received = f.drain_keys(&[], rows as usize).await;
    let (keys, _) = tally(&received);
    assert_eq!(
        keys,
        f.expected_keys(),
        "rows were lost across the hand-back"
    );
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_second_outage_mid_job_loses_nothing() {
    let rows = scaled(6_000, 400);
    let f = Fixture::new(rows, 20).await;
    let proxy = f.proxy(Duration::from_millis(5)).await;
    let settings = [
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", "500"),
    ];
    let mut workers = [
        f.worker_via(&proxy, &settings),
        f.worker_via(&proxy, &settings),
    ];
    for segment in 0..8 {
        f.send_task(&format!(
            r#"{{"current_segment": {segment}, "total_segments": 8, "limit_of_rows": 25}}"#
        ))
        .await;
    }
    let mut received = Vec::new();
    let start = Instant::now();
    while received.len() < rows as usize / 5 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the job never got going"
        );
        received.extend(
            devkit::receive_some(&f.aws, &f.queues.output, 0)
                .await
                .unwrap(),
        );
    }
    proxy.cut();
    let cut_at = Instant::now();
    // The test drains the emulator directly (not through the proxy) during the outage.
    while cut_at.elapsed() < Duration::from_secs(10) {
        received.extend(
            devkit::receive_some(&f.aws, &f.queues.output, 1)
                .await
                .unwrap(),
        );
    }
    proxy.restore();
    let rest = f.drain_keys(&received, rows as usize).await;
    received.extend(rest);
    let (keys, _) = tally(&received);
    assert_eq!(keys, f.expected_keys(), "rows were lost in the outage");
    for w in &mut workers {
        assert!(
            w.child.try_wait().unwrap().is_none(),
            "a worker died in the outage"
        );
    }
    let w = [&workers[0], &workers[1]];
    assert!(
        total(&w, "scanfleet_receive_errors_total") >= 1.0,
        "the outage was not noticed"
    );
    f.finish_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corpus_of_bad_tasks_ends_in_the_dlq_while_valid_tasks_complete() {
    let f = Fixture::new(scaled(800, 100), 2).await;
    // Room for the 1 MiB body below.
    f.set_queue_attribute(
        &f.queues.control,
        QueueAttributeName::MaximumMessageSize,
        "1048576",
    )
    .await;
    #[derive(serde::Deserialize)]
    struct Case {
        body: String,
        reason: String,
    }
    let mut corpus: Vec<Case> =
        serde_json::from_str(include_str!("data/bad_tasks.json")).expect("corpus parses");
    corpus.push(Case {
        body: format!(
            r#"{{"current_segment": 0, "total_segments": 4, "job_id": "{}"}}"#,
            "x".repeat(1_048_000)
        ),
        reason: "malformed".into(),
    });
    corpus.push(Case {
        body: format!(
            r#"{{"current_segment": 0, "total_segments": 4, "job_id": "{}"}}"#,
            "j".repeat(200)
        ),
        reason: "out_of_range".into(),
    });
    assert!(corpus.len() >= 25);

    let mut worker = f.worker(&[]);
    let pid = worker.child.id();
    for (i, case) in corpus.iter().enumerate() {
        f.send_task(&case.body).await;
        // Valid tasks among the invalid ones, so they share receive batches.
        if i % 8 == 0 && i / 8 < 4 {
            f.send_task(&format!(
                r#"{{"current_segment": {}, "total_segments": 4}}"#,
                i / 8
            ))
            .await;
        }
    }
    let received = f.drain_output(f.keys.len()).await;
    let (keys, _) = tally(&received);
    assert_eq!(
        keys,
        f.expected_keys(),
        "valid tasks did not deliver the table"
    );

    let dead = f.drain(&f.queues.dlq, corpus.len()).await;
    let dead_bodies: HashSet<&str> = dead.iter().map(|m| m.body.as_str()).collect();
    let bad_bodies: HashSet<&str> = corpus.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(
        dead_bodies.len(),
        dead.len(),
        "a bad task was dead-lettered twice"
    );
    assert!(
        dead_bodies == bad_bodies,
        "the DLQ holds {} of the {} bad tasks",
        dead_bodies.intersection(&bad_bodies).count(),
        bad_bodies.len()
    );

    // Each was logged with its message id and reason, and counted under that reason.
    let log = worker.log_text();
    let mut expected_by_reason: HashMap<&str, f64> = HashMap::new();
    for m in &dead {
        let case = corpus.iter().find(|c| c.body == m.body).unwrap();
        *expected_by_reason.entry(case.reason.as_str()).or_default() += 1.0;
        let line = log
            .lines()
            .find(|l| l.contains("invalid task rejected") && l.contains(&m.message_id))
            .unwrap_or_else(|| panic!("rejection of {} not logged", m.message_id));
        assert!(
            line.contains(&format!("reason=\"{}\"", case.reason)),
            "body {:.80} logged as {line}",
            case.body
        );
    }
    for (reason, n) in expected_by_reason {
        let counted = worker
            .metric(
                "scanfleet_tasks_rejected_total",
                &format!("reason=\"{reason}\""),
            )
            .unwrap();
        // Each bad task is received (and rejected) maxReceiveCount = 2 times before redrive.
        assert!(
            counted >= n,
            "{reason}: counted {counted}, expected at least {n}"
        );
        // …and released on its last allowed receive exactly once, which is counted as it goes.
        let dead = worker.metric(
            "scanfleet_tasks_dead_lettered_total",
            &format!("reason=\"{reason}\""),
        );
        assert_eq!(dead, Some(n), "{reason}: dead-lettered count");
    }
    assert_eq!(
        worker.metric("scanfleet_tasks_completed_total", ""),
        Some(4.0)
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker exited"
    );
    assert_eq!(worker.child.id(), pid);
    f.wait_for_depth(&f.queues.control, 0).await;
    f.cleanup().await;
}

/// A table whose segment holds a few rows too large for an output queue limited to 1 KiB.
async fn oversize_fixture() -> (Fixture, HashSet<String>) {
    let f = Fixture::new(50, 2).await;
    f.set_queue_attribute(
        &f.queues.output,
        QueueAttributeName::MaximumMessageSize,
        "1024",
    )
    .await;
    let mut big = HashSet::new();
    for n in 0..3 {
        let pk = format!("big-{n}");
        let item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk.clone())),
            ("SK".to_owned(), AttributeValue::S("PREFIX-big".into())),
            ("blob".to_owned(), AttributeValue::S("y".repeat(4000))),
        ]);
        f.put_item(item).await;
        big.insert(pk);
    }
    (f, big)
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_too_large_for_the_output_queue_go_to_the_oversize_queue() {
    let (f, big) = oversize_fixture().await;
    let oversize = devkit::create_queue(&f.aws, &format!("{}-oversize", f.table), HashMap::new())
        .await
        .unwrap();
    let w = f.worker(&[("SCANFLEET__OUTPUT__OVERSIZE_QUEUE_URL", oversize.as_str())]);
    f.send_task(r#"{"current_segment": 0, "total_segments": 1}"#)
        .await;
    let received = f.drain_output(f.keys.len()).await;
    let (keys, _) = tally(&received);
    assert_eq!(
        keys,
        f.expected_keys(),
        "the ordinary rows were not all published"
    );
    let diverted = f.drain(&oversize, big.len()).await;
    let mut seen = HashSet::new();
    for m in &diverted {
        let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(v["table"], f.table.as_str());
        assert!(v["size"].as_u64().unwrap() > 1024, "{v}");
        assert!(v["reason"].as_str().unwrap().contains("1024"), "{v}");
        seen.insert(v["key"]["PK"]["S"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, big);
    assert_eq!(
        w.metric("scanfleet_rows_oversize_total", "outcome=\"diverted\""),
        Some(3.0)
    );
    assert_eq!(w.metric("scanfleet_tasks_completed_total", ""), Some(1.0));
    let _ = f.aws.sqs.delete_queue().queue_url(&oversize).send().await;
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_oversize_queue_a_row_too_large_fails_its_task_clearly() {
    let (f, _big) = oversize_fixture().await;
    let w = f.worker(&[]);
    f.send_task(r#"{"current_segment": 0, "total_segments": 1}"#)
        .await;
    // The task fails on each delivery and, after maxReceiveCount = 2, is dead-lettered.
    let dead = f.drain(&f.queues.dlq, 1).await;
    assert_eq!(dead.len(), 1, "the failing task did not reach the DLQ");
    let log = w.log_text();
    assert!(
        log.contains("more than the output queue accepts (1024); set output.oversize_queue_url"),
        "{log}"
    );
    assert!(
        w.metric("scanfleet_rows_oversize_total", "outcome=\"failed\"")
            .unwrap()
            >= 1.0
    );
    assert!(w.metric("scanfleet_tasks_failed_total", "").unwrap() >= 1.0);
    f.cleanup().await;
}
