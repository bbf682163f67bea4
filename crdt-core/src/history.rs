//! Versions of a document: snapshots, rebuilding a past state, text diffs
//! and restores.
//!
//! A version is a Yjs snapshot: the state vector and the delete set at one
//! moment (a few hundred bytes). Quire keeps garbage collection off, so the
//! current document still holds every item that was ever visible, and the
//! state at a snapshot is rebuilt from the current document alone
//! ([`document_at`]).
//!
//! A restore ([`restore_update_v1`]) is one ordinary update, written by a
//! client id the document has never seen, that makes the live content equal
//! to the version's. Deleted Yjs items cannot be revived, so content that
//! came back is inserted again as copies (as Yjs's UndoManager does). Per
//! root kind:
//!
//! - `Text`: the plain-text difference ([`text_diff`]) is applied as
//!   deletions and insertions, so unchanged text keeps its items (and the
//!   cursors anchored in it). Formatting attributes and embeds of a Text
//!   root are not restored.
//! - `XmlFragment`: every live child is deleted and deep copies of the
//!   version's children (elements, attributes, formatted XML text) are
//!   inserted.
//! - `Array`: every live item is deleted and deep copies of the version's
//!   items are inserted.
//! - `Map`: keys absent from the version are removed; keys whose value
//!   differs (compared as JSON) are set to a deep copy of the version's.
//! - `XmlText` roots are left as they are (no editor binding writes them).
//!
//! A root that did not exist yet at the version is emptied.

use crate::document::{Document, DocumentError};
use crate::export::{self, RootKind};
use crate::validate::ValidationLimits;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use thiserror::Error;
use yrs::block::ClientID;
use yrs::branch::BranchPtr;
use yrs::types::xml::{XmlIn, XmlOut};
use yrs::types::AsPrelim;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{
    Array, ArrayRef, Doc, GetString, Map, MapRef, Out, ReadTxn, Snapshot, StateVector, Text,
    TextRef, Transact, Update, WriteTxn, XmlFragment, XmlFragmentRef,
};

/// Why a version could not be read, rebuilt or restored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The stored snapshot bytes do not decode.
    #[error("version snapshot does not decode: {0}")]
    Snapshot(String),
    /// The snapshot names a clock the document does not hold (it belongs
    /// to another document, or to a state this document never reached).
    #[error(
        "version is ahead of the document: client {client} at clock {clock}, document at {have}"
    )]
    AheadOfDocument {
        /// Client whose clock is missing.
        client: u64,
        /// Clock the snapshot names.
        clock: u32,
        /// Next clock the document expects of that client.
        have: u32,
    },
    /// The past state did not load into a document.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// yrs failed or panicked while encoding the past state or the restore.
    #[error("CRDT engine failed: {0}")]
    Engine(String),
}

/// The current state of `doc` as a version: a v1-encoded Yjs snapshot
/// (delete set, then state vector, as `Y.encodeSnapshot`).
pub fn snapshot_v1(doc: &Document) -> Vec<u8> {
    doc.yrs().transact().snapshot().encode_v1()
}

fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, HistoryError> {
    match catch_unwind(|| Snapshot::decode_v1(bytes)) {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(e)) => Err(HistoryError::Snapshot(e.to_string())),
        Err(_) => Err(HistoryError::Snapshot("decoder panicked".into())),
    }
}

/// The document as it was at `snapshot` (bytes of [`snapshot_v1`]), as a
/// new [`Document`] to export in any format.
///
/// Cost: one encoding of every item up to the snapshot's clocks, then a
/// load of that update (validated, like any stored update).
pub fn document_at(doc: &Document, snapshot: &[u8]) -> Result<Document, HistoryError> {
    let snapshot = decode_snapshot(snapshot)?;
    let have = doc.state_vector();
    // Clients at clock 0 hold nothing; yrs would underflow on them.
    let mut clocks = Vec::new();
    for (client, &clock) in snapshot.state_map.iter() {
        if clock == 0 {
            continue;
        }
        let held = have.get(client);
        if clock > held {
            return Err(HistoryError::AheadOfDocument {
                client: client.get(),
                clock,
                have: held,
            });
        }
        clocks.push((*client, clock));
    }
    let snapshot = Snapshot::new(StateVector::from_iter(clocks), snapshot.delete_set);
    let encoded = catch_unwind(AssertUnwindSafe(|| encode_at(doc, &snapshot)));
    let update = match encoded {
        Ok(Ok(update)) => update,
        Ok(Err(e)) => return Err(HistoryError::Engine(e)),
        Err(_) => return Err(HistoryError::Engine("snapshot encoding panicked".into())),
    };
    Ok(Document::load_with_limits(
        Some(&update),
        [],
        ValidationLimits::default(),
    )?)
}

