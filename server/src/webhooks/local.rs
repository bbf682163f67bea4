//! The outbox in sled, kept by the storage thread (`crate::store`).
//!
//! Keys (the storage layout in ARCHITECTURE.md lists them with the rest):
//! `w{name}` a document's mark, `y{name}` the state vector of its last
//! `document.updated` event, `o{id}` an entry to deliver, `x{id}` a dead
//! letter. Marks and created/deleted events go into the very batch of the
//! append or delete that caused them, so they are on disk exactly when the
//! change is. The storage thread keeps the marks and the delivery schedule
//! in memory too, so an append costs one insert and a claim reads only the
//! due entries.

use super::{Claimed, Counts, Entry, EventBody, EventData, Mark, Settle};
use crate::config::WebhookEvent;
use crate::store::{Access, StoreError};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::oneshot;

const MARK: u8 = b'w';
const SEALED: u8 = b'y';
const ENTRY: u8 = b'o';
const DEAD: u8 = b'x';

fn doc_key(prefix: u8, doc: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + doc.len());
    key.push(prefix);
    key.extend_from_slice(doc.as_bytes());
    key
}

fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn id_of(key: &[u8]) -> Result<u64, StoreError> {
    key.get(1..)
        .and_then(|raw| <[u8; 8]>::try_from(raw).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("webhook outbox key without an id".into()))
}

fn encode_mark(mark: &Mark) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&mark.first_ms.to_be_bytes());
    out[8..16].copy_from_slice(&mark.last_ms.to_be_bytes());
    out[16..].copy_from_slice(&mark.changes.to_be_bytes());
    out
}

fn decode_mark(raw: &[u8]) -> Result<Mark, StoreError> {
    let field = |at: usize| {
        raw.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| StoreError::Corrupt("webhook mark of the wrong size".into()))
    };
    Ok(Mark {
        first_ms: i64::from_be_bytes(field(0)?),
        last_ms: i64::from_be_bytes(field(8)?),
        changes: u64::from_be_bytes(field(16)?),
    })
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

fn decode_entry(raw: &[u8]) -> Result<Entry, StoreError> {
    serde_json::from_slice(raw)
        .map_err(|e| StoreError::Corrupt(format!("webhook outbox entry: {e}")))
}

/// Which events the storage thread writes itself.
#[derive(Debug, Clone)]
pub struct LocalEvents {
    pub endpoints: Vec<String>,
    /// Document events are written here (one node) or in PostgreSQL.
    pub documents: DocumentEvents,
    pub created: bool,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentEvents {
    /// Sled is the record: appends mark, deletes write `document.deleted`.
    Here,
    /// PostgreSQL is the record and keeps them (`crate::record::webhooks`).
    InRecord,
}

/// The storage thread's part of the outbox.
pub struct LocalOutbox {
    events: LocalEvents,
    marks: HashMap<String, Mark>,
    /// (next_ms, id) of every entry to deliver.
    schedule: BTreeSet<(i64, u64)>,
    dead: u64,
    next_id: u64,
    /// Documents whose appends went with a batch that failed: their marks
    /// are written again with their whole state, when storage recovers.
    lost: HashSet<String>,
}

impl LocalOutbox {
    /// Reads the marks and the schedule back from `db`.
    pub fn open(db: &sled::Db, events: LocalEvents) -> Result<LocalOutbox, StoreError> {
        let mut marks = HashMap::new();
        for item in db.scan_prefix([MARK]) {
            let (key, value) = item?;
            let doc = String::from_utf8(key[1..].to_vec())
                .map_err(|_| StoreError::Corrupt("webhook mark of a non-UTF-8 name".into()))?;
            marks.insert(doc, decode_mark(&value)?);
        }
        let mut schedule = BTreeSet::new();
        let mut last = 0;
        for item in db.scan_prefix([ENTRY]) {
            let (key, value) = item?;
            let id = id_of(&key)?;
            schedule.insert((decode_entry(&value)?.next_ms, id));
            last = last.max(id);
        }
        let mut dead = 0;
        for item in db.scan_prefix([DEAD]) {
            let (key, _) = item?;
            dead += 1;
            last = last.max(id_of(&key)?);
        }
        Ok(LocalOutbox {
            events,
            marks,
            schedule,
            dead,
            next_id: last + 1,
            lost: HashSet::new(),
        })
    }

