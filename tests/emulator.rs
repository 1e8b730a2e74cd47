//! Integration tests of the worker pipeline: real `scanfleet worker` processes against a
//! running AWS emulator.
//!
//! `make test` starts ministack and then moto and runs these against each, with
//! `AWS_ENDPOINT_URL` pointing at it and `SCANFLEET_TEST_EMULATOR` naming it. Without an
//! endpoint these tests fail: they never pass by skipping.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use common::{BINARY, Fixture, HttpProxy, endpoint, plain_key, scaled, total, wait_for};
use scanfleet::devkit;

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
    f.wait_for_depth(&f.queues.control, 0).await;
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
    f.put_item(item).await;
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
    let received = f.drain(&f.queues.output, 20).await;
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

/// `output.client` changes what sends the batches, never what arrives: both clients put the
/// same bodies with the same attributes on the queue, and only characters SQS accepts (the
/// emulators take U+FFFE and U+FFFF, which SQS refuses, so the body text is checked).
#[tokio::test(flavor = "multi_thread")]
async fn the_direct_and_sdk_clients_send_identical_messages() {
    let rows = 30;
    let f = Fixture::new(rows, 3).await;
    // One row of every attribute type, with strings that need escaping, beside the seeded ones.
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    let blob = |v: &[u8]| Blob::new(v.to_vec());
    f.aws
        .dynamodb
        .put_item()
        .table_name(&f.table)
        .set_item(Some(HashMap::from([
            // U+FFFF (and U+FFFE) DynamoDB stores and SQS refuses; U+2028 and an emoji it
            // accepts.
            (
                "PK".to_owned(),
                s("every \"type\" é ✓ \u{FFFF} \u{2028} 😀"),
            ),
            ("odd\u{FFFE}".to_owned(), s("\u{FFFE}\u{FFFF}\u{FFFD}")),
            ("SK".to_owned(), s("back\\slash\ttab")),
            (
                "big".to_owned(),
                n("12345678901234567890123456789012345678"),
            ),
            ("neg".to_owned(), n("-0.5")),
            ("yes".to_owned(), AttributeValue::Bool(true)),
            ("none".to_owned(), AttributeValue::Null(true)),
            ("bin".to_owned(), AttributeValue::B(blob(&[0, 1, 254, 255]))),
            (
                "ss".to_owned(),
                AttributeValue::Ss(vec!["a".into(), "\"b\"".into()]),
            ),
            (
                "ns".to_owned(),
                AttributeValue::Ns(vec!["1".into(), "2.5".into()]),
            ),
            ("bs".to_owned(), AttributeValue::Bs(vec![blob(b"hi")])),
            (
                "list".to_owned(),
                AttributeValue::L(vec![n("7"), s("x"), AttributeValue::L(vec![])]),
            ),
            (
                "map".to_owned(),
                AttributeValue::M(HashMap::from([
                    ("inner".to_owned(), AttributeValue::Null(true)),
                    (
                        "deep".to_owned(),
                        AttributeValue::M(HashMap::from([("k".to_owned(), n("3"))])),
                    ),
                ])),
            ),
        ])))
        .send()
        .await
        .expect("put the every-type row");
    let rows = rows as usize + 1;
    for format in ["plain", "dynamodb"] {
        let mut runs = Vec::new();
        for client in ["direct", "sdk"] {
            // Queues of its own for each run: a worker killed in a long poll may still take
            // the next run's task on the emulator, hiding it for a visibility timeout.
            let queues =
                devkit::create_queues(&f.aws, &format!("{}-{format}-{client}", f.table), 3)
                    .await
                    .expect("create queues");
            let worker = f.worker_on(
                &queues,
                &[
                    ("SCANFLEET__SCAN__CLIENT", client),
                    ("SCANFLEET__OUTPUT__CLIENT", client),
                    ("SCANFLEET__OUTPUT__FORMAT", format),
                ],
            );
            f.aws
                .sqs
                .send_message()
                .queue_url(&queues.control)
                .message_body(r#"{"current_segment": 0, "total_segments": 1, "job_id": "j-7"}"#)
                .send()
                .await
                .expect("send task");
            let received = f.drain(&queues.output, rows).await;
            f.wait_for_depth(&queues.control, 0).await;
            drop(worker);
            devkit::delete_queues(&f.aws, &queues).await;
            // Comparing parsed JSON would let a lost digit pass (numbers go through f64), so
            // the exact digits are checked in the body text first.
            let digits = match format {
                "plain" => r#""big":12345678901234567890123456789012345678"#,
                _ => r#""big":{"N":"12345678901234567890123456789012345678"}"#,
            };
            let every = received
                .iter()
                .find(|m| m.body.contains("every"))
                .expect("the every-type row was published");
            assert!(every.body.contains(digits), "{client}: {}", every.body);
            let parsed: serde_json::Value = serde_json::from_str(&every.body).unwrap();
            let pk = match format {
                "plain" => &parsed["PK"],
                _ => &parsed["PK"]["S"],
            };
            assert_eq!(pk, "every \"type\" é ✓ \u{FFFF} \u{2028} 😀", "{client}");
            for m in &received {
                let refused = m
                    .body
                    .chars()
                    .find(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}'));
                assert_eq!(refused, None, "{client}: {}", m.body);
            }
            // Sorted by attributes (each has its row's `row_id`). Bodies are compared as JSON:
            // their keys come in different orders (the SDK's hash maps, the answer's order).
            let mut messages: Vec<_> = received
                .into_iter()
                .map(|m| {
                    let mut attributes: Vec<_> = m.attributes.into_iter().collect();
                    attributes.sort();
                    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
                    (attributes, body)
                })
                .collect();
            messages.sort_by(|a, b| a.0.cmp(&b.0));
            runs.push(messages);
        }
        assert_eq!(runs[0].len(), rows, "{format}");
        for (attributes, _) in &runs[0] {
            let names: Vec<&str> = attributes.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, ["job_id", "row_id", "segment", "table"]);
        }
        assert_eq!(
            runs[0], runs[1],
            "{format}: direct (left) and sdk (right) differ"
        );
    }
    f.cleanup().await;
}

