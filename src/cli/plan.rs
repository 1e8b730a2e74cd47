//! `scanfleet plan`: how many segments a table's scan should have, and why.
//!
//! AWS's guidance for parallel scans is about one segment per 2 GB of table; smaller segments
//! make checkpoints and retries cheaper, and a job needs at least as many segments as the
//! fleet has task slots to keep every slot busy.

use crate::BoxError;
use crate::settings::Settings;
use crate::task::MAX_TOTAL_SEGMENTS;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    table: String,
    /// Number of worker processes (their worker.concurrency comes from the configuration).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
}

pub async fn run(settings: Settings, args: Args) -> Result<(), BoxError> {
    settings.log.init();
    let aws = crate::aws::config().await;
    let (size, items) = describe(&aws_sdk_dynamodb::Client::new(&aws), &args.table).await?;
    let p = plan(size, items, args.workers, settings.worker.concurrency);
    for reason in &p.reasons {
        println!("- {reason}");
    }
    println!("suggested: --segments {}", p.segments);
    Ok(())
}

/// Bytes per segment AWS suggests (2 GB).
pub const BYTES_PER_SEGMENT: u64 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub segments: u32,
    /// One line per step of the reasoning.
    pub reasons: Vec<String>,
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// The suggestion for a table of `size_bytes` and `items`, for `workers` processes of
/// `concurrency` task slots each (if known).
pub fn plan(size_bytes: u64, items: u64, workers: Option<u32>, concurrency: u32) -> Plan {
    let mut reasons = Vec::new();
    let by_size = size_bytes.div_ceil(BYTES_PER_SEGMENT).max(1);
    reasons.push(format!(
        "table size {} ({items} items, as DescribeTable reports it; DynamoDB updates it about every 6 hours)",
        human_bytes(size_bytes)
    ));
    reasons.push(format!(
        "about one segment per 2 GB (AWS's guidance for parallel scans): {by_size}"
    ));
    let mut segments = by_size;
    if let Some(k) = workers {
        let slots = u64::from(k.max(1)) * u64::from(concurrency.max(1));
        if segments < slots {
            reasons.push(format!(
                "{k} workers × worker.concurrency {concurrency} = {slots} task slots: at least one segment per slot, so none sits idle: {slots}"
            ));
            segments = slots;
        } else if !segments.is_multiple_of(slots) {
            let rounded = segments.div_ceil(slots) * slots;
            reasons.push(format!(
                "rounded up to a multiple of the {slots} task slots ({k} × {concurrency}), so the last wave is full: {rounded}"
            ));
            segments = rounded;
        }
    } else {
        reasons.push(
            "give --workers K to fit the segments to the fleet's task slots (K × worker.concurrency)"
                .into(),
        );
    }
    if segments > u64::from(MAX_TOTAL_SEGMENTS) {
        reasons.push(format!(
            "capped at DynamoDB's limit of {MAX_TOTAL_SEGMENTS}"
        ));
        segments = u64::from(MAX_TOTAL_SEGMENTS);
    }
    reasons.push(
        "more segments are cheap: each is a task, and smaller ones make checkpoints and retries cheaper and skew smaller"
            .into(),
    );
    Plan {
        segments: segments as u32,
        reasons,
    }
}

/// Reads the table's size with DescribeTable.
pub async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let out = client.describe_table().table_name(table).send().await?;
    let t = out.table.ok_or("DescribeTable returned no table")?;
    Ok((
        t.table_size_bytes.unwrap_or(0).max(0) as u64,
        t.item_count.unwrap_or(0).max(0) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_segment_per_2_gb() {
        assert_eq!(plan(0, 0, None, 4).segments, 1);
        assert_eq!(plan(1, 1, None, 4).segments, 1);
        assert_eq!(plan(2_000_000_000, 9, None, 4).segments, 1);
        assert_eq!(plan(2_000_000_001, 9, None, 4).segments, 2);
        assert_eq!(plan(100_000_000_000, 9, None, 4).segments, 50);
    }

    #[test]
    fn fits_the_fleet() {
        // Small table, 3 workers × 4 slots: 12 segments, one per slot.
        let p = plan(10_000_000, 1000, Some(3), 4);
        assert_eq!(p.segments, 12);
        assert!(
            p.reasons.iter().any(|r| r.contains("12 task slots")),
            "{p:?}"
        );
        // 50 by size on 12 slots: rounded up to 60.
        assert_eq!(plan(100_000_000_000, 9, Some(3), 4).segments, 60);
        // Already a multiple: unchanged.
        assert_eq!(plan(96_000_000_000, 9, Some(3), 4).segments, 48);
        // Never above DynamoDB's limit.
        assert_eq!(plan(u64::MAX / 2, 9, None, 4).segments, MAX_TOTAL_SEGMENTS);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(999), "999.0 B");
        assert_eq!(human_bytes(2_500_000_000), "2.5 GB");
    }
}
