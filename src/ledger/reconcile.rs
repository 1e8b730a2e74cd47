//! Which segments `reconcile` puts back on the control queue, and the task that resumes
//! each. Pure: the reads and the sends are in `crate::cli::reconcile`.

use std::collections::{BTreeMap, HashSet};

use super::{BoxError, JobRecord, SegmentRecord, Status};
use crate::task::TaskMessage;

/// A segment `reconcile` puts back on the control queue: where it resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub segment: u32,
    pub chunk: u32,
    /// DynamoDB JSON of the start key; `None` from the segment's beginning.
    pub start_key: Option<String>,
    /// The run the segment's record counts, which the resumed task goes on (`None`: the
    /// template's).
    pub run_id: Option<String>,
}

/// Why `reconcile` leaves a segment alone.
#[derive(Debug, Clone, PartialEq)]
pub enum LeftAlone {
    /// Done: nothing to do.
    Done,
    /// Running, with a sign of life `seconds_ago` seconds ago (less than `--stale-seconds`).
    Running { seconds_ago: u64 },
    /// No worker ever reported on it, the job is younger than `--stale-seconds`, and the
    /// control queue was not confirmed empty: its first task may still be waiting there.
    NotStarted,
    /// Its task was just moved back from the dead-letter queue.
    Redriven,
    /// Continued [`crate::task::MAX_CHUNK`] times: a task resuming it would be rejected. The
    /// job must run again with a larger `worker.checkpoint_rows`.
    AtChunkLimit,
}

/// What `reconcile` does with each segment of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcilePlan {
    /// The segments to put back on the control queue, in segment order.
    pub resumes: Vec<Resume>,
    /// Every other segment, in segment order, with why it is left alone.
    pub left_alone: Vec<(u32, LeftAlone)>,
}

/// Decides, for every segment of the job, whether `reconcile` re-enqueues it. A segment is
/// re-enqueued unless it is done, in `skip` (e.g. just redriven from the DLQ), or may still be
/// in flight:
///
/// - running with a sign of life less than `stale` seconds ago;
/// - never reported on by any worker, while its first task may still be queued: the job is
///   younger than `stale` and `queue_empty` is false. `queue_empty` means the control queue
///   was read (twice, apart) with no visible, in-flight or delayed message: then no task of
///   a never-started segment exists anywhere, and it is re-enqueued at once.
pub fn to_reconcile(
    job: &JobRecord,
    segments: &[SegmentRecord],
    now: u64,
    stale: u64,
    queue_empty: bool,
    skip: &HashSet<u32>,
) -> ReconcilePlan {
    let known: BTreeMap<u32, &SegmentRecord> = segments.iter().map(|s| (s.segment, s)).collect();
    let mut plan = ReconcilePlan::default();
    for seg in 0..job.segments_total {
        let record = known.get(&seg);
        let left = match record {
            _ if skip.contains(&seg) => Some(LeftAlone::Redriven),
            None if !queue_empty && now.saturating_sub(job.created_at) < stale => {
                Some(LeftAlone::NotStarted)
            }
            None => None,
            Some(r) if r.status == Status::Done => Some(LeftAlone::Done),
            Some(r) if r.chunks > crate::task::MAX_CHUNK => Some(LeftAlone::AtChunkLimit),
            Some(r)
                if r.status == Status::Running && now.saturating_sub(r.heartbeat_at) < stale =>
            {
                Some(LeftAlone::Running {
                    seconds_ago: now.saturating_sub(r.heartbeat_at),
                })
            }
            Some(_) => None,
        };
        match (left, record) {
            (Some(why), _) => plan.left_alone.push((seg, why)),
            (None, Some(r)) => plan.resumes.push(Resume {
                segment: seg,
                chunk: r.chunks,
                start_key: r.resume_key.clone(),
                run_id: r.run_id.clone(),
            }),
            (None, None) => plan.resumes.push(Resume {
                segment: seg,
                chunk: 0,
                start_key: None,
                run_id: None,
            }),
        }
    }
    plan
}

