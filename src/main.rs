use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

use scanfleet::BoxError;
use scanfleet::budget::ReadBudget;
use scanfleet::enqueue::{self, Job};
use scanfleet::expression::RawScanOptions;
use scanfleet::jobs;
use scanfleet::ledger::{self, JobRecord, Ledger};
use scanfleet::pipeline::{Checkpointing, KeySchemas, Output, Packing};
use scanfleet::plan;
use scanfleet::sqs;
use std::time::Duration;

/// SQS's default MaximumMessageSize, assumed when the queue's own cannot be read.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
use scanfleet::http::Health;
use scanfleet::scan::{DirectScan, Scanner};
use scanfleet::settings::{ClientKind, Settings};
use scanfleet::sqs::direct::DirectSqs;
use scanfleet::sqs::{ControlQueue, Publisher};
use scanfleet::worker;
use scanfleet::{http, telemetry};

/// DynamoDB parallel scans as a horizontally scaled SQS job.
#[derive(Parser)]
#[command(name = "scanfleet", version)]
struct Cli {
    /// Configuration file layered over config/default.toml (env SCANFLEET__* overrides both).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the worker daemon: take segment tasks from the control queue until SIGTERM/SIGINT.
    Worker,
    /// Put one task per segment on the control queue and print the job id.
    Enqueue {
        /// Table to scan (workers accept it only if scan.allowed_tables allows it).
        #[arg(long)]
        table: String,
        /// Number of segments (TotalSegments), 1..=1000000.
        #[arg(long)]
        segments: u32,
        /// Page size (Scan Limit) of each request; the whole segment is still scanned.
        #[arg(long)]
        limit_of_rows: Option<u32>,
        /// Job id carried by every task and output message (default: a new UUID).
        #[arg(long)]
        job_id: Option<String>,
        #[command(flatten)]
        scan: ScanArgs,
        /// Read budget of the whole job in read capacity units per second (0: unlimited);
        /// each of the N tasks paces itself to R / N.
        #[arg(long, value_name = "R")]
        read_units_per_second: Option<f64>,
        /// Follow the job in the ledger until it ends: exit 0 when every segment is done,
        /// non-zero when a task was dead-lettered. Needs ledger.table.
        #[arg(long)]
        wait: bool,
        /// Without a terminal, seconds between progress lines of --wait.
        #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        progress_every: u64,
    },
    /// Print a job's progress from the ledger: segments, rows, read units, skew, failures.
    Status {
        job_id: String,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Re-enqueue the job's segments that are neither done nor in flight, from the ledger's
    /// position; optionally first move the job's tasks back from the dead-letter queue.
    Reconcile {
        job_id: String,
        /// Dead-letter queue URL to move this job's tasks back from.
        #[arg(long, value_name = "DLQ_URL")]
        redrive_from: Option<String>,
        /// A running segment with no sign of life for this long is not in flight.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        stale_seconds: u64,
        /// Go on even though the control queue is not empty.
        #[arg(long)]
        force: bool,
    },
    /// Suggest --segments for a table (DescribeTable), with the reasoning.
    Plan {
        #[arg(long)]
        table: String,
        /// Number of worker processes (their worker.concurrency comes from the configuration).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
        workers: Option<u32>,
    },
    /// Manage the job ledger table.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Create the ledger table named by ledger.table (on-demand billing); idempotent.
    Create,
}

/// What each Scan request of the job reads and sends.
#[derive(clap::Args)]
struct ScanArgs {
    /// FilterExpression, e.g. 'begins_with(#sk, :prefix)'; rows it rejects are not sent.
    #[arg(long)]
    filter_expression: Option<String>,
    /// ProjectionExpression: the attributes to send (the primary key is always sent).
    #[arg(long)]
    projection_expression: Option<String>,
    /// ExpressionAttributeNames as JSON, e.g. '{"#sk":"SK"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_names)]
    expression_attribute_names: Option<BTreeMap<String, String>>,
    /// ExpressionAttributeValues as DynamoDB JSON, e.g. '{":prefix":{"S":"PREFIX-1"}}'.
    #[arg(long, value_name = "JSON", value_parser = parse_json_object)]
    expression_attribute_values: Option<serde_json::Value>,
    /// Strongly consistent reads (twice the read capacity).
    #[arg(long)]
    consistent_read: bool,
}

impl ScanArgs {
    fn into_raw(self) -> RawScanOptions {
        RawScanOptions {
            filter_expression: self.filter_expression,
            projection_expression: self.projection_expression,
            expression_attribute_names: self.expression_attribute_names,
            expression_attribute_values: self.expression_attribute_values,
            consistent_read: self.consistent_read.then_some(true),
        }
    }
}

fn parse_names(text: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON object of strings: {e}"))
}

fn parse_json_object(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// Tokio's current-thread runtime unless `TOKIO_WORKER_THREADS` asks for worker threads. A worker
/// spends most of its time waiting on round trips, and one thread serves tens of thousands of
/// rows a second. A second thread added cross-thread wakeups (14% more CPU per row in the
/// benchmark). A multi-thread runtime with one worker thread measured the same CPU and memory as
/// this one, within the benchmark's scatter; this one has a single thread to reason about. More
/// throughput comes from more worker processes.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        // The multi-thread runtime reads the thread count from the variable itself.
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Every command signs AWS calls: a credential variable that cannot sign (a secret file's
    // trailing newline) stops here, named, rather than failing each call later.
    if let Err(e) =
        scanfleet::aws::direct::check_credential_variables(|name| std::env::var_os(name))
    {
        eprintln!("scanfleet: configuration: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = runtime().expect("the tokio runtime starts");
    let result = match cli.command {
        Command::Worker => runtime.block_on(run_worker(settings)),
        Command::Enqueue {
            table,
            segments,
            limit_of_rows,
            job_id,
            scan,
            read_units_per_second,
            wait,
            progress_every,
        } => {
            let job = Job {
                table,
                segments,
                limit_of_rows,
                job_id: job_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                run_id: uuid::Uuid::new_v4().simple().to_string(),
                options: scan.into_raw(),
                read_units_per_second,
            };
            let wait = wait.then(|| Duration::from_secs(progress_every));
            runtime.block_on(run_enqueue(settings, job, wait))
        }
        Command::Status { job_id, json } => runtime.block_on(run_status(settings, job_id, json)),
        Command::Reconcile {
            job_id,
            redrive_from,
            stale_seconds,
            force,
        } => runtime.block_on(run_reconcile(
            settings,
            job_id,
            redrive_from,
            stale_seconds,
            force,
        )),
        Command::Plan { table, workers } => runtime.block_on(run_plan(settings, table, workers)),
        Command::Ledger {
            command: LedgerCommand::Create,
        } => runtime.block_on(run_ledger_create(settings)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("scanfleet: {}", scanfleet::error_chain(e));
    ExitCode::FAILURE
}

/// The ledger, or an error naming the setting `command` needs.
async fn ledger(settings: &Settings, command: &str) -> Result<Ledger, BoxError> {
    let table = settings.ledger.table().ok_or_else(|| {
        format!(
            "configuration: ledger.table is required for {command} (env SCANFLEET__LEDGER__TABLE)"
        )
    })?;
    let aws = scanfleet::aws::config().await;
    Ok(Ledger::new(aws_sdk_dynamodb::Client::new(&aws), table))
}

async fn run_status(settings: Settings, job: String, json: bool) -> Result<(), BoxError> {
    telemetry::init_logging(&settings.log);
    let ledger = ledger(&settings, "status").await?;
    let summary = jobs::status(&ledger, &job).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}

async fn run_reconcile(
    settings: Settings,
    job: String,
    redrive_from: Option<String>,
    stale_seconds: u64,
    force: bool,
) -> Result<(), BoxError> {
    settings.validate_for_enqueue()?;
    telemetry::init_logging(&settings.log);
    let ledger = ledger(&settings, "reconcile").await?;
    let sqs_client = aws_sdk_sqs::Client::new(&scanfleet::aws::config().await);
    let opts = jobs::ReconcileOptions {
        control_url: &settings.control.queue_url,
        redrive_from: redrive_from.as_deref(),
        stale_seconds,
        force,
    };
    let done = jobs::reconcile(&ledger, &sqs_client, &job, &opts).await?;
    print!("{}", done.render());
    Ok(())
}

async fn run_plan(settings: Settings, table: String, workers: Option<u32>) -> Result<(), BoxError> {
    telemetry::init_logging(&settings.log);
    let aws = scanfleet::aws::config().await;
    let (size, items) = plan::describe(&aws_sdk_dynamodb::Client::new(&aws), &table).await?;
    let p = plan::plan(size, items, workers, settings.worker.concurrency);
    for reason in &p.reasons {
        println!("- {reason}");
    }
    println!("suggested: --segments {}", p.segments);
    Ok(())
}

async fn run_ledger_create(settings: Settings) -> Result<(), BoxError> {
    telemetry::init_logging(&settings.log);
    let ledger = ledger(&settings, "ledger create").await?;
    if ledger.create_table().await? {
        println!("created ledger table {} (on-demand billing)", ledger.table);
    } else {
        println!("ledger table {} already exists", ledger.table);
    }
    Ok(())
}

async fn run_enqueue(settings: Settings, job: Job, wait: Option<Duration>) -> Result<(), BoxError> {
    settings.validate_for_enqueue()?;
    telemetry::init_logging(&settings.log);
    if wait.is_some() && settings.ledger.table().is_none() {
        return Err("configuration: ledger.table is required for enqueue --wait (env SCANFLEET__LEDGER__TABLE)".into());
    }
    // Validated by the workers' rules first (nothing is sent for a bad job), then, when the
    // job has expressions, by DynamoDB itself with a one-row probe scan.
    enqueue::task_bodies(&job)?;
    let aws = scanfleet::aws::config().await;
    let options = job
        .options
        .clone()
        .validate()
        .expect("checked by task_bodies");
    if options.has_expressions() {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        enqueue::probe(&dynamodb, &job.table, &options).await?;
    }
    let ledger = match settings.ledger.table() {
        Some(table) => {
            let ledger = Ledger::new(aws_sdk_dynamodb::Client::new(&aws), table);
            let template = enqueue::task_bodies(&job)?.swap_remove(0);
            ledger
                .record_job(&JobRecord {
                    job_id: job.job_id.clone(),
                    table: job.table.clone(),
                    segments_total: job.segments,
                    created_at: ledger::now_secs(),
                    task_template: template,
                    read_units_per_second: job.read_units_per_second,
                })
                .await?;
            Some(ledger)
        }
        None => None,
    };
    let client = aws_sdk_sqs::Client::new(&aws);
    enqueue::enqueue(&client, &settings.control.queue_url, &job).await?;
    info!(job_id = %job.job_id, segments = job.segments, table = %job.table, "job enqueued");
    println!("{}", job.job_id);
    let (Some(every), Some(ledger)) = (wait, ledger) else {
        return Ok(());
    };
    let summary = jobs::wait(&ledger, &job.job_id, every).await?;
    eprint!("{}", summary.render());
    if summary.state == "done" {
        Ok(())
    } else {
        Err(format!(
            "job {} failed: {} segments were dead-lettered; fix the cause, then run `scanfleet reconcile {} --redrive-from DLQ_URL`",
            job.job_id, summary.segments_failed, job.job_id
        )
        .into())
    }
}

async fn run_worker(settings: Settings) -> Result<(), BoxError> {
    settings.validate_for_worker()?;
    telemetry::init_logging(&settings.log);
    let listener = tokio::net::TcpListener::bind(settings.metrics.listen)
        .await
        .map_err(|e| {
            format!(
                "configuration: metrics.listen {} cannot be bound: {e}",
                settings.metrics.listen
            )
        })?;
    let scan = &settings.scan;
    let tables = std::iter::once(&scan.default_table).chain(&scan.allowed_tables);
    let metrics = telemetry::install_metrics(tables.map(String::as_str));
    // The SDK's service calls and the direct clients share the transport's connector: one
    // pool, one proxy decision.
    let transport = scanfleet::aws::transport::Transport::new();
    let aws = scanfleet::aws::config_on(&transport).await;
    let sqs_client = aws_sdk_sqs::Client::new(&aws);
    let output_url = &settings.output.queue_url;
    let max_message_bytes = match sqs::max_message_size(&sqs_client, output_url).await {
        Some(n) => n,
        None => {
            tracing::warn!(
                "could not read the output queue's MaximumMessageSize; assuming SQS's default of {DEFAULT_MAX_MESSAGE_BYTES} bytes"
            );
            DEFAULT_MAX_MESSAGE_BYTES
        }
    };
    settings.output.check_message_bytes(max_message_bytes)?;
    let oversize = &settings.output.oversize_queue_url;
    let publisher = match settings.output.client {
        ClientKind::Direct => Publisher::Direct(Arc::new(
            DirectSqs::new(&aws, transport.calls())
                .await
                .map_err(|e| anyhow::anyhow!("output.client = \"direct\": {e}"))?,
        )),
        ClientKind::Sdk => Publisher::Sdk(sqs_client.clone()),
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let scanner = match settings.scan.client {
        ClientKind::Direct => Scanner::Direct(Arc::new(
            DirectScan::new(&aws, transport.calls())
                .await
                .map_err(|e| anyhow::anyhow!("scan.client = \"direct\": {e}"))?,
        )),
        ClientKind::Sdk => Scanner::Sdk(dynamodb.clone()),
    };
    let output = Output {
        dynamodb,
        scanner,
        sqs: sqs_client.clone(),
        publisher,
        queue_url: output_url.as_str().into(),
        format: settings.output.format,
        max_batch_bytes: settings.output.max_batch_bytes as usize,
        max_message_bytes,
        oversize_queue_url: (!oversize.is_empty()).then(|| oversize.clone()),
        packing: settings.output.packed().then_some(Packing {
            rows_per_message: settings.output.rows_per_message as usize,
            max_message_bytes: settings.output.max_message_bytes as usize,
        }),
        in_flight: Arc::new(Semaphore::new(
            settings.output.max_in_flight_batches as usize,
        )),
        checkpointing: Checkpointing {
            rows: settings.worker.checkpoint_rows,
            every: Duration::from_secs(settings.worker.checkpoint_seconds),
        },
        key_schemas: KeySchemas::default(),
        read_budget: (settings.scan.read_units_per_second > 0.0)
            .then(|| Arc::new(ReadBudget::new(settings.scan.read_units_per_second))),
    };
    let control = ControlQueue {
        client: sqs_client,
        url: settings.control.queue_url.clone(),
    };

    let shutdown = CancellationToken::new();
    let health = Arc::new(Health::default());
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        metrics,
        health.clone(),
        server_stop.clone(),
    ));
    tokio::spawn(signal_shutdown(shutdown.clone()));
    info!(
        control = %settings.control.queue_url,
        output = %settings.output.queue_url,
        concurrency = settings.worker.concurrency,
        metrics = %settings.metrics.listen,
        "worker started"
    );
    let ledger = settings
        .ledger
        .table()
        .map(|t| Ledger::new(aws_sdk_dynamodb::Client::new(&aws), t));
    worker::run(&settings, control, output, ledger, health, shutdown).await;
    // The metrics endpoint stays up through the drain, so the last figures can be scraped.
    server_stop.cancel();
    let _ = server.await;
    info!("worker stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = which, "shutdown requested");
    shutdown.cancel();
}

/// mimalloc asks the kernel for transparent huge pages on its arenas, and every 2 MiB huge page
/// it touches is resident in full: that alone put a worker at 73 MiB instead of 50 MiB in the
/// benchmark, for no measurable CPU gain. `PR_SET_THP_DISABLE` turns them off for this process
/// (whatever the host's THP setting), and applies to later faults in existing mappings too.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// mimalloc: the SDK allocates heavily per request (JSON, headers, signing); glibc's malloc
// spent about a quarter of the worker's CPU in the benchmark profile (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
