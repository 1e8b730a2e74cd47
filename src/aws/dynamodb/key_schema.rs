//! A table's primary key, read once per table with `DescribeTable` and checked: the key
//! attributes every row's `row_id` (and FIFO group) is made of. Knows nothing of tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_smithy_runtime_api::http::Response as HttpResponse;

/// Why a table's key schema could not be had.
// Made once per table and passed straight up into `SegmentError` (as large): boxing the SDK's
// error would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, thiserror::Error)]
pub enum KeySchemaError {
    #[error("reading the table's key schema failed: {0}")]
    Describe(#[from] SdkError<DescribeTableError, HttpResponse>),
    #[error(transparent)]
    Bad(#[from] BadKeySchema),
}

/// A table's primary key, read once with DescribeTable.
#[derive(Debug, Clone)]
pub struct TableKey {
    /// Key attribute names, sorted (the order `row_id` hashes them in).
    pub names: Vec<String>,
    /// The partition (hash) key attribute: FIFO output groups rows by its value.
    pub partition: String,
}

impl TableKey {
    /// The key a `DescribeTable` answer gives, checked: without one partition (HASH) key
    /// attribute every row would have the same `row_id` (and FIFO group), so such an answer is
    /// refused, naming the table, and not cached (the next task asks again).
    pub fn from_schema(
        table: &str,
        schema: Vec<aws_sdk_dynamodb::types::KeySchemaElement>,
    ) -> Result<Self, BadKeySchema> {
        use aws_sdk_dynamodb::types::KeyType;
        let refuse = |problem: String| BadKeySchema {
            table: table.to_owned(),
            problem,
        };
        if schema.is_empty() {
            return Err(refuse("an empty key schema".into()));
        }
        if schema.iter().any(|k| k.attribute_name.is_empty()) {
            return Err(refuse("a key attribute without a name".into()));
        }
        let hash: Vec<&str> = schema
            .iter()
            .filter(|k| k.key_type == KeyType::Hash)
            .map(|k| k.attribute_name.as_str())
            .collect();
        let [partition] = hash[..] else {
            return Err(refuse(format!(
                "{} partition (HASH) key attributes, not one",
                hash.len()
            )));
        };
        let partition = partition.to_owned();
        let mut names: Vec<String> = schema.into_iter().map(|k| k.attribute_name).collect();
        names.sort();
        names.dedup();
        Ok(Self { names, partition })
    }
}

/// A `DescribeTable` answer whose key schema cannot identify rows.
#[derive(Debug, thiserror::Error)]
#[error(
    "table {table:?}: DescribeTable answered {problem}; refusing to scan it, as every row would get the same row_id"
)]
pub struct BadKeySchema {
    pub table: String,
    pub problem: String,
}

/// Primary keys per table, read once with DescribeTable.
#[derive(Default)]
pub struct KeySchemas(Mutex<HashMap<String, Arc<TableKey>>>);

impl KeySchemas {
    pub async fn get(
        &self,
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<Arc<TableKey>, KeySchemaError> {
        if let Some(k) = self.0.lock().expect("not poisoned").get(table) {
            return Ok(k.clone());
        }
        let out = client.describe_table().table_name(table).send().await?;
        let schema = out.table.and_then(|t| t.key_schema).unwrap_or_default();
        let key = Arc::new(TableKey::from_schema(table, schema)?);
        self.0
            .lock()
            .expect("not poisoned")
            .insert(table.to_owned(), key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_schema_without_one_partition_key_is_refused_naming_the_table() {
        use aws_sdk_dynamodb::types::{KeySchemaElement, KeyType};
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .unwrap()
        };
        let k = TableKey::from_schema(
            "items",
            vec![key("SK", KeyType::Range), key("PK", KeyType::Hash)],
        )
        .unwrap();
        assert_eq!(
            (k.names, k.partition.as_str()),
            (vec!["PK".into(), "SK".into()], "PK")
        );
        for (schema, problem) in [
            (vec![], "an empty key schema"),
            (vec![key("SK", KeyType::Range)], "0 partition (HASH) key"),
            (
                vec![key("A", KeyType::Hash), key("B", KeyType::Hash)],
                "2 partition (HASH) key",
            ),
            (vec![key("", KeyType::Hash)], "without a name"),
        ] {
            let e = TableKey::from_schema("items", schema)
                .unwrap_err()
                .to_string();
            assert!(e.contains(r#"table "items""#) && e.contains(problem), "{e}");
            assert!(e.contains("same row_id"), "{e}");
        }
    }
}
