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

/// The smallest budget accepted, other than 0 (unlimited): one unit every 1,000 s. Below this a
/// budget is a typo rather than a pace, and the wait for one page would outlast any job.
pub const MIN_READ_UNITS_PER_SECOND: f64 = 0.001;
/// The largest budget accepted (far above any table's real capacity).
pub const MAX_READ_UNITS_PER_SECOND: f64 = 1e9;
/// The most one page is charged: a `Scan` page reads at most 1 MB, 256 units even strongly
/// consistent. A larger, infinite or NaN `ConsumedCapacity` in an answer is clamped, so one
/// odd answer cannot put the bucket into a debt it never leaves.
pub const MAX_PAGE_UNITS: f64 = 1024.0;
/// The longest single sleep of [`ReadBudget::ready`]; it then looks again. Keeps every wait a
/// valid `Duration` whatever the debt and the rate.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The units a page is taken to have consumed, from its answer's `ConsumedCapacity`:
/// `0..=`[`MAX_PAGE_UNITS`], 0 when absent or NaN. A negative or absurd figure from an answer
/// would otherwise run the budget, the read-capacity gauge and the ledger's sums backwards or
/// to infinity.
pub fn page_units(reported: Option<f64>) -> f64 {
    match reported {
        Some(u) if !u.is_nan() => u.clamp(0.0, MAX_PAGE_UNITS),
        _ => 0.0,
    }
}

/// Checks a budget given from outside (a task, `enqueue --read-units-per-second`,
/// `scan.read_units_per_second`): `None` for 0 (unlimited), the rate if it is
/// [`MIN_READ_UNITS_PER_SECOND`]`..=`[`MAX_READ_UNITS_PER_SECOND`]; otherwise (negative,
/// too small, too large, NaN, infinite) an error saying what is allowed.
pub fn check_rate(rate: f64) -> Result<Option<f64>, String> {
    if rate == 0.0 {
        Ok(None)
    } else if (MIN_READ_UNITS_PER_SECOND..=MAX_READ_UNITS_PER_SECOND).contains(&rate) {
        Ok(Some(rate))
    } else {
        Err(format!(
            "must be 0 (unlimited) or {MIN_READ_UNITS_PER_SECOND}..={MAX_READ_UNITS_PER_SECOND:e} read units per second, got {rate}"
        ))
    }
}

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
    /// `rate` comes from [`check_rate`] (a task's share of it may be smaller, never 0); a
    /// rate that is not a positive number is raised to the smallest positive one rather than
    /// divided by.
    pub fn new(rate: f64) -> Self {
        let rate = if rate > 0.0 {
            rate.min(MAX_READ_UNITS_PER_SECOND)
        } else {
            f64::MIN_POSITIVE
        };
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
            wait_for(-state.tokens, self.rate)
        }
    }

    /// Waits until the bucket is out of debt. It may wait long (a small budget after a large
    /// page): callers race it against whatever ends a chunk, and dropping it is clean.
    pub async fn ready(&self) {
        loop {
            let wait = self.wait_time();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Charges what a page consumed (clamped to `0..=`[`MAX_PAGE_UNITS`]; NaN is 0).
    pub fn charge(&self, units: f64) {
        let mut state = self.state.lock().expect("not poisoned");
        self.refill(&mut state);
        state.tokens -= page_units(Some(units));
    }
}

/// How long `debt` units take to earn at `rate`, at most [`MAX_WAIT`]; never a panic (a
/// quotient too large or not finite for a `Duration` is the longest wait).
fn wait_for(debt: f64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(debt / rate).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
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

    #[test]
    fn a_budget_is_zero_or_within_its_bounds() {
        assert_eq!(check_rate(0.0), Ok(None));
        assert_eq!(check_rate(-0.0), Ok(None));
        assert_eq!(check_rate(0.001), Ok(Some(0.001)));
        assert_eq!(check_rate(2.5), Ok(Some(2.5)));
        assert_eq!(check_rate(1e9), Ok(Some(1e9)));
        for bad in [
            1e-20,
            0.000_999,
            -1.0,
            1.000_001e9,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let e = check_rate(bad).unwrap_err();
            assert!(
                e.contains("0.001..=1e9") && e.contains("unlimited"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_pages_units_are_bounded() {
        assert_eq!(page_units(Some(2.5)), 2.5);
        assert_eq!(page_units(None), 0.0);
        assert_eq!(page_units(Some(-5.0)), 0.0);
        assert_eq!(page_units(Some(f64::NAN)), 0.0);
        assert_eq!(page_units(Some(1e308)), MAX_PAGE_UNITS);
        assert_eq!(page_units(Some(f64::INFINITY)), MAX_PAGE_UNITS);
    }

    #[test]
    fn waits_are_valid_durations_whatever_the_numbers() {
        assert_eq!(wait_for(1.0, 2.0), Duration::from_millis(500));
        // What `1e-20` did on its second page: 1e20 s is no Duration (it panicked).
        assert_eq!(wait_for(1.0, 1e-20), MAX_WAIT);
        assert_eq!(wait_for(f64::INFINITY, 1.0), MAX_WAIT);
        assert_eq!(wait_for(1.0, 0.0), MAX_WAIT);
        assert_eq!(wait_for(f64::NAN, 1.0), MAX_WAIT);
        // The smallest share of the smallest budget: 0.001 over a million segments.
        let share = per_task_rate(MIN_READ_UNITS_PER_SECOND, 1_000_000);
        assert_eq!(wait_for(MAX_PAGE_UNITS, share), MAX_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn odd_rates_and_charges_never_panic_and_stay_bounded() {
        for rate in [1e-20, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            let budget = ReadBudget::new(rate);
            assert!(budget.rate() > 0.0 && budget.rate().is_finite(), "{rate}");
            budget.charge(1.0);
            assert!(budget.wait_time() <= MAX_WAIT, "{rate}");
        }
        let budget = ReadBudget::new(1.0);
        budget.charge(f64::NAN);
        assert_eq!(budget.wait_time(), Duration::ZERO, "NaN charges nothing");
        budget.charge(f64::INFINITY);
        // Clamped to one page's most: the debt is paid off, not infinite.
        let wait = budget.wait_time().as_secs_f64();
        assert!(
            (MAX_PAGE_UNITS - 1.0..=MAX_PAGE_UNITS).contains(&wait),
            "{wait}"
        );
        tokio::time::timeout(Duration::from_secs(1100), budget.ready())
            .await
            .expect("the debt is paid off");
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
