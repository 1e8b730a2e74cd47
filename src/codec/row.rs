//! A row's identity: its `row_id` (what consumers deduplicate on) and, on a FIFO output queue,
//! its `MessageGroupId` and `MessageDeduplicationId`. Pure; the values are part of the public
//! contract (consumers store them), so each has a fixed-value test.

use aws_sdk_dynamodb::types::AttributeValue;

use super::Item;

/// `row_id` is 32 hex digits.
pub const ROW_ID_LEN: usize = 32;

/// A stable id for a row: a 128-bit XXH3 hash of the table name and the row's primary key,
/// so consumers can drop the duplicates that at-least-once delivery allows.
pub fn row_id(table: &str, key_names: &[String], key: &Item) -> String {
    // Big-endian hex of the 128 bits, as `{:032x}` writes it, without the formatter.
    hex::encode(row_hash(table, key_names, key))
}

/// The 128 bits of a row's `row_id`, big-endian (for writing its hex without a `String`).
pub fn row_hash(table: &str, key_names: &[String], key: &Item) -> [u8; 16] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Length prefixes keep ("ab","c") and ("a","bc") apart.
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(table.as_bytes());
    for name in key_names {
        part(name.as_bytes());
        match key.get(name) {
            Some(AttributeValue::S(s)) => {
                part(b"S");
                part(s.as_bytes());
            }
            Some(AttributeValue::N(n)) => {
                part(b"N");
                part(n.as_bytes());
            }
            Some(AttributeValue::B(b)) => {
                part(b"B");
                part(b.as_ref());
            }
            _ => part(b"-"),
        }
    }
    h.digest128().to_be_bytes()
}

/// Whether an SQS queue URL names a FIFO queue (SQS requires the `.fifo` suffix).
pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

/// Longest `MessageGroupId` SQS accepts.
const MAX_GROUP_ID_LEN: usize = 128;

/// The FIFO `MessageGroupId` of a row: its partition-key value, so the rows of one partition
/// stay in one group. SQS allows 1–128 characters from printable ASCII; a value outside that
/// (longer, non-ASCII, binary, or missing) is replaced by `h-` and a 128-bit hash of the typed
/// value, which is just as stable.
pub fn fifo_group_id(partition_value: Option<&AttributeValue>) -> String {
    let usable = |text: &str| {
        (1..=MAX_GROUP_ID_LEN).contains(&text.len())
            && text.bytes().all(|b| (33..=126).contains(&b))
    };
    let (tag, bytes): (&[u8], &[u8]) = match partition_value {
        Some(AttributeValue::S(s)) if usable(s) => return s.clone(),
        Some(AttributeValue::N(n)) if usable(n) => return n.clone(),
        Some(AttributeValue::S(s)) => (b"S", s.as_bytes()),
        Some(AttributeValue::N(n)) => (b"N", n.as_bytes()),
        Some(AttributeValue::B(b)) => (b"B", b.as_ref()),
        _ => (b"-", b""),
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(tag);
    h.update(bytes);
    format!("h-{:032x}", h.digest128())
}

/// The FIFO `MessageDeduplicationId` of a row: its `row_id` within `scope`, the job it is
/// published for. SQS drops a message whose deduplication id it accepted in the last 5
/// minutes; with the `row_id` alone, a second job over the same table (another filter, a quick
/// re-run) within that window had every overlapping row dropped by SQS while its ledger and
/// `status` counted them as published. A crash repeat inside one job has the same scope and
/// `row_id`, so it is still dropped. A 128-bit XXH3 hash of both (length-prefixed), 32 hex
/// digits: within SQS's 128 characters and its character set whatever the scope holds. An
/// empty scope (a task with neither a job nor a run) keeps the `row_id` itself, as before.
pub fn fifo_dedup_id(scope: &str, row_id: &str) -> String {
    if scope.is_empty() {
        return row_id.to_owned();
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [scope, row_id] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.digest128().to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row(pk: &str, sk: &str) -> Item {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S(pk.into())),
            ("SK".to_owned(), AttributeValue::S(sk.into())),
            ("other".to_owned(), AttributeValue::N("1".into())),
        ])
    }

    #[test]
    fn fifo_attributes_come_from_the_partition_key() {
        assert!(is_fifo("http://localhost/000/rows.fifo"));
        assert!(!is_fifo("http://localhost/000/rows"));
        let s = |v: &str| AttributeValue::S(v.into());
        assert_eq!(fifo_group_id(Some(&s("user#42"))), "user#42");
        assert_eq!(
            fifo_group_id(Some(&AttributeValue::N("-12.5".into()))),
            "-12.5"
        );
        // Not allowed as-is: hashed, stably, and never the same for different values.
        let spaced = fifo_group_id(Some(&s("a b")));
        assert!(spaced.starts_with("h-") && spaced.len() == 34, "{spaced}");
        assert_eq!(spaced, fifo_group_id(Some(&s("a b"))));
        assert_ne!(spaced, fifo_group_id(Some(&s("a c"))));
        let long = "x".repeat(129);
        assert!(fifo_group_id(Some(&s(&long))).starts_with("h-"));
        assert_eq!(fifo_group_id(Some(&s(&"x".repeat(128)))).len(), 128);
        assert!(fifo_group_id(Some(&s("é"))).starts_with("h-"));
        let blob = AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b"ab".to_vec()));
        assert_ne!(fifo_group_id(Some(&blob)), fifo_group_id(Some(&s("ab"))));
        assert!(fifo_group_id(None).starts_with("h-"));
    }

    /// The oversize error and record name the limit that applies: the queue's, or
    /// `output.max_batch_bytes` when that is the smaller.
    #[test]
    fn row_id_is_stable_and_depends_on_table_and_key_only() {
        let keys = ["PK".to_owned(), "SK".to_owned()];
        let a = row_id("t", &keys, &row("a", "1"));
        assert_eq!(a.len(), ROW_ID_LEN);
        let mut changed_other = row("a", "1");
        changed_other.insert("other".into(), AttributeValue::N("2".into()));
        assert_eq!(row_id("t", &keys, &changed_other), a);
        assert_ne!(row_id("t2", &keys, &row("a", "1")), a);
        assert_ne!(row_id("t", &keys, &row("a", "2")), a);
        // Length-prefixed parts: moving a character between attributes changes the id.
        assert_ne!(
            row_id("t", &keys, &row("ab", "c")),
            row_id("t", &keys, &row("a", "bc"))
        );
        // Fixed value: the id must not change between releases, consumers store it.
        assert_eq!(a, "2414c407f55d5fc7eae8ff8153b48066");
    }
}
