//! Packed output (`output.rows_per_message` > 1) end to end: real `scanfleet worker` processes
//! against a running emulator (see tests/emulator.rs for how `make test` runs these).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::{Fixture, scaled, wait_exit, wait_for};
use scanfleet::devkit::{self, Received};

const ROWS_PER_MESSAGE: &str = "SCANFLEET__OUTPUT__ROWS_PER_MESSAGE";
const MAX_MESSAGE_BYTES: &str = "SCANFLEET__OUTPUT__MAX_MESSAGE_BYTES";

/// One row of a packed message: its line and its `row_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Line {
    text: String,
    row_id: String,
}

/// The rows of packed messages, checked message by message: `rows` is the count of lines,
/// `row_ids` has one id per line, and no message is larger than `max_bytes` as SQS counts it
/// (its body alone, and body plus attributes).
fn lines(received: &[Received], max_bytes: usize) -> Vec<Line> {
    let mut out = Vec::new();
    for m in received {
        let count: usize = m.attributes["rows"].parse().expect("rows is a number");
        let ids: Vec<&str> = m.attributes["row_ids"].split(' ').collect();
        let texts: Vec<&str> = m.body.split('\n').collect();
        assert_eq!(texts.len(), count, "rows disagrees with the lines: {m:?}");
        assert_eq!(ids.len(), count, "row_ids disagrees with the lines: {m:?}");
        assert!(!m.attributes.contains_key("row_id"), "{m:?}");
        let size = sqs_size(m);
        assert!(
            m.body.len() <= max_bytes,
            "a body of {} bytes",
            m.body.len()
        );
        assert!(size <= max_bytes, "a message of {size} bytes");
        for (text, id) in texts.into_iter().zip(ids) {
            assert_eq!(id.len(), 32, "{id:?}");
            out.push(Line {
                text: text.to_owned(),
                row_id: id.to_owned(),
            });
        }
    }
    out
}

/// A message's size as SQS counts it: its body, and each attribute's name, data type
/// ("String" and "Number" are both 6 bytes) and value.
fn sqs_size(m: &Received) -> usize {
    m.body.len()
        + m.attributes
            .iter()
            .map(|(k, v)| k.len() + 6 + v.len())
            .sum::<usize>()
}

/// `(PK, SK)` of a `plain` line.
fn key_of(text: &str) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("line {text:?}: {e}"));
    let s = |k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        other => panic!("{k} of {text}: {other}"),
    };
    (s("PK"), s("SK"))
}

/// One row of every attribute type, with strings that need escaping (a newline among them,
/// which a line must carry escaped).
fn every_type_row() -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    let blob = |v: &[u8]| Blob::new(v.to_vec());
    HashMap::from([
        (
            "PK".to_owned(),
            s("every \"type\" é ✓ \u{FFFF} \u{2028} 😀"),
        ),
        ("SK".to_owned(), s("line\nbreak\\slash\ttab")),
        ("odd\u{FFFE}".to_owned(), s("\u{FFFE}\u{FFFF}\u{FFFD}")),
        (
            "big".to_owned(),
            n("12345678901234567890123456789012345678"),
        ),
        ("neg".to_owned(), n("-0.5")),
        ("yes".to_owned(), AttributeValue::Bool(true)),
        ("none".to_owned(), AttributeValue::Null(true)),
        (
            "bin".to_owned(),
            AttributeValue::B(blob(&[0, 1, 10, 254, 255])),
        ),
        (
            "ss".to_owned(),
            AttributeValue::Ss(vec!["a".into(), "\"b\"\n".into()]),
        ),
        (
            "ns".to_owned(),
            AttributeValue::Ns(vec!["1".into(), "2.5".into()]),
        ),
        ("bs".to_owned(), AttributeValue::Bs(vec![blob(b"hi")])),
        (
            "list".to_owned(),
            AttributeValue::L(vec![n("7"), s("x\ny"), AttributeValue::L(vec![])]),
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
    ])
}

