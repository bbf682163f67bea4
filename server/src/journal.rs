//! The commit journal: Quire's own record, outside sled, of which group
//! commits were durable, so that a start can tell when sled lost writes it
//! had acknowledged (issue 12: sled's recovery treats the first damaged
//! record as the end of its log and drops the rest without a word).
//!
//! Each group commit writes its number into sled (the `commit` key, last,
//! before sled's flush); once that flush succeeded, the same number is
//! appended here with the names of the documents the commit touched, and
//! `fdatasync`ed. At start, sled's `commit` lower than the journal's last
//! number means acknowledged writes are gone ([`decide`]).
//!
//! File `commits` in the data directory: records, each
//! `payload length (u32 LE) | CRC-32 of the payload (u32 LE) | payload`,
//! payload = `commit (u64 BE) | document names, each followed by \0`
//! (names never contain `\0`). Reading stops at the first record that is
//! short or fails its checksum: a torn last record is one whose sled flush
//! already succeeded, so dropping it only makes the check less strict, never
//! a false alarm. Past [`ROTATE_BYTES`] the file is rewritten atomically
//! with only its last record: the high-water mark is what must survive; the
//! names only make a report more precise.

use crate::datadir::{self, DataDirError};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const JOURNAL_FILE: &str = "commits";
/// Past this size the journal keeps only its last record.
const ROTATE_BYTES: u64 = 1 << 20;
const HEADER: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub commit: u64,
    pub documents: Vec<String>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut payload = self.commit.to_be_bytes().to_vec();
        for doc in &self.documents {
            payload.extend_from_slice(doc.as_bytes());
            payload.push(0);
        }
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// Every valid record of `bytes`, up to the first damaged or torn one.
pub fn decode(bytes: &[u8]) -> Vec<Record> {
    decode_prefix(bytes).0
}

/// The valid records and how many bytes they take.
fn decode_prefix(mut bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while bytes.len() >= HEADER {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (len, crc) = (word(0) as usize, word(4));
        let Some(payload) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        if len < 8 || crc32fast::hash(payload) != crc {
            break;
        }
        let mut commit = [0u8; 8];
        commit.copy_from_slice(&payload[..8]);
        let documents = payload[8..]
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        out.push(Record {
            commit: u64::from_be_bytes(commit),
            documents,
        });
        bytes = &bytes[HEADER + len..];
        used += HEADER + len;
    }
    (out, used)
}

/// The journal's records; None when there is no journal (a data directory
/// from before it, or a new one).
pub fn read(dir: &Path) -> Result<Option<Vec<Record>>, DataDirError> {
    let path = dir.join(JOURNAL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(decode(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The open journal, written to after each durable group commit.
///
/// The file is written whole, zero-filled to [`ROTATE_BYTES`], when it
/// starts over, and records then overwrite those zeros in place: an
/// `fdatasync` of blocks already allocated and written has no file size or
/// extent to commit, which measured about half the cost of one after an
/// append (docs/operations.md, "Storage"). Zeros read as the end.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Where the next record goes: the end of the valid records.
    offset: u64,
    /// When the file was last `fdatasync`ed, and whether records were
    /// written since.
    synced_at: Option<Instant>,
    unsynced: bool,
}

/// The journal is `fdatasync`ed at most this often (and at shutdown, and
/// when storage is idle). An `fdatasync` per group commit cost fanout 10 %
/// more CPU and many-docs a fifth of its throughput (docs/operations.md,
/// "Storage"). Records are written at once, so only a crash of the machine
/// itself can lose the last second of them, and a lost record only makes
/// the check at start less strict, never a false alarm.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Journal {
    /// Replaces the journal with one record (a new baseline) and opens it.
    pub fn start_over(dir: &Path, baseline: &Record) -> Result<Journal, DataDirError> {
        let mut bytes = baseline.encode();
        let used = bytes.len() as u64;
        bytes.resize(bytes.len().max(ROTATE_BYTES as usize), 0);
        datadir::write_atomically(dir, JOURNAL_FILE, &bytes)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file: Self::open_file(dir)?,
            offset: used,
            synced_at: Some(Instant::now()),
            unsynced: false,
        })
    }

    /// Opens the journal to write after its last valid record.
    pub fn open(dir: &Path) -> Result<Journal, DataDirError> {
        let path = dir.join(JOURNAL_FILE);
        let bytes = std::fs::read(&path).map_err(|source| DataDirError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file: Self::open_file(dir)?,
            offset: decode_prefix(&bytes).1 as u64,
            synced_at: None,
            unsynced: false,
        })
    }

    fn open_file(dir: &Path) -> Result<File, DataDirError> {
        let path = dir.join(JOURNAL_FILE);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| DataDirError::Write {
                path: path.display().to_string(),
                source,
            })
    }

    /// Writes `record`, `fdatasync`ing the file when [`SYNC_EVERY`] has
    /// passed since it last was; starts over past [`ROTATE_BYTES`].
    pub fn append(&mut self, record: &Record) -> Result<(), DataDirError> {
        let encoded = record.encode();
        if self.offset + encoded.len() as u64 > ROTATE_BYTES {
            *self = Self::start_over(&self.dir, record)?;
            return Ok(());
        }
        self.file
            .write_all_at(&encoded, self.offset)
            .map_err(|source| self.write_error(source))?;
        self.offset += encoded.len() as u64;
        self.unsynced = true;
        self.sync_if_due()
    }

    /// `fdatasync`s records written since the last one, if [`SYNC_EVERY`]
    /// has passed.
    pub fn sync_if_due(&mut self) -> Result<(), DataDirError> {
        if self.synced_at.is_some_and(|at| at.elapsed() < SYNC_EVERY) {
            return Ok(());
        }
        self.sync()
    }

    /// When records written since the last `fdatasync` are due to be synced.
    pub fn sync_due(&self) -> Option<Instant> {
        self.unsynced.then(|| {
            self.synced_at
                .map_or_else(Instant::now, |at| at + SYNC_EVERY)
        })
    }

    /// `fdatasync`s records written since the last one.
    pub fn sync(&mut self) -> Result<(), DataDirError> {
        if !self.unsynced {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|source| self.write_error(source))?;
        self.unsynced = false;
        self.synced_at = Some(Instant::now());
        Ok(())
    }

    fn write_error(&self, source: io::Error) -> DataDirError {
        DataDirError::Write {
            path: self.dir.join(JOURNAL_FILE).display().to_string(),
            source,
        }
    }
}