/// A root name no client can write (names come from JSON strings, but the
/// scratch document below is never encoded as a whole nor kept).
const SPLIT_ROOT: &str = "\u{0}quire-history-split";

/// Every item of `doc` up to `snapshot`'s clocks, with its delete set, as a
/// v1 update.
///
/// yrs 0.28.1's `encode_state_from_snapshot` mis-encodes the last block of
/// a client when the snapshot's clock falls inside it and the block is
/// deleted items merged later (it trims the block, and the result no longer
/// decodes; found on the B4 trace). So the
/// state is loaded into a scratch document whose blocks are first split at
/// the snapshot's clocks (what yrs does before reading text at a snapshot,
/// `diff_range`): no block is trimmed then.
fn encode_at(doc: &Document, snapshot: &Snapshot) -> Result<Vec<u8>, String> {
    use yrs::types::text::YChange;
    let state = Update::decode_v1(&doc.encode_state_v1()).map_err(|e| e.to_string())?;
    let scratch = Doc::with_options(yrs::Options {
        skip_gc: true,
        ..yrs::Options::default()
    });
    let mut txn = scratch.transact_mut();
    txn.apply_update(state).map_err(|e| e.to_string())?;
    let split = txn.get_or_insert_text(SPLIT_ROOT);
    split.diff_range(&mut txn, Some(snapshot), None, YChange::identity);
    let mut encoder = EncoderV1::new();
    txn.encode_state_from_snapshot(snapshot, &mut encoder)
        .map_err(|e| e.to_string())?;
    Ok(encoder.to_vec())
}

/// One run of a text diff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "text")]
pub enum DiffRun {
    /// Text in both versions.
    Equal(String),
    /// Text only in the newer version.
    Insert(String),
    /// Text only in the older version.
    Delete(String),
}

/// Edit distance (characters inserted plus deleted) past which
/// [`text_diff`] stops looking for a minimal diff: Myers' algorithm keeps
/// O(D²) state, so this bounds it to a few megabytes.
pub const MAX_DIFF_EDITS: usize = 2000;

/// The difference from `old` to `new`, over Unicode scalar values: the
/// common prefix and suffix are split off, then Myers' O(ND) algorithm
/// finds a shortest edit script for the middle. When the middle needs more
/// than [`MAX_DIFF_EDITS`] edits, it is reported as one deletion and one
/// insertion instead (still exact, not minimal). Adjacent runs of the same
/// kind are merged; empty runs are left out.
pub fn text_diff(old: &str, new: &str) -> Vec<DiffRun> {
    let a: Vec<char> = old.chars().collect();
    let b: Vec<char> = new.chars().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops: Vec<(Op, char)> = Vec::with_capacity(a.len().max(b.len()));
    ops.extend(a[..prefix].iter().map(|&c| (Op::Equal, c)));
    match myers(am, bm, MAX_DIFF_EDITS) {
        Some(middle) => ops.extend(middle),
        None => {
            ops.extend(am.iter().map(|&c| (Op::Delete, c)));
            ops.extend(bm.iter().map(|&c| (Op::Insert, c)));
        }
    }
    ops.extend(a[a.len() - suffix..].iter().map(|&c| (Op::Equal, c)));
    let mut runs: Vec<DiffRun> = Vec::new();
    for (op, c) in ops {
        match (runs.last_mut(), op) {
            (Some(DiffRun::Equal(s)), Op::Equal)
            | (Some(DiffRun::Insert(s)), Op::Insert)
            | (Some(DiffRun::Delete(s)), Op::Delete) => s.push(c),
            (_, Op::Equal) => runs.push(DiffRun::Equal(c.to_string())),
            (_, Op::Insert) => runs.push(DiffRun::Insert(c.to_string())),
            (_, Op::Delete) => runs.push(DiffRun::Delete(c.to_string())),
        }
    }
    runs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    Insert,
    Delete,
}

