//! Packed output (`output.rows_per_message` > 1): many rows of one task in one message. Pure
//! logic, no I/O.
//!
//! A packed message's body is its rows' bodies joined by `\n`, with no trailing newline; each
//! line is exactly the body that row would have as a message of its own, compact JSON, which has
//! no raw newline, so the lines are unambiguous. Its attributes are the task's (`table`,
//! `segment`, `job_id`) plus `rows` (Number: the count of lines) and `row_ids` (String: the
//! rows' `row_id`s in line order, separated by single spaces).
//!
//! A message closes when the next row would pass either limit: `output.rows_per_message` rows,
//! or its size as SQS counts it (body plus every attribute's name, data type and value, see
//! [`sqs::attribute_size`]) over the byte limit. A row too large for a message of its own is
//! refused, for the caller to take the oversize path with.

use std::sync::Arc;

use crate::aws::sqs::{self, Attribute, OutMessage, PackedRows};

/// When a packed message closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLimits {
    /// `output.rows_per_message`.
    pub rows: usize,
    /// The most a message may hold as SQS counts it: the smallest of `output.max_message_bytes`,
    /// the output queue's `MaximumMessageSize` and `output.max_batch_bytes`.
    pub bytes: usize,
}

/// A closed packed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    pub body: String,
    pub rows: PackedRows,
    /// Its size as SQS counts it, the task's shared attributes included.
    pub size: usize,
}

impl Pack {
    /// The message to send, with the task's shared attributes.
    pub fn into_message(self, shared: Arc<[Attribute]>) -> OutMessage {
        OutMessage {
            body: self.body,
            shared_attributes: Some(shared),
            packed: Some(self.rows),
            ..OutMessage::default()
        }
    }
}

/// A row whose message alone would pass the byte limit: it goes the oversize way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowTooLarge {
    /// The size of a packed message holding this row alone.
    pub size: usize,
}

/// Accumulates one task's rows into packed messages.
#[derive(Debug)]
pub struct Packer {
    limits: PackLimits,
    /// The task's shared attributes' size (see `RowAttributes`).
    shared_size: usize,
    body: String,
    row_ids: String,
    rows: usize,
}