/// Acknowledged writes that sled no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The last commit the journal says was durable.
    pub expected: u64,
    /// The last commit sled recovered.
    pub found: u64,
    /// Documents written by the lost commits, as far as the journal names them.
    pub documents: BTreeSet<String>,
    /// False when the journal was rotated past some lost commits: other
    /// documents may be affected too.
    pub complete: bool,
}

/// How many document names the one-line message lists; with
/// `--accept-data-loss` every one is logged on its own line.
const NAMES_SHOWN: usize = 20;

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the commit journal says commit {} was durable, sled recovered only commit {}; ",
            self.expected, self.found
        )?;
        if self.documents.is_empty() {
            return write!(f, "which documents it held is unknown");
        }
        let shown: Vec<&str> = self
            .documents
            .iter()
            .take(NAMES_SHOWN)
            .map(String::as_str)
            .collect();
        write!(
            f,
            "documents written by the lost commits ({}): {}",
            self.documents.len(),
            shown.join(", ")
        )?;
        if self.documents.len() > shown.len() {
            write!(f, ", and {} more", self.documents.len() - shown.len())?;
        }
        if !self.complete {
            write!(
                f,
                " (older commits are no longer in the journal: maybe others)"
            )?;
        }
        Ok(())
    }
}

/// What a start does, given the journal and what sled recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing acknowledged is missing.
    Start,
    /// Acknowledged writes are missing: do not serve.
    Refuse(Loss),
    /// Acknowledged writes are missing and the operator accepted it.
    StartWithLoss(Loss),
}

