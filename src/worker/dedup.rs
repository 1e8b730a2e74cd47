//! Which chunk a task may run, decided from its segment's ledger record: the rule that keeps
//! copies of one task from repeating more than one chunk, and lets a new run of a job run
//! again. Pure logic, no I/O; the worker reads and writes the record.
//!
//! A task is known by two names (see [`crate::task::Task::instance`] and
//! [`crate::task::Task::run`]):
//! - its *run*: every task `enqueue` sends for one run of a job carries the same `run_id`, and
//!   continuations carry it on. A record of another run means the job was sent again (a nightly
//!   producer with a fixed job id): the segment starts over as the new run, never dropped.
//! - its *instance*: the message id, or for a message scanfleet sent again in its place (handed
//!   back on its last receive, redriven from the dead-letter queue) the id of the one it stands
//!   in for. The record keeps the instance that counted the last chunk (`counted_by`): this
//!   instance, delivered again, goes on from the ledger's key; another instance of the same
//!   chunk (a continuation sent twice) is a copy and is dropped.

use crate::codec::Item;
use crate::ledger::{SegmentRecord, Status};

use crate::BoxError;

/// The task asking: which chunk, of which run, as which instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub chunk: u32,
    pub run: Option<&'a str>,
    pub instance: &'a str,
}

/// What a task does about its chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The ledger has not counted this chunk (or is behind, or its record predates
    /// `counted_by`): run it. After the chunk ran: go on from this run's own position, uncounted.
    Run,
    /// The record belongs to another run of the job: start the segment's record over for this
    /// run and run the chunk. After the chunk ran (another run took the segment over meanwhile):
    /// go on from this run's own position, uncounted.
    NewRun,
    /// Another instance counted this chunk, or the ledger is past the next one too: delete the
    /// task without scanning. Whoever counted it goes on.
    Drop,
    /// This very instance counted the chunk before and was delivered again (its worker died
    /// before deleting it, perhaps before sending the continuation): go on from the ledger's
    /// position without scanning the chunk again. `resume_key: None`: the segment is done.
    Resume { resume_key: Option<Item> },
}