/// The task message that resumes a segment, built from the job's template (a task of the job
/// as `enqueue` wrote it; [`TaskMessage::resume`] makes the resuming task of it).
pub fn resume_task(template: &str, resume: &Resume) -> Result<String, BoxError> {
    let template: TaskMessage = serde_json::from_str(template)?;
    let start_key = resume
        .start_key
        .as_deref()
        .map(serde_json::from_str)
        .transpose()?;
    let task = template.resume(
        resume.segment,
        resume.chunk,
        start_key,
        resume.run_id.clone(),
    );
    Ok(crate::json::to_sqs_text(&task)?)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{job, seg};
    use super::*;

    #[test]
    fn reconcile_takes_segments_neither_done_nor_in_flight() {
        let mut stale = seg(1, Status::Running, 10, 10);
        stale.resume_key = Some(r#"{"PK":{"S":"k"}}"#.into());
        let mut fresh = seg(2, Status::Running, 10, 10);
        fresh.heartbeat_at = 1950;
        let mut dead = seg(3, Status::Failed, 10, 10);
        dead.heartbeat_at = 1990;
        let segments = vec![seg(0, Status::Done, 1, 1), stale, fresh, dead];
        let plan = to_reconcile(&job(5), &segments, 2000, 300, false, &HashSet::new());
        let r = &plan.resumes;
        let picked: Vec<u32> = r.iter().map(|r| r.segment).collect();
        // 0 done, 2 alive; 1 stale, 3 dead-lettered, 4 never started long ago.
        assert_eq!(picked, vec![1, 3, 4]);
        assert_eq!(
            plan.left_alone,
            vec![
                (0, LeftAlone::Done),
                (2, LeftAlone::Running { seconds_ago: 50 })
            ]
        );
        assert_eq!(r[0].chunk, 2);
        assert_eq!(
            r[2],
            Resume {
                segment: 4,
                chunk: 0,
                start_key: None,
                run_id: None,
            }
        );
        // A segment continued as often as a task can carry is not re-enqueued: it would be
        // rejected.
        let mut limit = seg(1, Status::Failed, 10, 10);
        limit.chunks = crate::task::MAX_CHUNK + 1;
        let plan = to_reconcile(
            &job(2),
            &[seg(0, Status::Done, 1, 1), limit],
            2000,
            300,
            false,
            &HashSet::new(),
        );
        assert!(plan.resumes.is_empty(), "{plan:?}");
        assert_eq!(plan.left_alone[1], (1, LeftAlone::AtChunkLimit));
        // Not yet stale: a never-started segment of a young job may still be queued.
        let young = JobRecord {
            created_at: 1090,
            ..job(5)
        };
        let plan = to_reconcile(&young, &segments, 1100, 60, false, &HashSet::from([3]));
        let r = &plan.resumes;
        assert_eq!(r.iter().map(|r| r.segment).collect::<Vec<_>>(), vec![1]);
        // Every segment not re-enqueued is named, with why: none is left out in silence.
        assert_eq!(
            plan.left_alone,
            vec![
                (0, LeftAlone::Done),
                (2, LeftAlone::Running { seconds_ago: 0 }),
                (3, LeftAlone::Redriven),
                (4, LeftAlone::NotStarted)
            ]
        );
        // Once the control queue is confirmed empty, a never-started segment has no task
        // anywhere: it is re-enqueued at once, however young the job.
        let confirmed = to_reconcile(&young, &segments, 1100, 60, true, &HashSet::from([3]));
        assert_eq!(
            confirmed
                .resumes
                .iter()
                .map(|r| r.segment)
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(
            confirmed.resumes[1],
            Resume {
                segment: 4,
                chunk: 0,
                start_key: None,
                run_id: None,
            }
        );
        // A running segment keeps the --stale-seconds rule even then: a recent sign of life
        // says a worker holds its task.
        assert!(
            confirmed
                .left_alone
                .contains(&(2, LeftAlone::Running { seconds_ago: 0 }))
        );

        let body = resume_task(&job(5).task_template, &r[0]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["current_segment"], 1);
        assert_eq!(v["chunk"], 2);
        assert_eq!(v["exclusive_start_key"]["PK"]["S"], "k");
        assert_eq!(v["job_id"], "j");
        // A segment whose record counts another run than the template's goes on as that run.
        let r = Resume {
            run_id: Some("r2".into()),
            ..r[0].clone()
        };
        let v: serde_json::Value =
            serde_json::from_str(&resume_task(&job(5).task_template, &r).unwrap()).unwrap();
        assert_eq!(v["run_id"], "r2");
    }
}
