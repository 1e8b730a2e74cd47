//! DynamoDB, as the worker uses it: one `Scan` page through either client (`scan`). Knows
//! nothing of tasks, jobs or the ledger; the pipeline above drives it.

pub mod scan;
