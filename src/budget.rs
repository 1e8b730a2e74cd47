//! Read budgets: pacing scans to a number of read capacity units per second.
//!
//! The cost of a Scan page is known only after it was read (`ConsumedCapacity`), so the bucket
//! runs on debt: a page may start whenever the bucket is not in debt, and its consumed units
//! are charged afterwards, which may put the bucket into debt that the next page waits out.
//! Over a run the rate converges to the budget, overshooting by at most one page.
//!
//! How a job's budget is split: a task carries the *job's* budget R and its `total_segments`
//! S, and paces itself to R / S ([`per_task_rate`]). No task can know how many others run at
//! the same moment, so this is the split that can never let a job exceed R, however many
//! workers there are; the job reaches R when all of its segments run at once (S ≤ the fleet's
//! task slots, workers × `worker.concurrency`), and reads more slowly than R otherwise.
//! `scan.read_units_per_second` is a separate cap per worker process, shared by its tasks; a
//! page waits for both.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The largest budget accepted (far above any table's real capacity).
pub const MAX_READ_UNITS_PER_SECOND: f64 = 1e9;

/// The pace of one task of a job with budget `job_rate` split over `total_segments`.
pub fn per_task_rate(job_rate: f64, total_segments: i32) -> f64 {
    job_rate / f64::from(total_segments.max(1))
}

/// A token bucket refilled at `rate` units per second, holding at most one second's worth.
#[derive(Debug)]
pub struct ReadBudget {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

impl ReadBudget {
    /// A bucket that starts empty (the first page goes at once, as a bucket not in debt).
    pub fn new(rate: f64) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "a budget is positive");
        Self {
            rate,
            burst: rate.max(1.0),
            state: Mutex::new(State {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&self, state: &mut State) {
        let now = Instant::now();
        let earned = now.duration_since(state.last).as_secs_f64() * self.rate;
        state.tokens = (state.tokens + earned).min(self.burst);
        state.last = now;
    }

    /// How long until the bucket is out of debt (zero if it is not in debt).
    pub fn wait_time(&self) -> Duration {
        let mut state = self.state.lock().expect("not poisoned");
        self.refill(&mut state);
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }

    /// Waits until the bucket is out of debt.
    pub async fn ready(&self) {
        loop {
            let wait = self.wait_time();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Charges what a page consumed.
    pub fn charge(&self, units: f64) {
        let mut state = self.state.lock().expect("not poisoned");
        self.refill(&mut state);
        state.tokens -= units.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_budget_is_split_evenly_over_its_segments() {
        assert_eq!(per_task_rate(100.0, 4), 25.0);
        assert_eq!(per_task_rate(100.0, 1), 100.0);
        assert_eq!(per_task_rate(1.0, 1000), 0.001);
        // Never a division by zero, whatever a task says.
        assert_eq!(per_task_rate(10.0, 0), 10.0);
        // The split never lets the job exceed its budget: S tasks at R/S each.
        let s = 7;
        assert!((per_task_rate(10.0, s) * f64::from(s) - 10.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_paced_to_the_rate() {
        let budget = ReadBudget::new(10.0);
        let start = Instant::now();
        // 50 pages of 2 units each = 100 units at 10 units/s: ~10 s, the first page free.
        for _ in 0..50 {
            budget.ready().await;
            budget.charge(2.0);
        }
        let took = start.elapsed().as_secs_f64();
        assert!((9.7..=10.1).contains(&took), "took {took} s");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_earns_at_most_one_second_of_burst() {
        let budget = ReadBudget::new(5.0);
        tokio::time::sleep(Duration::from_secs(60)).await;
        budget.charge(5.0);
        assert_eq!(budget.wait_time(), Duration::ZERO);
        budget.charge(5.0);
        let wait = budget.wait_time().as_secs_f64();
        assert!((0.99..=1.01).contains(&wait), "{wait}");
    }
}
