//! Where versions of documents are kept: beside the documents, in sled on
//! one node and in PostgreSQL (`quire_versions`) with `--postgres-url`, so
//! that every node of a cluster lists and restores the same versions.
//!
//! A version is a Yjs snapshot of the document (`crdt_core::history`) and
//! what describes it. Ids are given out per document, one past the highest
//! stored, and the newest version is never pruned, so they only grow while
//! the document exists.

use crate::names::DocName;
use crate::record::{Record, RecordError};
use crate::store::{Store, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// Why a version was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A burst of editing went quiet (`--history-quiet-secs`).
    Auto,
    /// The document left memory with changes since its last version.
    Unload,
    /// `POST /api/docs/{doc}/versions`.
    Manual,
    /// A restore: the state it produced.
    Restore,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Unload => "unload",
            Trigger::Manual => "manual",
            Trigger::Restore => "restore",
        }
    }

    pub fn parse(raw: &str) -> Option<Trigger> {
        Some(match raw {
            "auto" => Trigger::Auto,
            "unload" => Trigger::Unload,
            "manual" => Trigger::Manual,
            "restore" => Trigger::Restore,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Trigger::Auto => 0,
            Trigger::Unload => 1,
            Trigger::Manual => 2,
            Trigger::Restore => 3,
        }
    }

    fn from_code(code: u8) -> Option<Trigger> {
        Some(match code {
            0 => Trigger::Auto,
            1 => Trigger::Unload,
            2 => Trigger::Manual,
            3 => Trigger::Restore,
            _ => return None,
        })
    }

    /// Recorded without anyone asking: pruned first.
    pub fn is_automatic(self) -> bool {
        matches!(self, Trigger::Auto | Trigger::Unload)
    }
}

/// A version to record.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub created_at_ms: i64,
    pub label: Option<String>,
    pub trigger: Trigger,
    /// Connections to the document on this node when it was recorded.
    pub clients: u32,
    /// Who those connections were, as far as their tokens say (each name
    /// once, sorted, at most [`MAX_USERS`]).
    pub users: Vec<String>,
    /// `crdt_core::history::snapshot_v1`.
    pub snapshot: Vec<u8>,
}

/// What describes a stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub id: u64,
    pub created_at_ms: i64,
    pub label: Option<String>,
    pub trigger: Trigger,
    pub clients: u32,
    pub users: Vec<String>,
    /// Bytes of the snapshot.
    pub size: u64,
}

/// A stored version with its snapshot.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub meta: VersionMeta,
    pub snapshot: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl VersionsError {
    /// Storage refuses for now (an outage); the request may be retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            VersionsError::Store(StoreError::Unavailable)
                | VersionsError::Record(RecordError::Unavailable(_))
        )
    }
}

/// The versions of every document, where this node keeps them.
#[derive(Clone)]
pub enum Versions {
    Sled(Store),
    Record(Record),
}

impl Versions {
    /// In the shared record when there is one, else in sled.
    pub fn new(store: &Store, record: Option<&Record>) -> Versions {
        match record {
            Some(record) => Versions::Record(record.clone()),
            None => Versions::Sled(store.clone()),
        }
    }

    /// Records a version and prunes the document's versions down to `keep`.
    pub async fn save(
        &self,
        doc: &DocName,
        version: NewVersion,
        keep: usize,
    ) -> Result<VersionMeta, VersionsError> {
        Ok(match self {
            Versions::Sled(store) => store.save_version(doc.clone(), version, keep).await?,
            Versions::Record(record) => record.save_version(doc.as_str(), version, keep).await?,
        })
    }

    /// Every version of `doc`, newest first.
    pub async fn list(&self, doc: &DocName) -> Result<Vec<VersionMeta>, VersionsError> {
        Ok(match self {
            Versions::Sled(store) => store.versions(doc.clone()).await?,
            Versions::Record(record) => record.versions(doc.as_str()).await?,
        })
    }

    pub async fn get(
        &self,
        doc: &DocName,
        id: u64,
    ) -> Result<Option<StoredVersion>, VersionsError> {
        Ok(match self {
            Versions::Sled(store) => store.version(doc.clone(), id).await?,
            Versions::Record(record) => record.version(doc.as_str(), id).await?,
        })
    }
}

/// Which of `versions` (any order) to remove to keep `keep`: the oldest
/// automatic ones first, then the oldest others; never the newest.
pub fn to_prune(versions: &[VersionMeta], keep: usize) -> Vec<u64> {
    let excess = versions.len().saturating_sub(keep.max(1));
    if excess == 0 {
        return Vec::new();
    }
    let newest = versions.iter().map(|v| v.id).max();
    let mut candidates: Vec<&VersionMeta> =
        versions.iter().filter(|v| Some(v.id) != newest).collect();
    candidates.sort_by_key(|v| (!v.trigger.is_automatic(), v.id));
    candidates.iter().take(excess).map(|v| v.id).collect()
}

/// Users listed per version, at most.
pub const MAX_USERS: usize = 50;

/// Set in the trigger byte when a users section follows the label (versions
/// written before it have none).
const WITH_USERS: u8 = 0x80;

