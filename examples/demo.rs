//! `make demo`: the whole job on the local emulator, from an empty AWS to a summary.
//!
//! Creates a demo-shaped table and the queues, enqueues a job with `scanfleet enqueue`,
//! runs worker processes until the job drains, compares what was published with what is in
//! the table, and cleans up. Exits non-zero if any row is missing.
//!
//! Usage: `demo [--rows N] [--segments N] [--workers N] [--limit-of-rows N]
//! [--rows-per-message N]`; the endpoint is `AWS_ENDPOINT_URL`, as for scanfleet itself.
//! `--rows-per-message` above 1 runs the job with packed output (README, *Packed output*).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use scanfleet::devkit::{self, Aws, BoxError, WorkerProcess};

struct Args {
    rows: u64,
    segments: u32,
    workers: usize,
    limit_of_rows: u32,
    /// `output.rows_per_message` of the workers.
    rows_per_message: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rows: 10_000,
        segments: 8,
        workers: 2,
        limit_of_rows: 1000,
        rows_per_message: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: {value:?} is not a positive whole number");
        match flag.as_str() {
            "--rows" => args.rows = value.parse().map_err(bad)?,
            "--segments" => args.segments = value.parse().map_err(bad)?,
            "--workers" => args.workers = value.parse().map_err(bad)?,
            "--limit-of-rows" => args.limit_of_rows = value.parse().map_err(bad)?,
            "--rows-per-message" => args.rows_per_message = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The scanfleet binary built beside this example (`target/<profile>/scanfleet`).
fn scanfleet_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|examples| examples.parent())
        .expect("target/<profile>")
        .join("scanfleet")
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let aws = Aws::from_env().await;
    let binary = scanfleet_binary();
    let table = devkit::unique_name("demo-items");
    let log_dir = std::env::temp_dir().join(&table);
    std::fs::create_dir_all(&log_dir)?;

    println!(
        "== scanfleet demo: {} rows, {} segments, {} workers",
        args.rows, args.segments, args.workers
    );
    devkit::create_table(&aws, &table).await?;
    let queues = devkit::create_queues(&aws, &table, 3).await?;
    let t = Instant::now();
    devkit::seed(&aws, &table, args.rows, 200).await?;
    println!("table {table} loaded in {:.1} s", t.elapsed().as_secs_f64());

    let result = job(&aws, &args, &binary, &table, &queues, &log_dir).await;
    devkit::cleanup(&aws, &table, &queues).await;
    println!(
        "cleaned up table and queues (worker logs in {})",
        log_dir.display()
    );
    result
}

async fn job(
    aws: &Aws,
    args: &Args,
    binary: &std::path::Path,
    table: &str,
    queues: &devkit::Queues,
    log_dir: &std::path::Path,
) -> Result<bool, BoxError> {
    // The job ledger, so `enqueue --wait` can show the job's progress.
    let ledger = format!("{table}-ledger");
    let out = Command::new(binary)
        .args(["ledger", "create"])
        .env("SCANFLEET__LEDGER__TABLE", &ledger)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ledger create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let result = job_with_ledger(aws, args, binary, table, queues, log_dir, &ledger).await;
    let _ = aws.dynamodb.delete_table().table_name(&ledger).send().await;
    result
}

