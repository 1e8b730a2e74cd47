//! `scanfleet reconcile`: re-enqueue the job's segments that are neither done nor in flight, from
//! the ledger's position, optionally after moving the job's tasks back from the dead-letter
//! queue. The choice of segments is pure ([`crate::ledger::reconcile`]); the reads and sends are
//! here.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::aws::sqs;
use crate::ledger::{self, BoxError, Ledger, LeftAlone};
use crate::settings::Settings;

#[derive(clap::Args)]
pub struct Args {
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
}

pub async fn run(settings: Settings, args: Args) -> Result<(), BoxError> {
    settings.validate_for_enqueue()?;
    settings.log.init();
    let ledger = Ledger::for_command(&settings, "reconcile").await?;
    let sqs_client = aws_sdk_sqs::Client::new(&crate::aws::config().await);
    let opts = ReconcileOptions {
        control_url: &settings.control.queue_url,
        redrive_from: args.redrive_from.as_deref(),
        stale_seconds: args.stale_seconds,
        force: args.force,
    };
    let done = reconcile(&ledger, &sqs_client, &args.job_id, &opts).await?;
    print!("{}", done.render());
    Ok(())
}

/// Time between the two reads of the control queue's counts that confirm it empty. SQS's
/// counts are approximate (a message just sent or just received may be missing from one
/// read); two reads of zero this far apart ride over that.
pub const CONFIRM_EMPTY_INTERVAL: Duration = Duration::from_secs(3);

/// Up to this many done segments are named one per line; more are reported as a count.
const DONE_NAMED_UP_TO: usize = 10;

/// What `reconcile` did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Segments whose dead-lettered tasks were moved back to the control queue.
    pub redriven: Vec<u32>,
    /// Segments re-enqueued from the ledger's position: `(segment, chunk)`.
    pub reenqueued: Vec<(u32, u32)>,
    /// Every other segment, with why it was left alone.
    pub left_alone: Vec<(u32, LeftAlone)>,
    /// What the DLQ pass did, when asked for.
    pub redrive: Option<Redriven>,
}

impl Reconciled {
    /// The report `reconcile` prints: one line per segment acted on or left alone (done
    /// segments as a count when there are more than [`DONE_NAMED_UP_TO`]), then, if nothing
    /// was put back, a last line saying why.
    pub fn render(&self) -> String {
        let mut lines = Vec::new();
        for seg in &self.redriven {
            lines.push(format!(
                "segment {seg}: task moved back from the dead-letter queue"
            ));
        }
        if let Some(r) = &self.redrive {
            if r.others_left > 0 {
                lines.push(format!(
                    "dead-letter queue: {} tasks of other jobs left there",
                    r.others_left
                ));
            }
            if let RedriveStop::Bound { received, at_start } = r.stop {
                lines.push(format!(
                    "dead-letter queue: stopped after receiving {received} messages (it held about {at_start} at the start); this job may have more tasks there: run reconcile again"
                ));
            }
        }
        for (seg, chunk) in &self.reenqueued {
            lines.push(format!("segment {seg}: re-enqueued at chunk {chunk}"));
        }
        let done: Vec<u32> = self
            .left_alone
            .iter()
            .filter(|(_, why)| *why == LeftAlone::Done)
            .map(|(seg, _)| *seg)
            .collect();
        if done.len() > DONE_NAMED_UP_TO {
            lines.push(format!("{} segments left alone: done", done.len()));
        }
        let (mut running, mut not_started, mut stuck) = (0, 0, 0);
        for (seg, why) in &self.left_alone {
            match why {
                LeftAlone::Done if done.len() <= DONE_NAMED_UP_TO => {
                    lines.push(format!("segment {seg}: left alone, done"));
                }
                LeftAlone::Done | LeftAlone::Redriven => {}
                LeftAlone::Running { seconds_ago } => {
                    running += 1;
                    lines.push(format!(
                        "segment {seg}: left alone, running, last sign of life {seconds_ago} s ago"
                    ));
                }
                LeftAlone::AtChunkLimit => {
                    stuck += 1;
                    lines.push(format!(
                        "segment {seg}: left alone, continued {} times, the most a task can carry: run the job again with a larger worker.checkpoint_rows",
                        crate::task::MAX_CHUNK
                    ));
                }
                LeftAlone::NotStarted => {
                    not_started += 1;
                    lines.push(format!(
                        "segment {seg}: left alone, not started, the control queue not yet confirmed empty"
                    ));
                }
            }
        }
        if self.redriven.is_empty() && self.reenqueued.is_empty() {
            lines.push(if running + not_started + stuck == 0 {
                "nothing to reconcile: every segment is done".to_owned()
            } else {
                format!(
                    "nothing re-enqueued: {running} segments running, {not_started} not started while the control queue holds tasks, {stuck} at the chunk limit"
                )
            });
        }
        lines.into_iter().map(|l| l + "\n").collect()
    }
}

pub struct ReconcileOptions<'a> {
    pub control_url: &'a str,
    pub redrive_from: Option<&'a str>,
    /// Seconds without a sign of life after which a running segment counts as not in flight.
    pub stale_seconds: u64,
    /// Go on even though the control queue is not empty.
    pub force: bool,
}