/// Myers' shortest edit script from `a` to `b`, or `None` past `max_d`
/// edits. Keeps the frontier of every step to walk back the path.
fn myers(a: &[char], b: &[char], max_d: usize) -> Option<Vec<(Op, char)>> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = ((n + m) as usize).min(max_d) as isize;
    let offset = max + 1;
    let mut v = vec![0isize; (2 * max + 3) as usize];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = None;
    'outer: for d in 0..=max {
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let idx = (k + offset) as usize;
            let mut x = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
                v[idx + 1]
            } else {
                v[idx - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[idx] = x;
            if x >= n && y >= m {
                found = Some(d);
                break 'outer;
            }
            k += 2;
        }
    }
    let d_end = found?;
    // Walk back from (n, m) through the saved frontiers.
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let idx = (k + offset) as usize;
        let prev_k = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = v[(prev_k + offset) as usize];
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            ops.push((Op::Equal, a[x as usize]));
        }
        if x == prev_x {
            y -= 1;
            ops.push((Op::Insert, b[y as usize]));
        } else {
            x -= 1;
            ops.push((Op::Delete, a[x as usize]));
        }
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        ops.push((Op::Equal, a[x as usize]));
    }
    ops.reverse();
    Some(ops)
}

/// The plain text of root `name` in `doc` for a diff: the text of a Text
/// root, the XML string of an XmlFragment; `None` for other kinds. A root
/// the document does not have reads as empty.
pub fn diff_text(doc: &Document, name: &str) -> Option<String> {
    let txn = doc.yrs().transact();
    let Some((_, out)) = txn.root_refs().find(|(root, _)| *root == name) else {
        return Some(String::new());
    };
    let branch = export::branch_of(&out)?;
    match export::infer_kind(&txn, branch) {
        RootKind::Text | RootKind::XmlFragment => export::root_text(&txn, name),
        // An empty root has no kind; it reads as empty text.
        RootKind::Map if is_empty(&txn, branch) => Some(String::new()),
        _ => None,
    }
}

/// One v1 update that, applied to `live`, makes every root's content equal
/// to `version`'s (see the module doc for what each root kind keeps), or
/// `None` when they are already equal. Written by a fresh client id.
pub fn restore_update_v1(
    live: &Document,
    version: &Document,
) -> Result<Option<Vec<u8>>, HistoryError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| restore(live, version)));
    match outcome {
        Ok(result) => result,
        Err(_) => Err(HistoryError::Engine("restore panicked".into())),
    }
}