/// Runs one job of the fixture's table (one segment, pages of 25) on fresh queues with
/// `settings`; returns what arrived and the worker's `scanfleet_messages_published_total`.
async fn run_job(f: &Fixture, name: &str, settings: &[(&str, &str)]) -> (Vec<Received>, f64) {
    // Queues of its own for each run: a worker killed in a long poll may still take the next
    // run's task on the emulator, hiding it for a visibility timeout.
    let queues = devkit::create_queues(&f.aws, &format!("{}-{name}", f.table), 3)
        .await
        .expect("create queues");
    let worker = f.worker_on(&queues, settings);
    f.aws
        .sqs
        .send_message()
        .queue_url(&queues.control)
        .message_body(
            r#"{"current_segment": 0, "total_segments": 1, "limit_of_rows": 25, "job_id": "p-1"}"#,
        )
        .send()
        .await
        .expect("send task");
    // Until the messages hold every row of the table, then 2 s of quiet.
    let all = f.keys.len() + 1;
    let received = devkit::drain_until(
        &f.aws,
        &queues.output,
        Duration::from_secs(300),
        Duration::from_secs(2),
        |got| {
            let rows = got.iter().map(|m| {
                m.attributes
                    .get("rows")
                    .map_or(1, |n| n.parse::<usize>().unwrap())
            });
            rows.sum::<usize>() >= all
        },
    )
    .await
    .expect("drain output");
    f.wait_for_depth(&queues.control, 0).await;
    let published = worker
        .metric("scanfleet_messages_published_total", "")
        .expect("metrics");
    let rows = worker
        .metric("scanfleet_rows_published_total", "")
        .expect("metrics");
    assert_eq!(rows as usize, f.keys.len() + 1, "{name}: rows published");
    drop(worker);
    devkit::delete_queues(&f.aws, &queues).await;
    (received, published)
}

/// A packed job delivers every row of the table exactly once, each line exactly the body that
/// row has as a message of its own (the same text with the same client), with the same
/// `row_id`; `rows` and `row_ids` agree with the lines; no message passes
/// `output.max_message_bytes`. Run with the byte limit binding (direct client) and with the row
/// limit binding (SDK client).
#[tokio::test(flavor = "multi_thread")]
async fn a_packed_job_delivers_every_row_of_every_type_exactly_once_within_the_limits() {
    let rows = scaled(300, 100);
    let f = Fixture::new(rows, 3).await;
    f.put_item(every_type_row()).await;
    let all = rows as usize + 1;
    let mut expected = f.expected_keys();
    expected.insert((
        "every \"type\" é ✓ \u{FFFF} \u{2028} 😀".to_owned(),
        "line\nbreak\\slash\ttab".to_owned(),
    ));
    let mut outcomes = Vec::new();
    for client in ["direct", "sdk"] {
        let client_settings = [
            ("SCANFLEET__SCAN__CLIENT", client),
            ("SCANFLEET__OUTPUT__CLIENT", client),
        ];
        // One row per message: what each line must be.
        let (single, single_count) = run_job(&f, &format!("one-{client}"), &client_settings).await;
        assert_eq!(single.len(), all);
        assert_eq!(single_count as usize, all);
        let alone: HashMap<(String, String), &Received> =
            single.iter().map(|m| (key_of(&m.body), m)).collect();
        // The byte limit binds with the direct client (about 15 demo rows in 4 KiB), the row
        // limit with the SDK's.
        let (rows_per_message, max_bytes) = match client {
            "direct" => ("1000", 4096),
            _ => ("7", 65_536),
        };
        let max = max_bytes.to_string();
        let mut settings = client_settings.to_vec();
        settings.extend([
            (ROWS_PER_MESSAGE, rows_per_message),
            (MAX_MESSAGE_BYTES, max.as_str()),
        ]);
        let (packed, count) = run_job(&f, &format!("packed-{client}"), &settings).await;
        let got = lines(&packed, max_bytes);
        assert_eq!(count as usize, packed.len(), "{client}: messages published");
        assert!(
            packed.len() < all / 5,
            "{client}: {} messages for {all} rows",
            packed.len()
        );
        let keys: Vec<_> = got.iter().map(|l| key_of(&l.text)).collect();
        let distinct: HashSet<_> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), distinct.len(), "{client}: rows delivered twice");
        assert_eq!(distinct, expected, "{client}: other rows than the table's");
        for (l, key) in got.iter().zip(&keys) {
            // The body the row has alone, with its row_id: the same text with the direct
            // client (the answer's attribute order), the same JSON with the SDK's (a hash
            // map's order, which differs between processes).
            let m = alone[key];
            assert_eq!(l.row_id, m.attributes["row_id"], "{client}: {}", l.text);
            if client == "direct" {
                assert_eq!(l.text, m.body, "{client}");
            }
            let parsed: serde_json::Value = serde_json::from_str(&l.text).unwrap();
            let want: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            assert_eq!(parsed, want, "{client}");
        }
        if client == "sdk" {
            assert!(
                packed
                    .iter()
                    .all(|m| m.attributes["rows"].parse::<usize>().unwrap() <= 7)
            );
            assert!(packed.iter().any(|m| m.attributes["rows"] == "7"));
        } else {
            // A demo row's line and row_id take about 270 bytes.
            let full = packed.iter().map(sqs_size).max().unwrap();
            assert!(full > 4096 - 300, "the byte limit did not bind: {full}");
        }
        for m in &packed {
            assert_eq!(m.attributes.get("table"), Some(&f.table));
            assert_eq!(m.attributes.get("segment").map(String::as_str), Some("0"));
            assert_eq!(m.attributes.get("job_id").map(String::as_str), Some("p-1"));
        }
        let every = got
            .iter()
            .find(|l| l.text.contains("every"))
            .expect("the every-type row was delivered");
        assert!(
            every
                .text
                .contains(r#""big":12345678901234567890123456789012345678"#),
            "{}",
            every.text
        );
        outcomes.push(got);
    }
    // Both clients deliver the same rows with the same ids (the text may order attributes
    // differently).
    let ids = |got: &[Line]| got.iter().map(|l| l.row_id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&outcomes[0]), ids(&outcomes[1]));
    f.cleanup().await;
}

