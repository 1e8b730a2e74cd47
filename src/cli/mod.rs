//! The commands, one room each: what a command takes on its command line and how it runs, on
//! top of the library's rooms (worker, ledger, task, aws). `main.rs` only parses and dispatches.
//! Nothing below `cli` imports it.

pub mod enqueue;
pub mod ledger;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod worker;
