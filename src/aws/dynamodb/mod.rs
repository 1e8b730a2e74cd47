//! DynamoDB, as the worker uses it: one `Scan` page through either client (`scan`), and a
//! table's key schema (`key_schema`). Knows nothing of tasks, jobs or the ledger; the pipeline
//! above drives it.

pub mod key_schema;
pub mod scan;