/// A row too large for a packed message of its own is diverted to the oversize queue, named
/// against `output.max_message_bytes`; the other rows go out packed.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_too_large_for_a_packed_message_is_diverted() {
    let f = Fixture::new(50, 2).await;
    let mut big = HashSet::new();
    for n in 0..3 {
        let pk = format!("big-{n}");
        let item = HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk.clone())),
            ("SK".to_owned(), AttributeValue::S("PREFIX-big".into())),
            ("blob".to_owned(), AttributeValue::S("y".repeat(3000))),
        ]);
        f.put_item(item).await;
        big.insert(pk);
    }
    let oversize = devkit::create_queue(&f.aws, &format!("{}-oversize", f.table), HashMap::new())
        .await
        .unwrap();
    let w = f.worker(&[
        ("SCANFLEET__OUTPUT__OVERSIZE_QUEUE_URL", oversize.as_str()),
        (ROWS_PER_MESSAGE, "100"),
        (MAX_MESSAGE_BYTES, "2048"),
    ]);
    f.send_task(r#"{"current_segment": 0, "total_segments": 1}"#)
        .await;
    let diverted = f.drain(&oversize, big.len()).await;
    let mut seen = HashSet::new();
    for m in &diverted {
        let v: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert!(v["size"].as_u64().unwrap() > 3000, "{v}");
        let reason = v["reason"].as_str().unwrap();
        assert!(
            reason.contains("output.max_message_bytes (2048 bytes"),
            "{v}"
        );
        seen.insert(v["key"]["PK"]["S"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, big);
    f.wait_for_depth(&f.queues.control, 0).await;
    let received = f.drain(&f.queues.output, 1).await;
    let got = lines(&received, 2048);
    let keys: HashSet<_> = got.iter().map(|l| key_of(&l.text)).collect();
    assert_eq!(keys, f.expected_keys());
    assert_eq!(got.len(), keys.len());
    assert_eq!(
        w.metric("scanfleet_rows_oversize_total", "outcome=\"diverted\""),
        Some(3.0)
    );
    assert_eq!(w.metric("scanfleet_tasks_completed_total", ""), Some(1.0));
    let _ = f.aws.sqs.delete_queue().queue_url(&oversize).send().await;
    f.cleanup().await;
}

/// A packed worker refuses to start when `output.max_message_bytes` is more than the output
/// queue accepts, with one line naming the key and the queue's size.
#[tokio::test(flavor = "multi_thread")]
async fn a_packed_worker_refuses_a_message_size_the_output_queue_does_not_accept() {
    let f = Fixture::new(1, 2).await;
    f.set_queue_attribute(
        &f.queues.output,
        QueueAttributeName::MaximumMessageSize,
        "2048",
    )
    .await;
    let mut w = f.worker(&[(ROWS_PER_MESSAGE, "10")]);
    let status = wait_exit(&mut w, Duration::from_secs(30))
        .await
        .expect("the worker did not stop");
    assert!(!status.success());
    let log = w.log_text();
    assert!(
        log.contains("output.max_message_bytes is 65536, more than the output queue's MaximumMessageSize (2048)"),
        "{log}"
    );
    // One row per message is today's contract: the setting does not apply.
    let w = f.worker(&[]);
    wait_for(
        "the unpacked worker to be ready",
        Duration::from_secs(30),
        || devkit::http_get(w.metrics_port, "/readyz").is_some_and(|(s, _)| s == 200),
    )
    .await;
    f.cleanup().await;
}

/// kill -9 in the middle of a packed segment repeats at most one chunk, and every repeated row
/// carries the same `row_id`.
#[tokio::test(flavor = "multi_thread")]
async fn a_packed_job_killed_mid_segment_repeats_at_most_one_chunk() {
    let rows = scaled(2000, 300);
    // Chunks of several pages (20 rows each), two rows to a message: a batch of 10 messages
    // goes out with each page, so a chunk is published page by page, not only at its end.
    let chunk_rows = scaled(100, 60);
    let f = Fixture::new(rows, 20).await;
    let chunk = chunk_rows.to_string();
    let settings = [
        ("SCANFLEET__WORKER__CONCURRENCY", "1"),
        ("SCANFLEET__WORKER__CHECKPOINT_ROWS", chunk.as_str()),
        ("SCANFLEET__CONTROL__VISIBILITY_TIMEOUT_SECONDS", "5"),
        (ROWS_PER_MESSAGE, "2"),
    ];
    let mut workers = [f.worker(&settings), f.worker(&settings)];
    // A read budget paces each segment at a page or two a second, long enough to kill a
    // worker in the middle of its first chunk.
    let budget = scaled(4, 2);
    for segment in 0..4 {
        f.send_task(&format!(
            r#"{{"current_segment": {segment}, "total_segments": 4, "limit_of_rows": 20, "job_id": "pk", "read_units_per_second": {budget}}}"#
        ))
        .await;
    }
    // Rows published while no chunk has ended yet: the first chunk is under way.
    wait_for(
        "rows of an unfinished first chunk",
        Duration::from_secs(60),
        || {
            let Some(text) = workers[0].metrics() else {
                return false;
            };
            let n = |name: &str| devkit::metric_sum(&text, name, "");
            n("scanfleet_rows_published_total") > 0.0
                && n("scanfleet_checkpoints_total") + n("scanfleet_tasks_completed_total") == 0.0
        },
    )
    .await;
    workers[0].child.kill().expect("kill -9");
    workers[0].child.wait().expect("reap");
    workers[0] = f.worker(&settings);

    let aws = devkit::Aws::from_env().await;
    let expected = f.expected_keys();
    let received = devkit::drain_until(
        &aws,
        &f.queues.output,
        Duration::from_secs(300),
        Duration::from_secs(3),
        |got| {
            let keys: HashSet<_> = got
                .iter()
                .flat_map(|m| m.body.split('\n').map(key_of).collect::<Vec<_>>())
                .collect();
            keys.len() >= expected.len()
        },
    )
    .await
    .expect("drain");
    let got = lines(&received, 65_536);
    let mut ids: HashMap<(String, String), String> = HashMap::new();
    for l in &got {
        let id = ids
            .entry(key_of(&l.text))
            .or_insert_with(|| l.row_id.clone());
        assert_eq!(id, &l.row_id, "a repeated row with another row_id");
    }
    let distinct: HashSet<_> = ids.keys().cloned().collect();
    assert_eq!(distinct, expected, "rows were lost");
    let repeats = got.len() - distinct.len();
    assert!(
        repeats > 0,
        "the kill repeated nothing: it did not land mid-chunk"
    );
    assert!(
        repeats as u64 <= chunk_rows,
        "{repeats} repeated rows after one kill: more than one chunk ({chunk_rows})"
    );
    eprintln!("packed kill test: {rows} rows, {repeats} repeated rows");
    f.finish_clean().await;
}
