//! Where a document's storage stands: the sequence numbers of its log, what
//! its snapshot covers, its size and when it last changed.
//!
//! Updates are appended to a log under increasing sequence numbers; a
//! compaction folds everything logged so far into one snapshot. These
//! figures decide when to compact and what a compaction covers, and they
//! are what the document's metadata record stores.

use crate::store::DocMeta;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogPosition {
    /// Sequence number of the next logged update.
    next_seq: u64,
    /// Sequence number of the first update not yet in the snapshot.
    first_unsnapshotted_seq: u64,
    snapshot_bytes: u64,
    log_bytes: u64,
    updated_at_ms: i64,
}

/// What a compaction at this point covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Compaction {
    /// The last logged update the snapshot includes.
    pub(super) through_seq: u64,
}

impl LogPosition {
    /// A document that was never stored.
    pub(super) fn new_document(now_ms: i64) -> Self {
        LogPosition {
            next_seq: 1,
            first_unsnapshotted_seq: 1,
            snapshot_bytes: 0,
            log_bytes: 0,
            updated_at_ms: now_ms,
        }
    }

    /// A stored document: its metadata, snapshot and the log entries after it.
    pub(super) fn stored(meta: DocMeta, snapshot_bytes: u64, log: &[(u64, Vec<u8>)]) -> Self {
        let last_logged = log.last().map_or(0, |(seq, _)| *seq);
        // Never reuse a number a queued compaction may still remove.
        let next_seq = meta.last_seq.max(last_logged) + 1;
        LogPosition {
            next_seq,
            first_unsnapshotted_seq: log.first().map_or(next_seq, |(seq, _)| *seq),
            snapshot_bytes,
            log_bytes: log.iter().map(|(_, update)| update.len() as u64).sum(),
            updated_at_ms: meta.updated_at_ms,
        }
    }

    /// Snapshot plus log bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.snapshot_bytes + self.log_bytes
    }

    pub(super) fn updated_at_ms(&self) -> i64 {
        self.updated_at_ms
    }

    /// Whether logging `len` more bytes would grow the document past `max`.
    pub(super) fn would_exceed(&self, len: usize, max: u64) -> bool {
        self.bytes().saturating_add(len as u64) > max
    }

    /// Records an update of `len` bytes logged at `now_ms`; its sequence number.
    pub(super) fn append(&mut self, len: usize, now_ms: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log_bytes += len as u64;
        self.updated_at_ms = now_ms;
        seq
    }

    /// The log has grown past `limit` bytes since the last snapshot.
    pub(super) fn wants_compaction(&self, limit: u64) -> bool {
        self.log_bytes > limit
    }

    /// Records a snapshot of `snapshot_len` bytes that covers the whole log;
    /// `None` when there is nothing logged since the last one.
    pub(super) fn compact(&mut self, snapshot_len: usize) -> Option<Compaction> {
        if self.next_seq == self.first_unsnapshotted_seq {
            return None;
        }
        let through_seq = self.next_seq - 1;
        self.snapshot_bytes = snapshot_len as u64;
        self.log_bytes = 0;
        self.first_unsnapshotted_seq = self.next_seq;
        Some(Compaction { through_seq })
    }

    /// Records a snapshot that covers the whole log, even if nothing was
    /// logged since the last one: storage may have lost that one.
    pub(super) fn compact_all(&mut self, snapshot_len: usize) -> Compaction {
        let through_seq = self.next_seq.saturating_sub(1);
        self.snapshot_bytes = snapshot_len as u64;
        self.log_bytes = 0;
        self.first_unsnapshotted_seq = self.next_seq;
        Compaction { through_seq }
    }

    /// The metadata record stored with each write.
    pub(super) fn meta(&self) -> DocMeta {
        DocMeta {
            updated_at_ms: self.updated_at_ms,
            bytes: self.bytes(),
            last_seq: self.next_seq.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(last_seq: u64) -> DocMeta {
        DocMeta {
            updated_at_ms: 5,
            bytes: 0,
            last_seq,
        }
    }

    #[test]
    fn a_stored_document_continues_its_numbering() {
        let cases: &[(&str, LogPosition, u64, u64)] = &[
            // (case, position, next seq, first seq not in the snapshot)
            ("never stored", LogPosition::new_document(5), 1, 1),
            (
                "a snapshot alone",
                LogPosition::stored(meta(7), 100, &[]),
                8,
                8,
            ),
            (
                "a snapshot and its log",
                LogPosition::stored(meta(9), 100, &[(8, vec![0; 3]), (9, vec![0; 4])]),
                10,
                8,
            ),
            (
                "a log past the metadata (a crash between the two writes)",
                LogPosition::stored(meta(3), 0, &[(4, vec![0; 3])]),
                5,
                4,
            ),
            (
                "metadata past the log (a compaction removed it)",
                LogPosition::stored(meta(12), 10, &[]),
                13,
                13,
            ),
        ];
        for (case, position, next, first) in cases {
            assert_eq!(position.next_seq, *next, "{case}: next");
            assert_eq!(position.first_unsnapshotted_seq, *first, "{case}: first");
        }
    }

    #[test]
    fn appends_count_bytes_and_a_compaction_covers_all_of_them() {
        let mut position = LogPosition::new_document(0);
        assert_eq!(position.compact(10), None, "nothing to compact");
        assert_eq!(position.append(30, 100), 1);
        assert_eq!(position.append(20, 200), 2);
        assert_eq!(position.bytes(), 50);
        assert!(position.wants_compaction(49));
        assert!(!position.wants_compaction(50));
        assert_eq!(
            position.meta(),
            DocMeta {
                updated_at_ms: 200,
                bytes: 50,
                last_seq: 2
            }
        );
        assert_eq!(position.compact(12), Some(Compaction { through_seq: 2 }));
        assert_eq!(position.bytes(), 12);
        assert_eq!(position.compact(12), None, "compacted already");
        assert_eq!(position.append(5, 300), 3);
        assert_eq!(position.compact(15), Some(Compaction { through_seq: 3 }));
        assert_eq!(
            position.compact_all(15),
            Compaction { through_seq: 3 },
            "forced: the same snapshot again"
        );
        assert_eq!(position.bytes(), 15);
    }

    #[test]
    fn the_size_limit_counts_snapshot_log_and_the_new_update() {
        let position = LogPosition::stored(meta(1), 60, &[(1, vec![0; 30])]);
        assert!(!position.would_exceed(10, 100), "exactly at the limit");
        assert!(position.would_exceed(11, 100));
        assert!(
            position.would_exceed(usize::MAX, u64::MAX - 1),
            "no overflow"
        );
    }
}
