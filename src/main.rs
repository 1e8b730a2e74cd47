use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

use scanfleet::budget::ReadBudget;
use scanfleet::enqueue::{self, Job};
use scanfleet::expression::RawScanOptions;
use scanfleet::pipeline::{Checkpointing, KeySchemas, Output};
use scanfleet::sqs;
use std::time::Duration;

/// SQS's default MaximumMessageSize, assumed when the queue's own cannot be read.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
use scanfleet::settings::Settings;
use scanfleet::sqs::ControlQueue;
use scanfleet::worker::{self, Health};
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
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    let result = match cli.command {
        Command::Worker => runtime.block_on(run_worker(settings)),
        Command::Enqueue {
            table,
            segments,
            limit_of_rows,
            job_id,
            scan,
            read_units_per_second,
        } => {
            let job = Job {
                table,
                segments,
                limit_of_rows,
                job_id: job_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                options: scan.into_raw(),
                read_units_per_second,
            };
            runtime.block_on(run_enqueue(settings, job))
        }
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

type BoxError = Box<dyn std::error::Error>;

async fn run_enqueue(settings: Settings, job: Job) -> Result<(), BoxError> {
    settings.validate_for_enqueue()?;
    telemetry::init_logging(&settings.log);
    // Validated by the workers' rules first (nothing is sent for a bad job), then, when the
    // job has expressions, by DynamoDB itself with a one-row probe scan.
    enqueue::task_bodies(&job)?;
    let aws = scanfleet::aws_config().await;
    let options = job
        .options
        .clone()
        .validate()
        .expect("checked by task_bodies");
    if options.has_expressions() {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        enqueue::probe(&dynamodb, &job.table, &options).await?;
    }
    let client = aws_sdk_sqs::Client::new(&aws);
    enqueue::enqueue(&client, &settings.control.queue_url, &job).await?;
    info!(job_id = %job.job_id, segments = job.segments, table = %job.table, "job enqueued");
    println!("{}", job.job_id);
    Ok(())
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
    let metrics = telemetry::install_metrics();
    let aws = scanfleet::aws_config().await;
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
    let oversize = &settings.output.oversize_queue_url;
    let output = Output {
        dynamodb: aws_sdk_dynamodb::Client::new(&aws),
        sqs: sqs_client.clone(),
        queue_url: output_url.clone(),
        format: settings.output.format,
        max_batch_bytes: settings.output.max_batch_bytes as usize,
        max_message_bytes,
        oversize_queue_url: (!oversize.is_empty()).then(|| oversize.clone()),
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
    worker::run(&settings, control, output, health, shutdown).await;
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
