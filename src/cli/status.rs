//! `scanfleet status`, and the follow loop of `enqueue --wait`: the job's figures from the ledger.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::ledger::{self, BoxError, Ledger, Summary};
use crate::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
    job_id: String,
    /// One JSON object, for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: Settings, args: Args) -> Result<(), BoxError> {
    settings.log.init();
    let ledger = Ledger::for_command(&settings, "status").await?;
    let summary = status(&ledger, &args.job_id).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}

/// How often `--wait` reads the ledger.
const POLL: Duration = Duration::from_secs(1);

/// The job's figures now.
pub async fn status(ledger: &Ledger, job: &str) -> Result<Summary, BoxError> {
    let (record, segments) = ledger.job(job).await?;
    Ok(ledger::summarize(&record, &segments, ledger::now_secs()))
}

/// How long the job's running totals may stand still before `--wait` reads every segment
/// record anyway: they are a hint (see [`ledger::JobTotals`]), and a worker that died between
/// its two writes leaves them short for good.
const STILL_BEFORE_FULL_READ: Duration = Duration::from_secs(60);

/// Follows the job until every segment is done or one was dead-lettered, showing progress on
/// stderr: a live bar on a terminal, otherwise a plain line every `every`.
///
/// What it costs: one strongly consistent `GetItem` of the job's record a second (its running
/// totals, one read unit), whatever the number of segments; every segment record is read (a
/// paginated `Query`) at the start, when the totals say the job ended or a segment was
/// dead-lettered, and after the totals stood still for a minute. A failed read is retried with
/// backoff ([`crate::aws::retry::ledger_read_backoff`]); `--wait` gives up only when reads keep
/// failing.
pub async fn wait(ledger: &Ledger, job: &str, every: Duration) -> Result<Summary, BoxError> {
    let mut progress = Progress::new(every);
    // The last full read, and what is shown: that read brought up to date with the totals.
    let mut read = read_retrying(|| status(ledger, job)).await?;
    let mut s = read.clone();
    let mut read_at = Instant::now();
    let (mut totals, mut still_since) = (None, Instant::now());
    let mut failed_at_full_read = 0;
    loop {
        progress.show(&s);
        if s.state != "running" {
            progress.finish();
            return Ok(s);
        }
        tokio::time::sleep(POLL).await;
        let now = read_retrying(|| ledger.job_totals(job))
            .await?
            .ok_or_else(|| format!("job {job} is no longer in ledger table {}", ledger.table))?;
        if totals != Some(now) {
            totals = Some(now);
            still_since = Instant::now();
        }
        let full = now.segments_done >= u64::from(s.segments_total)
            || now.segments_failed > failed_at_full_read
            || still_since.elapsed() >= STILL_BEFORE_FULL_READ;
        if full {
            read = read_retrying(|| status(ledger, job)).await?;
            s = read.clone();
            read_at = Instant::now();
            failed_at_full_read = now.segments_failed;
            still_since = Instant::now();
        } else {
            // From the last full read, not the last figures shown: the time since that read is
            // added once, not again at every poll.
            s = read.with_totals(&now, read_at.elapsed());
        }
    }
}

/// Runs a ledger read, retried with backoff while it fails; the error of the last attempt.
async fn read_retrying<T, F, Fut>(read: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BoxError>>,
{
    use backon::Retryable;
    read.retry(crate::aws::retry::ledger_read_backoff())
        .notify(|e: &BoxError, delay: Duration| {
            eprintln!(
                "scanfleet: reading the job ledger failed ({}); trying again in {delay:.1?}",
                crate::error_chain(e.as_ref())
            )
        })
        .await
}

/// `--wait`'s progress on stderr: a live bar on a terminal, otherwise a plain line every
/// `every` (and at the end).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    terminal: bool,
    every: Duration,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(every: Duration) -> Self {
        Self {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            every,
            last_line: None,
        }
    }

    fn show(&mut self, s: &Summary) {
        if self.terminal && self.bar.is_none() {
            let bar = indicatif::ProgressBar::new(u64::from(s.segments_total));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} segments  {msg}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            self.bar = Some(bar);
        }
        let eta = s
            .eta_seconds
            .map(|e| format!(", ETA {e} s"))
            .unwrap_or_default();
        let under_way = match s.rows_published_in_chunks {
            0 => String::new(),
            n => format!(" (+{n} in chunks under way)"),
        };
        let figures = format!(
            "{} rows published{under_way}, {:.0} rows/s, {:.1} read units{eta}",
            s.rows_published, s.rows_per_second, s.read_units_consumed
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(u64::from(s.segments_total));
                bar.set_position(u64::from(s.segments_done));
                bar.set_message(figures);
            }
            None if self.last_line.is_none_or(|t| t.elapsed() >= self.every)
                || s.state != "running" =>
            {
                eprintln!(
                    "job {}: {}/{} segments done, {} running, {} failed; {figures}",
                    s.job_id,
                    s.segments_done,
                    s.segments_total,
                    s.segments_running,
                    s.segments_failed
                );
                self.last_line = Some(Instant::now());
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
