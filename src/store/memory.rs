//! In-memory `ClientStore` for unit tests and embedding without persistence.

use super::event_log::EventState;
use super::{BoxFuture, ClientRecord, ClientStore, StoreError};
use crate::events::audit::Checkpoint;
use crate::events::webhook::{OutboxOp, OutboxRow};
use crate::events::{AuditLog, OutboxQueue, StoredAudit};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    clients: HashMap<String, ClientRecord>,
    rats: HashMap<Vec<u8>, String>,
    counters: HashMap<String, u64>,
    events: EventState,
}

/// A store that forgets everything on drop.
#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tests: append audit entries as a commit would.
    #[cfg(test)]
    pub(crate) fn append_for_tests(
        &self,
        entries: impl IntoIterator<Item = crate::events::AuditEntry>,
    ) {
        self.lock().events.append(entries);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientStore for MemoryStore {
    fn get(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self.lock().clients.get(client_id).cloned())
    }

    fn client_for_rat(&self, rat_tag: &[u8]) -> Result<Option<String>, StoreError> {
        Ok(self.lock().rats.get(rat_tag).cloned())
    }

    fn insert(&self, record: &ClientRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.clients.contains_key(&record.client_id) {
            return Err(StoreError::Conflict);
        }
        inner
            .clients
            .insert(record.client_id.clone(), record.clone());
        if !record.rat_tag.is_empty() {
            inner
                .rats
                .insert(record.rat_tag.clone(), record.client_id.clone());
        }
        Ok(())
    }

    fn replace(&self, old: &ClientRecord, new: &ClientRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.clients.get(&old.client_id) != Some(old) || old.client_id != new.client_id {
            return Err(StoreError::Conflict);
        }
        inner.rats.remove(&old.rat_tag);
        if !new.rat_tag.is_empty() {
            inner
                .rats
                .insert(new.rat_tag.clone(), new.client_id.clone());
        }
        inner.clients.insert(new.client_id.clone(), new.clone());
        Ok(())
    }

    fn remove(&self, old: &ClientRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.clients.get(&old.client_id) != Some(old) {
            return Err(StoreError::Conflict);
        }
        inner.clients.remove(&old.client_id);
        inner.rats.remove(&old.rat_tag);
        Ok(())
    }

    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn len(&self) -> usize {
        self.lock().clients.len()
    }

    fn increment_counter(&self, key: &str, limit: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let value = inner.counters.entry(key.to_owned()).or_insert(0);
        if *value >= limit {
            return Ok(false);
        }
        *value += 1;
        Ok(true)
    }

    fn decrement_counter(&self, key: &str) -> Result<(), StoreError> {
        if let Some(value) = self.lock().counters.get_mut(key) {
            *value = value.saturating_sub(1);
        }
        Ok(())
    }

    fn counter(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.lock().counters.get(key).copied().unwrap_or(0))
    }
}

impl AuditLog for MemoryStore {
    fn audit_scan(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        let rows = self.lock().events.scan(after, limit);
        Box::pin(async move { Ok(rows) })
    }

    fn audit_prune(
        &self,
        cutoff: i64,
        now: i64,
    ) -> BoxFuture<'_, Result<Option<Checkpoint>, StoreError>> {
        let checkpoint = self.lock().events.prune(cutoff, now);
        Box::pin(async move { Ok(checkpoint) })
    }
}

impl OutboxQueue for MemoryStore {
    fn outbox_pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        let rows = self.lock().events.pending(limit);
        Box::pin(async move { Ok(rows) })
    }

    fn outbox_dead(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        let rows = self.lock().events.dead(after, limit);
        Box::pin(async move { Ok(rows) })
    }

    fn outbox_apply(&self, ops: Vec<OutboxOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.lock().events.apply(ops);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        super::super::contract::holds(&super::MemoryStore::new()).await;
        super::super::contract::counts(&super::MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn memory_events_meet_the_contract() {
        use crate::events::audit::EventType;
        use crate::events::webhook::OutboxOp;
        use crate::store::event_log::contract;
        let store = super::MemoryStore::new();
        store.lock().events.append([
            contract::entry(10, "a", EventType::Registered),
            contract::entry(20, "b", EventType::Updated),
            contract::entry(30, "a", EventType::Deleted),
        ]);
        contract::audit_log_holds(&store).await;
        let ops: Vec<OutboxOp> = ["a1", "b1", "a2"]
            .iter()
            .map(|id| OutboxOp::Enqueue(contract::row(&id[..1], id)))
            .collect();
        store.lock().events.apply(ops);
        contract::outbox_holds(&store).await;
    }

    #[tokio::test]
    async fn every_kind_of_tampering_is_detected() {
        use crate::events::audit::EventType;
        use crate::events::verify_log;
        use crate::store::event_log::contract;
        let fresh = || {
            let store = super::MemoryStore::new();
            store
                .lock()
                .events
                .append((0..5).map(|i| contract::entry(i, "a", EventType::Updated)));
            store
        };
        let s = fresh();
        assert_eq!(verify_log(&s).await.unwrap().unwrap().count, 5);
        // Edit.
        let s = fresh();
        s.lock()
            .events
            .tamper()
            .get_mut(&3)
            .unwrap()
            .changed
            .clear();
        assert_eq!(verify_log(&s).await.unwrap().unwrap_err().seq, 3);
        // Delete in the middle, at the end of the prefix, at the tail.
        let s = fresh();
        s.lock().events.tamper().remove(&2);
        assert_eq!(verify_log(&s).await.unwrap().unwrap_err().seq, 2);
        let s = fresh();
        s.lock().events.tamper().remove(&1);
        assert_eq!(verify_log(&s).await.unwrap().unwrap_err().seq, 2);
        // Reorder: swap the contents of two keys.
        let s = fresh();
        {
            let mut inner = s.lock();
            let t = inner.events.tamper();
            let (a, b) = (t[&2].clone(), t[&4].clone());
            t.insert(2, b);
            t.insert(4, a);
        }
        assert_eq!(verify_log(&s).await.unwrap().unwrap_err().seq, 2);
    }
}
