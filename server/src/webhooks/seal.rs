//! Sealing: a marked document becomes one `document.updated` event.
//!
//! The event's state is read from storage, not from the document's actor:
//! every applied update is stored before it is relayed, so storage holds
//! what clients saw, and a document that left memory (or a node that
//! restarted) is sealed the same way.

use super::{Entry, EventBody, EventData, Mark, OutboxError, Payload, Settings, MAX_WAIT_WINDOWS};
use crate::config::WebhookEvent;
use crate::names::DocName;
use crate::store::{Store, StoreError};
use base64::Engine;
use crdt_core::state_vector::decode_state_vector;
use crdt_core::Document;
use std::time::Duration;

/// Whether a mark is sealed now: quiet for a debounce window, or marked for
/// [`MAX_WAIT_WINDOWS`] of them.
pub fn due(mark: &Mark, now_ms: i64, debounce: Duration) -> bool {
    let window = debounce.as_millis() as i64;
    now_ms - mark.last_ms >= window || now_ms - mark.first_ms >= window * MAX_WAIT_WINDOWS as i64
}

/// What a sealed `document.updated` says of a document stored as `parts`
/// (v1 updates in order), after the event whose state vector was `previous`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub state_vector: Vec<u8>,
    pub update: Option<Vec<u8>>,
}

pub fn state_of<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    previous: Option<&[u8]>,
    payload: Payload,
) -> Result<Sealed, String> {
    let doc = Document::load(None, parts).map_err(|e| e.to_string())?;
    let update = match payload {
        Payload::StateVector => None,
        Payload::StateVectorAndUpdate => {
            // A previous state vector that does not decode (none was kept
            // before) means everything.
            let since = previous
                .and_then(|sv| decode_state_vector(sv).ok())
                .unwrap_or_default();
            Some(doc.diff_v1(&since))
        }
    };
    Ok(Sealed {
        state_vector: doc.state_vector_v1(),
        update,
    })
}

/// The event of a sealed state.
pub fn updated_event(doc: &str, sealed: &Sealed, now_ms: i64) -> EventBody {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    EventBody::new(
        WebhookEvent::DocumentUpdated,
        doc,
        now_ms,
        EventData {
            state_vector: Some(b64(&sealed.state_vector)),
            update: sealed.update.as_deref().map(b64),
            ..EventData::default()
        },
    )
}

/// Seals the due marks of sled's outbox; returns how many.
pub async fn seal_local(
    store: &Store,
    settings: &Settings,
    now_ms: i64,
) -> Result<usize, OutboxError> {
    let mut sealed = 0;
    for (name, mark) in store.webhook_marks(now_ms, settings.debounce).await? {
        let Ok(doc) = DocName::parse(&name) else {
            // Marks are written for stored documents only.
            continue;
        };
        let mut entries = Vec::new();
        let mut state_vector = None;
        let stored = match settings.wants(WebhookEvent::DocumentUpdated) {
            true => Some(store.load(doc).await?).filter(|stored| stored.meta.is_some()),
            false => None,
        };
        if let Some(stored) = stored {
            let payload = settings.payload;
            let previous = match payload {
                Payload::StateVectorAndUpdate => store.webhook_sealed(name.clone()).await?,
                Payload::StateVector => None,
            };
            let state = tokio::task::spawn_blocking(move || {
                let parts = stored
                    .snapshot
                    .iter()
                    .map(Vec::as_slice)
                    .chain(stored.log.iter().map(|(_, u)| u.as_slice()));
                state_of(parts, previous.as_deref(), payload)
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("sealing panicked: {e}")))?
            .map_err(|e| StoreError::Corrupt(format!("document {name}: {e}")))?;
            let body = updated_event(&name, &state, now_ms);
            entries = Entry::for_each(&settings.endpoints, &body, now_ms);
            state_vector = Some(state.state_vector);
        }
        store
            .seal_webhook(name, mark.changes, now_ms, state_vector, entries)
            .await?;
        sealed += 1;
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt_core::yrs::{self, GetString, ReadTxn, Text, Transact};

    const WINDOW: Duration = Duration::from_millis(1000);

    #[test]
    fn a_mark_is_due_once_quiet_for_a_window_or_marked_for_five() {
        let mark = |first_ms, last_ms| Mark {
            first_ms,
            last_ms,
            changes: 1,
        };
        let cases = [
            (mark(0, 0), 999, false),
            (mark(0, 0), 1000, true),
            (mark(0, 4500), 5000, true),
            (mark(0, 4500), 4999, false),
            (mark(1000, 4500), 5000, false),
        ];
        for (mark, now, expected) in cases {
            assert_eq!(due(&mark, now, WINDOW), expected, "{mark:?} at {now}");
        }
    }

    fn typed(client: u64, text: &str) -> Vec<u8> {
        let doc = yrs::Doc::with_client_id(client);
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, text);
        let update = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        update
    }

    #[test]
    fn the_update_carried_is_what_came_since_the_previous_event() {
        let first = typed(1, "hello");
        let second = typed(2, "world");
        let before =
            state_of([first.as_slice()], None, Payload::StateVectorAndUpdate).expect("state");
        let after = state_of(
            [first.as_slice(), second.as_slice()],
            Some(&before.state_vector),
            Payload::StateVectorAndUpdate,
        )
        .expect("state");
        // A receiver that applied the first event's update and this one's
        // holds the whole document.
        let receiver = yrs::Doc::new();
        for update in [&before.update, &after.update] {
            let update = update.as_deref().expect("an update is carried");
            let decoded =
                <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(update).expect("decodes");
            receiver
                .transact_mut()
                .apply_update(decoded)
                .expect("applies");
        }
        let text = receiver.get_or_insert_text("t");
        let got = text.get_string(&receiver.transact());
        assert!(got == "helloworld" || got == "worldhello", "{got}");
        // Only what the second client typed travelled the second time.
        assert!(after.update.as_ref().map_or(0, Vec::len) < second.len() + 8);
        let bare = state_of([first.as_slice()], None, Payload::StateVector).expect("state");
        assert_eq!(bare.update, None);
        assert_eq!(bare.state_vector, before.state_vector);
    }
}
