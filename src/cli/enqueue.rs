//! `scanfleet enqueue`: one task message per segment, sent with SendMessageBatch.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::info;

use crate::BoxError;
use crate::aws::sqs;
use crate::expression::RawScanOptions;
use crate::ledger::{self, JobRecord, Ledger};
use crate::settings::Settings;
use crate::task::{self, TablePolicy, TaskMessage};

#[derive(clap::Args)]
pub struct Args {
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

pub async fn run(settings: Settings, args: Args) -> Result<(), BoxError> {
    let job = Job {
        table: args.table,
        segments: args.segments,
        limit_of_rows: args.limit_of_rows,
        job_id: args
            .job_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        run_id: uuid::Uuid::new_v4().simple().to_string(),
        options: args.scan.into_raw(),
        read_units_per_second: args.read_units_per_second,
    };
    let wait = args.wait.then(|| Duration::from_secs(args.progress_every));
    settings.validate_for_enqueue()?;
    settings.log.init();
    if wait.is_some() && settings.ledger.table().is_none() {
        return Err("configuration: ledger.table is required for enqueue --wait (env SCANFLEET__LEDGER__TABLE)".into());
    }
    // Validated by the workers' rules first (nothing is sent for a bad job), then, when the
    // job has expressions, by DynamoDB itself with a one-row probe scan. Made once: the ledger
    // keeps the first as the job's template, and all of them are sent.
    let bodies = task_bodies(&job)?;
    let aws = crate::aws::config().await;
    let options = job
        .options
        .clone()
        .validate()
        .expect("checked by task_bodies");
    if options.has_expressions() {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        probe(&dynamodb, &job.table, &options).await?;
    }
    let ledger = match settings.ledger.table() {
        Some(table) => {
            let ledger = Ledger::new(aws_sdk_dynamodb::Client::new(&aws), table);
            let template = bodies[0].clone();
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
    enqueue(&client, &settings.control.queue_url, &job.job_id, &bodies).await?;
    info!(job_id = %job.job_id, segments = job.segments, table = %job.table, "job enqueued");
    println!("{}", job.job_id);
    let (Some(every), Some(ledger)) = (wait, ledger) else {
        return Ok(());
    };
    let summary = super::status::wait(&ledger, &job.job_id, every).await?;
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

#[derive(Debug, Clone)]
pub struct Job {
    pub table: String,
    pub segments: u32,
    pub limit_of_rows: Option<u32>,
    pub job_id: String,
    /// Names this run of the job in every task (see `TaskMessage::run_id`): a copy of one of
    /// these tasks is recognised as a copy, while tasks of the same job sent again by another
    /// run run again.
    pub run_id: String,
    /// Filter, projection, consistent reads: copied into every task.
    pub options: RawScanOptions,
    /// The job's read budget (units per second), stored in every task.
    pub read_units_per_second: Option<f64>,
}

/// The table named on the command line is the only one these tasks use.
struct Only<'a>(&'a str);

impl TablePolicy for Only<'_> {
    fn default_table(&self) -> &str {
        self.0
    }
    fn allows(&self, table: &str) -> bool {
        table == self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("invalid job: {0}")]
    Invalid(#[from] task::Rejection),
    /// Names the job: the tasks already accepted run under its id.
    #[error(
        "job {job_id}: not every task was sent; those on the control queue run under this job id (with the ledger, `scanfleet status {job_id}` follows them and `scanfleet reconcile {job_id}` sends the rest once they are done)"
    )]
    Send {
        job_id: String,
        #[source]
        source: sqs::SendTasksError,
    },
    #[error("invalid job: DynamoDB rejected the scan expressions: {0}")]
    Probe(String),
    /// A projection valid as written that the key attributes the workers add make too long.
    #[error("invalid job: {0}")]
    Projection(String),
    /// Checked here as well as in the task: a NaN or infinite budget would travel as JSON
    /// `null`, which a task reads as "unlimited".
    #[error("invalid job: --read-units-per-second {0}")]
    Budget(String),
}

/// Asks DynamoDB to check the job's expressions against the table with a one-row scan
/// (a fraction of a read unit), so a syntax error or a type mismatch is reported now, by
/// `enqueue`, rather than by every task failing into the dead-letter queue. It sends the
/// expressions the workers will send: with a projection, the table's key attributes are
/// added to it the same way (read with `DescribeTable`, as the workers do).
pub async fn probe(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    options: &crate::expression::ScanOptions,
) -> Result<(), EnqueueError> {
    let key_names = match options.projection_expression {
        Some(_) => crate::aws::dynamodb::key_schema::KeySchemas::default()
            .get(dynamodb, table)
            .await
            .map_err(|e| {
                EnqueueError::Probe(format!(
                    "reading the table's key schema: {}",
                    crate::error_chain(&e)
                ))
            })?
            .names
            .clone(),
        None => Vec::new(),
    };
    let (projection, names) = options
        .scan_projection(&key_names)
        .map_err(EnqueueError::Projection)?;
    dynamodb
        .scan()
        .table_name(table)
        .limit(1)
        .set_filter_expression(options.filter_expression.clone())
        .set_projection_expression(projection)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(options.scan_values())
        .send()
        .await
        .map_err(|e| EnqueueError::Probe(crate::error_chain(&e)))?;
    Ok(())
}

/// The task bodies of a job, validated by the same rules the workers apply.
pub fn task_bodies(job: &Job) -> Result<Vec<String>, EnqueueError> {
    if let Some(rate) = job.read_units_per_second {
        crate::budget::check_rate(rate).map_err(EnqueueError::Budget)?;
    }
    let template = TaskMessage {
        current_segment: 0,
        total_segments: job.segments.into(),
        limit_of_rows: job.limit_of_rows.map(i64::from),
        table: Some(job.table.clone()),
        job_id: Some(job.job_id.clone()),
        exclusive_start_key: None,
        chunk: None,
        run_id: Some(job.run_id.clone()),
        origin_message_id: None,
        filter_expression: job.options.filter_expression.clone(),
        projection_expression: job.options.projection_expression.clone(),
        expression_attribute_names: job.options.expression_attribute_names.clone(),
        expression_attribute_values: job.options.expression_attribute_values.clone(),
        consistent_read: job.options.consistent_read,
        read_units_per_second: job.read_units_per_second,
    };
    (0..job.segments.max(1))
        .map(|segment| {
            let msg = template.for_segment(segment);
            // Expressions may hold U+FFFE or U+FFFF: written as escapes SQS accepts.
            let body = crate::json::to_sqs_text(&msg).expect("task messages always serialize");
            task::parse(&body, &Only(&job.table))?;
            Ok(body)
        })
        .collect()
}

/// Sends the job's tasks (their bodies from [`task_bodies`]) to the control queue.
pub async fn enqueue(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    job_id: &str,
    bodies: &[String],
) -> Result<(), EnqueueError> {
    sqs::send_tasks(client, queue_url, bodies)
        .await
        .map_err(|source| EnqueueError::Send {
            job_id: job_id.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(segments: u32) -> Job {
        Job {
            table: "items".into(),
            segments,
            limit_of_rows: Some(3000),
            job_id: "j1".into(),
            run_id: "r1".into(),
            options: RawScanOptions::default(),
            read_units_per_second: None,
        }
    }

    #[test]
    fn one_valid_task_per_segment() {
        let bodies = task_bodies(&job(3)).unwrap();
        assert_eq!(bodies.len(), 3);
        let first: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"current_segment":0,"total_segments":3,"limit_of_rows":3000,"table":"items","job_id":"j1","run_id":"r1"})
        );
        assert!(bodies[2].contains(r#""current_segment":2"#));
    }

    #[test]
    fn invalid_jobs_are_refused_before_sending() {
        assert!(
            task_bodies(&job(0))
                .unwrap_err()
                .to_string()
                .contains("total_segments")
        );
        assert!(
            task_bodies(&job(1_000_001))
                .unwrap_err()
                .to_string()
                .contains("total_segments")
        );
        let mut j = job(2);
        j.limit_of_rows = Some(0);
        assert!(
            task_bodies(&j)
                .unwrap_err()
                .to_string()
                .contains("limit_of_rows")
        );
        j.limit_of_rows = None;
        j.job_id = String::new();
        assert!(task_bodies(&j).unwrap_err().to_string().contains("job_id"));
        let mut j = job(2);
        j.options.filter_expression = Some("begins_with(SK, :p)".into());
        let e = task_bodies(&j).unwrap_err().to_string();
        assert!(e.contains(":p"), "{e}");
        j.options.expression_attribute_values = Some(serde_json::json!({":p": {"S": "A"}}));
        let bodies = task_bodies(&j).unwrap();
        assert!(bodies[1].contains(r#""expression_attribute_values":{":p":{"S":"A"}}"#));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut j = job(2);
            j.read_units_per_second = Some(bad);
            let e = task_bodies(&j).unwrap_err().to_string();
            assert!(e.contains("--read-units-per-second"), "{e}");
        }
    }

    #[test]
    fn the_budget_is_checked_with_the_tasks_bounds() {
        let mut j = job(2);
        j.read_units_per_second = Some(0.001);
        assert!(task_bodies(&j).unwrap()[0].contains(r#""read_units_per_second":0.001"#));
        j.read_units_per_second = Some(0.0);
        task_bodies(&j).unwrap();
        for bad in [1e-20, -1.0, 2e9, f64::NAN, f64::INFINITY] {
            j.read_units_per_second = Some(bad);
            let e = task_bodies(&j).unwrap_err().to_string();
            assert!(
                e.contains("--read-units-per-second") && e.contains("0.001..="),
                "{bad}: {e}"
            );
        }
    }

    /// `--job-id` goes into every row's message attributes, where SQS refuses U+FFFE and
    /// U+FFFF; an expression value goes into the task body, where they are escaped.
    #[test]
    fn a_job_id_sqs_would_refuse_is_refused_and_expressions_are_escaped() {
        for id in ["nightly\u{FFFF}", "\u{FFFE}"] {
            let mut j = job(2);
            j.job_id = id.into();
            let e = task_bodies(&j).unwrap_err().to_string();
            assert!(e.contains("job_id") && e.contains("U+FFFF"), "{e}");
        }
        let mut j = job(2);
        j.options.filter_expression = Some("SK = :p".into());
        j.options.expression_attribute_values = Some(serde_json::json!({":p": {"S": "A\u{FFFF}"}}));
        let bodies = task_bodies(&j).unwrap();
        assert!(crate::json::sqs_accepts(&bodies[0]), "{:?}", bodies[0]);
        assert!(bodies[0].contains(r#"{"S":"A\uFFFF"}"#), "{}", bodies[0]);
    }
}