fn restore(live: &Document, version: &Document) -> Result<Option<Vec<u8>>, HistoryError> {
    let state = live.encode_state_v1();
    let update = Update::decode_v1(&state).map_err(|e| HistoryError::Engine(e.to_string()))?;
    let known = live.state_vector();
    let scratch = fresh_doc(&known);
    scratch
        .transact_mut()
        .apply_update(update)
        .map_err(|e| HistoryError::Engine(e.to_string()))?;
    let past = version.yrs().transact();
    let past_roots: Vec<(String, BranchPtr)> = past
        .root_refs()
        .filter_map(|(name, out)| Some((name.to_owned(), export::branch_of(&out)?)))
        .collect();
    let names: BTreeSet<String> = {
        let txn = scratch.transact();
        txn.root_refs()
            .map(|(name, _)| name.to_owned())
            .chain(past_roots.iter().map(|(name, _)| name.clone()))
            .collect()
    };
    let mut txn = scratch.transact_mut();
    for name in names {
        let old = past_roots.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
        let current = txn
            .root_refs()
            .find(|(n, _)| *n == name)
            .and_then(|(_, out)| export::branch_of(&out));
        let old_kind = old
            .filter(|b| !is_empty(&past, *b))
            .map(|b| export::infer_kind(&past, b));
        let current_kind = current
            .filter(|b| !is_empty(&txn, *b))
            .map(|b| export::infer_kind(&txn, b));
        let Some(kind) = old_kind.or(current_kind) else {
            continue;
        };
        match kind {
            RootKind::Text => {
                let target = old
                    .map(|b| TextRef::from(b).get_string(&past))
                    .unwrap_or_default();
                let text = txn.get_or_insert_text(name.as_str());
                let now = text.get_string(&txn);
                let mut at = 0u32;
                for run in text_diff(&now, &target) {
                    match run {
                        DiffRun::Equal(s) => at += s.len() as u32,
                        DiffRun::Delete(s) => text.remove_range(&mut txn, at, s.len() as u32),
                        DiffRun::Insert(s) => {
                            text.insert(&mut txn, at, &s);
                            at += s.len() as u32;
                        }
                    }
                }
            }
            RootKind::XmlFragment => {
                let copies: Vec<XmlIn> = old
                    .map(|b| {
                        export::sequence_children(&past, b)
                            .0
                            .into_iter()
                            .filter_map(|child| XmlOut::try_from(child).ok())
                            .map(|child| xml_prelim(&past, &child))
                            .collect()
                    })
                    .unwrap_or_default();
                let fragment: XmlFragmentRef = txn.get_or_insert_xml_fragment(name.as_str());
                if same_json(&past, old, &txn, current) {
                    continue;
                }
                let len = fragment.len(&txn);
                if len > 0 {
                    fragment.remove_range(&mut txn, 0, len);
                }
                for (i, copy) in copies.into_iter().enumerate() {
                    fragment.insert(&mut txn, i as u32, copy);
                }
            }
            RootKind::Array => {
                let copies: Vec<yrs::In> = old
                    .map(|b| {
                        ArrayRef::from(b)
                            .iter(&past)
                            .map(|out| out.as_prelim(&past))
                            .collect()
                    })
                    .unwrap_or_default();
                if same_json(&past, old, &txn, current) {
                    continue;
                }
                let array: ArrayRef = txn.get_or_insert_array(name.as_str());
                let len = array.len(&txn);
                if len > 0 {
                    array.remove_range(&mut txn, 0, len);
                }
                for (i, copy) in copies.into_iter().enumerate() {
                    array.insert(&mut txn, i as u32, copy);
                }
            }
            RootKind::Map => {
                let wanted: Vec<(String, Out)> = old
                    .map(|b| {
                        MapRef::from(b)
                            .iter(&past)
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect()
                    })
                    .unwrap_or_default();
                let map: MapRef = txn.get_or_insert_map(name.as_str());
                let present: Vec<String> = map.keys(&txn).map(str::to_owned).collect();
                for key in present {
                    if !wanted.iter().any(|(k, _)| *k == key) {
                        map.remove(&mut txn, &key);
                    }
                }
                for (key, value) in wanted {
                    let before = export::value_json(&past, &value);
                    let now = map.get(&txn, &key).map(|v| export::value_json(&txn, &v));
                    if now.as_ref() != Some(&before) {
                        let copy = value.as_prelim(&past);
                        map.insert(&mut txn, key, copy);
                    }
                }
            }
            RootKind::XmlText => {}
        }
    }
    let update = txn.encode_update_v1();
    drop(txn);
    // An update that changes nothing still carries an empty delete set.
    if scratch.transact().state_vector() == known && !deletes_anything(&update) {
        return Ok(None);
    }
    Ok(Some(update))
}

fn deletes_anything(update: &[u8]) -> bool {
    Update::decode_v1(update)
        .map(|u| !u.delete_set().is_empty())
        .unwrap_or(true)
}

fn same_json<A: ReadTxn, B: ReadTxn>(
    a: &A,
    a_root: Option<BranchPtr>,
    b: &B,
    b_root: Option<BranchPtr>,
) -> bool {
    let left = a_root.map(|r| export::value_json(a, &Out::UndefinedRef(r)));
    let right = b_root.map(|r| export::value_json(b, &Out::UndefinedRef(r)));
    left.unwrap_or(serde_json::Value::Null) == right.unwrap_or(serde_json::Value::Null)
}

fn is_empty<T: ReadTxn>(txn: &T, branch: BranchPtr) -> bool {
    branch.block_len == 0 && MapRef::from(branch).iter(txn).next().is_none()
}

fn xml_prelim<T: ReadTxn>(txn: &T, node: &XmlOut) -> XmlIn {
    match node {
        XmlOut::Element(e) => XmlIn::from(e.as_prelim(txn)),
        XmlOut::Fragment(f) => XmlIn::from(f.as_prelim(txn)),
        XmlOut::Text(t) => XmlIn::from(t.as_prelim(txn)),
    }
}