async fn job_with_ledger(
    aws: &Aws,
    args: &Args,
    binary: &std::path::Path,
    table: &str,
    queues: &devkit::Queues,
    log_dir: &std::path::Path,
    ledger: &str,
) -> Result<bool, BoxError> {
    // A short long poll so the workers notice the end of the demo quickly.
    let env = [
        ("SCANFLEET__CONTROL__WAIT_TIME_SECONDS", "2".to_owned()),
        ("SCANFLEET__LEDGER__TABLE", ledger.to_owned()),
        (
            "SCANFLEET__OUTPUT__ROWS_PER_MESSAGE",
            args.rows_per_message.to_string(),
        ),
    ];
    let workers = (0..args.workers)
        .map(|_| WorkerProcess::start(binary, queues, table, &env, log_dir))
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let job_id = uuid::Uuid::new_v4().to_string();
    println!("enqueuing job {job_id}; `scanfleet enqueue --wait` follows it in the ledger:");
    // stderr is inherited: on a terminal, the progress bar moves while the demo drains the
    // output queue (the demo's consumer) at the same time.
    let mut wait = tokio::process::Command::new(binary)
        .args([
            "enqueue",
            "--table",
            table,
            "--segments",
            &args.segments.to_string(),
            "--job-id",
            &job_id,
            "--wait",
            "--progress-every",
            "2",
        ])
        .args(["--limit-of-rows", &args.limit_of_rows.to_string()])
        .env("SCANFLEET__CONTROL__QUEUE_URL", &queues.control)
        .env("SCANFLEET__LEDGER__TABLE", ledger)
        .stdout(std::process::Stdio::null())
        .spawn()?;

    let expected = args.rows as usize;
    let (received, waited) = tokio::join!(
        devkit::drain_until(
            aws,
            &queues.output,
            Duration::from_secs(600),
            Duration::from_secs(2),
            |got| got.iter().map(|m| m.rows().len()).sum::<usize>() >= expected,
        ),
        wait.wait()
    );
    let received = received?;
    let wait_ok = waited?.success();
    let elapsed = started.elapsed();
    let ledger_out = Command::new(binary)
        .args(["status", &job_id, "--json"])
        .env("SCANFLEET__LEDGER__TABLE", ledger)
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&ledger_out.stdout).unwrap_or_default();
    let control_left = scanfleet::aws::sqs::queue_depth(&aws.sqs, &queues.control).await?;
    let dlq = scanfleet::aws::sqs::queue_depth(&aws.sqs, &queues.dlq).await?;
    let published: f64 = workers
        .iter()
        .filter_map(|w| w.metric("scanfleet_rows_published_total", ""))
        .sum();
    for w in &workers {
        w.terminate();
    }
    let mut clean_exits = 0;
    for mut w in workers {
        if w.child.wait()?.success() {
            clean_exits += 1;
        }
    }

    let table_rows = count_rows(aws, table).await?;
    let rows: Vec<&str> = received.iter().flat_map(|m| m.rows()).collect();
    let keys: HashSet<(String, String)> = rows
        .iter()
        .filter_map(|body| {
            let v: serde_json::Value = serde_json::from_str(body).ok()?;
            Some((v["PK"].as_str()?.to_owned(), v["SK"].as_str()?.to_owned()))
        })
        .collect();
    let ledger_rows = status["rows_published"].as_u64().unwrap_or(0);
    let ok = keys.len() as u64 == table_rows
        && control_left == 0
        && dlq == 0
        && wait_ok
        && ledger_rows == table_rows;
    println!();
    println!("== summary (job {job_id})");
    println!("rows in table            {table_rows}");
    println!("rows published (metric)  {published}");
    println!(
        "rows published (ledger)  {ledger_rows}  (job {}, enqueue --wait exit {})",
        status["state"].as_str().unwrap_or("?"),
        if wait_ok { "0" } else { "non-zero" }
    );
    println!("messages received        {}", received.len());
    println!("rows received            {}", rows.len());
    println!("distinct keys received   {}", keys.len());
    println!("duplicates               {}", rows.len() - keys.len());
    println!(
        "missing                  {}",
        table_rows.saturating_sub(keys.len() as u64)
    );
    println!("tasks left / in DLQ      {control_left} / {dlq}");
    println!("workers exited cleanly   {clean_exits} of {}", args.workers);
    println!(
        "elapsed                  {:.1} s ({:.0} rows/s)",
        elapsed.as_secs_f64(),
        rows.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{}",
        if ok {
            "RESULT: OK, every row of the table was published"
        } else {
            "RESULT: MISMATCH"
        }
    );
    Ok(ok)
}

/// Rows in the table, counted by DynamoDB itself (Scan with Select=COUNT).
async fn count_rows(aws: &Aws, table: &str) -> Result<u64, BoxError> {
    let mut pages = aws
        .dynamodb
        .scan()
        .table_name(table)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .into_paginator()
        .send();
    let mut n = 0u64;
    while let Some(page) = pages.next().await {
        n += page?.count as u64;
    }
    Ok(n)
}