    /// Adds `entry` to `batch` under the next id. Scheduled at once: if the
    /// batch then fails, a claim finds no entry under that id and drops it.
    fn insert(&mut self, batch: &mut sled::Batch, entry: &Entry) {
        let id = self.next_id;
        self.next_id += 1;
        batch.insert(&id_key(ENTRY, id)[..], encode_entry(entry));
        self.schedule.insert((entry.next_ms, id));
    }

    fn event(&mut self, batch: &mut sled::Batch, body: &EventBody, now_ms: i64) {
        for entry in Entry::for_each(&self.events.endpoints, body, now_ms) {
            self.insert(batch, &entry);
        }
    }

    /// An append of `doc` is in `batch`: marks the document, and writes
    /// `document.created` if it was not stored before.
    pub fn appended(
        &mut self,
        db: &sled::Db,
        batch: &mut sled::Batch,
        doc: &str,
        stored_before: impl FnOnce(&sled::Db) -> Result<bool, StoreError>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.events.documents != DocumentEvents::Here {
            return Ok(());
        }
        let mark = match self.marks.get_mut(doc) {
            Some(mark) => {
                mark.last_ms = now_ms;
                mark.changes += 1;
                *mark
            }
            None => {
                // Unmarked: every earlier append of it is in sled (a seal
                // or delete, which removed the mark, wrote the batch first).
                if self.events.created && !stored_before(db)? {
                    let body = EventBody::new(
                        WebhookEvent::DocumentCreated,
                        doc,
                        now_ms,
                        EventData::default(),
                    );
                    self.event(batch, &body, now_ms);
                }
                let mark = Mark {
                    first_ms: now_ms,
                    last_ms: now_ms,
                    changes: 1,
                };
                self.marks.insert(doc.to_owned(), mark);
                mark
            }
        };
        batch.insert(doc_key(MARK, doc), &encode_mark(&mark)[..]);
        Ok(())
    }

    /// A write of `doc`'s whole state is in `batch` (a compaction). It
    /// changes nothing a receiver has not heard of, unless it is the
    /// document's first write, or carries changes whose appends were lost
    /// with a failed batch (see [`LocalOutbox::lost`]): then it counts as
    /// an append, so that their event comes after the state is stored.
    pub fn whole_state(
        &mut self,
        db: &sled::Db,
        batch: &mut sled::Batch,
        doc: &str,
        now_ms: i64,
        stored_before: impl FnOnce(&sled::Db) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if self.lost.remove(doc) {
            return self.appended(db, batch, doc, stored_before, now_ms);
        }
        if !stored_before(db)? {
            return self.appended(db, batch, doc, |_| Ok(false), now_ms);
        }
        Ok(())
    }

    /// The writes of these documents failed with their batch (storage
    /// failed). Their marks are still here, in memory, but a seal could
    /// read their state before the whole state is written again and remove
    /// the mark; so the whole-state write marks them again.
    pub fn lost<'a>(&mut self, docs: impl IntoIterator<Item = &'a String>) {
        if self.events.documents == DocumentEvents::Here {
            self.lost.extend(docs.into_iter().cloned());
        }
    }

