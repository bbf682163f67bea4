//! The map from document names to the handles of their running actors.
//!
//! Shared by the registry, which adds actors, and the actors themselves,
//! which remove themselves when they stop. Its lock guards single map
//! operations only and is never held across an `.await`.

use super::handle::{DocHandle, DocStats};
use super::mailbox::MailboxReceiver;
use crate::names::DocName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub(super) struct Directory {
    docs: Arc<Mutex<HashMap<DocName, DocHandle>>>,
}

impl Directory {
    fn docs(&self) -> MutexGuard<'_, HashMap<DocName, DocHandle>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every critical section is a single insert, remove or read).
        self.docs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get(&self, name: &DocName) -> Option<DocHandle> {
        self.docs().get(name).cloned()
    }

    /// Adds `make()`'s handle unless the name has one already, which is
    /// returned instead (someone loaded it at the same time; theirs wins).
    pub(super) fn insert_unless_present(
        &self,
        name: &DocName,
        make: impl FnOnce() -> DocHandle,
    ) -> Result<DocHandle, DocHandle> {
        let mut docs = self.docs();
        if let Some(existing) = docs.get(name) {
            return Err(existing.clone());
        }
        let handle = make();
        docs.insert(name.clone(), handle.clone());
        Ok(handle)
    }

    pub(super) fn names(&self) -> Vec<DocName> {
        self.docs().keys().cloned().collect()
    }

    pub(super) fn stats(&self) -> Vec<(DocName, Arc<DocStats>)> {
        self.docs()
            .iter()
            .map(|(name, handle)| (name.clone(), handle.stats.clone()))
            .collect()
    }

    /// Removes this actor's entry (not a newer actor's of the same name).
    pub(super) fn remove(&self, name: &DocName, actor_id: u64) {
        let mut docs = self.docs();
        if docs.get(name).is_some_and(|h| h.actor_id == actor_id) {
            docs.remove(name);
        }
    }

    /// Removes this actor's entry unless a command is waiting for it: a
    /// sender that found the handle just before must still be served.
    pub(super) fn remove_if_idle(
        &self,
        name: &DocName,
        actor_id: u64,
        rx: &MailboxReceiver,
    ) -> bool {
        let mut docs = self.docs();
        let ours = docs.get(name).is_some_and(|h| h.actor_id == actor_id);
        if ours && rx.is_empty() {
            docs.remove(name);
            true
        } else {
            false
        }
    }
}