/// A garbage-collection-free document whose client id the live document
/// has never used, so the restore's items cannot collide with any client's.
fn fresh_doc(known: &StateVector) -> Doc {
    loop {
        let doc = Doc::with_options(yrs::Options {
            skip_gc: true,
            ..yrs::Options::default()
        });
        let id: ClientID = doc.client_id();
        if known.get(&id) == 0 {
            return doc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{XmlElementPrelim, XmlTextPrelim};

    /// A live document fed by a client doc, as the server's is.
    struct Session {
        client: Doc,
        live: Document,
    }

    impl Session {
        fn new() -> Self {
            Session {
                client: Doc::with_options(yrs::Options {
                    skip_gc: true,
                    ..yrs::Options::default()
                }),
                live: Document::new(),
            }
        }

        fn edit(&mut self, f: impl FnOnce(&mut yrs::TransactionMut)) {
            let mut txn = self.client.transact_mut();
            f(&mut txn);
            let update = txn.encode_update_v1();
            drop(txn);
            self.live.apply_update_v1(&update).expect("applies");
        }

        /// Restores `snapshot` and gives the client the restore.
        fn restore(&mut self, snapshot: &[u8]) -> Option<Vec<u8>> {
            let version = document_at(&self.live, snapshot).expect("rebuilds");
            let update = restore_update_v1(&self.live, &version).expect("restores")?;
            self.live.apply_update_v1(&update).expect("restore applies");
            self.client
                .transact_mut()
                .apply_update(Update::decode_v1(&update).expect("decodes"))
                .expect("client applies");
            Some(update)
        }
    }

    #[test]
    fn a_version_rebuilds_the_text_as_it_was_then() {
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("t");
        s.edit(|txn| text.insert(txn, 0, "hello world"));
        let v1 = snapshot_v1(&s.live);
        s.edit(|txn| text.remove_range(txn, 0, 6));
        s.edit(|txn| text.insert(txn, 5, "!"));
        assert_eq!(s.live.root_text("t").as_deref(), Some("world!"));
        let past = document_at(&s.live, &v1).expect("rebuilds");
        assert_eq!(past.root_text("t").as_deref(), Some("hello world"));
        assert_eq!(past.to_json(), serde_json::json!({ "t": "hello world" }));
    }

    #[test]
    fn a_version_inside_a_block_that_grew_later_rebuilds() {
        // Each snapshot's clock falls inside a block that later typing by
        // the same client merged into, then deleted (yrs's own snapshot
        // encoding breaks there).
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("t");
        let mut versions = Vec::new();
        for word in ["grüße ", "aus ", "Köln ", "😀 ", "und ", "mehr"] {
            s.edit(|txn| {
                let end = text.len(txn);
                text.insert(txn, end, word);
            });
            versions.push((snapshot_v1(&s.live), s.live.root_text("t")));
        }
        // Deleted later, across the boundaries of several versions: yrs
        // merges the deleted items into one block.
        s.edit(|txn| text.remove_range(txn, 0, 2));
        s.edit(|txn| text.remove_range(txn, 8, 12));
        for (snapshot, then) in versions {
            let past = document_at(&s.live, &snapshot).expect("rebuilds");
            assert_eq!(past.root_text("t"), then);
        }
    }

    #[test]
    fn a_snapshot_of_another_document_is_refused() {
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("t");
        s.edit(|txn| text.insert(txn, 0, "abc"));
        let snapshot = snapshot_v1(&s.live);
        let empty = Document::new();
        assert!(matches!(
            document_at(&empty, &snapshot),
            Err(HistoryError::AheadOfDocument {
                clock: 3,
                have: 0,
                ..
            })
        ));
        assert!(matches!(
            document_at(&s.live, &[0xff, 0xff, 0xff]),
            Err(HistoryError::Snapshot(_))
        ));
    }

    #[test]
    fn text_diffs_are_minimal_runs_of_characters() {
        use DiffRun::*;
        let cases: Vec<(&str, &str, Vec<DiffRun>)> = vec![
            ("", "", vec![]),
            ("abc", "abc", vec![Equal("abc".into())]),
            ("", "abc", vec![Insert("abc".into())]),
            ("abc", "", vec![Delete("abc".into())]),
            (
                "hello world",
                "hello brave world",
                vec![
                    Equal("hello ".into()),
                    Insert("brave ".into()),
                    Equal("world".into()),
                ],
            ),
            (
                "kitten",
                "sitting",
                vec![
                    Delete("k".into()),
                    Insert("s".into()),
                    Equal("itt".into()),
                    Delete("e".into()),
                    Insert("i".into()),
                    Equal("n".into()),
                    Insert("g".into()),
                ],
            ),
            (
                "größe 😀",
                "grüße 😀!",
                vec![
                    Equal("gr".into()),
                    Delete("ö".into()),
                    Insert("ü".into()),
                    Equal("ße 😀".into()),
                    Insert("!".into()),
                ],
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(text_diff(old, new), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_diff_past_the_edit_bound_is_still_exact() {
        let old: String = (0..3000)
            .map(|i| if i % 2 == 0 { 'a' } else { 'b' })
            .collect();
        let new: String = (0..3000)
            .map(|i| if i % 3 == 0 { 'a' } else { 'c' })
            .collect();
        let runs = text_diff(&old, &new);
        let (mut rebuilt_old, mut rebuilt_new) = (String::new(), String::new());
        for run in &runs {
            match run {
                DiffRun::Equal(s) => {
                    rebuilt_old.push_str(s);
                    rebuilt_new.push_str(s);
                }
                DiffRun::Delete(s) => rebuilt_old.push_str(s),
                DiffRun::Insert(s) => rebuilt_new.push_str(s),
            }
        }
        assert_eq!((rebuilt_old, rebuilt_new), (old, new));
    }

    #[test]
    fn restoring_a_version_makes_every_root_kind_equal_to_it() {
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("text");
        let map = s.client.get_or_insert_map("map");
        let array = s.client.get_or_insert_array("array");
        let xml = s.client.get_or_insert_xml_fragment("xml");
        s.edit(|txn| {
            text.insert(txn, 0, "the quick fox");
            map.insert(txn, "keep", 1);
            map.insert(txn, "change", "before");
            array.push_back(txn, 1);
            array.push_back(txn, "two");
            let p = xml.push_back(txn, XmlElementPrelim::empty("p"));
            p.push_back(txn, XmlTextPrelim::new("para"));
        });
        let v1 = snapshot_v1(&s.live);
        let then = s.live.to_json();
        s.edit(|txn| {
            text.remove_range(txn, 4, 6);
            text.insert(txn, 0, ">> ");
            map.insert(txn, "change", "after");
            map.insert(txn, "added", true);
            map.remove(txn, "keep");
            array.remove_range(txn, 0, 1);
            array.push_back(txn, 3);
            xml.push_back(txn, XmlElementPrelim::empty("h1"));
        });
        s.edit(|txn| {
            let later = txn.get_or_insert_text("later");
            later.insert(txn, 0, "new root");
        });
        assert_ne!(s.live.to_json(), then);
        s.restore(&v1).expect("something to restore");
        let mut want = then.clone();
        // A root emptied of everything exports as an empty map.
        want["later"] = serde_json::json!({});
        assert_eq!(s.live.to_json(), want);
        // The client that received the restore agrees.
        let client_doc = Document::load(
            Some(
                &s.client
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            ),
            [],
        )
        .expect("loads");
        assert_eq!(client_doc.to_json(), want);
    }

    #[test]
    fn restoring_keeps_unchanged_text_items_and_a_restore_can_be_undone() {
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("t");
        s.edit(|txn| text.insert(txn, 0, "one two three"));
        let v1 = snapshot_v1(&s.live);
        s.edit(|txn| text.remove_range(txn, 3, 4));
        let v2 = snapshot_v1(&s.live);
        let update = s.restore(&v1).expect("restores");
        assert_eq!(s.live.root_text("t").as_deref(), Some("one two three"));
        // Only " two" is inserted again: the update is small.
        assert!(update.len() < 40, "{} bytes", update.len());
        let v3 = snapshot_v1(&s.live);
        s.restore(&v2).expect("undoes the restore");
        assert_eq!(s.live.root_text("t").as_deref(), Some("one three"));
        s.restore(&v3).expect("redoes it");
        assert_eq!(s.live.root_text("t").as_deref(), Some("one two three"));
        // Restoring the state the document is in changes nothing.
        assert_eq!(s.restore(&snapshot_v1(&s.live)), None);
    }

    #[test]
    fn diff_text_reads_text_and_xml_roots_only() {
        let mut s = Session::new();
        let text = s.client.get_or_insert_text("t");
        let map = s.client.get_or_insert_map("m");
        s.edit(|txn| {
            text.insert(txn, 0, "abc");
            map.insert(txn, "k", 1);
        });
        assert_eq!(diff_text(&s.live, "t").as_deref(), Some("abc"));
        assert_eq!(diff_text(&s.live, "missing").as_deref(), Some(""));
        assert_eq!(diff_text(&s.live, "m"), None);
    }
}