/// The decision at start. `journal` is None without a journal (nothing to
/// compare with: a new or older data directory); `recovered` is sled's
/// `commit` (0 when absent).
pub fn decide(journal: Option<&[Record]>, recovered: u64, accept_data_loss: bool) -> Verdict {
    let Some(expected) = journal.and_then(|records| records.last()).map(|r| r.commit) else {
        return Verdict::Start;
    };
    if recovered >= expected {
        return Verdict::Start;
    }
    let records = journal.unwrap_or_default();
    let lost = records.iter().filter(|r| r.commit > recovered);
    let loss = Loss {
        expected,
        found: recovered,
        documents: lost.flat_map(|r| r.documents.iter().cloned()).collect(),
        // Commit numbers skipped by failed flushes were never acknowledged;
        // a first record after `recovered + 1` may hide rotated ones.
        complete: records.first().is_some_and(|r| r.commit <= recovered + 1),
    };
    if accept_data_loss {
        Verdict::StartWithLoss(loss)
    } else {
        Verdict::Refuse(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(commit: u64, documents: &[&str]) -> Record {
        Record {
            commit,
            documents: documents.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn names(docs: &[&str]) -> BTreeSet<String> {
        docs.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_start_goes_on_only_when_sled_kept_every_durable_commit() {
        let journal = [record(4, &["a"]), record(5, &["b", "c"]), record(6, &["a"])];
        let loss = |found, docs: &[&str], complete| Loss {
            expected: 6,
            found,
            documents: names(docs),
            complete,
        };
        let cases: Vec<(Option<&[Record]>, u64, bool, Verdict)> = vec![
            // (journal, sled's commit, --accept-data-loss, verdict)
            // No journal: a new or older data directory; nothing to compare.
            (None, 0, false, Verdict::Start),
            (None, 9, false, Verdict::Start),
            (Some(&[]), 0, false, Verdict::Start),
            // Everything durable is there; sled may be ahead (a flush that
            // succeeded just before a crash, not yet journaled).
            (Some(&journal), 6, false, Verdict::Start),
            (Some(&journal), 7, false, Verdict::Start),
            // Lost writes: refused, or served if accepted.
            (
                Some(&journal),
                5,
                false,
                Verdict::Refuse(loss(5, &["a"], true)),
            ),
            (
                Some(&journal),
                3,
                false,
                Verdict::Refuse(loss(3, &["a", "b", "c"], true)),
            ),
            (
                Some(&journal),
                3,
                true,
                Verdict::StartWithLoss(loss(3, &["a", "b", "c"], true)),
            ),
            // sled lost everything, its commit key too; commits 1-3 were rotated away.
            (
                Some(&journal),
                0,
                false,
                Verdict::Refuse(loss(0, &["a", "b", "c"], false)),
            ),
        ];
        for (journal, recovered, accept, verdict) in cases {
            assert_eq!(
                decide(journal, recovered, accept),
                verdict,
                "journal {journal:?}, sled at {recovered}, accept {accept}"
            );
        }
    }

    #[test]
    fn the_message_names_the_commits_and_at_most_20_documents() {
        let loss = |count: usize, complete| Loss {
            expected: 9,
            found: 3,
            documents: (0..count).map(|i| format!("d{i:02}")).collect(),
            complete,
        };
        assert_eq!(
            loss(2, true).to_string(),
            "the commit journal says commit 9 was durable, sled recovered only commit 3; \
             documents written by the lost commits (2): d00, d01"
        );
        let many = loss(25, false).to_string();
        assert!(many.contains("(25): d00, d01,"), "{many}");
        assert!(many.contains("d19, and 5 more (older commits"), "{many}");
        assert!(!many.contains("d20"), "{many}");
        assert!(loss(0, false)
            .to_string()
            .ends_with("which documents it held is unknown"));
    }

    #[test]
    fn reading_stops_at_a_torn_or_damaged_record() {
        let first = record(1, &["team/notes", "b"]);
        let second = record(2, &[]);
        let mut bytes = first.encode();
        bytes.extend(second.encode());
        assert_eq!(decode(&bytes), [first.clone(), second]);
        // Torn: the last record cut short.
        assert_eq!(decode(&bytes[..bytes.len() - 3]), vec![first.clone()]);
        // Damaged: a flipped byte in the second record's payload.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert_eq!(decode(&damaged), vec![first]);
        assert_eq!(decode(&[]), []);
        assert_eq!(decode(&[0; 64]), []);
    }

    #[test]
    fn the_journal_keeps_its_last_record_when_it_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        let mut journal = Journal::start_over(dir.path(), &record(0, &[])).expect("open");
        let long_name = "d".repeat(10_000);
        for commit in 1..=300 {
            journal
                .append(&record(commit, &[&long_name]))
                .expect("append");
        }
        let records = read(dir.path()).expect("read").expect("present");
        assert_eq!(records.last().map(|r| r.commit), Some(300));
        assert!(records.len() < 300, "rotated");
        let size = std::fs::metadata(dir.path().join(JOURNAL_FILE))
            .expect("size")
            .len();
        assert_eq!(size, ROTATE_BYTES, "preallocated, never grown");
    }

    #[test]
    fn records_are_written_at_once_and_synced_at_most_once_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::start_over(dir.path(), &record(0, &[])).expect("open");
        assert_eq!(journal.sync_due(), None, "the baseline is synced");
        journal.append(&record(1, &["a"])).expect("append");
        // Readable at once (a crash of the process loses nothing)...
        assert_eq!(read(dir.path()).expect("read").expect("present").len(), 2);
        // ...and synced within SYNC_EVERY of the last sync.
        let due = journal.sync_due().expect("a sync is due");
        assert!(due > Instant::now() && due <= Instant::now() + SYNC_EVERY);
        journal.sync().expect("sync");
        assert_eq!(journal.sync_due(), None);

        // A reopened journal syncs its first record at once.
        drop(journal);
        let mut journal = Journal::open(dir.path()).expect("reopen");
        journal.append(&record(2, &["b"])).expect("append");
        assert_eq!(journal.sync_due(), None);
    }

    #[test]
    fn a_reopened_journal_writes_after_its_last_valid_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::start_over(dir.path(), &record(0, &[])).expect("open");
        journal.append(&record(1, &["a"])).expect("append");
        drop(journal);
        let mut journal = Journal::open(dir.path()).expect("reopen");
        journal.append(&record(2, &["b"])).expect("append");
        let records = read(dir.path()).expect("read").expect("present");
        assert_eq!(
            records,
            [record(0, &[]), record(1, &["a"]), record(2, &["b"])]
        );
    }
}