    /// `doc` is removed in `batch`: its mark goes, `document.deleted` comes.
    pub fn deleted(&mut self, batch: &mut sled::Batch, doc: &str, now_ms: i64) {
        if self.events.documents != DocumentEvents::Here {
            return;
        }
        self.marks.remove(doc);
        self.lost.remove(doc);
        batch.remove(doc_key(MARK, doc));
        batch.remove(doc_key(SEALED, doc));
        if self.events.deleted {
            let body = EventBody::new(
                WebhookEvent::DocumentDeleted,
                doc,
                now_ms,
                EventData::default(),
            );
            self.event(batch, &body, now_ms);
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the dispatcher and the REST routes ask of the storage thread: the
/// work, and where its answer goes.
pub struct Request {
    pub work: Work,
    pub reply: Replier,
}

/// A request's answer, whatever its type, until the storage thread has
/// looked at the error.
pub enum Answer {
    Marks(Vec<(String, Mark)>),
    Sealed(Option<Vec<u8>>),
    Done,
    Claimed(Vec<Claimed>),
    Count(u64),
    Counts(Counts),
}

/// Where a request's answer goes.
pub enum Replier {
    Marks(Reply<Vec<(String, Mark)>>),
    Sealed(Reply<Option<Vec<u8>>>),
    Done(Reply<()>),
    Claimed(Reply<Vec<Claimed>>),
    Count(Reply<u64>),
    Counts(Reply<Counts>),
}

impl Replier {
    pub fn send(self, answer: Result<Answer, StoreError>) {
        fn pass<T>(
            reply: Reply<T>,
            answer: Result<Answer, StoreError>,
            pick: fn(Answer) -> Option<T>,
        ) {
            let result = answer.and_then(|a| {
                pick(a).ok_or_else(|| {
                    StoreError::Corrupt("webhook outbox answer of the wrong kind".into())
                })
            });
            let _ = reply.send(result);
        }
        match self {
            Replier::Marks(r) => pass(r, answer, |a| match a {
                Answer::Marks(v) => Some(v),
                _ => None,
            }),
            Replier::Sealed(r) => pass(r, answer, |a| match a {
                Answer::Sealed(v) => Some(v),
                _ => None,
            }),
            Replier::Done(r) => pass(r, answer, |a| match a {
                Answer::Done => Some(()),
                _ => None,
            }),
            Replier::Claimed(r) => pass(r, answer, |a| match a {
                Answer::Claimed(v) => Some(v),
                _ => None,
            }),
            Replier::Count(r) => pass(r, answer, |a| match a {
                Answer::Count(v) => Some(v),
                _ => None,
            }),
            Replier::Counts(r) => pass(r, answer, |a| match a {
                Answer::Counts(v) => Some(v),
                _ => None,
            }),
        }
    }
}

/// What a request does, on the storage thread.
pub enum Work {
    /// The marked documents due at `now_ms` (`seal::due`): only those are
    /// copied out, however many are marked.
    Marks {
        now_ms: i64,
        debounce: Duration,
    },
    /// The state vector of `doc`'s last `document.updated` event.
    Sealed {
        doc: String,
    },
    /// Writes `entries` (none: `doc` no longer exists) and the state vector
    /// they carry; removes the mark if it still counts `seen` changes, or
    /// starts its wait over if more came meanwhile.
    Seal {
        doc: String,
        seen: u64,
        now_ms: i64,
        state_vector: Option<Vec<u8>>,
        entries: Vec<Entry>,
    },
    /// Events of no stored change (connection events).
    Enqueue {
        entries: Vec<Entry>,
    },
    Claim {
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    },
    Settle {
        id: u64,
        outcome: Settle,
    },
    Dead {
        limit: usize,
    },
    Replay {
        id: Option<u64>,
        now_ms: i64,
    },
    Counts,
}

impl Work {
    /// Whether it writes (refused while storage fails) or only reads.
    pub fn access(&self) -> Access {
        match self {
            Work::Marks { .. } | Work::Sealed { .. } | Work::Dead { .. } | Work::Counts => {
                Access::Read
            }
            _ => Access::Write,
        }
    }

    /// Runs on the storage thread. Writes are one batch each: on disk with
    /// the next group commit.
    pub fn run(self, db: &sled::Db, outbox: &mut LocalOutbox) -> Result<Answer, StoreError> {
        match self {
            Work::Marks { now_ms, debounce } => Ok(Answer::Marks(
                outbox
                    .marks
                    .iter()
                    .filter(|(_, mark)| super::seal::due(mark, now_ms, debounce))
                    .map(|(doc, mark)| (doc.clone(), *mark))
                    .collect(),
            )),
            Work::Sealed { doc } => Ok(Answer::Sealed(
                db.get(doc_key(SEALED, &doc))?.map(|v| v.to_vec()),
            )),
            Work::Seal {
                doc,
                seen,
                now_ms,
                state_vector,
                entries,
            } => {
                let mut batch = sled::Batch::default();
                for entry in &entries {
                    outbox.insert(&mut batch, entry);
                }
                if let Some(sv) = &state_vector {
                    batch.insert(doc_key(SEALED, &doc), sv.as_slice());
                }
                let mark = outbox.marks.get(&doc).copied();
                let restarted = match mark {
                    Some(mark) if mark.changes == seen => {
                        batch.remove(doc_key(MARK, &doc));
                        None
                    }
                    Some(mark) => {
                        // Changed while sealing: those changes wait for
                        // the next event, a full window from now.
                        let restarted = Mark {
                            first_ms: now_ms,
                            ..mark
                        };
                        batch.insert(doc_key(MARK, &doc), &encode_mark(&restarted)[..]);
                        Some(restarted)
                    }
                    None => None,
                };
                db.apply_batch(batch)?;
                match restarted {
                    Some(mark) => outbox.marks.insert(doc, mark),
                    None => outbox.marks.remove(&doc),
                };
                Ok(Answer::Done)
            }
            Work::Enqueue { entries } => {
                let mut batch = sled::Batch::default();
                for entry in &entries {
                    outbox.insert(&mut batch, entry);
                }
                db.apply_batch(batch)?;
                Ok(Answer::Done)
            }
            Work::Claim {
                now_ms,
                lease_until_ms,
                limit,
            } => {
                let due: Vec<(i64, u64)> = outbox
                    .schedule
                    .range(..(now_ms.saturating_add(1), 0))
                    .take(limit)
                    .copied()
                    .collect();
                let mut batch = sled::Batch::default();
                let mut claimed = Vec::with_capacity(due.len());
                for (_, id) in &due {
                    let Some(raw) = db.get(id_key(ENTRY, *id))? else {
                        continue;
                    };
                    let mut entry = decode_entry(&raw)?;
                    entry.next_ms = lease_until_ms;
                    batch.insert(&id_key(ENTRY, *id)[..], encode_entry(&entry));
                    claimed.push(Claimed { id: *id, entry });
                }
                db.apply_batch(batch)?;
                for key in due {
                    outbox.schedule.remove(&key);
                }
                for c in &claimed {
                    outbox.schedule.insert((lease_until_ms, c.id));
                }
                Ok(Answer::Claimed(claimed))
            }
            Work::Settle { id, outcome } => {
                let Some(raw) = db.get(id_key(ENTRY, id))? else {
                    return Ok(Answer::Done);
                };
                let mut entry = decode_entry(&raw)?;
                let old = (entry.next_ms, id);
                entry.attempts += 1;
                match outcome {
                    Settle::Delivered => {
                        db.remove(id_key(ENTRY, id))?;
                        outbox.schedule.remove(&old);
                    }
                    Settle::Retry { next_ms, error } => {
                        entry.next_ms = next_ms;
                        entry.last_error = Some(error);
                        db.insert(id_key(ENTRY, id), encode_entry(&entry))?;
                        outbox.schedule.remove(&old);
                        outbox.schedule.insert((next_ms, id));
                    }
                    Settle::Dead { error } => {
                        entry.last_error = Some(error);
                        let mut batch = sled::Batch::default();
                        batch.remove(&id_key(ENTRY, id)[..]);
                        batch.insert(&id_key(DEAD, id)[..], encode_entry(&entry));
                        db.apply_batch(batch)?;
                        outbox.schedule.remove(&old);
                        outbox.dead += 1;
                    }
                }
                Ok(Answer::Done)
            }
            Work::Dead { limit } => {
                let mut out = Vec::new();
                for item in db.scan_prefix([DEAD]).take(limit) {
                    let (key, value) = item?;
                    out.push(Claimed {
                        id: id_of(&key)?,
                        entry: decode_entry(&value)?,
                    });
                }
                Ok(Answer::Claimed(out))
            }
            Work::Replay { id, now_ms } => {
                let mut batch = sled::Batch::default();
                let mut replayed = Vec::new();
                let keys: Vec<Vec<u8>> = match id {
                    Some(id) => vec![id_key(DEAD, id).to_vec()],
                    None => db
                        .scan_prefix([DEAD])
                        .keys()
                        .map(|k| k.map(|k| k.to_vec()))
                        .collect::<Result<_, _>>()?,
                };
                for key in keys {
                    let Some(raw) = db.get(&key)? else {
                        continue;
                    };
                    let id = id_of(&key)?;
                    let mut entry = decode_entry(&raw)?;
                    entry.attempts = 0;
                    entry.next_ms = now_ms;
                    batch.remove(key);
                    batch.insert(&id_key(ENTRY, id)[..], encode_entry(&entry));
                    replayed.push(id);
                }
                db.apply_batch(batch)?;
                outbox.dead = outbox.dead.saturating_sub(replayed.len() as u64);
                for id in &replayed {
                    outbox.schedule.insert((now_ms, *id));
                }
                Ok(Answer::Count(replayed.len() as u64))
            }
            Work::Counts => Ok(Answer::Counts(Counts {
                pending: outbox.schedule.len() as u64,
                dead: outbox.dead,
                marked: outbox.marks.len() as u64,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(db: &sled::Db) -> LocalOutbox {
        LocalOutbox::open(
            db,
            LocalEvents {
                endpoints: vec!["http://a".into(), "http://b".into()],
                documents: DocumentEvents::Here,
                created: true,
                deleted: true,
            },
        )
        .expect("open")
    }

    fn append(outbox: &mut LocalOutbox, db: &sled::Db, doc: &str, stored: bool, now: i64) {
        let mut batch = sled::Batch::default();
        outbox
            .appended(db, &mut batch, doc, |_| Ok(stored), now)
            .expect("append");
        db.apply_batch(batch).expect("batch");
    }

    fn claim(outbox: &mut LocalOutbox, db: &sled::Db, now: i64) -> Vec<Claimed> {
        let claim = Work::Claim {
            now_ms: now,
            lease_until_ms: now + 1000,
            limit: 100,
        };
        match claim.run(db, outbox) {
            Ok(Answer::Claimed(c)) => c,
            _ => panic!("claim failed"),
        }
    }

    #[test]
    fn the_first_append_of_a_new_document_writes_created_for_each_endpoint_and_a_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        append(&mut o, &db, "doc", false, 100);
        append(&mut o, &db, "doc", true, 150);
        append(&mut o, &db, "old", true, 160);
        let claimed = claim(&mut o, &db, 200);
        let kinds: Vec<(&str, &str)> = claimed
            .iter()
            .map(|c| (c.entry.kind.as_str(), c.entry.endpoint.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("document.created", "http://a"),
                ("document.created", "http://b")
            ]
        );
        assert_eq!(claimed[0].entry.event_id, claimed[1].entry.event_id);
        assert_eq!(
            o.marks.get("doc"),
            Some(&Mark {
                first_ms: 100,
                last_ms: 150,
                changes: 2
            })
        );
        // What is in memory is what a restart reads back.
        let reopened = outbox(&db);
        assert_eq!(reopened.marks, o.marks);
        assert_eq!(reopened.schedule, o.schedule);
    }

    #[test]
    fn a_claimed_entry_is_not_claimed_again_until_its_lease_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        append(&mut o, &db, "doc", false, 100);
        assert_eq!(claim(&mut o, &db, 100).len(), 2);
        assert_eq!(claim(&mut o, &db, 1099).len(), 0);
        assert_eq!(claim(&mut o, &db, 1100).len(), 2);
    }

    #[test]
    fn retries_wait_dead_letters_park_and_replay_puts_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        append(&mut o, &db, "doc", false, 100);
        let claimed = claim(&mut o, &db, 100);
        let (a, b) = (claimed[0].id, claimed[1].id);
        let settle = |o: &mut LocalOutbox, id, outcome| {
            Work::Settle { id, outcome }.run(&db, o).expect("settle");
        };
        settle(&mut o, a, Settle::Delivered);
        settle(
            &mut o,
            b,
            Settle::Retry {
                next_ms: 5000,
                error: "HTTP 500".into(),
            },
        );
        assert!(claim(&mut o, &db, 4999).is_empty());
        let again = claim(&mut o, &db, 5000);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].entry.attempts, 1);
        settle(
            &mut o,
            b,
            Settle::Dead {
                error: "timed out".into(),
            },
        );
        let counts = |o: &mut LocalOutbox| match Work::Counts.run(&db, o) {
            Ok(Answer::Counts(c)) => c,
            _ => panic!("counts"),
        };
        assert_eq!(
            counts(&mut o),
            Counts {
                pending: 0,
                dead: 1,
                marked: 1
            }
        );
        let Ok(Answer::Claimed(dead)) = (Work::Dead { limit: 10 }).run(&db, &mut o) else {
            panic!("dead letters");
        };
        assert_eq!(dead[0].entry.last_error.as_deref(), Some("timed out"));
        assert_eq!(dead[0].entry.attempts, 2);
        let Ok(Answer::Count(1)) = (Work::Replay {
            id: None,
            now_ms: 6000,
        })
        .run(&db, &mut o) else {
            panic!("replay");
        };
        let replayed = claim(&mut o, &db, 6000);
        assert_eq!((replayed[0].id, replayed[0].entry.attempts), (b, 0));
        assert_eq!(counts(&mut o).dead, 0);
    }

    #[test]
    fn a_seal_removes_the_mark_unless_more_changes_came_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        append(&mut o, &db, "doc", true, 100);
        append(&mut o, &db, "doc", true, 200);
        let seal = |o: &mut LocalOutbox, seen| {
            Work::Seal {
                doc: "doc".into(),
                seen,
                now_ms: 300,
                state_vector: Some(vec![1, 2]),
                entries: Vec::new(),
            }
            .run(&db, o)
            .expect("seal");
        };
        // Sealed having seen one change while two were made.
        seal(&mut o, 1);
        assert_eq!(o.marks.get("doc").map(|m| m.changes), Some(2));
        seal(&mut o, 2);
        assert!(o.marks.is_empty());
        assert!(db.get(doc_key(MARK, "doc")).expect("get").is_none());
        assert_eq!(
            db.get(doc_key(SEALED, "doc")).expect("get").as_deref(),
            Some(&[1u8, 2][..])
        );
    }

    #[test]
    fn a_whole_state_write_marks_only_a_new_document_or_one_whose_appends_were_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        let whole = |o: &mut LocalOutbox, doc: &str, stored: bool, now| {
            let mut batch = sled::Batch::default();
            o.whole_state(&db, &mut batch, doc, now, |_| Ok(stored))
                .expect("whole state");
            db.apply_batch(batch).expect("batch");
        };
        // A compaction of a stored document: nothing to tell.
        whole(&mut o, "stored", true, 100);
        assert!(o.marks.is_empty());
        // A document whose first write is its whole state is created.
        whole(&mut o, "new", false, 100);
        assert!(o.marks.contains_key("new"));
        // Appends lost with a failed batch: the mark was sealed meanwhile
        // (from a state without them); the whole state marks it again.
        append(&mut o, &db, "lost", true, 100);
        o.lost([&"lost".to_owned()]);
        o.marks.remove("lost");
        whole(&mut o, "lost", true, 200);
        assert_eq!(o.marks.get("lost").map(|m| m.first_ms), Some(200));
        // Once.
        o.marks.remove("lost");
        whole(&mut o, "lost", true, 300);
        assert!(!o.marks.contains_key("lost"));
    }

    #[test]
    fn a_delete_drops_the_mark_and_writes_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("sled");
        let mut o = outbox(&db);
        append(&mut o, &db, "doc", true, 100);
        let mut batch = sled::Batch::default();
        o.deleted(&mut batch, "doc", 300);
        db.apply_batch(batch).expect("batch");
        assert!(o.marks.is_empty());
        let kinds: Vec<String> = claim(&mut o, &db, 300)
            .into_iter()
            .map(|c| c.entry.kind)
            .collect();
        assert_eq!(kinds, ["document.deleted", "document.deleted"]);
    }
}