/// Decimal digits of `n`: the length of the `rows` attribute's value.
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Packer {
    pub fn new(limits: PackLimits, shared_size: usize) -> Self {
        Self {
            limits,
            shared_size,
            body: String::new(),
            row_ids: String::new(),
            rows: 0,
        }
    }

    /// The size SQS counts of a packed message of `rows` rows, `body_len` bytes of body and
    /// `ids_len` bytes of `row_ids`.
    fn size_of(&self, rows: usize, body_len: usize, ids_len: usize) -> usize {
        body_len
            + self.shared_size
            + sqs::attribute_size(sqs::ROWS_ATTRIBUTE, "Number", digits(rows))
            + sqs::attribute_size(sqs::ROW_IDS_ATTRIBUTE, "String", ids_len)
    }

    /// The size of a packed message holding this row alone.
    fn alone_size(&self, body: &str, row_id: &str) -> usize {
        self.size_of(1, body.len(), row_id.len())
    }

    /// Adds a row (`body` without a newline, `row_id` without a space). Returns the message that
    /// had to close to make room, if any; the row stays in the (new) open message. A row that
    /// does not fit in a message of its own is refused, and the open message is left as it was.
    pub fn push(&mut self, body: &str, row_id: &str) -> Result<Option<Pack>, RowTooLarge> {
        debug_assert!(!body.contains('\n') && !row_id.contains(' '));
        let alone = self.alone_size(body, row_id);
        if alone > self.limits.bytes {
            return Err(RowTooLarge { size: alone });
        }
        let full = self.rows > 0
            && (self.rows >= self.limits.rows
                || self.size_of(
                    self.rows + 1,
                    self.body.len() + 1 + body.len(),
                    self.row_ids.len() + 1 + row_id.len(),
                ) > self.limits.bytes);
        let closed = if full { self.take() } else { None };
        if self.rows > 0 {
            self.body.push('\n');
            self.row_ids.push(' ');
        }
        self.body.push_str(body);
        self.row_ids.push_str(row_id);
        self.rows += 1;
        Ok(closed)
    }

    /// Closes the open message, if it holds any row.
    pub fn take(&mut self) -> Option<Pack> {
        if self.rows == 0 {
            return None;
        }
        let size = self.size_of(self.rows, self.body.len(), self.row_ids.len());
        // The next message is likely the size of this one: start its buffers there.
        let (body_len, ids_len) = (self.body.len(), self.row_ids.len());
        let body = std::mem::replace(&mut self.body, String::with_capacity(body_len));
        let row_ids = std::mem::replace(&mut self.row_ids, String::with_capacity(ids_len));
        let count = std::mem::take(&mut self.rows);
        Some(Pack {
            body,
            rows: PackedRows {
                count,
                count_text: count.to_string(),
                row_ids,
            },
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn shared(value_len: usize) -> (Arc<[Attribute]>, usize) {
        let a = Attribute {
            name: "table".into(),
            data_type: "String",
            value: "t".repeat(value_len),
        };
        let size = sqs::attribute_size(&a.name, a.data_type, a.value.len());
        (Arc::from(vec![a]), size)
    }

    fn id(i: usize) -> String {
        format!("{i:032x}")
    }

    /// Packs `bodies` (row i has `id(i)`): the messages, and the rows refused as too large.
    fn pack(limits: PackLimits, shared_size: usize, bodies: &[String]) -> (Vec<Pack>, Vec<usize>) {
        let mut p = Packer::new(limits, shared_size);
        let (mut packs, mut refused) = (Vec::new(), Vec::new());
        for (i, b) in bodies.iter().enumerate() {
            match p.push(b, &id(i)) {
                Ok(closed) => packs.extend(closed),
                Err(_) => refused.push(i),
            }
        }
        packs.extend(p.take());
        (packs, refused)
    }

    fn counts(packs: &[Pack]) -> Vec<usize> {
        packs.iter().map(|p| p.rows.count).collect()
    }

    fn bodies(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    #[test]
    fn a_message_closes_at_rows_per_message() {
        let limits = PackLimits {
            rows: 10,
            bytes: 1 << 20,
        };
        let (packs, refused) = pack(limits, 0, &bodies(25, 3));
        assert_eq!(counts(&packs), [10, 10, 5]);
        assert!(refused.is_empty());
        assert_eq!(
            packs[0].body,
            (0..10)
                .map(|i| format!("{i:03}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(packs[2].rows.count_text, "5");
        assert_eq!(
            packs[2].rows.row_ids,
            (20..25).map(id).collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn a_message_closes_before_the_byte_limit() {
        let (shared_attrs, shared_size) = shared(3);
        let b = bodies(3, 100);
        let p = Packer::new(
            PackLimits {
                rows: 100,
                bytes: 0,
            },
            shared_size,
        );
        let two = p.size_of(2, 201, 65);
        // Exactly two rows' message at the limit: two fit, the third opens a new message.
        let limits = PackLimits {
            rows: 100,
            bytes: two,
        };
        let (packs, _) = pack(limits, shared_size, &b);
        assert_eq!(counts(&packs), [2, 1]);
        assert_eq!(packs[0].size, two);
        assert_eq!(packs[0].clone().into_message(shared_attrs).sqs_size(), two);
        // One byte less and each row is a message of its own.
        let limits = PackLimits {
            rows: 100,
            bytes: two - 1,
        };
        assert_eq!(counts(&pack(limits, shared_size, &b).0), [1, 1, 1]);
    }

    #[test]
    fn a_one_row_pack_is_the_rows_body_with_its_row_id() {
        let limits = PackLimits {
            rows: 1,
            bytes: 4096,
        };
        let b = vec![r#"{"PK":"a","n":1}"#.to_owned(), r#"{"PK":"b"}"#.to_owned()];
        let (packs, _) = pack(limits, 0, &b);
        assert_eq!(counts(&packs), [1, 1]);
        for (i, p) in packs.iter().enumerate() {
            assert_eq!(p.body, b[i]);
            assert_eq!(p.rows.count_text, "1");
            assert_eq!(p.rows.row_ids, id(i));
        }
    }

    #[test]
    fn a_row_exactly_at_the_limit_fits_alone_and_one_byte_more_is_refused() {
        let (_, shared_size) = shared(5);
        let body = "x".repeat(500);
        let mut p = Packer::new(PackLimits { rows: 10, bytes: 0 }, shared_size);
        let alone = p.alone_size(&body, &id(0));
        assert_eq!(alone, 500 + shared_size + (4 + 6 + 1) + (7 + 6 + 32));
        p.limits.bytes = alone;
        assert_eq!(p.push("small", &id(1)), Ok(None));
        // At the limit: it closes the open message and is sent alone.
        let closed = p.push(&body, &id(2)).unwrap().expect("closed");
        assert_eq!(closed.body, "small");
        let at_limit = p.take().unwrap();
        assert_eq!(
            (at_limit.size, at_limit.body.as_str()),
            (alone, body.as_str())
        );
        // One byte more: refused, and the open message is untouched.
        assert_eq!(p.push("small", &id(3)), Ok(None));
        let more = format!("{body}y");
        assert_eq!(p.push(&more, &id(4)), Err(RowTooLarge { size: alone + 1 }));
        let rest = p.take().unwrap();
        assert_eq!(
            (rest.body.as_str(), rest.rows.row_ids.as_str()),
            ("small", id(3).as_str())
        );
        assert_eq!(p.take(), None);
    }

    #[test]
    fn the_rows_count_grows_a_digit_at_ten_rows() {
        // A message of 10 one-byte rows counts the second digit of `rows`.
        let p = Packer::new(
            PackLimits {
                rows: 100,
                bytes: 0,
            },
            0,
        );
        assert_eq!(p.size_of(10, 19, 329) - p.size_of(9, 19, 329), 1);
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(10_000)),
            (1, 1, 2, 5)
        );
    }

    proptest! {
        /// Whatever the rows and limits: every row is in exactly one message or refused, in
        /// order; splitting a body gives back its rows; `rows` and `row_ids` agree with the
        /// lines; no message passes a limit, and each closed only when the next row would have.
        #[test]
        fn packing_round_trips_within_the_limits(
            rows in proptest::collection::vec("[a-z0-9{}\":,é ]{0,60}", 0..80),
            max_rows in 1usize..15,
            bytes in 60usize..700,
            shared_len in 0usize..40,
        ) {
            let (shared_attrs, shared_size) = shared(shared_len);
            let limits = PackLimits { rows: max_rows, bytes };
            let (packs, refused) = pack(limits, shared_size, &rows);
            let probe = Packer::new(limits, shared_size);
            let mut next = 0;
            let mut refused_iter = refused.iter().peekable();
            let mut previous: Option<&Pack> = None;
            for p in &packs {
                let lines: Vec<&str> = p.body.split('\n').collect();
                let ids: Vec<&str> = p.rows.row_ids.split(' ').collect();
                prop_assert_eq!(lines.len(), p.rows.count);
                prop_assert_eq!(ids.len(), p.rows.count);
                prop_assert_eq!(p.rows.count_text.parse::<usize>().unwrap(), p.rows.count);
                prop_assert!(p.rows.count <= max_rows);
                let message = p.clone().into_message(shared_attrs.clone());
                prop_assert_eq!(message.sqs_size(), p.size);
                prop_assert!(p.size <= bytes);
                for (line, row_id) in lines.iter().zip(&ids) {
                    while refused_iter.next_if(|&&r| r == next).is_some() {
                        next += 1;
                    }
                    prop_assert_eq!(*line, rows[next].as_str());
                    let want = id(next);
                    prop_assert_eq!(*row_id, want.as_str());
                    next += 1;
                }
                // The previous message could not have taken this one's first row.
                if let Some(prev) = previous {
                    let mut grown = prev.clone().into_message(shared_attrs.clone());
                    grown.body.push('\n');
                    grown.body.push_str(lines[0]);
                    let packed = grown.packed.as_mut().unwrap();
                    packed.count += 1;
                    packed.count_text = packed.count.to_string();
                    packed.row_ids.push(' ');
                    packed.row_ids.push_str(ids[0]);
                    prop_assert!(prev.rows.count == max_rows || grown.sqs_size() > bytes);
                }
                previous = Some(p);
            }
            while refused_iter.next_if(|&&r| r == next).is_some() {
                next += 1;
            }
            prop_assert_eq!(next, rows.len(), "rows lost");
            for &r in &refused {
                prop_assert!(probe.alone_size(&rows[r], &id(r)) > bytes);
            }
        }
    }
}
