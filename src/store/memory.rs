//! In-memory `ClientStore` for unit tests and embedding without persistence.

use super::{BoxFuture, ClientRecord, ClientStore, StoreError};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    clients: HashMap<String, ClientRecord>,
    rats: HashMap<Vec<u8>, String>,
    counters: HashMap<String, u64>,
}

/// A store that forgets everything on drop.
#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>, StoreError> {
        let inner = self.lock();
        let mut ids: Vec<&String> = inner
            .clients
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .take(limit)
            .filter_map(|id| inner.clients.get(id).cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_meets_the_contract() {
        super::super::contract::holds(&super::MemoryStore::new()).await;
        super::super::contract::counts(&super::MemoryStore::new()).await;
        super::super::contract::scans(&super::MemoryStore::new()).await;
        super::super::contract::finds_unused_clients_of_a_software(&super::MemoryStore::new())
            .await;
    }
}