/// A sled value: `created_at_ms i64 BE | trigger u8 (| 0x80 with users) |
/// clients u32 BE | label length u32 BE | label | [users: count u16 BE,
/// then each length u16 BE | name] | snapshot` (see ARCHITECTURE.md).
pub(crate) fn encode_sled(version: &NewVersion) -> Vec<u8> {
    let label = version.label.as_deref().unwrap_or("");
    let mut v = Vec::with_capacity(19 + label.len() + version.snapshot.len());
    v.extend_from_slice(&version.created_at_ms.to_be_bytes());
    v.push(version.trigger.code() | WITH_USERS);
    v.extend_from_slice(&version.clients.to_be_bytes());
    v.extend_from_slice(&(label.len() as u32).to_be_bytes());
    v.extend_from_slice(label.as_bytes());
    let users: Vec<&str> = version
        .users
        .iter()
        .map(String::as_str)
        .filter(|u| u.len() <= u16::MAX as usize)
        .take(MAX_USERS)
        .collect();
    v.extend_from_slice(&(users.len() as u16).to_be_bytes());
    for user in users {
        v.extend_from_slice(&(user.len() as u16).to_be_bytes());
        v.extend_from_slice(user.as_bytes());
    }
    v.extend_from_slice(&version.snapshot);
    v
}

pub(crate) fn decode_sled(id: u64, raw: &[u8]) -> Option<StoredVersion> {
    let created_at_ms = i64::from_be_bytes(raw.get(0..8)?.try_into().ok()?);
    let code = *raw.get(8)?;
    let trigger = Trigger::from_code(code & !WITH_USERS)?;
    let clients = u32::from_be_bytes(raw.get(9..13)?.try_into().ok()?);
    let label_len = u32::from_be_bytes(raw.get(13..17)?.try_into().ok()?) as usize;
    let label = std::str::from_utf8(raw.get(17..17 + label_len)?).ok()?;
    let mut at = 17 + label_len;
    let mut users = Vec::new();
    if code & WITH_USERS != 0 {
        let count = u16::from_be_bytes(raw.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        for _ in 0..count {
            let len = u16::from_be_bytes(raw.get(at..at + 2)?.try_into().ok()?) as usize;
            at += 2;
            users.push(std::str::from_utf8(raw.get(at..at + len)?).ok()?.to_owned());
            at += len;
        }
    }
    let snapshot = raw.get(at..)?.to_vec();
    Some(StoredVersion {
        meta: VersionMeta {
            id,
            created_at_ms,
            label: (!label.is_empty()).then(|| label.to_owned()),
            trigger,
            clients,
            users,
            size: snapshot.len() as u64,
        },
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, trigger: Trigger) -> VersionMeta {
        VersionMeta {
            id,
            created_at_ms: id as i64,
            label: None,
            trigger,
            clients: 0,
            users: Vec::new(),
            size: 1,
        }
    }

    #[test]
    fn pruning_takes_the_oldest_automatic_versions_first_and_never_the_newest() {
        use Trigger::*;
        let versions = vec![
            meta(1, Manual),
            meta(2, Auto),
            meta(3, Restore),
            meta(4, Unload),
            meta(5, Auto),
        ];
        let cases: &[(usize, &[u64])] = &[
            (5, &[]),
            (4, &[2]),
            (3, &[2, 4]),
            (2, &[2, 4, 1]),
            (1, &[2, 4, 1, 3]),
        ];
        for (keep, want) in cases {
            assert_eq!(to_prune(&versions, *keep), *want, "keep {keep}");
        }
        let all_auto = vec![meta(7, Auto), meta(8, Auto)];
        assert_eq!(to_prune(&all_auto, 1), vec![7]);
    }

    #[test]
    fn a_version_round_trips_through_its_sled_encoding() {
        let version = NewVersion {
            created_at_ms: 1_700_000_000_123,
            label: Some("before the rewrite ✓".into()),
            trigger: Trigger::Manual,
            clients: 3,
            users: vec!["ada".into(), "bob".into()],
            snapshot: vec![0, 1, 2, 3],
        };
        let stored = decode_sled(9, &encode_sled(&version)).expect("decodes");
        assert_eq!(stored.snapshot, version.snapshot);
        assert_eq!(
            stored.meta,
            VersionMeta {
                id: 9,
                created_at_ms: version.created_at_ms,
                label: version.label.clone(),
                trigger: Trigger::Manual,
                clients: 3,
                users: vec!["ada".into(), "bob".into()],
                size: 4,
            }
        );
        assert!(decode_sled(9, &encode_sled(&version)[..12]).is_none());
    }

    #[test]
    fn a_version_written_before_users_were_kept_still_decodes() {
        // created_at | trigger 2 (manual) | clients 1 | label "l" | snapshot
        let mut old = 5i64.to_be_bytes().to_vec();
        old.push(2);
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend_from_slice(&1u32.to_be_bytes());
        old.push(b'l');
        old.extend_from_slice(&[7, 8]);
        let stored = decode_sled(1, &old).expect("decodes");
        assert_eq!(stored.snapshot, [7, 8]);
        assert_eq!(stored.meta.label.as_deref(), Some("l"));
        assert!(stored.meta.users.is_empty());
        assert_eq!(stored.meta.trigger, Trigger::Manual);
    }
}
