//! A Yjs document that accepts untrusted updates.
//!
//! **Invariant:** an update that fails to decode or apply leaves the document
//! exactly as it was, or the error is [`DocumentError::Poisoned`] and the
//! owner reloads the document from storage.
//!
//! yrs 0.28.1 aborts the whole process (stack overflow, impossible
//! allocation) on some crafted inputs, which `catch_unwind` cannot stop. So
//! an update goes through three guards:
//!
//! 1. [`crate::validate`] walks its bytes before yrs sees them: shape,
//!    declared lengths, nesting of values, clocks, and a budget of structs.
//! 2. `nesting.rs` bounds how deeply shared types nest, before and
//!    after integrating, since yrs deletes nested types by recursion.
//! 3. An update that starts past what the document holds of a client is
//!    held until what comes before it arrives (as Yjs keeps pending
//!    structs), because yrs would integrate it behind a gap, a state in
//!    which a later overlapping update makes it read freed memory.
//! 4. Decoding and integration run under `catch_unwind`, for inputs that
//!    make yrs panic.
//!
//! [`Document::verify_roundtrip`] and [`Document::verify_since`] check that
//! what the document holds still encodes into an update that loads again.

use crate::export;
use crate::nesting::{self, Nesting, Recorder};
use crate::validate::{self, ValidationError, ValidationLimits, DEPTH_CEILING};
use std::panic::{catch_unwind, AssertUnwindSafe};
use thiserror::Error;
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Why an update was not applied, or why a document cannot be trusted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// The update is malformed or over a limit; nothing was applied.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The update would nest shared types deeper than allowed; nothing was
    /// applied.
    #[error("update nests shared types {depth} deep, more than {max}")]
    TypesTooDeep {
        /// Depth the update's types would reach: the chain they form on
        /// their own, or an upper bound counted from the root.
        depth: usize,
        /// The `max_type_depth` in force, capped at [`DEPTH_CEILING`].
        max: usize,
    },
    /// yrs's decoder refused, or panicked on, bytes the validator accepted;
    /// nothing was applied.
    #[error("update does not decode: {0}")]
    Decode(String),
    /// yrs refused the update before changing anything.
    #[error("update does not apply: {0}")]
    Apply(String),
    /// yrs panicked, failed halfway, or integrated the update into a state
    /// that must not be kept (shared types nested deeper than allowed). The
    /// in-memory state can no longer be trusted; the owner must not persist
    /// the update and must reload the document from storage.
    #[error("update crashed the CRDT engine while applying; document must be reloaded")]
    Poisoned,
    /// The update starts past what the document holds of a client (or
    /// leaves a hole in it), and the document already keeps
    /// [`MAX_HELD_BYTES`] of such updates. Such updates are held back, not
    /// given to yrs: it would integrate them behind a gap, a state in which
    /// a later overlapping update makes it read freed memory.
    #[error("update holds clock {clock} of client {client} but the document ends at {have}")]
    OutOfOrder {
        /// The client whose earlier clocks are missing.
        client: u64,
        /// Where the update starts (or resumes, after a skip) for it.
        clock: u32,
        /// The next clock of that client the document expects.
        have: u32,
    },
    /// The document does not encode into an update that loads back to the
    /// same state. The owner must not persist it and should reload it.
    #[error("document does not round-trip: {0}")]
    Roundtrip(String),
}

impl DocumentError {
    /// Short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DocumentError::Invalid(e) => e.reason(),
            DocumentError::TypesTooDeep { .. } => "types_too_deep",
            DocumentError::OutOfOrder { .. } => "out_of_order",
            DocumentError::Decode(_) => "decode",
            DocumentError::Apply(_) => "apply",
            DocumentError::Poisoned => "poisoned",
            DocumentError::Roundtrip(_) => "roundtrip",
        }
    }
}

