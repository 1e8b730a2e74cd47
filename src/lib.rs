//! scanfleet: DynamoDB parallel scans as a horizontally scaled, observable SQS job.
//!
//! A room per responsibility (README, *Development*, draws the tree). From the bottom up: the
//! pure rooms (`codec`, `json`, `batch`, `budget`, `expression`, `task`, `settings`) and the
//! low-level ones that know nothing of the domain (`telemetry`, `http`, `aws`); then the
//! ledger, the pipeline (one chunk end to end) and the worker (the receive loop); on top the
//! commands in `cli`. A room imports only rooms below it (`scripts/layout.py` checks).

pub mod aws;
pub mod batch;
pub mod budget;
pub mod cli;
pub mod codec;
#[cfg(feature = "devkit")]
pub mod devkit;
#[cfg(test)]
mod docs_check;
pub mod expression;
pub mod http;
pub mod json;
pub mod ledger;
pub mod pipeline;
pub mod settings;
pub mod task;
pub mod telemetry;
pub mod worker;

/// Any error, boxed: what crosses a boundary that has no error type of its own (the ledger,
/// the worker's task handling, the commands in `main`). Declared once.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and its sources on one line, as `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
