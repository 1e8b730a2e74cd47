//! A job's figures at one moment, from its records: what `status` prints and `--wait` shows.
//! Pure: no AWS here.

use std::time::Duration;

use serde::Serialize;

use super::{JobRecord, JobTotals, SegmentRecord, Status};

/// A job's figures at one moment: what `status` prints and `--wait` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub job_id: String,
    pub table: String,
    /// `running`, `done` or `failed` (some segment was dead-lettered and is not done).
    pub state: String,
    pub segments_total: u32,
    pub segments_done: u32,
    pub segments_running: u32,
    pub segments_failed: u32,
    /// Segments no worker has reported on yet.
    pub segments_pending: u32,
    pub chunks: u64,
    /// Counted: rows of the chunks the ledger counted (exact).
    pub rows_scanned: u64,
    pub rows_published: u64,
    /// Provisional: what the chunks under way have done so far, by their workers' last
    /// progress writes (every few seconds); counted when each chunk ends.
    pub rows_scanned_in_chunks: u64,
    pub rows_published_in_chunks: u64,
    pub read_units_consumed: f64,
    pub elapsed_seconds: u64,
    pub rows_per_second: f64,
    /// Seconds left, by [`eta_seconds`]; `None`: unknown.
    pub eta_seconds: Option<u64>,
    pub slowest_segments: Vec<SegmentBrief>,
    pub largest_segments: Vec<SegmentBrief>,
    pub failed_segments: Vec<SegmentBrief>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentBrief {
    pub segment: u32,
    pub status: Status,
    pub duration_seconds: f64,
    pub rows_scanned: u64,
    pub rows_published: u64,
    pub chunks: u32,
    pub worker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl From<&SegmentRecord> for SegmentBrief {
    fn from(r: &SegmentRecord) -> Self {
        Self {
            segment: r.segment,
            status: r.status,
            duration_seconds: r.duration_ms as f64 / 1000.0,
            rows_scanned: r.rows_scanned,
            rows_published: r.rows_published,
            chunks: r.chunks,
            worker: r.worker.clone(),
            last_error: r.last_error.clone(),
        }
    }
}

/// How many segments the skew report lists.
const SKEW_TOP: usize = 3;

/// The time left for a job of `total` segments: the segments not done, each taking as long as
/// the finished ones took on average (their `duration_ms`, the time they spent in chunks),
/// shared among the segments in flight now. Segments run side by side, one per task slot, so
/// the work left is divided by how many run at once, not done one after another. A running
/// segment counts as not yet begun (the ledger keeps no start time), so while every segment
/// left is in flight the estimate is at most one average segment too long. `None` (unknown)
/// before any segment has finished or while none is running.
pub fn eta_seconds(total: u32, segments: &[SegmentRecord]) -> Option<u64> {
    let (mut done, mut done_ms, mut running) = (0u32, 0u64, 0u32);
    for s in segments {
        match s.status {
            Status::Done => {
                done += 1;
                done_ms = done_ms.saturating_add(s.duration_ms);
            }
            Status::Running => running += 1,
            _ => {}
        }
    }
    if done == 0 || running == 0 || done >= total {
        return None;
    }
    let mean_seconds = done_ms as f64 / 1000.0 / f64::from(done);
    let eta = f64::from(total - done) * mean_seconds / f64::from(running);
    // A float cast to u64 saturates; a huge or NaN estimate is no estimate.
    (eta.is_finite() && eta < u64::MAX as f64).then(|| eta.round() as u64)
}

/// A figure added up over the running segments.
fn running_sum(segments: &[SegmentRecord], figure: fn(&SegmentRecord) -> u64) -> u64 {
    segments
        .iter()
        .filter(|s| s.status == Status::Running)
        .map(figure)
        .fold(0, u64::saturating_add)
}

pub fn summarize(job: &JobRecord, segments: &[SegmentRecord], now: u64) -> Summary {
    let count = |st: Status| segments.iter().filter(|s| s.status == st).count() as u32;
    let (done, running, failed) = (
        count(Status::Done),
        count(Status::Running),
        count(Status::Failed),
    );
    let rows_published: u64 = segments.iter().map(|s| s.rows_published).sum();
    let state = if done >= job.segments_total {
        "done"
    } else if failed > 0 {
        "failed"
    } else {
        "running"
    };
    // A done job's clock stopped when its last segment finished (the ledger keeps no start
    // time, so the interval begins at the job's creation); any other job's runs on.
    let end = match state {
        "done" => segments
            .iter()
            .filter(|s| s.status == Status::Done)
            .map(|s| s.finished_at.unwrap_or(s.heartbeat_at))
            .max()
            .unwrap_or(now),
        _ => now,
    };
    let elapsed = end.saturating_sub(job.created_at);
    let eta = if state == "running" {
        eta_seconds(job.segments_total, segments)
    } else {
        None
    };
    let top = |key: fn(&SegmentRecord) -> u64| {
        let mut v: Vec<&SegmentRecord> = segments.iter().collect();
        v.sort_by_key(|s| std::cmp::Reverse(key(s)));
        v.into_iter()
            .take(SKEW_TOP)
            .map(SegmentBrief::from)
            .collect()
    };
    Summary {
        job_id: job.job_id.clone(),
        table: job.table.clone(),
        state: state.into(),
        segments_total: job.segments_total,
        segments_done: done,
        segments_running: running,
        segments_failed: failed,
        segments_pending: job.segments_total.saturating_sub(segments.len() as u32),
        chunks: segments.iter().map(|s| u64::from(s.chunks)).sum(),
        rows_scanned: segments.iter().map(|s| s.rows_scanned).sum(),
        rows_published,
        rows_scanned_in_chunks: running_sum(segments, |s| s.chunk_rows_scanned),
        rows_published_in_chunks: running_sum(segments, |s| s.chunk_rows_published),
        // A fold from +0.0: an empty f64 sum is -0.0, which would print as "-0.0".
        read_units_consumed: segments.iter().fold(0.0, |a, s| a + s.read_units),
        elapsed_seconds: elapsed,
        rows_per_second: if elapsed > 0 {
            rows_published as f64 / elapsed as f64
        } else {
            0.0
        },
        eta_seconds: eta,
        slowest_segments: top(|s| s.duration_ms),
        largest_segments: top(|s| s.rows_scanned),
        failed_segments: segments
            .iter()
            .filter(|s| s.status == Status::Failed)
            .map(SegmentBrief::from)
            .collect(),
    }
}

impl Summary {
    /// These figures brought up to date with the job's running totals (a hint, see
    /// [`JobTotals`]), `since` after they were read in full: what `--wait` shows between its
    /// full reads. Segments in flight and failed stay as last read.
    pub fn with_totals(&self, totals: &JobTotals, since: Duration) -> Summary {
        let mut s = self.clone();
        let clamp = |v: u64| {
            u32::try_from(v)
                .unwrap_or(u32::MAX)
                .min(self.segments_total)
        };
        s.segments_done = clamp(totals.segments_done).max(self.segments_done);
        s.rows_published = totals.rows_published.max(self.rows_published);
        s.rows_scanned = totals.rows_scanned.max(self.rows_scanned);
        s.chunks = totals.chunks.max(self.chunks);
        s.rows_scanned_in_chunks = totals.rows_scanned_in_chunks;
        s.rows_published_in_chunks = totals.rows_published_in_chunks;
        s.elapsed_seconds = self.elapsed_seconds.saturating_add(since.as_secs());
        if s.elapsed_seconds > 0 {
            s.rows_per_second = s.rows_published as f64 / s.elapsed_seconds as f64;
        }
        s
    }

    /// The human-readable report of `status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "job {} on table {}: {}",
            self.job_id, self.table, self.state
        ));
        line(format!(
            "segments   {}/{} done, {} running, {} failed, {} not started",
            self.segments_done,
            self.segments_total,
            self.segments_running,
            self.segments_failed,
            self.segments_pending
        ));
        line(format!(
            "rows       {} published, {} scanned, in {} chunks (counted)",
            self.rows_published, self.rows_scanned, self.chunks
        ));
        if (self.rows_published_in_chunks, self.rows_scanned_in_chunks) != (0, 0) {
            line(format!(
                "           + {} published, {} scanned in chunks under way (provisional)",
                self.rows_published_in_chunks, self.rows_scanned_in_chunks
            ));
        }
        line(format!("read units {:.1}", self.read_units_consumed));
        let eta = self
            .eta_seconds
            .map(|s| format!(", about {s} s to go"))
            .unwrap_or_default();
        line(format!(
            "elapsed    {} s, {:.0} rows/s{eta}",
            self.elapsed_seconds, self.rows_per_second
        ));
        let brief = |b: &SegmentBrief| {
            format!(
                "  segment {:>7}  {:>8.1} s  {:>10} rows scanned  {:>4} chunks  {}  {}",
                b.segment, b.duration_seconds, b.rows_scanned, b.chunks, b.status, b.worker
            )
        };
        if !self.slowest_segments.is_empty() {
            line("slowest segments:".into());
            self.slowest_segments.iter().for_each(|b| line(brief(b)));
            line("largest segments:".into());
            self.largest_segments.iter().for_each(|b| line(brief(b)));
        }
        if !self.failed_segments.is_empty() {
            line("failed segments (dead-lettered):".into());
            for b in &self.failed_segments {
                line(brief(b));
                line(format!(
                    "    last error: {}",
                    b.last_error.as_deref().unwrap_or("?")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{job, seg};
    use super::*;

    #[test]
    fn chunks_under_way_show_as_provisional_beside_the_counted_figures() {
        // Two segments shorter than a chunk, running: nothing counted yet, but their workers
        // report what they did so far; a done segment's leftovers never count.
        let mut a = seg(0, Status::Running, 0, 0);
        (a.chunk_rows_scanned, a.chunk_rows_published) = (1200, 1100);
        let mut b = seg(1, Status::Running, 0, 0);
        (b.chunk_rows_scanned, b.chunk_rows_published) = (800, 800);
        let mut c = seg(2, Status::Done, 500, 10);
        (c.chunk_rows_scanned, c.chunk_rows_published) = (9, 9);
        let s = summarize(&job(4), &[a, b, c], 1100);
        assert_eq!(s.rows_published, 500, "counted figures stay exact");
        assert_eq!(
            (s.rows_published_in_chunks, s.rows_scanned_in_chunks),
            (1900, 2000)
        );
        let text = s.render();
        assert!(text.contains("500 published"), "{text}");
        assert!(text.contains("(counted)"), "{text}");
        assert!(
            text.contains("+ 1900 published, 2000 scanned in chunks under way (provisional)"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rows_published_in_chunks"], 1900);
    }

    #[test]
    fn the_running_totals_bring_a_summary_up_to_date_without_passing_the_job() {
        let segments = vec![seg(0, Status::Done, 100, 5000)];
        let s = summarize(&job(4), &segments, 1100);
        let totals = JobTotals {
            chunks: 5,
            segments_done: 9,
            segments_failed: 0,
            rows_published: 400,
            rows_scanned: 450,
            rows_scanned_in_chunks: 70,
            rows_published_in_chunks: 60,
        };
        let t = s.with_totals(&totals, Duration::from_secs(100));
        assert_eq!(
            (t.rows_published_in_chunks, t.rows_scanned_in_chunks),
            (60, 70)
        );
        // A rerun can run the totals past the job's segments: never more than the job has.
        assert_eq!(t.segments_done, 4);
        assert_eq!((t.rows_published, t.rows_scanned, t.chunks), (400, 450, 5));
        assert_eq!(t.elapsed_seconds, s.elapsed_seconds + 100);
        assert_eq!(t.rows_per_second, 400.0 / t.elapsed_seconds as f64);
        // Totals left short (a worker died between its writes) never move figures back.
        let short = s.with_totals(&JobTotals::default(), Duration::ZERO);
        assert_eq!((short.segments_done, short.rows_published), (1, 100));
        assert_eq!(short.state, s.state);
    }

    #[test]
    fn the_summary_adds_up_and_names_the_state() {
        let segments = vec![
            seg(0, Status::Done, 100, 5000),
            seg(1, Status::Done, 300, 1000),
            seg(2, Status::Running, 50, 9000),
        ];
        let s = summarize(&job(4), &segments, 1100);
        assert_eq!(s.state, "running");
        assert_eq!(
            (s.segments_done, s.segments_running, s.segments_pending),
            (2, 1, 1)
        );
        assert_eq!(s.rows_published, 450);
        assert_eq!(s.read_units_consumed, 4.5);
        assert_eq!(s.elapsed_seconds, 100);
        assert_eq!(s.rows_per_second, 4.5);
        assert_eq!(
            s.eta_seconds,
            Some(6),
            "2 left, 3 s each on average, 1 at a time"
        );
        assert_eq!(s.slowest_segments[0].segment, 2);
        assert_eq!(s.largest_segments[0].segment, 1);
        assert!(s.failed_segments.is_empty());

        let mut failed = seg(3, Status::Failed, 0, 0);
        failed.last_error = Some("row too large".into());
        let mut all = segments.clone();
        all.push(failed);
        let s = summarize(&job(4), &all, 1100);
        assert_eq!(s.state, "failed");
        assert_eq!(
            s.failed_segments[0].last_error.as_deref(),
            Some("row too large")
        );
        assert!(s.render().contains("last error: row too large"));

        let done: Vec<_> = (0..4).map(|i| seg(i, Status::Done, 10, 10)).collect();
        let s = summarize(&job(4), &done, 1100);
        assert_eq!((s.state.as_str(), s.eta_seconds), ("done", None));
        let empty = summarize(&job(4), &[], 1000);
        assert_eq!(empty.segments_pending, 4);
        assert!(empty.read_units_consumed.is_sign_positive());
        let json = serde_json::to_value(&s).unwrap();
        for k in [
            "job_id",
            "state",
            "segments_total",
            "segments_done",
            "rows_published",
            "read_units_consumed",
        ] {
            assert!(json.get(k).is_some(), "{k} missing from {json}");
        }
    }

    #[test]
    fn a_done_job_stops_the_clock_at_its_last_segment_s_finish() {
        // Created at 1000; the last segment finished at 1400; asked at 1500 and a day later.
        let done: Vec<_> = (0..4)
            .map(|i| SegmentRecord {
                finished_at: Some(1100 + 100 * u64::from(i)),
                heartbeat_at: 1100 + 100 * u64::from(i),
                ..seg(i, Status::Done, 1000, 10_000)
            })
            .collect();
        let soon = summarize(&job(4), &done, 1500);
        let later = summarize(&job(4), &done, 1500 + 86_400);
        assert_eq!(soon.state, "done");
        assert_eq!(soon.elapsed_seconds, 400, "creation to the last finish");
        assert_eq!(soon.rows_per_second, 10.0, "4000 rows in 400 s");
        assert_eq!(later, soon, "the figures of a done job do not change");
        let json = serde_json::to_value(&later).unwrap();
        assert_eq!(json["elapsed_seconds"], 400);
        assert_eq!(json["rows_per_second"], 10.0);
        assert!(later.render().contains("elapsed    400 s, 10 rows/s"));
        // A running job's clock runs on.
        let running = summarize(&job(5), &done, 1500);
        assert_eq!(running.elapsed_seconds, 500);
    }

    #[test]
    fn the_eta_counts_the_segments_that_run_at_once() {
        // The README's advice: segments = task slots. 64 segments on 64 slots, each about
        // 10 minutes; the first has just finished, 63 run: about 10 minutes to go, not 63 × 10.
        let ten_minutes = 600_000;
        let mut segments = vec![seg(0, Status::Done, 100, ten_minutes)];
        segments.extend((1..64).map(|i| seg(i, Status::Running, 0, 0)));
        let s = summarize(&job(64), &segments, 1000 + 600);
        assert_eq!(s.eta_seconds, Some(600));
        assert!(s.render().contains("about 600 s to go"), "{}", s.render());
        // Twice the segments on the same 64 slots: a second wave of 10 minutes follows.
        let mut twice = vec![seg(0, Status::Done, 100, ten_minutes)];
        twice.extend((1..65).map(|i| seg(i, Status::Running, 0, 0)));
        let s = summarize(&job(128), &twice, 1000 + 600);
        assert_eq!(
            s.eta_seconds,
            Some(1191),
            "127 segments × 600 s over 64 slots"
        );
        // Unknown before any segment has finished, while none runs, and once not running.
        let running: Vec<_> = (0..64).map(|i| seg(i, Status::Running, 0, 0)).collect();
        assert_eq!(summarize(&job(64), &running, 1600).eta_seconds, None);
        assert_eq!(summarize(&job(64), &segments[..1], 1600).eta_seconds, None);
        let mut failed = segments.clone();
        failed[1].status = Status::Failed;
        assert_eq!(summarize(&job(64), &failed, 1600).eta_seconds, None);
        let json = serde_json::to_value(summarize(&job(64), &running, 1600)).unwrap();
        assert!(json["eta_seconds"].is_null());
    }
}