/// Puts the job's unfinished segments back on the control queue: first its tasks in the DLQ
/// (if asked), then, from the ledger's position, every other segment that is neither done nor
/// in flight (see [`ledger::to_reconcile`]).
///
/// The control queue is read twice, [`CONFIRM_EMPTY_INTERVAL`] apart, before the ledger is
/// read: with no message visible, in flight or delayed at both reads, no segment that the
/// ledger then shows as never started has a task anywhere, so it is re-enqueued at once.
pub async fn reconcile(
    ledger: &Ledger,
    sqs_client: &aws_sdk_sqs::Client,
    job: &str,
    opts: &ReconcileOptions<'_>,
) -> Result<Reconciled, BoxError> {
    let mut queue_empty = true;
    for read in 0..2 {
        if read > 0 {
            tokio::time::sleep(CONFIRM_EMPTY_INTERVAL).await;
        }
        let depth = sqs::unfinished_messages(sqs_client, opts.control_url).await?;
        if depth > 0 && !opts.force {
            return Err(format!(
                "the control queue holds {depth} tasks (visible, in flight or delayed); this job's may be among them and would be run twice. Wait until it is empty, or pass --force"
            )
            .into());
        }
        queue_empty &= depth == 0;
    }
    let (record, segments) = ledger.job(job).await?;
    let mut done = Reconciled::default();
    if let Some(dlq) = opts.redrive_from {
        let r = redrive(sqs_client, dlq, opts.control_url, job).await?;
        done.redriven = r.segments.clone();
        done.redrive = Some(r);
    }
    let skip: HashSet<u32> = done.redriven.iter().copied().collect();
    let plan = ledger::to_reconcile(
        &record,
        &segments,
        ledger::now_secs(),
        opts.stale_seconds,
        queue_empty,
        &skip,
    );
    let mut bodies = Vec::with_capacity(plan.resumes.len());
    for r in &plan.resumes {
        bodies.push(ledger::resume_task(&record.task_template, r)?);
        done.reenqueued.push((r.segment, r.chunk));
    }
    sqs::send_tasks(sqs_client, opts.control_url, &bodies).await?;
    done.left_alone = plan.left_alone;
    Ok(done)
}

/// Why the redrive loop stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum RedriveStop {
    /// A receive returned nothing: every message of the DLQ was looked at.
    Empty,
    /// A receive returned only messages already looked at (other jobs' tasks whose 60 s of
    /// hiding ran out): the loop has been round the whole queue.
    CameRound,
    /// It received as many messages as the DLQ held at the start plus [`REDRIVE_SLACK`]
    /// (a DLQ filling as fast as it is read): this job's tasks may remain.
    Bound { received: u64, at_start: u64 },
}

/// Receives allowed beyond the DLQ's `ApproximateNumberOfMessages` at the start: the count is
/// approximate, and tasks may be dead-lettered while the loop runs.
pub const REDRIVE_SLACK: u64 = 1000;

/// The redrive loop's stopping rule, after a receive of `batch` messages of which `new` were
/// not received before, `received` messages in all so far (this batch included). Every turn
/// that goes on receives at least one message, so the loop ends after at most
/// `at_start + REDRIVE_SLACK` messages whatever the queue does.
pub fn redrive_stop(batch: usize, new: usize, received: u64, at_start: u64) -> Option<RedriveStop> {
    if batch == 0 {
        Some(RedriveStop::Empty)
    } else if new == 0 {
        Some(RedriveStop::CameRound)
    } else if received >= at_start.saturating_add(REDRIVE_SLACK) {
        Some(RedriveStop::Bound { received, at_start })
    } else {
        None
    }
}

/// What `reconcile --redrive-from` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Redriven {
    /// Segments whose tasks were moved back to the control queue.
    pub segments: Vec<u32>,
    /// Other jobs' tasks seen and left in the DLQ (made visible again).
    pub others_left: usize,
    pub stop: RedriveStop,
}

/// The body a dead-lettered task (`message_id`: its id in the dead-letter queue, which SQS keeps
/// from the control queue) is sent back to the control queue with: the same task, naming that
/// message as its origin, so it keeps the claim on a chunk it counted before it failed (see
/// [`crate::task::stamp_identity`]).
fn redriven_body(body: &str, message_id: &str) -> String {
    crate::task::stamp_identity(body, message_id)
}

