//! Packing row messages into `SendMessageBatch` requests (SQS's 10 entries and byte limit).
//! Pure logic, no I/O, no AWS types.

/// SQS accepts at most 10 entries in one `SendMessageBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// A message larger than a whole batch may be: it can never be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message of {size} bytes exceeds the batch limit of {max} bytes (output.max_batch_bytes)")]
pub struct TooLarge {
    pub size: usize,
    pub max: usize,
}

/// Accumulates entries until the next one would break the entry or byte limit.
#[derive(Debug)]
pub struct Batcher<T> {
    max_bytes: usize,
    entries: Vec<T>,
    bytes: usize,
}

impl<T> Batcher<T> {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: Vec::with_capacity(MAX_BATCH_ENTRIES),
            bytes: 0,
        }
    }

    /// Adds an entry of `size` bytes. Returns the batch that had to be closed to make room,
    /// if any; the new entry always stays in the (new) open batch.
    pub fn push(&mut self, entry: T, size: usize) -> Result<Option<Vec<T>>, TooLarge> {
        if size > self.max_bytes {
            return Err(TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let full = self.entries.len() == MAX_BATCH_ENTRIES || self.bytes + size > self.max_bytes;
        let closed = if full { self.take() } else { None };
        self.entries.push(entry);
        self.bytes += size;
        Ok(closed)
    }

    /// Closes the open batch, if it holds anything.
    pub fn take(&mut self) -> Option<Vec<T>> {
        if self.entries.is_empty() {
            return None;
        }
        self.bytes = 0;
        Some(std::mem::replace(
            &mut self.entries,
            Vec::with_capacity(MAX_BATCH_ENTRIES),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(max: usize, sizes: &[usize]) -> Vec<Vec<usize>> {
        let mut b = Batcher::new(max);
        let mut out = Vec::new();
        for (i, &s) in sizes.iter().enumerate() {
            out.extend(b.push(i, s).unwrap());
        }
        out.extend(b.take());
        out
    }

    #[test]
    fn at_most_ten_entries() {
        let batches = pack(1000, &[1; 25]);
        let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![10, 10, 5]);
        // Order is kept and nothing is lost or repeated.
        let flat: Vec<usize> = batches.concat();
        assert_eq!(flat, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn byte_limit_closes_batches_early() {
        // 400 + 400 fits in 1000; a third 400 does not.
        assert_eq!(
            pack(1000, &[400, 400, 400, 200, 1000]),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // Exactly at the limit is allowed.
        assert_eq!(pack(1000, &[500, 500]), vec![vec![0, 1]]);
    }

    #[test]
    fn an_entry_larger_than_a_batch_is_an_error() {
        let mut b = Batcher::new(100);
        b.push(0, 50).unwrap();
        assert_eq!(
            b.push(1, 101),
            Err(TooLarge {
                size: 101,
                max: 100
            })
        );
        // The open batch is untouched by the refused entry.
        assert_eq!(b.take(), Some(vec![0]));
        assert_eq!(b.take(), None);
    }
}