/// A yrs document fed untrusted updates, behind the guards of the module
/// doc.
pub struct Document {
    doc: Doc,
    /// Applied to every update given to [`Document::apply_update_v1`].
    limits: ValidationLimits,
    nesting: Nesting,
    /// Updates that start past what the document holds of a client, kept
    /// until what comes before arrives (see [`DocumentError::OutOfOrder`]).
    held: Vec<Vec<u8>>,
    held_bytes: usize,
}

/// Bytes of out-of-order updates a document keeps before refusing more.
pub const MAX_HELD_BYTES: usize = 64 << 20;

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("state_vector", &self.state_vector())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A state vector without clients at clock 0 (which hold nothing).
fn known(sv: &StateVector) -> Vec<(u64, u32)> {
    let mut entries: Vec<(u64, u32)> = sv
        .iter()
        .filter(|(_, &clock)| clock > 0)
        .map(|(client, &clock)| (client.get(), clock))
        .collect();
    entries.sort_unstable();
    entries
}

impl Drop for Document {
    /// yrs 0.28.1 gives an integrated subdocument item a strong reference
    /// to its parent document: a cycle that leaks the whole document when
    /// it is dropped. Deleting those items lets garbage collection replace
    /// their content, which breaks the cycle. The document is going away,
    /// so changing it costs nothing.
    fn drop(&mut self) {
        if self.doc.transact().subdocs().next().is_none() {
            return;
        }
        let doc = &self.doc;
        let _ = catch_unwind(AssertUnwindSafe(|| export::release_subdocuments(doc)));
    }
}

/// Where each client section of an update starts, or, when it leaves a hole
/// with a skip struct, the clock it resumes at: all must already be known.
#[derive(Default)]
struct Layout {
    sections: Vec<(u64, u32)>,
}

impl validate::ItemSink for Layout {
    fn section(&mut self, client: u64, clock: u32) {
        self.sections.push((client, clock));
    }

    fn skip(&mut self, client: u64, clock: u32, len: u32) {
        if let Some(last) = self.sections.last_mut() {
            if last.0 == client {
                last.1 = last.1.max(clock + len);
            }
        }
    }
}

/// Decodes a v1 update without touching any document, after validating it
/// with the default [`ValidationLimits`].
pub fn decode_update_v1(bytes: &[u8]) -> Result<Update, DocumentError> {
    validate::validate_update_v1(bytes, &ValidationLimits::default())?;
    decode_validated(bytes)
}

/// Merges stored v1 updates into one, without a document: what a shared
/// store keeps for a batch of one document's updates, or for a snapshot and
/// the updates after it. Each part is checked for shape first (not held to
/// the per-message budgets: a snapshot is larger than any message), and
/// yrs's merge is guarded against panics. Merging is idempotent: a part
/// given twice is in the result once.
pub fn merge_updates_v1<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, DocumentError> {
    let limits = ValidationLimits {
        max_structs: usize::MAX,
        max_delete_ranges: usize::MAX,
        ..ValidationLimits::default()
    };
    let parts: Vec<&[u8]> = parts.into_iter().collect();
    for part in &parts {
        validate::validate_update_v1(part, &limits)?;
    }
    match catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(parts))) {
        Ok(Ok(merged)) => Ok(merged),
        Ok(Err(e)) => Err(DocumentError::Decode(e.to_string())),
        Err(_) => Err(DocumentError::Decode("merge panicked".into())),
    }
}

/// yrs's decoder, for bytes the validator accepted.
fn decode_validated(bytes: &[u8]) -> Result<Update, DocumentError> {
    match catch_unwind(|| Update::decode_v1(bytes)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(DocumentError::Decode(e.to_string())),
        Err(_) => Err(DocumentError::Decode("decoder panicked".into())),
    }
}

impl Document {
    /// An empty document with the limits for updates from clients.
    pub fn new() -> Self {
        Self::with_limits(ValidationLimits::default())
    }

