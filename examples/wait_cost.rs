//! What following a job with `enqueue --wait` costs in ledger reads, at a given number of
//! segments: writes a job of N segment records the way workers do (a start, then one counted
//! chunk that leaves a resume key), then makes the two reads `--wait` makes — the job's
//! running totals (each second) and every segment record (at the start and the end) — and
//! prints the read units DynamoDB reported for each.
//!
//! Usage: `wait_cost [--segments N]` (default 10,000) against `AWS_ENDPOINT_URL`, e.g.
//! `scripts/emulator.sh start ministack`; the README's figures come from this.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt;
use scanfleet::devkit::{Aws, BoxError};
use scanfleet::ledger::{ChunkReport, JobRecord, Ledger};
use scanfleet::task::Task;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut segments: u32 = 10_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--segments", Some(n)) => segments = n.parse()?,
            _ => return Err(format!("usage: wait_cost [--segments N]; got {a}").into()),
        }
    }
    let aws = Aws::from_env().await;
    let table = format!("wait-cost-{}", uuid::Uuid::new_v4().simple());
    let ledger = Ledger::new(aws.dynamodb.clone(), &table);
    ledger.create_table().await?;
    let job = "cost";
    ledger
        .record_job(&JobRecord {
            job_id: job.into(),
            table: "items".into(),
            segments_total: segments,
            created_at: scanfleet::ledger::now_secs(),
            task_template: format!(
                r#"{{"current_segment":0,"total_segments":{segments},"table":"items","job_id":"{job}","run_id":"r"}}"#
            ),
            read_units_per_second: None,
        })
        .await?;
    let written = futures::stream::iter(0..segments)
        .map(|segment| {
            let ledger = ledger.clone();
            async move { write_segment(&ledger, job, segment, segments).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    written.into_iter().collect::<Result<Vec<()>, BoxError>>()?;

    let before = ledger.read_units();
    ledger.job_totals(job).await?;
    let totals = ledger.read_units() - before;
    let before = ledger.read_units();
    let (_, records) = ledger.job(job).await?;
    let full = ledger.read_units() - before;
    // What DynamoDB charges a strongly consistent Query: a unit per 4 KB of the items it read
    // (their sizes added up), where an emulator's own count may differ.
    let record = aws
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("job_id", AttributeValue::S(job.into()))
        .key("item", AttributeValue::S("segment#0000000".into()))
        .send()
        .await?
        .item
        .ok_or("no segment record")?;
    let record_bytes = item_size(&record);
    let by_size = (record_bytes * records.len()).div_ceil(4096);
    println!("segments:                          {}", records.len());
    println!("one segment record:                {record_bytes} bytes (DynamoDB's item size)");
    println!(
        "one full read, by DynamoDB's rule: {by_size} read units (4 KB each, strongly consistent)"
    );
    println!("one poll (GetItem of the totals):  {totals:.1} read units");
    println!("one full read (Query of every record): {full:.1} read units");
    println!(
        "a minute of --wait at one poll a second, by DynamoDB's rule: before {} read units (a full read each poll); now {} (a GetItem each poll, plus a full read at the start and the end)",
        by_size * 60,
        totals.max(1.0) * 60.0
    );
    let _ = aws.dynamodb.delete_table().table_name(&table).send().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// An item's size as DynamoDB bills it: attribute names plus values (a number about one byte
/// per two digits, plus one).
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, v)| {
            name.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    _ => 8,
                }
        })
        .sum()
}

/// One segment's record as workers leave it: started, one chunk counted, a key to go on from.
async fn write_segment(
    ledger: &Ledger,
    job: &str,
    segment: u32,
    total: u32,
) -> Result<(), BoxError> {
    let task = Task {
        segment: segment as i32,
        total_segments: total as i32,
        page_size: None,
        table: "items".into(),
        job_id: Some(job.into()),
        exclusive_start_key: None,
        chunk: 0,
        run_id: Some("r".into()),
        origin_message_id: None,
        options: Default::default(),
        read_units_per_second: None,
    };
    let worker = "ip-10-0-12-34.ec2.internal-4242";
    ledger
        .segment_started(&task, job, worker, Some("r"))
        .await?;
    let next = HashMap::from([
        (
            "PK".to_owned(),
            AttributeValue::S(format!("USER#{segment:08}")),
        ),
        (
            "SK".to_owned(),
            AttributeValue::S("ORDER#2026-11-30T12:00:00Z".into()),
        ),
    ]);
    let message = format!("{:08x}-5b1c-4f0e-9a3d-2e6f1b7c8d9e", segment);
    let report = ChunkReport {
        rows_scanned: 10_000,
        rows_published: 9_876,
        read_units: 1234.5,
        duration: Duration::from_millis(61_234),
        next: Some(&next),
        instance: &message,
        run: Some("r"),
    };
    ledger.record_chunk(&task, job, worker, &report).await?;
    Ok(())
}