/// `HTTP_PROXY` (like `HTTPS_PROXY` for https endpoints) carries every call of the worker. The
/// endpoint's host here (`*.invalid`, which never resolves) is reachable only through the
/// proxy, so the job completing shows that every call went through it: the SDK's (control
/// queue) and the direct clients' (`Scan`, `SendMessageBatch`). `NO_PROXY` exempts a host, as
/// with the AWS CLI, and `HTTPS_PROXY` is the one used for an https endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn calls_go_through_the_http_proxy_the_environment_names() {
    let rows = scaled(60, 30);
    let f = Fixture::new(rows, 3).await;
    let proxy = HttpProxy::start(&f.logs).await;
    let port = endpoint()
        .trim_end_matches('/')
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .expect("AWS_ENDPOINT_URL has a port");
    let hidden = format!("scanfleet-emulator.invalid:{port}");
    let mut relayed = 0;
    for (run, host, no_proxy) in [
        ("proxied", hidden.clone(), ""),
        ("exempt", format!("127.0.0.1:{port}"), "127.0.0.1"),
    ] {
        // Queues of its own for each run: the first worker, killed in a long poll, may still
        // take a task of the second on the emulator.
        let queues = devkit::create_queues(&f.aws, &format!("{}-{run}", f.table), 3)
            .await
            .expect("create queues");
        let (endpoint_url, proxy_url) = (format!("http://{host}"), proxy.url());
        let worker = f.worker_on(
            &queues,
            &[
                ("AWS_ENDPOINT_URL", endpoint_url.as_str()),
                ("HTTP_PROXY", proxy_url.as_str()),
                ("NO_PROXY", no_proxy),
                ("SCANFLEET__SCAN__CLIENT", "direct"),
                ("SCANFLEET__OUTPUT__CLIENT", "direct"),
            ],
        );
        f.aws
            .sqs
            .send_message()
            .queue_url(&queues.control)
            .message_body(r#"{"current_segment": 0, "total_segments": 1}"#)
            .send()
            .await
            .expect("send task");
        let received = f.drain(&queues.output, rows as usize).await;
        f.wait_for_depth(&queues.control, 0).await;
        drop(worker);
        devkit::delete_queues(&f.aws, &queues).await;
        let keys: HashSet<_> = received.iter().map(plain_key).collect();
        assert_eq!(keys, f.expected_keys(), "{run}: every row, once");
        let destinations = proxy.destinations();
        match run {
            "proxied" => assert!(
                !destinations.is_empty() && destinations.iter().all(|d| *d == hidden),
                "{destinations:?}"
            ),
            _ => assert_eq!(
                destinations.len(),
                relayed,
                "NO_PROXY=127.0.0.1, yet the proxy relayed more: {destinations:?}"
            ),
        }
        relayed = destinations.len();
    }
    // AWS's own endpoints are https: `HTTPS_PROXY` names the proxy for them, which gets a
    // CONNECT for the endpoint's host. (The emulator speaks no TLS, so the worker's calls fail
    // past that point; only the route is checked here.)
    let https = f.worker(&[
        ("AWS_ENDPOINT_URL", format!("https://{hidden}").as_str()),
        ("HTTPS_PROXY", proxy.url().as_str()),
        ("HTTP_PROXY", ""),
        ("NO_PROXY", ""),
    ]);
    wait_for(
        "a CONNECT for the https endpoint",
        Duration::from_secs(60),
        || proxy.destinations().len() > relayed,
    )
    .await;
    drop(https);
    let destinations = proxy.destinations();
    assert!(
        destinations[relayed..].iter().all(|d| *d == hidden),
        "{destinations:?}"
    );
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_longer_than_the_visibility_timeout_is_not_delivered_twice() {
    // One segment read one row per page, each request 40 ms away: over 10 s of work against
    // a 5 s visibility timeout, which only the heartbeat keeps from expiring.
    let rows = 300;
    let f = Fixture::new(rows, 5).await;
    let proxy = f.proxy(Duration::from_millis(40)).await;
    let settings = [
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
        ("SCANFLEET__WORKER__CHECKPOINT_SECONDS", "3600"),
    ];
    let workers = [
        f.worker_via(&proxy, &settings),
        f.worker_via(&proxy, &settings),
    ];
    f.send_task(r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 1}"#)
        .await;
    let received = f.drain_output(rows as usize).await;
    let keys: Vec<_> = received.iter().map(plain_key).collect();
    let distinct: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(distinct, f.expected_keys());
    let w = [&workers[0], &workers[1]];
    // The premise: the task really outlived its visibility timeout (else this proves nothing).
    let took = total(&w, "scanfleet_task_duration_seconds_sum");
    assert!(took > 5.0, "the task took only {took:.1} s");
    assert_eq!(
        total(&w, "scanfleet_tasks_received_total"),
        1.0,
        "the task was delivered twice"
    );
    assert!(total(&w, "scanfleet_heartbeats_total") >= 1.0);
    assert_eq!(keys.len(), distinct.len(), "rows were published twice");
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_ready_and_metrics_export_every_name_the_dashboard_and_alerts_use() {
    let f = Fixture::new(30, 3).await;
    let w = f.worker(&[]);
    wait_for("healthz 200", Duration::from_secs(30), || {
        devkit::http_get(w.metrics_port, "/healthz").map(|r| r.0) == Some(200)
    })
    .await;
    wait_for("readyz 200", Duration::from_secs(30), || {
        devkit::http_get(w.metrics_port, "/readyz").map(|r| r.0) == Some(200)
    })
    .await;
    // One finished task, so the histogram has samples and every series exists.
    f.send_task(r#"{"current_segment": 0, "total_segments": 1}"#)
        .await;
    f.drain_output(30).await;
    wait_for("task completed", Duration::from_secs(30), || {
        w.metric("scanfleet_tasks_completed_total", "") == Some(1.0)
    })
    .await;
    let text = w.metrics().unwrap();
    let exported: HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
        })
        .collect();
    // The names deploy/grafana and deploy/prometheus query (scripts/check-deploy.sh
    // --list-metrics writes this list): a dashboard must never silently show nothing.
    let used = include_str!("../deploy/metrics-used.txt");
    let missing: Vec<&str> = used
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !exported.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by the worker: {missing:?}"
    );
    f.cleanup().await;
}
