//! DynamoDB items to message bodies, and DynamoDB JSON keys to `AttributeValue`s.
//!
//! Pure logic, no I/O. A row becomes a message body in one of two ways: from the SDK's
//! `AttributeValue`s through `Serialize` wrappers ([`RowWriter::from_item`]), or straight from
//! the DynamoDB JSON of a Scan answer ([`RowWriter::seed`]), which copies the JSON text of
//! strings as it stands instead of unescaping and escaping it again. Neither builds an
//! intermediate `serde_json::Value`, and numbers are written with exactly the digits DynamoDB
//! returned (a 38-digit number never passes through `f64`).
//!
//! The room's parts: [`body`] (an SDK item to a message body, and the `Serialize` wrappers),
//! [`seed`] (a Scan answer's item JSON straight to a body), [`key`] (key JSON ↔
//! `AttributeValue`, DynamoDB's number rules) and [`row`] (a row's identity: `row_id` and the
//! FIFO ids). It must not touch I/O, settings or the task: it is below them.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;

mod body;
mod key;
mod row;
mod seed;
#[cfg(test)]
mod tests;

pub use body::{DynamoItem, Row, RowWriter, encode};
pub use key::{
    KeyError, dynamodb_number, item_to_json, key_from_json, key_to_json, value_from_json,
};
pub use row::ROW_ID_LEN;
pub use row::{fifo_dedup_id, fifo_group_id, is_fifo, row_hash, row_id};
pub use seed::RowSeed;

/// A DynamoDB item (or key) as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

/// The body format of the output messages (`output.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The item as ordinary JSON (`{"PK":"a","n":12}`).
    Plain,
    /// DynamoDB attribute-value JSON (`{"PK":{"S":"a"},"n":{"N":"12"}}`).
    Dynamodb,
}
