//! In-memory `ClientStore` for unit tests and embedding without persistence: one mutex makes
//! each batch atomic.

use super::event_log::EventState;
use super::{BoxFuture, Change, ClientRecord, ClientStore, CounterOp, StoreError, WriteBatch};
use crate::events::audit::Checkpoint;
use crate::events::webhook::{OutboxOp, OutboxRow};
use crate::events::{AuditLog, OutboxQueue, StoredAudit};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    clients: BTreeMap<String, ClientRecord>,
    rats: HashMap<Vec<u8>, String>,
    counters: HashMap<String, u64>,
    events: EventState,
    server_key: Option<Vec<u8>>,
}

impl Inner {
    /// Check the whole batch, then apply it: nothing changes unless every part holds.
    fn apply(&mut self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut values: HashMap<&str, u64> = HashMap::new();
        for op in &batch.counters {
            let (key, next) = match op {
                CounterOp::Take { key, limit } => {
                    let value = self.value(&values, key);
                    if value >= *limit {
                        return Err(StoreError::CounterExhausted(key.clone()));
                    }
                    (key, value + 1)
                }
                CounterOp::Release { key } => (key, self.value(&values, key).saturating_sub(1)),
                CounterOp::Set { key, value } => (key, *value),
            };
            values.insert(key, next);
        }
        let old = match &batch.change {
            None => None,
            Some(Change::Insert(record)) => {
                if self.clients.contains_key(&record.client_id) {
                    return Err(StoreError::Conflict);
                }
                None
            }
            Some(Change::Update {
                expected_revision,
                record,
            }) => Some(self.current(&record.client_id, *expected_revision)?),
            Some(Change::Delete {
                client_id,
                expected_revision,
            }) => Some(self.current(client_id, *expected_revision)?),
        };
        for (key, value) in values {
            self.counters.insert(key.to_owned(), value);
        }
        // Checked above: from here on nothing fails, so the events go with the change.
        self.events.append(batch.audit);
        self.events.apply(batch.outbox);
        if let Some(old) = old {
            for tag in old.rat_tags() {
                self.rats.remove(tag);
            }
        }
        match batch.change {
            None => {}
            Some(Change::Insert(record)) => self.put(record),
            Some(Change::Update {
                expected_revision,
                mut record,
            }) => {
                record.revision = expected_revision + 1;
                self.put(record);
            }
            Some(Change::Delete { client_id, .. }) => {
                self.clients.remove(&client_id);
            }
        }
        Ok(())
    }

    fn value(&self, pending: &HashMap<&str, u64>, key: &str) -> u64 {
        pending
            .get(key)
            .or_else(|| self.counters.get(key))
            .copied()
            .unwrap_or(0)
    }

    fn current(&self, client_id: &str, revision: u64) -> Result<ClientRecord, StoreError> {
        match self.clients.get(client_id) {
            Some(r) if r.revision == revision => Ok(r.clone()),
            _ => Err(StoreError::Conflict),
        }
    }

    fn put(&mut self, record: ClientRecord) {
        for tag in record.rat_tags() {
            self.rats.insert(tag.to_vec(), record.client_id.clone());
        }
        self.clients.insert(record.client_id.clone(), record);
    }
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

    /// Tests: edit the stored trail as someone with access to the store would.
    #[cfg(test)]
    pub(crate) fn tamper_for_tests(
        &self,
        edit: impl FnOnce(&mut BTreeMap<u64, crate::events::AuditRecord>),
    ) {
        edit(self.lock().events.tamper());
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientStore for MemoryStore {
    fn get(&self, client_id: &str) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        let found = self.lock().clients.get(client_id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn get_by_rat(
        &self,
        rat_tag: &[u8],
    ) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        let inner = self.lock();
        let found = inner
            .rats
            .get(rat_tag)
            .and_then(|id| inner.clients.get(id))
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self.lock().apply(batch);
        Box::pin(async move { result })
    }

    fn counter(&self, key: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
        let value = self.lock().counters.get(key).copied().unwrap_or(0);
        Box::pin(async move { Ok(value) })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        let n = self.lock().clients.len() as u64;
        Box::pin(async move { Ok(n) })
    }

    fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClientRecord>, StoreError>> {
        use std::ops::Bound;
        let inner = self.lock();
        let start = match after {
            Some(a) => Bound::Excluded(a.to_owned()),
            None => Bound::Unbounded,
        };
        let page = inner
            .clients
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect();
        Box::pin(async move { Ok(page) })
    }

    fn scan_counters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        let inner = self.lock();
        let mut all: Vec<(String, u64)> = inner
            .counters
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort();
        all.truncate(limit);
        Box::pin(async move { Ok(all) })
    }

    fn server_key(&self, proposed: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        let key = self.lock().server_key.get_or_insert(proposed).clone();
        Box::pin(async move { Ok(key) })
    }

    fn writable(&self) -> bool {
        true
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
        super::super::contract::all(&super::MemoryStore::new()).await;
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