    /// A document whose updates must stay within `limits`.
    pub fn with_limits(limits: ValidationLimits) -> Self {
        Document {
            // Garbage collection off: a crafted update (fuzz/corpus/
            // protocol_decode/regression-gc-use-after-free) makes yrs 0.28.1's
            // collector free an item a map still points to. Deleted content
            // stays in memory and snapshots instead, as with y-websocket's
            // `gc: false`.
            doc: Doc::with_options(yrs::Options {
                skip_gc: true,
                ..yrs::Options::default()
            }),
            limits,
            nesting: Nesting::default(),
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// Rebuilds a document from a snapshot and the updates logged after it,
    /// with the default limits for the updates that follow.
    pub fn load<'a>(
        snapshot: Option<&'a [u8]>,
        log: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DocumentError> {
        Self::load_with_limits(snapshot, log, ValidationLimits::default())
    }

    /// Rebuilds a document from stored updates, which are checked for shape
    /// with `limits` but not held to its per-update budgets (a snapshot holds
    /// more than any one message); `limits` then applies to new updates.
    pub fn load_with_limits<'a>(
        snapshot: Option<&'a [u8]>,
        log: impl IntoIterator<Item = &'a [u8]>,
        limits: ValidationLimits,
    ) -> Result<Self, DocumentError> {
        Document::load_onto(
            Document::with_limits(limits),
            snapshot.into_iter().chain(log),
        )
    }

    /// Rebuilds a document from a snapshot that Quire encoded itself and
    /// verified with [`Document::verify_roundtrip`] before storing it, and
    /// the untrusted updates logged after it.
    ///
    /// The snapshot skips the validation pass (13 % of a cold load): its
    /// bytes were validated when they were written, and the store checksums
    /// them. yrs's decoding and integration stay guarded against panics.
    /// The log is checked exactly as [`Document::load_with_limits`] does.
    pub fn load_stored<'a>(
        snapshot: Option<&'a [u8]>,
        log: impl IntoIterator<Item = &'a [u8]>,
        limits: ValidationLimits,
    ) -> Result<Self, DocumentError> {
        let mut doc = Document::with_limits(limits);
        if let Some(snapshot) = snapshot {
            doc.integrate_own_snapshot(snapshot)?;
        }
        let mut doc = Document::load_onto(doc, log)?;
        doc.limits = limits;
        Ok(doc)
    }

    fn load_onto<'a>(
        mut doc: Document,
        log: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DocumentError> {
        let limits = doc.limits;
        doc.limits = ValidationLimits {
            max_structs: usize::MAX,
            max_delete_ranges: usize::MAX,
            ..limits
        };
        for update in log {
            doc.apply_update_v1(update)?;
        }
        doc.limits = limits;
        Ok(doc)
    }

