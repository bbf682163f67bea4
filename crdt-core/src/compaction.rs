//! Merging a document's update log into one snapshot.

use crate::document::{Document, DocumentError};

/// Folds `log` onto `snapshot` and returns the state as one v1 update.
/// Applying the result to an empty document gives the same state vector as
/// applying the snapshot and every logged update in order.
pub fn compact<'a>(
    snapshot: Option<&'a [u8]>,
    log: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, DocumentError> {
    Ok(Document::load(snapshot, log)?.encode_state_v1())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, Text, Transact};

    #[test]
    fn compacted_log_equals_replayed_log() {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut log = Vec::new();
        for (i, word) in ["alpha ", "beta ", "gamma"].iter().enumerate() {
            let mut txn = doc.transact_mut();
            let len = text.get_string(&txn).chars().count() as u32;
            text.insert(&mut txn, len, word);
            if i == 1 {
                text.remove_range(&mut txn, 0, 2);
            }
            log.push(txn.encode_update_v1());
        }
        let first = compact(None, log[..1].iter().map(Vec::as_slice)).expect("compact");
        let all = compact(Some(&first), log[1..].iter().map(Vec::as_slice)).expect("compact");
        let replayed = Document::load(None, log.iter().map(Vec::as_slice)).expect("replay");
        let reloaded = Document::load(Some(&all), []).expect("reload");
        assert_eq!(reloaded.state_vector(), replayed.state_vector());
        assert_eq!(reloaded.root_text("t").as_deref(), Some("pha beta gamma"));
    }

    #[test]
    fn a_corrupt_log_entry_is_an_error() {
        assert!(compact(None, [&[0xffu8, 0xff][..]]).is_err());
    }
}