/// Moves the job's tasks from the DLQ back to the control queue (send, then delete: a crash
/// in between leaves a duplicate task, never a lost one). Other jobs' tasks are left in the
/// DLQ, hidden for 60 s by each receive and made visible again at the end. The loop stops by
/// [`redrive_stop`], so it ends however many other tasks the DLQ holds.
pub async fn redrive(
    client: &aws_sdk_sqs::Client,
    dlq: &str,
    control: &str,
    job: &str,
) -> Result<Redriven, BoxError> {
    let at_start = sqs::queue_attribute(
        client,
        dlq,
        aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
    )
    .await?
    .and_then(|n| n.parse::<u64>().ok())
    .unwrap_or(0);
    let mut moved = Vec::new();
    // Other jobs' tasks: message id → the latest receipt handle (the one that hid it last).
    let mut others: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut received: u64 = 0;
    let stop = loop {
        let out = client
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        received = received.saturating_add(messages.len() as u64);
        let mut new = 0;
        for m in &messages {
            let id = m.message_id().unwrap_or_default().to_owned();
            let receipt = m.receipt_handle().unwrap_or_default().to_owned();
            // A message without an id counts as new: only the bound then stops the loop.
            if !seen.insert(id.clone()) && !id.is_empty() {
                if let Some(r) = others.get_mut(&id) {
                    *r = receipt;
                }
                continue;
            }
            new += 1;
            let body = m.body().unwrap_or_default();
            let task: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            if task["job_id"].as_str() != Some(job) {
                others.insert(id, receipt);
                continue;
            }
            client
                .send_message()
                .queue_url(control)
                .message_body(redriven_body(body, &id))
                .send()
                .await?;
            client
                .delete_message()
                .queue_url(dlq)
                .receipt_handle(&receipt)
                .send()
                .await?;
            if let Some(seg) = task["current_segment"]
                .as_u64()
                .and_then(|s| u32::try_from(s).ok())
            {
                moved.push(seg);
            }
        }
        if let Some(stop) = redrive_stop(messages.len(), new, received, at_start) {
            break stop;
        }
    };
    for receipt in others.values() {
        let _ = client
            .change_message_visibility()
            .queue_url(dlq)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await;
    }
    moved.sort_unstable();
    moved.dedup();
    Ok(Redriven {
        segments: moved,
        others_left: others.len(),
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconcile_report_names_every_segment_left_alone() {
        let r = Reconciled {
            redriven: vec![],
            reenqueued: vec![(1, 0)],
            left_alone: vec![
                (0, LeftAlone::Done),
                (2, LeftAlone::Running { seconds_ago: 12 }),
                (3, LeftAlone::NotStarted),
            ],
            redrive: None,
        };
        assert_eq!(
            r.render(),
            "segment 1: re-enqueued at chunk 0\n\
             segment 0: left alone, done\n\
             segment 2: left alone, running, last sign of life 12 s ago\n\
             segment 3: left alone, not started, the control queue not yet confirmed empty\n"
        );
        // Nothing put back while segments may be in flight: never "every segment is done".
        let waiting = Reconciled {
            left_alone: vec![(0, LeftAlone::Done), (1, LeftAlone::NotStarted)],
            ..Reconciled::default()
        };
        let text = waiting.render();
        assert!(!text.contains("every segment is done"), "{text}");
        assert!(
            text.ends_with("nothing re-enqueued: 0 segments running, 1 not started while the control queue holds tasks, 0 at the chunk limit\n"),
            "{text}"
        );
        // Many done segments are a count; the others are still named.
        let many = Reconciled {
            left_alone: (0..20)
                .map(|s| (s, LeftAlone::Done))
                .chain([(20, LeftAlone::Running { seconds_ago: 1 })])
                .collect(),
            ..Reconciled::default()
        };
        let text = many.render();
        assert!(text.starts_with("20 segments left alone: done\n"), "{text}");
        assert!(!text.contains("segment 3:"), "{text}");
        assert!(text.contains("segment 20: left alone, running"), "{text}");
        let all_done = Reconciled {
            redriven: vec![],
            reenqueued: vec![],
            left_alone: (0..3).map(|s| (s, LeftAlone::Done)).collect(),
            redrive: None,
        };
        assert!(
            all_done
                .render()
                .ends_with("nothing to reconcile: every segment is done\n")
        );
    }

    #[test]
    fn the_redrive_loop_stops_when_empty_when_round_or_at_its_bound() {
        assert_eq!(redrive_stop(0, 0, 50, 50), Some(RedriveStop::Empty));
        // Only messages looked at before: other jobs' tasks came back into view.
        assert_eq!(redrive_stop(10, 0, 60, 50), Some(RedriveStop::CameRound));
        // Something new, under the bound: go on.
        assert_eq!(redrive_stop(10, 1, 60, 50), None);
        assert_eq!(redrive_stop(10, 10, REDRIVE_SLACK + 49, 50), None);
        // A DLQ that fills as fast as it is read: stop at the start count plus the slack.
        assert_eq!(
            redrive_stop(10, 10, REDRIVE_SLACK + 50, 50),
            Some(RedriveStop::Bound {
                received: REDRIVE_SLACK + 50,
                at_start: 50
            })
        );
        assert!(redrive_stop(10, 10, u64::MAX, u64::MAX).is_some());
        let r = Reconciled {
            redriven: vec![4],
            redrive: Some(Redriven {
                segments: vec![4],
                others_left: 7,
                stop: RedriveStop::Bound {
                    received: 1050,
                    at_start: 50,
                },
            }),
            ..Reconciled::default()
        };
        let text = r.render();
        assert!(
            text.contains("dead-letter queue: 7 tasks of other jobs left there"),
            "{text}"
        );
        assert!(
            text.contains("stopped after receiving 1050 messages"),
            "{text}"
        );
    }
}