    fn integrate_own_snapshot(&mut self, bytes: &[u8]) -> Result<(), DocumentError> {
        let update = decode_validated(bytes)?;
        let doc = &self.doc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(update)
                .map_err(|e| DocumentError::Apply(e.to_string()))?;
            Ok(ReadTxn::store(&txn).pending_update().is_some())
        }));
        match applied {
            Ok(Ok(pending)) => {
                // Which pending structs are types is unknown without the
                // validation pass: assume some may be.
                self.nesting.pending_types = pending;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DocumentError::Poisoned),
        }
    }

    /// Applies a v1 update from an untrusted source. Returns whether it
    /// changed anything: an update the document already holds (a
    /// reconnecting client's step 2 repeats the whole delete set) is not
    /// worth logging or relaying. Updates kept pending for missing
    /// dependencies count as changes, since they must be kept.
    ///
    /// Cost: one validation pass over the bytes, a second one when the
    /// update creates shared types, then yrs's decoding and integration.
    pub fn apply_update_v1(&mut self, bytes: &[u8]) -> Result<bool, DocumentError> {
        let mut layout = Layout::default();
        let summary = validate::validate_with(bytes, &self.limits, &mut layout)?;
        if let Some((client, clock, have)) = self.missing_before(&layout) {
            // Like Yjs's pending structs: kept, and handed to peers by diff_v1.
            if self.held_bytes + bytes.len() > MAX_HELD_BYTES {
                return Err(DocumentError::OutOfOrder {
                    client,
                    clock,
                    have,
                });
            }
            self.held_bytes += bytes.len();
            self.held.push(bytes.to_vec());
            return Ok(true);
        }
        let changed = self.integrate(bytes, summary)?;
        if changed && !self.held.is_empty() {
            self.release_held()?;
        }
        Ok(changed)
    }

    /// The first section of `layout` that starts past what the document
    /// holds: (client, clock, clock held).
    fn missing_before(&self, layout: &Layout) -> Option<(u64, u32, u32)> {
        if layout.sections.is_empty() {
            return None;
        }
        let have = self.state_vector();
        layout.sections.iter().find_map(|&(client, clock)| {
            let known = have.get(&ClientID::new(client));
            (clock > known).then_some((client, clock, known))
        })
    }

    /// Applies held updates that no longer skip anything, until none does.
    /// One refused now is dropped; one that poisons the document poisons it.
    fn release_held(&mut self) -> Result<(), DocumentError> {
        loop {
            let mut progress = false;
            let mut i = 0;
            while i < self.held.len() {
                let mut layout = Layout::default();
                let ready = validate::validate_with(&self.held[i], &self.limits, &mut layout)
                    .ok()
                    .filter(|_| self.missing_before(&layout).is_none());
                match ready {
                    Some(summary) => {
                        let bytes = self.held.swap_remove(i);
                        self.held_bytes -= bytes.len();
                        match self.integrate(&bytes, summary) {
                            Ok(changed) => progress |= changed,
                            Err(DocumentError::Poisoned) => return Err(DocumentError::Poisoned),
                            Err(_) => {}
                        }
                    }
                    None => i += 1,
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Hands a validated update whose clocks follow the document's to yrs.
    fn integrate(
        &mut self,
        bytes: &[u8],
        summary: validate::UpdateSummary,
    ) -> Result<bool, DocumentError> {
        let max_type_depth = self.limits.max_type_depth.min(DEPTH_CEILING);
        let plan = if summary.type_items > 0 || self.nesting.pending_types {
            Some(self.plan(bytes, max_type_depth)?)
        } else {
            None
        };
        let update = decode_validated(bytes)?;
        let doc = &self.doc;
        let nesting = &mut self.nesting;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            if let Err(e) = txn.apply_update(update) {
                // yrs stops at the first bad item; what came before stays.
                let touched = !txn.insert_set().is_empty() || !txn.delete_set().is_empty();
                return Err(if touched {
                    DocumentError::Poisoned
                } else {
                    DocumentError::Apply(e.to_string())
                });
            }
            if let Some(plan) = &plan {
                nesting
                    .check(&txn, plan, max_type_depth)
                    .map_err(|_| DocumentError::Poisoned)?;
            }
            let pending = ReadTxn::store(&txn).pending_update().is_some();
            let changed = !txn.insert_set().is_empty()
                || !txn.delete_set().is_empty()
                || txn.has_missing_updates();
            Ok((changed, pending))
        }));
        match applied {
            Ok(Ok((changed, pending))) => {
                self.nesting.pending_types =
                    pending && (summary.type_items > 0 || self.nesting.pending_types);
                Ok(changed)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DocumentError::Poisoned),
        }
    }

    /// Relates the update's items to those yrs holds pending, and refuses an
    /// update that could build a chain of types too deep on its own.
    fn plan(
        &mut self,
        bytes: &[u8],
        max_type_depth: usize,
    ) -> Result<nesting::Plan, DocumentError> {
        let mut pending = Recorder::default();
        if self.nesting.pending_types {
            let txn = self.doc.transact();
            if let Some(p) = ReadTxn::store(&txn).pending_update() {
                let encoded = p.update.encode_v1();
                let stored = ValidationLimits {
                    max_structs: usize::MAX,
                    max_delete_ranges: usize::MAX,
                    ..self.limits
                };
                // Structs yrs keeps were validated on the way in.
                let reencoded = validate::validate_with(&encoded, &stored, &mut pending);
                debug_assert!(
                    reencoded.is_ok(),
                    "pending structs re-encode: {reencoded:?}"
                );
            }
        }
        let mut update = Recorder::default();
        validate::validate_with(bytes, &self.limits, &mut update)?;
        let pending_len = pending.0.len();
        let mut records = pending.0;
        records.extend(update.0);
        let plan = nesting::plan(records, pending_len);
        if plan.relative_depth > max_type_depth {
            return Err(DocumentError::TypesTooDeep {
                depth: plan.relative_depth,
                max: max_type_depth,
            });
        }
        let txn = self.doc.transact();
        self.nesting
            .precheck(&txn, &plan, max_type_depth)
            .map_err(|e| DocumentError::TypesTooDeep {
                depth: e.depth,
                max: max_type_depth,
            })?;
        drop(txn);
        Ok(plan)
    }

    /// Checks that the whole document still encodes into a v1 update that
    /// validates, decodes and loads into a document holding at least the
    /// same state vector.
    ///
    /// Cost: O(document): one full encoding, one validation pass, one decode
    /// and one integration into a scratch document (about what
    /// [`Document::load`] costs), with about twice the encoded size in
    /// memory. Worth it before persisting a compacted snapshot; after each
    /// update, [`Document::verify_since`] is the cheap check.
    pub fn verify_roundtrip(&self) -> Result<(), DocumentError> {
        let encoded = self.encode_state_v1();
        let reloaded = Document::load_with_limits(Some(&encoded), [], self.limits)
            .map_err(|e| DocumentError::Roundtrip(e.to_string()))?;
        // Structs yrs kept pending may integrate on reload (it retries
        // pending structs only when their client moves), never the reverse.
        let reloaded_sv = reloaded.state_vector();
        if let Some((client, clock)) = known(&self.state_vector())
            .into_iter()
            .find(|&(client, clock)| reloaded_sv.get(&ClientID::new(client)) < clock)
        {
            return Err(DocumentError::Roundtrip(format!(
                "client {client} reloads to clock {} instead of {clock}",
                reloaded_sv.get(&ClientID::new(client))
            )));
        }
        Ok(())
    }

    /// Checks that what was added since `before` (typically the state
    /// vector taken just before [`Document::apply_update_v1`]) still encodes
    /// into a v1 update that validates and decodes: the structs of the
    /// clients that advanced, plus the delete set, which every diff carries.
    ///
    /// Cost: O(size of the change + size of the delete set); nothing is
    /// integrated.
    pub fn verify_since(&self, before: &StateVector) -> Result<(), DocumentError> {
        let diff = self.diff_v1(before);
        let stored = ValidationLimits {
            max_structs: usize::MAX,
            max_delete_ranges: usize::MAX,
            ..self.limits
        };
        validate::validate_update_v1(&diff, &stored)
            .map_err(|e| DocumentError::Roundtrip(e.to_string()))?;
        decode_validated(&diff)
            .map(drop)
            .map_err(|e| DocumentError::Roundtrip(e.to_string()))
    }

    /// The next clock expected of each client: what is integrated, not
    /// what waits (held updates, yrs's pending structs).
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// `Y.encodeStateVector(doc)`.
    pub fn state_vector_v1(&self) -> Vec<u8> {
        self.state_vector().encode_v1()
    }

    /// `Y.encodeStateAsUpdate(doc)`, yrs's pending structs included, the
    /// held out-of-order updates not: merged in, they would leave a hole
    /// that makes the whole snapshot wait for what comes before it. This is
    /// what to persist; [`Document::held_updates`] are kept apart.
    pub fn encode_state_v1(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Updates kept until what comes before them arrives, oldest first.
    pub fn held_updates(&self) -> &[Vec<u8>] {
        &self.held
    }

    /// `Y.encodeStateAsUpdateV2(doc)`, like [`Document::encode_state_v1`].
    pub fn encode_state_v2(&self) -> Vec<u8> {
        match Update::decode_v1(&self.encode_state_v1()) {
            Ok(update) => update.encode_v2(),
            Err(_) => self.doc.transact().encode_diff_v2(&StateVector::default()),
        }
    }

    /// What a peer holding `sv` lacks, as a v1 update, with the updates
    /// held for what comes before them (as Yjs includes pending structs).
    pub fn diff_v1(&self, sv: &StateVector) -> Vec<u8> {
        let diff = self.doc.transact().encode_state_as_update_v1(sv);
        if self.held.is_empty() {
            return diff;
        }
        let parts = std::iter::once(diff.as_slice()).chain(self.held.iter().map(Vec::as_slice));
        match catch_unwind(AssertUnwindSafe(|| yrs::merge_updates_v1(parts))) {
            Ok(Ok(merged)) => merged,
            _ => diff,
        }
    }

    /// What a peer holding `sv` lacks, as a v2 update.
    ///
    /// Encoded as v1 and converted: when yrs 0.28.1 writes v2 straight from
    /// a document that holds a gap (a skip, left by an update that arrived
    /// before its predecessors), it puts the skip's length in the wrong
    /// stream, so the result does not decode, and it panics when it also
    /// holds pending deletions. Its encoder for a decoded update is right.
    pub fn diff_v2(&self, sv: &StateVector) -> Vec<u8> {
        let v1 = self.diff_v1(sv);
        match Update::decode_v1(&v1) {
            Ok(update) => update.encode_v2(),
            // Unreachable while the v1 round trip holds; keep yrs's answer.
            Err(_) => self.doc.transact().encode_diff_v2(sv),
        }
    }

    /// Whether the document already holds everything in a v1 update: every
    /// struct at or below its state vector, and the update's delete set
    /// within its own (Yjs `snapshotContainsUpdate`). A read-only Hocuspocus
    /// session's SyncStep2 is acknowledged with this
    /// ([`crate::hocuspocus::session::Effect::AckIfContained`]); a client
    /// that synced a document with deletions repeats its whole delete set.
    pub fn contains_update_v1(&self, bytes: &[u8]) -> Result<bool, DocumentError> {
        validate::validate_update_v1(bytes, &self.limits)?;
        let update = decode_validated(bytes)?;
        let snapshot = self.doc.transact().snapshot();
        let structs_held = update.insertions(true).iter().all(|(client, ranges)| {
            let have = snapshot.state_map.get(client);
            ranges.iter().all(|range| range.end <= have)
        });
        let deletions_held = update
            .delete_set()
            .diff(&snapshot.delete_set)
            .iter()
            .all(|(_, ranges)| ranges.iter().all(|range| range.is_empty()));
        Ok(structs_held && deletions_held)
    }

    /// This node's state for cluster healing: the state vector and a digest
    /// of the delete set (deletions do not advance a state vector).
    pub fn peer_state(&self, updated_at_ms: u64) -> crate::cluster::PeerState {
        let txn = self.doc.transact();
        let snapshot = txn.snapshot();
        crate::cluster::PeerState {
            state_vector: snapshot.state_map,
            delete_set_digest: crate::cluster::delete_set_digest(&snapshot.delete_set),
            updated_at_ms,
        }
    }

    /// Every root as JSON: Text as string, Map as object, Array as array,
    /// XmlFragment as its XML string.
    pub fn to_json(&self) -> serde_json::Value {
        export::roots_to_json(&self.doc.transact())
    }

    /// Plain text of one root, if the document has a root of that name.
    pub fn root_text(&self, name: &str) -> Option<String> {
        export::root_text(&self.doc.transact(), name)
    }

    /// Names of every root, sorted.
    pub fn root_names(&self) -> Vec<String> {
        let txn = self.doc.transact();
        let mut names: Vec<String> = txn.root_refs().map(|(name, _)| name.to_owned()).collect();
        names.sort();
        names
    }

    /// The underlying yrs document, for callers that edit locally (tests, clients).
    pub fn yrs(&self) -> &Doc {
        &self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Map, Text};

    /// A client holding `update` that deletes the first character of "t":
    /// the client and that deletion.
    fn delete_first_char(update: &[u8]) -> (Doc, Vec<u8>) {
        let client = Doc::new();
        client
            .transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
        let text = client.get_or_insert_text("t");
        let deletion = {
            let mut txn = client.transact_mut();
            text.remove_range(&mut txn, 0, 1);
            txn.encode_update_v1()
        };
        (client, deletion)
    }

    fn typed(text: &str) -> Vec<u8> {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        txn.encode_update_v1()
    }

    #[test]
    fn a_stored_snapshot_and_its_log_load_to_the_same_document_either_way() {
        let mut original = Document::new();
        original
            .apply_update_v1(&typed("snapshot "))
            .expect("valid");
        let snapshot = original.encode_state_v1();
        let before = original.state_vector();
        original.apply_update_v1(&typed("log")).expect("valid");
        let log = original.diff_v1(&before);
        let checked = Document::load(Some(&snapshot), [log.as_slice()]).expect("loads");
        let stored = Document::load_stored(
            Some(&snapshot),
            [log.as_slice()],
            ValidationLimits::default(),
        )
        .expect("loads");
        assert_eq!(stored.encode_state_v1(), checked.encode_state_v1());
        assert_eq!(stored.encode_state_v1(), original.encode_state_v1());
    }

    #[test]
    fn merged_updates_load_to_the_same_document_and_merging_twice_changes_nothing() {
        let mut original = Document::new();
        original.apply_update_v1(&typed("one ")).expect("valid");
        let first = original.encode_state_v1();
        let before = original.state_vector();
        original.apply_update_v1(&typed("two")).expect("valid");
        let second = original.diff_v1(&before);
        let merged = merge_updates_v1([first.as_slice(), second.as_slice()]).expect("merges");
        let again = merge_updates_v1([merged.as_slice(), second.as_slice(), first.as_slice()])
            .expect("merges");
        for bytes in [&merged, &again] {
            let loaded = Document::load(Some(bytes), []).expect("loads");
            assert_eq!(loaded.encode_state_v1(), original.encode_state_v1());
        }
        assert!(
            merge_updates_v1([&b"\xff\x00"[..]]).is_err(),
            "garbage is refused"
        );
    }

    #[test]
    fn a_damaged_stored_snapshot_is_an_error_not_a_crash() {
        let mut original = Document::new();
        original
            .apply_update_v1(&typed("hello world"))
            .expect("valid");
        let snapshot = original.encode_state_v1();
        for cut in 1..snapshot.len() {
            let loaded = Document::load_stored(
                Some(&snapshot[..cut]),
                std::iter::empty(),
                ValidationLimits::default(),
            );
            assert!(loaded.is_err(), "{cut} of {} bytes loaded", snapshot.len());
        }
    }

    #[test]
    fn malformed_updates_leave_the_document_unchanged() {
        let mut doc = Document::new();
        doc.apply_update_v1(&typed("hello")).expect("valid update");
        let before = doc.encode_state_v1();
        let cases: &[(&[u8], &str)] = &[
            (&[], "truncated"),
            (&[0xff], "truncated"),
            (&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], "truncated"),
            (b"not an update at all", "count_too_large"),
            (
                &[
                    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                ],
                "varint_overflow",
            ),
        ];
        for (bad, reason) in cases {
            let err = doc.apply_update_v1(bad).expect_err("malformed");
            assert_eq!(err.reason(), *reason, "{bad:?}: {err}");
            assert_eq!(doc.encode_state_v1(), before, "after {bad:?}");
        }
        assert_eq!(doc.root_text("t").as_deref(), Some("hello"));
    }

    #[test]
    fn applying_what_is_already_there_is_no_change() {
        let mut doc = Document::new();
        let update = typed("abc");
        assert_eq!(doc.apply_update_v1(&update), Ok(true));
        assert_eq!(doc.apply_update_v1(&update), Ok(false));
        assert_eq!(doc.apply_update_v1(&doc.encode_state_v1()), Ok(false));

        let (_client, deletion) = delete_first_char(&update);
        assert_eq!(doc.apply_update_v1(&deletion), Ok(true));
        assert_eq!(doc.apply_update_v1(&deletion), Ok(false));
        assert_eq!(doc.root_text("t").as_deref(), Some("bc"));
    }

    /// The read-only SyncStep2 check of the Hocuspocus dialect.
    #[test]
    fn contains_update_is_yjs_snapshot_contains_update() {
        let mut doc = Document::new();
        let update = typed("abc");
        doc.apply_update_v1(&update).expect("valid");

        let (client, deletion) = delete_first_char(&update);
        let client_state = client
            .transact()
            .encode_state_as_update_v1(&StateVector::default());

        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("the empty update 00 00", vec![0, 0], true),
            ("an update it applied", update.clone(), true),
            ("its own whole state", doc.encode_state_v1(), true),
            ("a struct it lacks", typed("new"), false),
            ("a deletion it lacks", deletion.clone(), false),
            (
                "a client state with that deletion",
                client_state.clone(),
                false,
            ),
        ];
        for (name, bytes, expected) in &cases {
            assert_eq!(
                doc.contains_update_v1(bytes),
                Ok(*expected),
                "before: {name}"
            );
        }
        doc.apply_update_v1(&deletion).expect("valid");
        assert_eq!(
            doc.contains_update_v1(&deletion),
            Ok(true),
            "deletion applied"
        );
        assert_eq!(
            doc.contains_update_v1(&client_state),
            Ok(true),
            "whole delete set"
        );
        let before = doc.encode_state_v1();
        assert!(doc.contains_update_v1(&[0, 2, 5]).is_err(), "malformed");
        assert_eq!(doc.encode_state_v1(), before, "never applies");
    }

    #[test]
    fn updates_with_missing_dependencies_are_kept() {
        let client = Doc::new();
        let text = client.get_or_insert_text("t");
        let first = {
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 0, "a");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = client.transact_mut();
            text.insert(&mut txn, 1, "b");
            txn.encode_update_v1()
        };
        let mut doc = Document::new();
        assert_eq!(
            doc.apply_update_v1(&second),
            Ok(true),
            "pending is a change"
        );
        assert_eq!(doc.apply_update_v1(&first), Ok(true));
        assert_eq!(doc.root_text("t").as_deref(), Some("ab"));
    }

    #[test]
    fn diff_carries_exactly_what_a_peer_lacks() {
        let mut server = Document::new();
        let client = Doc::new();
        let text = client.get_or_insert_text("t");
        text.insert(&mut client.transact_mut(), 0, "abc");
        server
            .apply_update_v1(
                &client
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            )
            .expect("apply");
        text.insert(&mut client.transact_mut(), 3, "def");
        let extra = client.transact().encode_diff_v1(&server.state_vector());
        server.apply_update_v1(&extra).expect("apply");
        // The client already has everything: the diff is an empty update.
        let diff = server.diff_v1(&client.transact().state_vector());
        let probe = Doc::new();
        probe
            .transact_mut()
            .apply_update(Update::decode_v1(&diff).expect("decodes"))
            .expect("applies");
        assert_eq!(probe.transact().state_vector(), StateVector::default());
        assert_eq!(server.root_text("t").as_deref(), Some("abcdef"));
    }

    #[test]
    fn snapshots_reload_to_the_same_state() {
        let mut doc = Document::new();
        doc.apply_update_v1(&typed("x")).expect("apply");
        let map_doc = Doc::new();
        let m = map_doc.get_or_insert_map("m");
        m.insert(&mut map_doc.transact_mut(), "k", 1);
        doc.apply_update_v1(
            &map_doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        )
        .expect("apply");
        let snapshot = doc.encode_state_v1();
        let reloaded = Document::load(Some(&snapshot), []).expect("reload");
        assert_eq!(reloaded.state_vector(), doc.state_vector());
        assert_eq!(reloaded.to_json(), doc.to_json());
        let v2 = doc.encode_state_v2();
        let probe = Doc::new();
        probe
            .transact_mut()
            .apply_update(Update::decode_v2(&v2).expect("v2"))
            .expect("apply");
        assert_eq!(
            probe.get_or_insert_text("t").get_string(&probe.transact()),
            "x"
        );
    }
}