/// The decision for `claim` given its segment's `record` (see [`Decision`]). Used both before a
/// chunk runs and after its count was refused, so the two moments always agree.
pub fn decide(record: &SegmentRecord, claim: Claim<'_>) -> Result<Decision, BoxError> {
    if record.run_id.as_deref() != claim.run {
        return Ok(Decision::NewRun);
    }
    if record.chunks <= claim.chunk {
        return Ok(Decision::Run);
    }
    // Counted (record.chunks > chunk, so chunk + 1 cannot wrap).
    if record.chunks - 1 > claim.chunk {
        return Ok(Decision::Drop);
    }
    Ok(match record.counted_by.as_deref() {
        None => Decision::Run,
        Some(by) if by != claim.instance => Decision::Drop,
        Some(_) if record.status == Status::Done => Decision::Resume { resume_key: None },
        Some(_) => match record.resume_item()? {
            Some(key) => Decision::Resume {
                resume_key: Some(key),
            },
            // Counted, not done, yet no key to go on from: let the chunk run again.
            None => Decision::Run,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(
        chunks: u32,
        status: Status,
        run: Option<&str>,
        by: Option<&str>,
        key: Option<&str>,
    ) -> SegmentRecord {
        SegmentRecord {
            chunks,
            status,
            run_id: run.map(str::to_owned),
            counted_by: by.map(str::to_owned),
            resume_key: key.map(str::to_owned),
            ..SegmentRecord::default()
        }
    }

    const KEY: &str = r#"{"PK":{"S":"k"}}"#;

    fn claim(chunk: u32) -> Claim<'static> {
        Claim {
            chunk,
            run: Some("r1"),
            instance: "m1",
        }
    }

    #[test]
    fn a_task_starts_from_what_the_ledger_holds() {
        let r1 = Some("r1");
        let decide = |r: &SegmentRecord, chunk| decide(r, claim(chunk)).unwrap();
        // Not counted yet, or the ledger is behind: run.
        assert_eq!(
            decide(&record(3, Status::Running, r1, Some("m0"), Some(KEY)), 3),
            Decision::Run
        );
        assert_eq!(
            decide(&record(1, Status::Running, r1, Some("m0"), Some(KEY)), 3),
            Decision::Run
        );
        // Past the next chunk too: drop.
        assert_eq!(
            decide(&record(5, Status::Running, r1, Some("m1"), Some(KEY)), 3),
            Decision::Drop
        );
        // Counted by another instance: drop; by a record from before counted_by: run.
        assert_eq!(
            decide(&record(4, Status::Running, r1, Some("m0"), Some(KEY)), 3),
            Decision::Drop
        );
        assert_eq!(
            decide(&record(4, Status::Done, r1, Some("m0"), None), 3),
            Decision::Drop
        );
        assert_eq!(
            decide(&record(4, Status::Running, r1, None, Some(KEY)), 3),
            Decision::Run
        );
        // Counted by this very instance: go on from the ledger's key, or end.
        let resumed = decide(&record(4, Status::Running, r1, Some("m1"), Some(KEY)), 3);
        let Decision::Resume {
            resume_key: Some(k),
        } = resumed
        else {
            panic!("{resumed:?}")
        };
        assert_eq!(crate::codec::key_to_json(&k).to_string(), KEY);
        assert_eq!(
            decide(&record(4, Status::Done, r1, Some("m1"), None), 3),
            Decision::Resume { resume_key: None }
        );
        assert_eq!(
            decide(&record(4, Status::Running, r1, Some("m1"), None), 3),
            Decision::Run
        );
    }

    #[test]
    fn a_finished_job_sent_again_runs_as_a_new_run() {
        // Done by run r0; the same job's first chunk sent again as run r1 (or, hand-written
        // without a run id, as a run of its own): the segment starts over.
        let done = record(7, Status::Done, Some("r0"), Some("m6"), None);
        assert_eq!(decide(&done, claim(0)).unwrap(), Decision::NewRun);
        let legacy = record(7, Status::Done, None, Some("m6"), None);
        assert_eq!(decide(&legacy, claim(0)).unwrap(), Decision::NewRun);
        // A continuation written before run ids existed, on a record of the same age: as before.
        let old = Claim {
            chunk: 3,
            run: None,
            instance: "m1",
        };
        let running = record(3, Status::Running, None, Some("m0"), Some(KEY));
        assert_eq!(decide(&running, old).unwrap(), Decision::Run);
    }

    fn any_record() -> impl Strategy<Value = SegmentRecord> {
        (
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(2),
                Just(3),
                Just(u32::MAX),
                any::<u32>()
            ],
            prop_oneof![
                Just(Status::Running),
                Just(Status::Done),
                Just(Status::Failed)
            ],
            prop_oneof![Just(None), Just(Some("r1")), Just(Some("r0"))],
            prop_oneof![Just(None), Just(Some("m1")), Just(Some("m0"))],
            prop_oneof![Just(None), Just(Some(KEY))],
        )
            .prop_map(|(chunks, st, run, by, key)| record(chunks, st, run, by, key))
    }

    fn any_chunk() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(2),
            Just(u32::MAX - 1),
            Just(u32::MAX),
            any::<u32>()
        ]
    }

    proptest! {
        /// Any record gives an answer, never a panic (the worker asks the same rule before a
        /// chunk runs and after its count was refused), and a segment ends only when the
        /// ledger says it is done.
        #[test]
        fn start_and_end_of_a_chunk_agree(r in any_record(), chunk in any_chunk()) {
            let c = claim(chunk);
            let at_start = decide(&r, c).unwrap();
            if at_start == (Decision::Resume { resume_key: None }) {
                prop_assert_eq!(r.status, Status::Done);
            }
            if at_start == Decision::Drop {
                // Only a chunk this run counted is dropped.
                prop_assert!(r.chunks > chunk && r.run_id.as_deref() == c.run);
            }
        }
    }
}
